package interest

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode/utf8"
)

// Pattern is a compiled namespace regex. Like Synapse's re.match, it
// matches at the start of a string and need not reach its end, and like
// Python 3's re it reads \w, \W, \d, \D, \s, \S, \b and \B as Unicode
// (see pythonClasses). The zero Pattern matches nothing.
type Pattern struct {
	prefix   string         // every match starts with it
	complete bool           // a string matches iff it starts with prefix
	re       *regexp.Regexp // "^(?:" + the regex in Unicode spelling + ")"
	// words, when the regex has \b or \B, matches strings that are not
	// all ASCII, where RE2's ASCII word boundaries differ from Python's.
	words *wordMatcher
	regex string // as written
}

// Compile compiles a namespace regex, written in Go's RE2 syntax and read
// with Python 3's Unicode classes. The pattern is compiled alone first, so
// that a pattern such as "a)|(b" cannot escape the anchoring group and
// errors point into it; the error then names the Python syntax, if any,
// that RE2 lacks.
func Compile(regex string) (*Pattern, error) {
	unicodeRegex := pythonClasses(regex)
	if _, err := regexp.Compile(unicodeRegex); err != nil {
		// Report the error in the pattern as written, if it has one.
		if _, werr := regexp.Compile(regex); werr != nil {
			err = werr
		}
		if hint := pythonOnlySyntax(regex); hint != "" {
			return nil, fmt.Errorf("%w; %s", err, hint)
		}
		return nil, err
	}
	anchored := "^(?:" + unicodeRegex + ")"
	re, err := regexp.Compile(anchored)
	if err != nil {
		return nil, err
	}
	p := &Pattern{regex: regex, re: re}
	p.prefix, p.complete = literalPrefix(unicodeRegex)
	if tree, err := syntax.Parse(anchored, syntax.Perl); err == nil && hasWordBoundary(tree) {
		if p.words, err = newWordMatcher(tree); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Regex returns the regex p was compiled from.
func (p *Pattern) Regex() string { return p.regex }

// Match reports whether the regex matches at the start of s, as Python's
// re.match does.
func (p *Pattern) Match(s string) bool {
	if p.re == nil || !strings.HasPrefix(s, p.prefix) {
		return false
	}
	if p.complete {
		return true
	}
	if p.words != nil && !isASCII(s) {
		return p.words.match(s)
	}
	return p.re.MatchString(s)
}

// isASCII reports whether s is all ASCII: there, RE2's word boundaries are
// Python's.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// matchesAny reports whether one of ps matches s.
func matchesAny(ps []Pattern, s string) bool {
	for i := range ps {
		if ps[i].Match(s) {
			return true
		}
	}
	return false
}

// literalPrefix returns the literal text every match of pattern, anchored
// at the start of the string, begins with, and whether a string matches
// exactly when it begins with it. It looks past a leading '^'. (Go's
// Regexp.LiteralPrefix gives nothing for an anchored pattern.)
func literalPrefix(pattern string) (string, bool) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return "", false
	}
	re = re.Simplify()
	subs := []*syntax.Regexp{re}
	if re.Op == syntax.OpConcat {
		subs = re.Sub
	}
	var prefix []rune
	for i, sub := range subs {
		switch {
		case sub.Op == syntax.OpBeginText || sub.Op == syntax.OpBeginLine || sub.Op == syntax.OpEmptyMatch:
			// Hold at the start of the string.
			if len(prefix) > 0 {
				return string(prefix), false
			}
		case sub.Op == syntax.OpLiteral && sub.Flags&syntax.FoldCase == 0:
			for _, r := range sub.Rune {
				if r == utf8.RuneError {
					// It also matches any invalid UTF-8 byte.
					return string(prefix), false
				}
				prefix = append(prefix, r)
			}
		default:
			return string(prefix), false
		}
		if i == len(subs)-1 {
			return string(prefix), true
		}
	}
	return string(prefix), len(subs) == 0
}

// pythonOnlySyntax names the Python regex syntax in pattern that Go's RE2
// does not support, or returns "".
func pythonOnlySyntax(pattern string) string {
	var lookaround, backref, bigZ bool
	inClass := false
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch {
		case c == '\\' && i+1 < len(pattern):
			next := pattern[i+1]
			if !inClass && next >= '1' && next <= '9' {
				backref = true
			}
			if !inClass && next == 'Z' {
				bigZ = true
			}
			i++
		case inClass:
			if c == ']' {
				inClass = false
			}
		case c == '[':
			inClass = true
			// A ']' right after '[' or '[^' is a literal.
			if strings.HasPrefix(pattern[i+1:], "^]") {
				i += 2
			} else if strings.HasPrefix(pattern[i+1:], "]") {
				i++
			}
		case c == '(':
			rest := pattern[i:]
			switch {
			case strings.HasPrefix(rest, "(?="), strings.HasPrefix(rest, "(?!"),
				strings.HasPrefix(rest, "(?<="), strings.HasPrefix(rest, "(?<!"):
				lookaround = true
			case strings.HasPrefix(rest, "(?P="):
				backref = true
			}
		}
	}
	var hints []string
	if lookaround {
		hints = append(hints, "Go's RE2 regexp engine does not support look-arounds ((?=...), (?!...), (?<=...), (?<!...)) that Python accepts: rewrite the pattern without them")
	}
	if backref {
		hints = append(hints, "Go's RE2 regexp engine does not support back-references (\\1, (?P=name)) that Python accepts: rewrite the pattern without them")
	}
	if bigZ {
		hints = append(hints, "Go writes Python's \\Z (end of text) as \\z")
	}
	return strings.Join(hints, "; ")
}
