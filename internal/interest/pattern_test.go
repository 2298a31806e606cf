package interest

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPatternMatchesAtStartOnly(t *testing.T) {
	cases := []struct {
		regex string
		s     string
		want  bool
	}{
		{"@irc_.*", "@irc_bob:example.org", true},
		{"irc", "@irc_bob", false},
		{"@a", "@abc", true},
		{"@a", "x@abc", false},
		{"@bot:example.org", "@bot:example.org.evil.com", true}, // no implied $
		{"@bot:example.org", "@bot:example.org", true},
		{"@bot:example.org", "@bot:example.or", false},
		{`^@wa_.*:example\.com$`, "@wa_1:example.com", true},
		{`^@wa_.*:example\.com$`, "@wa_1:example.com.evil", false},
		{`^@wa_.*:example\.com$`, "x@wa_1:example.com", false},
		{"a|b", "b", true},
		{"a|b", "xb", false}, // the alternation stays anchored
		{"(?i)@IRC_", "@irc_bob", true},
		{"(?i)@IRC_", "x@irc_bob", false},
		{"", "anything", true},
		{"", "", true},
		{"^", "x", true},
		{"$", "x", false},
		{"$", "", true},
		{"a^b", "ab", false},
		{"(?m)^@a", "@a", true},
		{"(?m)^@a", "x\n@a", false},
		{"@[a-z]+_bot", "@irc_bot", true},
		{"@[a-z]+_bot", "@IRC_bot", false},
		{`\x{FFFD}`, "\xff", true}, // Go matches an invalid byte as U+FFFD
		{"é.*", "éa", true},
		{"#irc_#.*:example\\.org", "#irc_#debian:example.org", true},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s~%s", c.regex, c.s), func(t *testing.T) {
			p, err := Compile(c.regex)
			require.NoError(t, err)
			require.Equal(t, c.want, p.Match(c.s))
			require.Equal(t, regexp.MustCompile("^(?:"+c.regex+")").MatchString(c.s), p.Match(c.s),
				"the prefix shortcut agrees with the regex")
		})
	}
}

func TestLiteralPrefix(t *testing.T) {
	cases := []struct {
		regex    string
		prefix   string
		complete bool
	}{
		{"@irc_.*", "@irc_", false},
		{"@bot:example.org", "@bot:example", false}, // '.' is not a literal
		{`@bot:example\.org`, "@bot:example.org", true},
		{`^@wa_.*:example\.com$`, "@wa_", false},
		{`^@wabot:example\.com$`, "@wabot:example.com", false},
		{"^abc", "abc", true},
		{"(?i)abc", "", false},
		{"a|b", "", false},
		{"", "", true},
		{"(abc)", "", false},
		{"a^b", "a", false},
	}
	for _, c := range cases {
		prefix, complete := literalPrefix(c.regex)
		require.Equal(t, c.prefix, prefix, c.regex)
		require.Equal(t, c.complete, complete, c.regex)
	}
}

func TestCompileNamesPythonSyntax(t *testing.T) {
	for pattern, want := range map[string]string{
		"@(?<!x)":        "look-arounds",
		"@a_(?=b)":       "look-arounds",
		`(a)\1`:          "back-references",
		"(?P<x>a)(?P=x)": "back-references",
		`@a\Z`:           `Python's \Z`,
	} {
		_, err := Compile(pattern)
		require.ErrorContains(t, err, want, pattern)
	}
	_, err := Compile("a)|(b")
	require.Error(t, err, "a pattern cannot escape the anchoring group")
	require.NotContains(t, err.Error(), "Python")
	require.False(t, (&Pattern{}).Match(""), "the zero Pattern matches nothing")
}

// TestPatternReadsClassesAsPython checks \w, \W, \d, \D, \s, \S, \b and
// \B against what Synapse's re.match answers: every want below is CPython
// 3.11's re.match(regex, s).
func TestPatternReadsClassesAsPython(t *testing.T) {
	cases := []struct {
		regex string
		s     string
		want  bool
	}{
		{`@w_\w+:hs`, "@w_josé:hs", true},
		{`@w_\w+:hs`, "@w_jo-sé:hs", false},
		{`#\w+:hs`, "#café:hs", true},
		{`#\w+:hs`, "#日本語:hs", true},
		{`#\w+:hs`, "#e\u0301:hs", false},
		{`@\d+:hs`, "@١٢٣:hs", true},
		{`@\D`, "@١", false},
		{`@\D`, "@x", true},
		{`@a\sb`, "@a\u00a0b", true},
		{`@a\sb`, "@a\u2003b", true},
		{`@a\sb`, "@a\x0bb", true},
		{`@a\sb`, "@a\x1cb", true},
		{`@a\sb`, "@a\u200bb", false},
		{`@a\Sb`, "@a\u00a0b", false},
		{`@a\Sb`, "@aéb", true},
		{`@[\w.]+:hs`, "@josé.x:hs", true},
		{`@[^\W\d]+:hs`, "@josé:hs", true},
		{`@[^\W\d]+:hs`, "@jo1:hs", false},
		{`@[\s\d]`, "@\u3000", true},
		{`@[\s\d]`, "@٣", true},
		{`@[\s\d]`, "@x", false},
		{`@\W`, "@é", false},
		{`@\W`, "@-", true},
		{`@[\W]`, "@é", false},
		{`@[\W]`, "@-", true},
		{`@[\S]+$`, "@é\u00a0", false},
		{`@[^\S]`, "@\u2028", true},
		{`@\\w`, "@\\w", true},
		{`@\\w`, "@a", false},
		{`[\\w]`, "\\", true},
		{`[\\w]`, "é", false},
		{`[]\w]`, "]", true},
		{`[]\w]`, "é", true},
		{`[^]\w]`, "é", false},
		{`[^]\w]`, "-", true},
		{`@jos\b`, "@josé", false},
		{`@jos\B`, "@josé", true},
		{`@josé\b`, "@josé:hs", true},
		{`\bé`, "é", true},
		{`.*\bbar`, "fooébar", false},
		{`.*\bbar`, "foo\x20bar", true},
		{`.*\Bbar`, "fooébar", true},
		{`@\w+\b:example\.org`, "@ünïcödé:example.org", true},
		{`(?i)@W_\w+`, "@w_ÉCOLE", true},
		{`[\b]`, "\x08", true},
		{`[\b]`, "b", false},
		{`#\w+_\d+:hs`, "#канал_٤٢:hs", true},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s~%s", c.regex, c.s), func(t *testing.T) {
			p, err := Compile(c.regex)
			require.NoError(t, err)
			require.Equal(t, c.want, p.Match(c.s))
		})
	}
}

// TestPatternKeepsGoSyntax checks that the rewriting of the Perl classes
// leaves alone what is not one: quoted text, POSIX classes, Unicode
// classes, and ASCII strings, where both readings agree.
func TestPatternKeepsGoSyntax(t *testing.T) {
	cases := []struct {
		regex string
		s     string
		want  bool
	}{
		{`@\Q\w\E`, `@\w`, true},
		{`@\Q\w\E`, "@a", false},
		{`@\Q\w`, `@\w`, true},
		{`@[[:digit:]\w]+$`, "@é1", true},
		{`@[[:^alpha:]]`, "@é", true},
		{`@\pL+$`, "@josé", true},
		{`@\p{Greek}\w`, "@αβ", true},
		{`@[\p{Greek}\W]+$`, "@α-", true},
		{`@[\p{Greek}\W]+$`, "@αa", false},
		{`@\x{e9}\b`, "@é", true},
		{`@a\b`, "@a b", true},
		{`@a\b`, "@ab", false},
		{`(?:@a|@b)\b.*`, "@b:hs", true},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s~%s", c.regex, c.s), func(t *testing.T) {
			p, err := Compile(c.regex)
			require.NoError(t, err)
			require.Equal(t, c.want, p.Match(c.s))
		})
	}
}

func TestPythonClassesSpelling(t *testing.T) {
	for in, want := range map[string]string{
		`@a_.*`:        `@a_.*`,
		`@\w`:          `@[\p{L}\p{N}_]`,
		`@[\w-]`:       `@[\p{L}\p{N}_-]`,
		`@\d\D`:        `@\p{Nd}\P{Nd}`,
		`@\\w`:         `@\\w`,
		`[\b]\b`:       `[\x08]\b`,
		`@\Q\w\E\w`:    `@\Q\w\E[\p{L}\p{N}_]`,
		`[]\w]`:        `[]\p{L}\p{N}_]`,
		`[[:word:]\w]`: `[[:word:]\p{L}\p{N}_]`,
		`@\W`:          `@[^\p{L}\p{N}_]`,
		`\`:            `\`,
	} {
		require.Equal(t, want, pythonClasses(in), in)
	}
}

func TestWordClassesComplement(t *testing.T) {
	notWord := regexp.MustCompile("^[" + notWordItems() + "]$")
	notSpace := regexp.MustCompile("^[" + notSpaceItems() + "]$")
	for _, r := range []rune{'a', 'Z', '0', '_', '-', ' ', 'é', '\u00a0', '\u3000', '\u0661', '\u0301', '日', '\U0001F600', '\u2028', 0x10ffff} {
		require.Equal(t, !isWord(r), notWord.MatchString(string(r)), "%U", r)
		require.Equal(t, !isPythonSpace(r), notSpace.MatchString(string(r)), "%U", r)
	}
}

func FuzzPatternMatch(f *testing.F) {
	for _, seed := range []struct{ regex, s string }{
		{"@irc_.*", "@irc_bob:example.org"}, {"irc", "@irc_bob"}, {"@a", "@abc"}, {`^@wa_.*:example\.com$`, "@wa_1:example.com"},
		{"a|b", "xb"}, {"(?i)AB", "ab"}, {`\x{FFFD}`, "\xff"}, {"", ""}, {"a^b", "ab"}, {"(?m)$", "a\n"}, {`\Aab\b`, "ab c"},
		{`@w_\w+:hs`, "@w_josé:hs"}, {`@[^\W\d]+:hs`, "@jo1:hs"}, {`@a\S\s`, "@é\u00a0"}, {`@jos\b`, "@josé"},
		{`.*\Bbar`, "fooébar"}, {`[\b]\b`, "\x08a"}, {`@\Q\w\E[]\W]`, `@\w]`}, {`\bé\b`, "é\xff"},
	} {
		f.Add(seed.regex, seed.s)
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		p, err := Compile(pattern)
		if err != nil {
			return
		}
		// RE2 on the Unicode spelling is the reference wherever its ASCII
		// word boundaries are Python's.
		anchored := "^(?:" + pythonClasses(pattern) + ")"
		want := regexp.MustCompile(anchored).MatchString(s)
		if p.words == nil || isASCII(s) {
			require.Equal(t, want, p.Match(s), "pattern %q, string %q", pattern, s)
		}
		// The word-boundary matcher agrees with RE2 on any pattern where
		// the two readings of \b agree.
		tree, err := syntax.Parse(anchored, syntax.Perl)
		require.NoError(t, err)
		m, err := newWordMatcher(tree)
		require.NoError(t, err)
		if !hasWordBoundary(tree) || isASCII(s) {
			require.Equal(t, want, m.match(s), "pattern %q, string %q", pattern, s)
		}
	})
}
