package scheduler

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/asdeliver/scheduler/internal/regfile"
	"github.com/stretchr/testify/require"
)

func ptr[T any](v T) *T { return &v }

// exported returns a copy of r without the unexported, compiled parts of its
// namespaces, for comparison.
func exported(r *Registration) Registration {
	c := *r
	strip := func(ns []Namespace) []Namespace {
		if ns == nil {
			return nil
		}
		out := make([]Namespace, len(ns))
		for i, n := range ns {
			out[i] = Namespace{Regex: n.Regex, Exclusive: n.Exclusive}
		}
		return out
	}
	c.Namespaces = Namespaces{Users: strip(r.Namespaces.Users), Aliases: strip(r.Namespaces.Aliases), Rooms: strip(r.Namespaces.Rooms)}
	return c
}

// matches reports whether n's compiled regex matches s; false before
// validate compiles it.
func (n *Namespace) matches(s string) bool { return n.re != nil && n.re.Match(s) }

func TestLoadRegistrationReadsBridgeFiles(t *testing.T) {
	dir := filepath.Join("testdata", "registrations")
	cases := []struct {
		file string
		want Registration
	}{
		{"mautrix-whatsapp.yaml", Registration{
			ID:              "whatsapp",
			URL:             "http://localhost:29318",
			ASToken:         "wa-as-Zl1x0Tq3JpR8sYk2VbN6cHdGmE4uWfA9",
			HSToken:         "wa-hs-Q7nB2vC5xZ8aS1dF4gH6jK9lP3oI0uYt",
			SenderLocalpart: "6ycMKg1mNZfMBXyqHrA4jvUVyxeREMnq",
			Namespaces: Namespaces{Users: []Namespace{
				{Regex: `^@whatsappbot:example\.com$`, Exclusive: true},
				{Regex: `^@whatsapp_.*:example\.com$`, Exclusive: true},
			}},
			RateLimited:      ptr(false),
			ReceiveEphemeral: true,
			PushEphemeral:    true,
		}},
		{"matrix-appservice-irc.yaml", Registration{
			ID:              "8a1d3b8fb7c0a5f1e3c4d2b6a9e0f7c1d5b3a2e4f6c8d0b1a3c5e7f9d2b4a6c8",
			URL:             "http://localhost:9999",
			ASToken:         "b2e4c6a8d0f1b3e5c7a9d2f4b6e8c0a1d3f5b7e9c2a4d6f8b0e1c3a5d7f9b2e4",
			HSToken:         "3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a",
			SenderLocalpart: "appservice-irc",
			Namespaces: Namespaces{
				Users: []Namespace{
					{Regex: `@irc_.*:example\.org`, Exclusive: true},
					{Regex: `@oftc_.*:example\.org`, Exclusive: true},
				},
				Aliases: []Namespace{
					{Regex: `#irc_.*:example\.org`, Exclusive: true},
					{Regex: `#oftc_.*:example\.org`, Exclusive: true},
				},
			},
			Protocols:     []string{"irc"},
			RateLimited:   ptr(false),
			PushEphemeral: true,
		}},
		{"matrix-hookshot.yaml", Registration{
			ID:              "matrix-hookshot",
			URL:             "http://localhost:9993",
			ASToken:         "hookshot-as-9d8f7e6a5b4c3d2e1f0a9b8c7d6e5f4a",
			HSToken:         "hookshot-hs-1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d",
			SenderLocalpart: "hookshot",
			Namespaces: Namespaces{
				Users: []Namespace{
					{Regex: "@_github_.*:example.com", Exclusive: true},
					{Regex: "@_gitlab_.*:example.com", Exclusive: true},
					{Regex: "@_jira_.*:example.com", Exclusive: true},
					{Regex: "@_webhooks_.*:example.com", Exclusive: true},
					{Regex: "@feeds:example.com", Exclusive: true},
				},
				Aliases: []Namespace{{Regex: "#github_.+:example.com", Exclusive: true}},
			},
			RateLimited:   ptr(false),
			PushEphemeral: true,
			MSC3202:       true,
		}},
		{"mautrix-signal-msc4190.yaml", Registration{
			ID:              "signal",
			URL:             "https://signal-bridge.internal.example.com:29328",
			ASToken:         "sig-as-H3kP9wQ2zX7cV5bN1mL8jF4dS6aG0tYr",
			HSToken:         "sig-hs-T6yU1iO9pA3sD7fG2hJ5kL8zX4cV0bNm",
			SenderLocalpart: "SUv1rq3xKZ6YtHbOcGFnAw7ljPMkpDe9",
			Namespaces: Namespaces{Users: []Namespace{
				{Regex: `^@signalbot:example\.com$`, Exclusive: true},
				{Regex: `^@signal_.*:example\.com$`, Exclusive: true},
			}},
			RateLimited:      ptr(false),
			ReceiveEphemeral: true,
			PushEphemeral:    true,
			MSC3202:          true,
			MSC4190:          true,
		}},
		{"no-push-bot.yaml", Registration{
			ID:              "moderation-bot",
			URL:             "",
			ASToken:         "modbot-as-4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b",
			HSToken:         "modbot-hs-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
			SenderLocalpart: "modbot",
			Namespaces:      Namespaces{Users: []Namespace{{Regex: `@modbot:example\.org`, Exclusive: true}}},
		}},
		{"mx-puppet-discord.yaml", Registration{
			ID:              "discord-puppet",
			URL:             "http://localhost:8434",
			ASToken:         "0e1d2c3b4a5968778695a4b3c2d1e0f9e8d7c6b5a4938271605f4e3d2c1b0a9f",
			HSToken:         "6b1f2a9c8d7e4f3a5b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a",
			SenderLocalpart: "_discordpuppet_bot",
			Namespaces: Namespaces{
				Users:   []Namespace{{Regex: "@_discordpuppet_.*", Exclusive: true}},
				Aliases: []Namespace{{Regex: "#_discordpuppet_.*", Exclusive: true}},
			},
			Protocols: []string{"discord"},
		}},
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	require.NoError(t, err)
	require.Len(t, files, len(cases), "every testdata registration has a case")
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			path := filepath.Join(dir, c.file)
			r, err := LoadRegistration(path)
			require.NoError(t, err)
			c.want.Source = path
			require.Equal(t, c.want, exported(r))
			for _, list := range [][]Namespace{r.Namespaces.Users, r.Namespaces.Aliases, r.Namespaces.Rooms} {
				for _, n := range list {
					require.NotNil(t, n.re, "regex %q compiled", n.Regex)
				}
			}

			data, err := os.ReadFile(path)
			require.NoError(t, err)
			parsed, err := ParseRegistration(data)
			require.NoError(t, err)
			c.want.Source = ""
			require.Equal(t, c.want, exported(parsed), "ParseRegistration reads what LoadRegistration reads, without Source")
		})
	}
}

func TestBridgeRegistrationsMatchTheirUsers(t *testing.T) {
	wa, err := LoadRegistration("testdata/registrations/mautrix-whatsapp.yaml")
	require.NoError(t, err)
	require.True(t, wa.Namespaces.Users[1].matches("@whatsapp_4915112345678:example.com"))
	require.False(t, wa.Namespaces.Users[1].matches("@whatsapp_4915112345678:example.com.evil.org"), "the pattern ends in $")
	require.False(t, wa.Namespaces.Users[1].matches("@whatsapp_1:exampleXcom"), "the dot is escaped")
	require.True(t, wa.Namespaces.Users[0].matches("@whatsappbot:example.com"))
	require.Equal(t, "@6ycMKg1mNZfMBXyqHrA4jvUVyxeREMnq:example.com", wa.UserID("example.com"))

	irc, err := LoadRegistration("testdata/registrations/matrix-appservice-irc.yaml")
	require.NoError(t, err)
	require.True(t, irc.Namespaces.Users[0].matches("@irc_bob:example.org"))
	require.True(t, irc.Namespaces.Aliases[1].matches("#oftc_#debian:example.org"))
	require.False(t, irc.Namespaces.Users[0].matches("@alice:example.org"))
}

func TestLoadRegistrationErrors(t *testing.T) {
	_, err := LoadRegistration(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.NotErrorIs(t, err, ErrInvalidRegistration, "a missing file is not a malformed registration")

	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte(regYAML(set("url", "ftp://bridge:21"))), 0o600))
	_, err = LoadRegistration(path)
	require.ErrorIs(t, err, ErrInvalidRegistration)
	var rerr *RegistrationError
	require.ErrorAs(t, err, &rerr)
	require.Equal(t, path, rerr.Source)
	require.Equal(t, "bridge", rerr.ID)
	require.Equal(t, "url", rerr.Field)
	require.Contains(t, err.Error(), path, "the message names the file")
}

// The tokens of the registration regYAML builds. No error may contain them.
const (
	testASToken = "as-SECRET-2b7e151628aed2a6abf71589"
	testHSToken = "hs-SECRET-3c4fcf098815f7aba6d2ae28"
)

// regKV is one top-level entry of the registration regYAML builds.
type regKV struct{ key, value string }

// regEdit changes the registration regYAML builds.
type regEdit func([]regKV) []regKV

// set sets key to the YAML value (which may span lines), replacing it or
// adding it at the end.
func set(key, value string) regEdit {
	return func(kvs []regKV) []regKV {
		for i := range kvs {
			if kvs[i].key == key {
				kvs[i].value = value
				return kvs
			}
		}
		return append(kvs, regKV{key, value})
	}
}

// del removes key.
func del(key string) regEdit {
	return func(kvs []regKV) []regKV {
		out := kvs[:0]
		for _, kv := range kvs {
			if kv.key != key {
				out = append(out, kv)
			}
		}
		return out
	}
}

// users sets namespaces to a users list of the given (YAML) entries.
func users(entries ...string) regEdit {
	return set("namespaces", "\n  users:\n"+indent(strings.Join(entries, "\n"), "    "))
}

func indent(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}

// regYAML returns a valid registration file, changed by edits.
func regYAML(edits ...regEdit) string {
	kvs := []regKV{
		{"id", "bridge"},
		{"url", "http://localhost:29318"},
		{"as_token", testASToken},
		{"hs_token", testHSToken},
		{"sender_localpart", "bridgebot"},
		{"namespaces", "\n  users:\n    - regex: '@bridge_.*:example\\.org'\n      exclusive: true"},
	}
	for _, e := range edits {
		kvs = e(kvs)
	}
	var b strings.Builder
	for _, kv := range kvs {
		fmt.Fprintf(&b, "%s: %s\n", kv.key, kv.value)
	}
	return b.String()
}

func TestRegYAMLIsValid(t *testing.T) {
	r, err := ParseRegistration([]byte(regYAML()))
	require.NoError(t, err)
	require.Equal(t, "bridge", r.ID)
	require.Equal(t, testASToken, r.ASToken)
	require.Equal(t, testHSToken, r.HSToken)
}

func TestParseRegistrationRejects(t *testing.T) {
	cases := []struct {
		name  string
		yaml  string
		field string   // RegistrationError.Field, named in the message
		more  []string // more text the message must contain
	}{
		{"missing id", regYAML(del("id")), "id", []string{"missing"}},
		{"missing as_token", regYAML(del("as_token")), "as_token", []string{"missing"}},
		{"missing hs_token", regYAML(del("hs_token")), "hs_token", []string{"missing"}},
		{"missing sender_localpart", regYAML(del("sender_localpart")), "sender_localpart", []string{"missing"}},
		{"missing url", regYAML(del("url")), "url", []string{"missing", "null"}},
		{"id is a number", regYAML(set("id", "123")), "id", []string{"string", "number"}},
		{"id is null", regYAML(set("id", "null")), "id", []string{"string", "null"}},
		{"id is a list", regYAML(set("id", "[a, b]")), "id", []string{"list"}},
		{"id is empty", regYAML(set("id", `""`)), "id", []string{"empty"}},
		{"id has a pipe", regYAML(set("id", "irc|bridge")), "id", []string{"'|'"}},
		{"id is a YAML 1.1 boolean", regYAML(set("id", "yes")), "id", []string{"quote it"}},
		{"as_token is a number", regYAML(set("as_token", "1234567890123")), "as_token", []string{"number"}},
		{"as_token is a boolean", regYAML(set("as_token", "true")), "as_token", []string{"boolean"}},
		{"as_token is empty", regYAML(set("as_token", "''")), "as_token", []string{"empty"}},
		{"as_token is a mapping", regYAML(set("as_token", "{a: 1}")), "as_token", []string{"mapping"}},
		{"hs_token is a YAML 1.1 boolean", regYAML(set("hs_token", "off")), "hs_token", []string{"quote it"}},
		{"hs_token has a newline", regYAML(set("hs_token", `"`+testHSToken+`\n"`)), "hs_token", []string{"control character"}},
		{"as_token block scalar keeps its newline", regYAML(set("as_token", "|\n  "+testASToken)), "as_token", []string{"control character"}},
		{"hs_token is a date", regYAML(set("hs_token", "2024-01-01")), "hs_token", []string{"date"}},
		{"sender_localpart is a number", regYAML(set("sender_localpart", "42")), "sender_localpart", []string{"number"}},
		{"sender_localpart is empty", regYAML(set("sender_localpart", `""`)), "sender_localpart", []string{"empty"}},
		{"sender_localpart needs URL encoding", regYAML(set("sender_localpart", `"bridge bot"`)), "sender_localpart", []string{"encode"}},
		{"sender_localpart has a colon", regYAML(set("sender_localpart", `"bot:example.org"`)), "sender_localpart", []string{"encode"}},
		{"url is empty", regYAML(set("url", `""`)), "url", []string{`""`, "null"}},
		{"url is relative", regYAML(set("url", "/appservice")), "url", []string{"not absolute"}},
		{"url has no scheme", regYAML(set("url", "bridge.example.org")), "url", []string{"not absolute"}},
		{"url is ftp", regYAML(set("url", "ftp://bridge.example.org")), "url", []string{"ftp", "http"}},
		{"url host without scheme", regYAML(set("url", "localhost:29318")), "url", []string{"no scheme", `"http://localhost:29318"`}},
		{"url name without scheme", regYAML(set("url", "bridge.example.org")), "url", []string{"no scheme", `"http://bridge.example.org"`}},
		{"url with a placeholder host", regYAML(set("url", "'http://<your-bridge>:29318'")), "url", []string{`"http://<your-bridge>:29318"`, "placeholder"}},
		{"url with a template", regYAML(set("url", "'http://{{ host }}:1'")), "url", []string{`"http://{{ host }}:1"`, "not a valid URL"}},
		{"url has no host", regYAML(set("url", "http://")), "url", []string{"no host"}},
		{"url has an empty host", regYAML(set("url", "http:///transactions")), "url", []string{"no host"}},
		{"url has only a port", regYAML(set("url", "http://:29318")), "url", []string{"no host"}},
		{"url is opaque", regYAML(set("url", "http:bridge")), "url", []string{"no host"}},
		{"url has a query", regYAML(set("url", "http://bridge:1/?access_token=x")), "url", []string{"query"}},
		{"url has a fragment", regYAML(set("url", "'http://bridge:1/#x'")), "url", []string{"fragment"}},
		{"url has port 0", regYAML(set("url", "http://bridge:0/")), "url", []string{"port", "65535"}},
		{"url has a port too large", regYAML(set("url", "http://bridge:99999")), "url", []string{"port", "65535"}},
		{"url has a port with leading zeros too large", regYAML(set("url", "http://bridge:0000065536")), "url", []string{"port"}},
		{"url has a bad port", regYAML(set("url", "http://bridge:29x18")), "url", []string{"port"}},
		{"too many namespaces", regYAML(set("namespaces", "\n  users: [{regex: '@a', exclusive: true}]\n  aliases: ["+strings.Repeat("{regex: '#a', exclusive: true}, ", 1000)+"]")),
			"namespaces.aliases", []string{"1000", "users, aliases and rooms"}},
		{"url has a user and password", regYAML(set("url", "http://user:SECRETpass@bridge:1/")), "url", []string{"credentials", "bridge:1"}},
		{"url has a user", regYAML(set("url", "http://SECRETuser@bridge:1/")), "url", []string{"credentials", "bridge:1"}},
		{"url has an empty password", regYAML(set("url", "http://user:@bridge:1/")), "url", []string{"credentials"}},
		{"url has an empty user", regYAML(set("url", "http://@bridge:1/")), "url", []string{"credentials"}},
		{"url does not parse", regYAML(set("url", "'http://[::1'")), "url", []string{"not a valid URL"}},
		{"unix url with a host", regYAML(set("url", "unix://run/bridge.sock")), "url", []string{"three slashes"}},
		{"unix url without a path", regYAML(set("url", "unix://")), "url", []string{"socket path"}},
		{"unix url of the root", regYAML(set("url", "unix:///")), "url", []string{"socket path"}},
		{"unix url with a query", regYAML(set("url", "unix:///run/b.sock?x=1")), "url", []string{"query"}},
		{"unix url with escapes", regYAML(set("url", "unix:///run/b%2esock")), "url", []string{"plainly"}},
		{"url is a number", regYAML(set("url", "8080")), "url", []string{"number"}},
		{"url is a list", regYAML(set("url", "[http://a]")), "url", []string{"list"}},
		{"namespaces is a list", regYAML(set("namespaces", "[users]")), "namespaces", []string{"mapping", "list"}},
		{"namespaces is a string", regYAML(set("namespaces", "users")), "namespaces", []string{"mapping"}},
		{"namespaces.users is a mapping", regYAML(set("namespaces", "\n  users:\n    regex: '@a_.*'\n    exclusive: true")), "namespaces.users", []string{"list", "mapping"}},
		{"namespaces.users is a string", regYAML(set("namespaces", "{users: '@a_.*'}")), "namespaces.users", []string{"list"}},
		{"namespaces.users is null", regYAML(set("namespaces", "\n  users:")), "namespaces.users", []string{"list", "null"}},
		{"namespaces.rooms is a number", regYAML(set("namespaces", "{rooms: 1}")), "namespaces.rooms", []string{"list"}},
		{"namespace entry is a string", regYAML(users("- '@a_.*'")), "namespaces.users[0]", []string{"mapping"}},
		{"namespace entry misses exclusive", regYAML(users("- regex: '@a_.*'")), "namespaces.users[0].exclusive", []string{"missing"}},
		{"namespace entry misses regex", regYAML(users("- exclusive: true")), "namespaces.users[0].regex", []string{"missing"}},
		{"namespace exclusive is a string", regYAML(users("- regex: '@a_.*'\n  exclusive: 'true'")), "namespaces.users[0].exclusive", []string{"true or false", "string"}},
		{"namespace exclusive is a number", regYAML(users("- regex: '@a_.*'\n  exclusive: 1")), "namespaces.users[0].exclusive", []string{"number"}},
		{"namespace exclusive is null", regYAML(users("- regex: '@a_.*'\n  exclusive:")), "namespaces.users[0].exclusive", []string{"null"}},
		{"namespace regex is a number", regYAML(users("- regex: 5\n  exclusive: true")), "namespaces.users[0].regex", []string{"number"}},
		{"namespace regex is a list", regYAML(users("- regex: ['@a']\n  exclusive: true")), "namespaces.users[0].regex", []string{"list"}},
		{"bad regex", regYAML(users("- regex: '@a_[.*'\n  exclusive: true")), "namespaces.users[0].regex", []string{"@a_[.*", "missing closing ]"}},
		{"bad regex in second alias", regYAML(set("namespaces", "\n  aliases:\n    - {regex: '#a_.*', exclusive: true}\n    - {regex: '#b_(.*', exclusive: true}")),
			"namespaces.aliases[1].regex", []string{"#b_(.*"}},
		{"bad regex in rooms", regYAML(set("namespaces", "{rooms: [{regex: '!a)|(b', exclusive: false}]}")), "namespaces.rooms[0].regex", []string{"!a)|(b"}},
		{"look-ahead", regYAML(users("- regex: '@irc_(?!bot).*'\n  exclusive: true")), "namespaces.users[0].regex", []string{"(?!bot)", "RE2", "look-arounds"}},
		{"positive look-ahead", regYAML(users("- regex: '@(?=irc_).*'\n  exclusive: true")), "namespaces.users[0].regex", []string{"look-arounds"}},
		{"look-behind", regYAML(users("- regex: '@.*(?<=_bot):example\\.org'\n  exclusive: true")), "namespaces.users[0].regex", []string{"RE2", "look-arounds"}},
		{"negative look-behind", regYAML(users("- regex: '@.*(?<!admin):example\\.org'\n  exclusive: true")), "namespaces.users[0].regex", []string{"look-arounds"}},
		{"back-reference", regYAML(users(`- regex: '@(a+)_\1:example\.org'` + "\n  exclusive: true")), "namespaces.users[0].regex", []string{"RE2", "back-references"}},
		{"named back-reference", regYAML(users("- regex: '@(?P<n>a)(?P=n)'\n  exclusive: true")), "namespaces.users[0].regex", []string{"back-references"}},
		{"python end of text", regYAML(users(`- regex: '@a_.*:example\.org\Z'` + "\n  exclusive: true")), "namespaces.users[0].regex", []string{`\z`}},
		{"protocols is a string", regYAML(set("protocols", "irc")), "protocols", []string{"list"}},
		{"protocols has a number", regYAML(set("protocols", "[irc, 5]")), "protocols[1]", []string{"number"}},
		{"rate_limited is a string", regYAML(set("rate_limited", `"false"`)), "rate_limited", []string{"true or false"}},
		{"rate_limited is a number", regYAML(set("rate_limited", "0")), "rate_limited", []string{"number"}},
		{"receive_ephemeral is a string", regYAML(set("receive_ephemeral", "'yes'")), "receive_ephemeral", []string{"true or false"}},
		{"push_ephemeral is a number", regYAML(set("de.sorunome.msc2409.push_ephemeral", "1")), "de.sorunome.msc2409.push_ephemeral", []string{"true or false"}},
		{"msc3202 is a string", regYAML(set("org.matrix.msc3202", "enabled")), "org.matrix.msc3202", []string{"true or false"}},
		{"msc4190 is a list", regYAML(set("io.element.msc4190", "[]")), "io.element.msc4190", []string{"list"}},
		{"duplicate key", regYAML(set("x-extra", "1\nid: other")), "id", []string{"twice", "lines 1 and 11"}},
		{"duplicate namespace key", regYAML(set("namespaces", "\n  users: []\n  users: []")), "namespaces.users", []string{"twice"}},
		{"duplicate entry key", regYAML(users("- regex: '@a'\n  exclusive: true\n  regex: '@b'")), "namespaces.users[0].regex", []string{"twice"}},
		{"not a mapping", "- id: bridge\n- url: null\n", "", []string{"mapping", "list"}},
		{"a scalar", "hello\n", "", []string{"mapping", "string"}},
		{"empty", "", "", []string{"empty"}},
		{"only comments", "# nothing here\n", "", []string{"empty"}},
		{"null document", "~\n", "", []string{"mapping", "null"}},
		{"two documents", regYAML() + "---\n" + regYAML(), "", []string{"more than one"}},
		{"invalid YAML", regYAML() + "namespaces: [\n", "", []string{"invalid YAML"}},
		{"tab indentation", "id: a\nnamespaces:\n\tusers: []\n", "", []string{"invalid YAML"}},
		{"unknown anchor", regYAML(set("id", "*nope")), "", []string{"invalid YAML"}},
		{"merge of a scalar", regYAML(set("x", "&x 1"), set("<<", "*x")), "", []string{"merge"}},
		{"merge into itself", regYAML(set("namespaces", "&ns {<<: *ns}")), "namespaces", []string{"nested too deeply"}},
		{"nested too deeply", regYAML(set("x-extra", strings.Repeat("[", 10100)+strings.Repeat("]", 10100))), "", []string{"nested more than 64 levels deep", "(line 10)"}},
		{"nested too deeply by indentation", regYAML(set("x-extra", "\n"+deepBlock(100))), "", []string{"nested more than 64 levels deep"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := ParseRegistration([]byte(c.yaml))
			require.Error(t, err, "input:\n%s", c.yaml)
			require.Nil(t, r)
			require.ErrorIs(t, err, ErrInvalidRegistration)
			var rerr *RegistrationError
			require.ErrorAs(t, err, &rerr)
			require.Equal(t, c.field, rerr.Field, "error: %v", err)
			msg := err.Error()
			require.Contains(t, msg, c.field)
			for _, m := range c.more {
				require.Contains(t, msg, m)
			}
			require.NotContains(t, msg, testASToken)
			require.NotContains(t, msg, testHSToken)
			require.NotContains(t, msg, "SECRET")
			require.NotContains(t, msg, "1234567890123", "a token that is a number is not shown either")
		})
	}
}

// deepBlock returns mappings nested depth levels deep by indentation,
// each line indented one more space than the last, from one space on.
func deepBlock(depth int) string {
	var b strings.Builder
	for i := range depth {
		b.WriteString(strings.Repeat(" ", i+1) + "a:\n")
	}
	return b.String()
}

func TestParseRegistrationAccepts(t *testing.T) {
	cases := []struct {
		name  string
		yaml  string
		check func(t *testing.T, r *Registration)
	}{
		{"url null", regYAML(set("url", "null")), func(t *testing.T, r *Registration) { require.Equal(t, "", r.URL) }},
		{"url tilde", regYAML(set("url", "~")), func(t *testing.T, r *Registration) { require.Equal(t, "", r.URL) }},
		{"url trailing slashes", regYAML(set("url", "http://localhost:29318//")), func(t *testing.T, r *Registration) {
			require.Equal(t, "http://localhost:29318", r.URL)
		}},
		{"url https with path", regYAML(set("url", "https://bridges.example.org/whatsapp/")), func(t *testing.T, r *Registration) {
			require.Equal(t, "https://bridges.example.org/whatsapp", r.URL)
		}},
		{"url IPv6", regYAML(set("url", "'http://[::1]:29318'")), func(t *testing.T, r *Registration) {
			require.Equal(t, "http://[::1]:29318", r.URL)
		}},
		{"url upper-case scheme", regYAML(set("url", "HTTP://bridge:1")), func(t *testing.T, r *Registration) {
			require.Equal(t, "HTTP://bridge:1", r.URL)
		}},
		{"no namespaces", regYAML(del("namespaces")), func(t *testing.T, r *Registration) {
			require.Equal(t, Namespaces{}, r.Namespaces)
		}},
		{"null namespaces", regYAML(set("namespaces", "")), func(t *testing.T, r *Registration) {
			require.Equal(t, Namespaces{}, r.Namespaces)
		}},
		{"empty namespaces", regYAML(set("namespaces", "{users: [], aliases: [], rooms: []}")), func(t *testing.T, r *Registration) {
			require.Empty(t, r.Namespaces.Users)
			require.Empty(t, r.Namespaces.Aliases)
			require.Empty(t, r.Namespaces.Rooms)
		}},
		{"unknown namespace kind", regYAML(set("namespaces", "{users: [], groups: [{regex: '+a'}]}")), func(t *testing.T, r *Registration) {
			require.Empty(t, r.Namespaces.Users)
		}},
		{"extra keys in an entry", regYAML(users("- regex: '@a_.*'\n  exclusive: false\n  comment: legacy")), func(t *testing.T, r *Registration) {
			require.Equal(t, []Namespace{{Regex: "@a_.*"}}, exported(r).Namespaces.Users)
		}},
		{"unknown keys", regYAML(set("push_ephemeral", "true"), set("ip_range_whitelist", "[10.0.0.0/8]"),
			set("io.element.msc4512.proxy_prefix", "rtc/livekit"), set("x-anything", "{a: [1, 2]}")), func(t *testing.T, r *Registration) {
			require.False(t, r.PushEphemeral)
		}},
		{"YAML 1.1 booleans", regYAML(set("rate_limited", "no"), set("receive_ephemeral", "Yes"), set("org.matrix.msc3202", "ON"),
			users("- regex: '@a_.*'\n  exclusive: yes")), func(t *testing.T, r *Registration) {
			require.Equal(t, ptr(false), r.RateLimited)
			require.True(t, r.ReceiveEphemeral)
			require.True(t, r.MSC3202)
			require.True(t, r.Namespaces.Users[0].Exclusive)
		}},
		{"tagged values", regYAML(set("id", "!!str 123"), set("rate_limited", "!!bool true")), func(t *testing.T, r *Registration) {
			require.Equal(t, "123", r.ID)
			require.Equal(t, ptr(true), r.RateLimited)
		}},
		{"quoted yes is a string", regYAML(set("sender_localpart", "'yes'")), func(t *testing.T, r *Registration) {
			require.Equal(t, "yes", r.SenderLocalpart)
		}},
		{"null optionals", regYAML(set("rate_limited", "null"), set("protocols", "~"), set("receive_ephemeral", "")), func(t *testing.T, r *Registration) {
			require.Nil(t, r.RateLimited)
			require.Nil(t, r.Protocols)
			require.False(t, r.ReceiveEphemeral)
		}},
		{"empty protocols", regYAML(set("protocols", "[]")), func(t *testing.T, r *Registration) { require.Empty(t, r.Protocols) }},
		{"sender_localpart kept as written", regYAML(set("sender_localpart", "_Bridge.Bot~1/x")), func(t *testing.T, r *Registration) {
			require.Equal(t, "_Bridge.Bot~1/x", r.SenderLocalpart)
			require.Equal(t, "@_Bridge.Bot~1/x:example.org", r.UserID("example.org"))
		}},
		{"anchors and merge keys", "" +
			"defaults: &defaults\n  url: http://localhost:1\n  sender_localpart: bot\n  id: overridden\n" +
			"entry: &entry {exclusive: true}\n" +
			"<<: *defaults\nid: bridge\nas_token: a\nhs_token: h\n" +
			"namespaces:\n  users:\n    - <<: *entry\n      regex: '@a_.*'\n  aliases: &aliases\n    - {regex: '#a_.*', exclusive: false}\n  rooms: *aliases\n",
			func(t *testing.T, r *Registration) {
				require.Equal(t, "bridge", r.ID, "a key of the mapping wins over a merged one")
				require.Equal(t, "http://localhost:1", r.URL)
				require.Equal(t, "bot", r.SenderLocalpart)
				require.Equal(t, []Namespace{{Regex: "@a_.*", Exclusive: true}}, exported(r).Namespaces.Users)
				require.Equal(t, []Namespace{{Regex: "#a_.*"}}, exported(r).Namespaces.Rooms)
			}},
		{"earlier merge wins", "a: &a {id: first}\nb: &b {id: second, url: null}\n<<: [*a, *b]\nas_token: a\nhs_token: h\nsender_localpart: bot\n",
			func(t *testing.T, r *Registration) {
				require.Equal(t, "first", r.ID)
			}},
		{"JSON", `{"id": "bridge", "url": "http://localhost:1/", "as_token": "a", "hs_token": "h", "sender_localpart": "bot",` +
			` "namespaces": {"users": [{"regex": "@a_.*", "exclusive": true}]}, "protocols": ["irc"], "rate_limited": true}`,
			func(t *testing.T, r *Registration) {
				require.Equal(t, "http://localhost:1", r.URL)
				require.Equal(t, []string{"irc"}, r.Protocols)
				require.Equal(t, ptr(true), r.RateLimited)
			}},
		{"byte order mark", "\ufeff" + regYAML(), func(t *testing.T, r *Registration) { require.Equal(t, "bridge", r.ID) }},
		{"CRLF line ends", strings.ReplaceAll(regYAML(), "\n", "\r\n"), func(t *testing.T, r *Registration) {
			require.Equal(t, testHSToken, r.HSToken)
		}},
		{"empty regex", regYAML(users("- {regex: '', exclusive: false}")), func(t *testing.T, r *Registration) {
			require.True(t, r.Namespaces.Users[0].matches("@anyone:example.org"), "as re.match('', s) does")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := ParseRegistration([]byte(c.yaml))
			require.NoError(t, err, "input:\n%s", c.yaml)
			c.check(t, r)
			require.NoError(t, r.validate(), "a parsed registration stays valid")
		})
	}
}

func TestParseRegistrationAcceptsLimits(t *testing.T) {
	r, err := ParseRegistration([]byte(regYAML(set("url", "http://bridge:65535"),
		set("namespaces", "\n  users: [{regex: '@a', exclusive: true}]\n  rooms: ["+strings.Repeat("{regex: '!a', exclusive: true}, ", 999)+"]"))))
	require.NoError(t, err)
	require.Equal(t, "http://bridge:65535", r.URL)
	require.Len(t, r.Namespaces.Rooms, 999)
}

// TestNamespaceRegexMatchesAsSynapse checks that a namespace regex reads
// \w, \d, \s and \b as Synapse's Python 3 re does, Unicode-aware: every
// want below is what re.match answers in CPython 3.11.
func TestNamespaceRegexMatchesAsSynapse(t *testing.T) {
	r, err := ParseRegistration([]byte(regYAML(set("namespaces", `
  users:
    - {regex: '@w_\w+:hs', exclusive: true}
    - {regex: '@tg_[\w-]+:hs', exclusive: true}
    - {regex: '@b_\w+\b:hs', exclusive: true}
  aliases:
    - {regex: '#\w+_\d+:hs', exclusive: true}
    - {regex: '#irc_\w+:hs', exclusive: true}
  rooms:
    - {regex: '!\w+:hs', exclusive: false}`))))
	require.NoError(t, err)
	ns := r.Namespaces
	for _, c := range []struct {
		n    *Namespace
		s    string
		want bool
	}{
		{&ns.Users[0], "@w_josé:hs", true},
		{&ns.Users[0], "@w_jo sé:hs", false},
		{&ns.Users[0], "@w_bob:hs", true},
		{&ns.Users[1], "@tg_Ünïcode-1:hs", true},
		{&ns.Users[2], "@b_josé:hs", true},
		{&ns.Aliases[0], "#канал_٤٢:hs", true},
		{&ns.Aliases[0], "#канал_x:hs", false},
		{&ns.Aliases[1], "#irc_日本:hs", true},
		{&ns.Rooms[0], "!ÀbC:hs", true},
	} {
		require.Equal(t, c.want, c.n.matches(c.s), "%s ~ %s", c.n.Regex, c.s)
	}
}

func TestValidateHandBuiltRegistration(t *testing.T) {
	r := &Registration{
		ID: "hand", URL: "http://localhost:1/", ASToken: "a", HSToken: "h", SenderLocalpart: "bot",
		Namespaces: Namespaces{Users: []Namespace{{Regex: "@hand_.*", Exclusive: true}}},
	}
	require.False(t, r.Namespaces.Users[0].matches("@hand_x"), "not compiled yet: matches nothing")
	require.NoError(t, r.validate())
	require.Equal(t, "http://localhost:1", r.URL)
	require.True(t, r.Namespaces.Users[0].matches("@hand_x"))

	re := r.Namespaces.Users[0].re
	require.NoError(t, r.validate())
	require.Same(t, re, r.Namespaces.Users[0].re, "validate is idempotent and does not recompile")

	r.Namespaces.Users[0].Regex = "@other_.*"
	require.NoError(t, r.validate())
	require.True(t, r.Namespaces.Users[0].matches("@other_x"), "a changed Regex is recompiled")
	require.False(t, r.Namespaces.Users[0].matches("@hand_x"))

	r.Namespaces.Users[0].Regex = "@(?<!x)"
	err := r.validate()
	require.ErrorIs(t, err, ErrInvalidRegistration)
	require.Contains(t, err.Error(), "namespaces.users[0].regex")
	require.Contains(t, err.Error(), "look-arounds")
	require.False(t, r.Namespaces.Users[0].matches("@other_x"), "the bad pattern left no stale regex behind")
	r.Namespaces.Users[0].Regex = "@other_.*"

	for _, c := range []struct {
		mutate func(*Registration)
		field  string
	}{
		{func(r *Registration) { r.ID = "" }, "id"},
		{func(r *Registration) { r.ID = "a|b" }, "id"},
		{func(r *Registration) { r.ASToken = "" }, "as_token"},
		{func(r *Registration) { r.HSToken = "" }, "hs_token"},
		{func(r *Registration) { r.HSToken = "tok\r\n" }, "hs_token"},
		{func(r *Registration) { r.SenderLocalpart = "" }, "sender_localpart"},
		{func(r *Registration) { r.SenderLocalpart = "bot@x" }, "sender_localpart"},
		{func(r *Registration) { r.URL = "localhost" }, "url"},
		{func(r *Registration) { r.URL = "unix://run/bridge.sock" }, "url"}, // unix:///run/bridge.sock is valid
		{func(r *Registration) { r.URL = "https://bridge:pa55word@localhost:1" }, "url"},
		{func(r *Registration) { r.URL = "https://localhost:70000" }, "url"},
		{func(r *Registration) { r.Namespaces.Rooms = make([]Namespace, 1001) }, "namespaces"},
		{func(r *Registration) { r.Namespaces.Rooms = []Namespace{{Regex: "!a"}, {Regex: "("}} }, "namespaces.rooms[1].regex"},
	} {
		bad := *r
		c.mutate(&bad)
		err := bad.validate()
		require.ErrorIs(t, err, ErrInvalidRegistration, c.field)
		var rerr *RegistrationError
		require.ErrorAs(t, err, &rerr)
		require.Equal(t, c.field, rerr.Field)
		require.Equal(t, "", rerr.Source)
		require.Contains(t, err.Error(), c.field)
	}

	none := &Registration{ID: "x", ASToken: "a", HSToken: "h", SenderLocalpart: "bot"}
	require.NoError(t, none.validate(), "URL \"\" means the service receives nothing")
}

func TestRegistrationNeverPrintsTokens(t *testing.T) {
	r, err := ParseRegistration([]byte(regYAML()))
	require.NoError(t, err)
	// New refuses credentials in the URL, but a Registration built by hand
	// may hold them before it is checked.
	r.URL = "http://user:pa55word@localhost:1"
	for _, s := range []string{
		fmt.Sprint(r), fmt.Sprint(*r), fmt.Sprintf("%v", r), fmt.Sprintf("%+v", *r), fmt.Sprintf("%#v", *r), fmt.Sprintf("[%s]", r),
	} {
		require.Contains(t, s, "bridge")
		require.NotContains(t, s, testASToken)
		require.NotContains(t, s, testHSToken)
		require.NotContains(t, s, "pa55word")
	}
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&buf, nil), slog.NewTextHandler(&buf, nil)} {
		slog.New(h).Info("loaded", "registration", r, "value", *r)
	}
	require.Contains(t, buf.String(), "bridge")
	require.NotContains(t, buf.String(), testASToken)
	require.NotContains(t, buf.String(), testHSToken)
	require.NotContains(t, buf.String(), "pa55word")
}

func TestRegistrationErrorMessage(t *testing.T) {
	err := &RegistrationError{Source: "/etc/synapse/irc.yaml", ID: "irc", Field: "url", Reason: "is wrong"}
	require.Equal(t, `invalid registration /etc/synapse/irc.yaml (id "irc"): url: is wrong`, err.Error())
	require.Equal(t, "invalid registration: the file is empty", (&RegistrationError{Reason: "the file is empty"}).Error())
	require.True(t, errors.Is(fmt.Errorf("Config.Services[0]: %w", err), ErrInvalidRegistration))
}

func TestUserID(t *testing.T) {
	r := &Registration{SenderLocalpart: "whatsappbot"}
	require.Equal(t, "@whatsappbot:example.org", r.UserID("example.org"))
	require.Equal(t, "@whatsappbot:localhost:8448", r.UserID("localhost:8448"))
}

func FuzzParseRegistration(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "registrations", "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)/2])                                              // truncated
		f.Add(bytes.Replace(data, []byte("exclusive: true"), nil, 1))          // entry without exclusive
		f.Add(bytes.Replace(data, []byte("url:"), []byte("uri:"), 1))          // no url
		f.Add(bytes.Replace(data, []byte(".*"), []byte("(?!x).*"), 1))         // look-ahead
		f.Add(bytes.Replace(data, []byte("id: "), []byte("id: |"), 1))         // '|' in id
		f.Add(bytes.Replace(data, []byte("\n  "), []byte("\n\t"), 1))          // tab indentation
		f.Add(bytes.Replace(data, []byte("true"), []byte("yes"), -1))          // YAML 1.1 booleans
		f.Add(bytes.Replace(data, []byte(": "), []byte(": &a "), 1))           // an anchor
		f.Add(bytes.Replace(data, []byte("_token: "), []byte("_token: 1"), 1)) // a number token?
	}
	f.Add([]byte(regYAML(set("namespaces", "&ns {<<: *ns}"))))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("<<: {<<: {<<: {id: x}}}\n"))
	f.Add([]byte(`{"id": "x", "url": null, "as_token": "a", "hs_token": "h", "sender_localpart": "b"}`))
	f.Add([]byte("---\n...\n"))
	f.Add([]byte("\xff\xfe"))
	f.Add([]byte(regYAML(set("namespaces", "{users: [{regex: '@w_\\w+:hs', exclusive: true}], aliases: [{regex: '#[^\\W\\d]\\b\\s', exclusive: false}]}"))))
	f.Add([]byte(regYAML(users("- regex: '@a_[\\b\\S]\\Q\\w'\n  exclusive: true"))))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRegistration(data)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidRegistration)
			var rerr *RegistrationError
			require.ErrorAs(t, err, &rerr)
			return
		}
		require.NoError(t, r.validate())
		require.NotEmpty(t, r.ID)
		require.NotEmpty(t, r.ASToken)
		require.NotEmpty(t, r.HSToken)
		require.NotEmpty(t, r.SenderLocalpart)
		if r.URL != "" {
			u, reason := regfile.CheckURL(r.URL)
			require.Empty(t, reason)
			require.Equal(t, r.URL, u, "URL has no trailing '/'")
		}
		for _, list := range [][]Namespace{r.Namespaces.Users, r.Namespaces.Aliases, r.Namespaces.Rooms} {
			for i := range list {
				require.NotNil(t, list[i].re)
				list[i].matches(r.ID)
			}
		}
	})
}

// TestValidateIsWhatNewChecks: Validate fails a registration built by hand
// with the error New gives, and passes one New accepts.
func TestValidateIsWhatNewChecks(t *testing.T) {
	var nilReg *Registration
	require.ErrorIs(t, nilReg.Validate(), ErrInvalidRegistration)
	bad := &Registration{ID: "x", ASToken: "a", HSToken: "h", SenderLocalpart: "bot", URL: "ftp://host"}
	err := bad.Validate()
	var regErr *RegistrationError
	require.ErrorAs(t, err, &regErr)
	_, newErr := New(testConfig(t, bad))
	require.Error(t, newErr)
	require.ErrorAs(t, newErr, &regErr)
	require.Equal(t, err.Error(), regErr.Error())
	require.NoError(t, (&Registration{ID: "x", ASToken: "a", HSToken: "h", SenderLocalpart: "bot", URL: "http://h/"}).Validate())
}
