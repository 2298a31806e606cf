package interest

import (
	"fmt"
	"regexp/syntax"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Python 3's re, with which Synapse compiles namespace regexes, reads the
// Perl classes \w, \d and \s and the word boundaries \b and \B as Unicode:
// \w is every letter and number (categories L and N) and '_', \d every
// decimal digit (Nd), \s the white space of str.isspace. RE2 reads them as
// ASCII, so "@w_\w+:hs" would not match "@w_josé:hs" as it does in Synapse.
// pythonClasses rewrites the classes into their Unicode spelling before
// RE2 compiles the pattern; the word boundaries stay, and a Pattern that
// has one is matched by matchWords, which decides them in Unicode.

// wordItems is \w inside a character class.
const wordItems = `\p{L}\p{N}_`

// spaceItems is \s inside a character class: Python's str.isspace, which
// is \t \n \v \f \r, the separators \x1c-\x1f, \x85, and category Zs.
const spaceItems = `\t\n\v\f\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}`

// notWordItems and notSpaceItems are \W and \S inside a character class,
// where a negated class cannot nest: the ranges of every rune \w (or \s)
// does not match.
var notWordItems, notSpaceItems = sync.OnceValue(func() string {
	return complementItems(isWord)
}), sync.OnceValue(func() string {
	return complementItems(isPythonSpace)
})

// isWord reports whether r is a word character to Python 3's re (\w, \b).
func isWord(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r)
}

// isPythonSpace reports whether r is white space to Python 3's re (\s).
func isPythonSpace(r rune) bool {
	switch {
	case r >= '\t' && r <= '\r', r >= 0x1c && r <= 0x1f, r == 0x85:
		return true
	}
	return unicode.Is(unicode.Zs, r) || r == 0x2028 || r == 0x2029
}

// complementItems returns, as character class items, the ranges of runes
// for which in is false.
func complementItems(in func(rune) bool) string {
	var b strings.Builder
	lo := rune(-1)
	flush := func(hi rune) {
		if lo >= 0 {
			if lo == hi {
				fmt.Fprintf(&b, `\x{%x}`, lo)
			} else {
				fmt.Fprintf(&b, `\x{%x}-\x{%x}`, lo, hi)
			}
			lo = -1
		}
	}
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if in(r) {
			flush(r - 1)
		} else if lo < 0 {
			lo = r
		}
	}
	flush(unicode.MaxRune)
	return b.String()
}

// pythonClasses rewrites \w, \W, \d, \D, \s and \S in pattern, a regex in
// RE2 syntax, into the Unicode classes Python 3's re means by them, inside
// character classes and out, and \b inside a character class (a backspace
// to Python, an error to RE2) into \x08. An escaped backslash, the text
// between \Q and \E, and a POSIX class such as [:alpha:] stay as they are;
// a \Q without \E gets one at the end.
func pythonClasses(pattern string) string {
	if !strings.Contains(pattern, `\`) {
		return pattern
	}
	var b strings.Builder
	inClass := false
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch {
		case c == '\\' && i+1 < len(pattern):
			next := pattern[i+1]
			if next == 'Q' {
				// Literal text up to \E, or to the end: then the \E is
				// added, so that the text cannot swallow the ')' of the
				// group Compile anchors the pattern with.
				end := strings.Index(pattern[i+2:], `\E`)
				if end < 0 {
					b.WriteString(pattern[i:])
					b.WriteString(`\E`)
					return b.String()
				}
				b.WriteString(pattern[i : i+2+end+2])
				i += 2 + end + 1
				continue
			}
			b.WriteString(pythonEscape(next, inClass))
			i++
		case inClass:
			if c == '[' && strings.HasPrefix(pattern[i:], "[:") {
				if end := strings.Index(pattern[i+2:], ":]"); end >= 0 {
					b.WriteString(pattern[i : i+2+end+2])
					i += 2 + end + 1
					continue
				}
			}
			if c == ']' {
				inClass = false
			}
			b.WriteByte(c)
		case c == '[':
			inClass = true
			b.WriteByte(c)
			// A ']' right after '[' or '[^' is a literal.
			if strings.HasPrefix(pattern[i+1:], "^]") {
				b.WriteString("^]")
				i += 2
			} else if strings.HasPrefix(pattern[i+1:], "]") {
				b.WriteByte(']')
				i++
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// escapeClasses are \w and \s, whose negations \W and \S are their
// complements: the items of each class.
var escapeClasses = map[byte]struct {
	items string
	not   func() string // the complement's items, for inside a class
}{'w': {wordItems, notWordItems}, 's': {spaceItems, notSpaceItems}}

// pythonEscape returns the RE2 spelling of the escape \c as Python reads
// it, inside a character class or not.
func pythonEscape(c byte, inClass bool) string {
	if cl, ok := escapeClasses[c]; ok {
		if inClass {
			return cl.items
		}
		return "[" + cl.items + "]"
	}
	if cl, ok := escapeClasses[c+'a'-'A']; ok && c >= 'A' && c <= 'Z' {
		if inClass {
			return cl.not()
		}
		return "[^" + cl.items + "]"
	}
	switch c {
	case 'd':
		return `\p{Nd}`
	case 'D':
		return `\P{Nd}`
	case 'b':
		if inClass {
			return `\x08`
		}
	}
	return `\` + string(c)
}

// hasWordBoundary reports whether re has \b or \B.
func hasWordBoundary(re *syntax.Regexp) bool {
	if re.Op == syntax.OpWordBoundary || re.Op == syntax.OpNoWordBoundary {
		return true
	}
	for _, sub := range re.Sub {
		if hasWordBoundary(sub) {
			return true
		}
	}
	return false
}

// wordMatcher matches a compiled regex with \b or \B at the start of a
// string, deciding word boundaries as Python 3's re does, with Unicode
// word characters (isWord). RE2 decides them with ASCII ones and has no
// hook to change that, so this is a small Pike VM over the same program:
// it keeps the set of instructions the regex can be at after each rune,
// which takes time linear in the string and in the program, like RE2.
type wordMatcher struct {
	prog *syntax.Prog
	// scratch holds *wordScratch for the program, so that a match
	// allocates nothing in the steady state.
	scratch sync.Pool
}

// wordScratch is what one match works in: the instructions before and
// after the current rune, and a stack.
type wordScratch struct {
	lists [2]threadList
	stack []uint32
}

// threadList is a sparse set of instruction indexes.
type threadList struct {
	dense  []uint32
	sparse []uint32
}

func (l *threadList) has(pc uint32) bool {
	i := l.sparse[pc]
	return int(i) < len(l.dense) && l.dense[i] == pc
}

func (l *threadList) insert(pc uint32) {
	l.sparse[pc] = uint32(len(l.dense))
	l.dense = append(l.dense, pc)
}

// newWordMatcher compiles re, which must be anchored at the start.
func newWordMatcher(re *syntax.Regexp) (*wordMatcher, error) {
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return nil, err
	}
	m := &wordMatcher{prog: prog}
	n := len(prog.Inst)
	m.scratch.New = func() any {
		return &wordScratch{
			lists: [2]threadList{
				{dense: make([]uint32, 0, n), sparse: make([]uint32, n)},
				{dense: make([]uint32, 0, n), sparse: make([]uint32, n)},
			},
			stack: make([]uint32, 0, n),
		}
	}
	return m, nil
}

// emptyContext returns the zero-width assertions that hold between r1 and
// r2 (-1 at either end of the text), with Unicode word boundaries.
func emptyContext(r1, r2 rune) syntax.EmptyOp {
	op := syntax.EmptyOpContext(r1, r2) &^ (syntax.EmptyWordBoundary | syntax.EmptyNoWordBoundary)
	if (r1 >= 0 && isWord(r1)) != (r2 >= 0 && isWord(r2)) {
		return op | syntax.EmptyWordBoundary
	}
	return op | syntax.EmptyNoWordBoundary
}

// match reports whether the regex matches at the start of s.
func (m *wordMatcher) match(s string) bool {
	w := m.scratch.Get().(*wordScratch)
	defer m.scratch.Put(w)
	clist, nlist := &w.lists[0], &w.lists[1]
	clist.dense, nlist.dense = clist.dense[:0], nlist.dense[:0]

	prev := rune(-1)
	r, width := decodeRune(s)
	if m.add(clist, &w.stack, uint32(m.prog.Start), emptyContext(prev, r)) {
		return true
	}
	for pos := 0; len(clist.dense) > 0 && r >= 0; {
		next, nextWidth := decodeRune(s[pos+width:])
		ctx := emptyContext(r, next)
		nlist.dense = nlist.dense[:0]
		for _, pc := range clist.dense {
			inst := &m.prog.Inst[pc]
			var ok bool
			switch inst.Op {
			case syntax.InstRune, syntax.InstRune1:
				ok = inst.MatchRune(r)
			case syntax.InstRuneAny:
				ok = true
			case syntax.InstRuneAnyNotNL:
				ok = r != '\n'
			}
			if ok && m.add(nlist, &w.stack, inst.Out, ctx) {
				return true
			}
		}
		clist, nlist = nlist, clist
		pos += width
		r, width = next, nextWidth
	}
	return false
}

// add adds to l the instructions that consume a rune or match, reachable
// from pc without consuming one where the assertions ctx hold, and reports
// whether one of them is a match. stack is scratch space.
func (m *wordMatcher) add(l *threadList, stack *[]uint32, pc uint32, ctx syntax.EmptyOp) bool {
	*stack = append((*stack)[:0], pc)
	for len(*stack) > 0 {
		pc := (*stack)[len(*stack)-1]
		*stack = (*stack)[:len(*stack)-1]
		if l.has(pc) {
			continue
		}
		l.insert(pc)
		inst := &m.prog.Inst[pc]
		switch inst.Op {
		case syntax.InstMatch:
			return true
		case syntax.InstAlt, syntax.InstAltMatch:
			*stack = append(*stack, inst.Arg, inst.Out)
		case syntax.InstCapture, syntax.InstNop:
			*stack = append(*stack, inst.Out)
		case syntax.InstEmptyWidth:
			if syntax.EmptyOp(inst.Arg)&^ctx == 0 {
				*stack = append(*stack, inst.Out)
			}
		}
	}
	return false
}

// decodeRune returns the first rune of s and its width, as regexp reads
// it (an invalid byte is U+FFFD of width 1), or -1 and 0 at the end.
func decodeRune(s string) (rune, int) {
	if s == "" {
		return -1, 0
	}
	if s[0] < utf8.RuneSelf {
		return rune(s[0]), 1
	}
	return utf8.DecodeRuneInString(s)
}
