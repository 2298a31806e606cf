package interest

import (
	"fmt"
	"regexp"
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

func FuzzPatternMatch(f *testing.F) {
	for _, seed := range []struct{ regex, s string }{
		{"@irc_.*", "@irc_bob:example.org"}, {"irc", "@irc_bob"}, {"@a", "@abc"}, {`^@wa_.*:example\.com$`, "@wa_1:example.com"},
		{"a|b", "xb"}, {"(?i)AB", "ab"}, {`\x{FFFD}`, "\xff"}, {"", ""}, {"a^b", "ab"}, {"(?m)$", "a\n"}, {`\Aab\b`, "ab c"},
	} {
		f.Add(seed.regex, seed.s)
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		p, err := Compile(pattern)
		if err != nil {
			return
		}
		want := regexp.MustCompile("^(?:" + pattern + ")").MatchString(s)
		require.Equal(t, want, p.Match(s), "pattern %q, string %q", pattern, s)
	})
}
