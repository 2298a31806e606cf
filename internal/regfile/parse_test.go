package regfile

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

func TestParseErrorNamesTheService(t *testing.T) {
	_, err := Parse([]byte("id: bridge\nas_token: [secret]\n"))
	require.Equal(t, &Error{ID: "bridge", Field: "as_token", Reason: "must be a string, but it is a list (line 2)"}, err)
	require.Equal(t, "as_token: must be a string, but it is a list (line 2)", err.Error())

	_, err = Parse([]byte("as_token: a\n"))
	require.Equal(t, &Error{Field: "id", Reason: "missing: it is required"}, err)
}

func TestParseReadsEveryField(t *testing.T) {
	f, err := Parse([]byte(`
base: &base {exclusive: true}
id: bridge
url: http://localhost:1/
as_token: "yes"
hs_token: h
sender_localpart: bot
rate_limited: off
receive_ephemeral: yes
de.sorunome.msc2409.push_ephemeral: null
org.matrix.msc3202: true
io.element.msc4190: !!bool "on"
protocols: [irc]
namespaces:
  users: [{<<: *base, regex: "@irc_.*"}]
  rooms: []
`))
	require.Nil(t, err)
	no := false
	require.Equal(t, &File{
		ID: "bridge", URL: "http://localhost:1/", ASToken: "yes", HSToken: "h", SenderLocalpart: "bot",
		Users:       []Namespace{{Regex: "@irc_.*", Exclusive: true}},
		Protocols:   []string{"irc"},
		RateLimited: &no, ReceiveEphemeral: true, MSC3202: true, MSC4190: true,
	}, f)
}

// write returns f as a YAML document, written plainly.
func write(f *File) ([]byte, error) {
	doc := map[string]any{
		"id": f.ID, "as_token": f.ASToken, "hs_token": f.HSToken, "sender_localpart": f.SenderLocalpart,
		"receive_ephemeral": f.ReceiveEphemeral, "de.sorunome.msc2409.push_ephemeral": f.PushEphemeral,
		"org.matrix.msc3202": f.MSC3202, "io.element.msc4190": f.MSC4190, "url": nil,
	}
	if f.URL != "" {
		doc["url"] = f.URL
	}
	if f.RateLimited != nil {
		doc["rate_limited"] = *f.RateLimited
	}
	if f.Protocols != nil {
		doc["protocols"] = f.Protocols
	}
	ns := map[string]any{}
	for key, list := range map[string][]Namespace{"users": f.Users, "aliases": f.Aliases, "rooms": f.Rooms} {
		var entries []map[string]any
		for _, n := range list {
			entries = append(entries, map[string]any{"regex": n.Regex, "exclusive": n.Exclusive})
		}
		if entries != nil {
			ns[key] = entries
		}
	}
	if len(ns) > 0 {
		doc["namespaces"] = ns
	}
	return yaml.Marshal(doc)
}

// FuzzParse checks that Parse never panics, that its errors say what is
// wrong, and that it reads again what it read, written out plainly.
func FuzzParse(f *testing.F) {
	f.Add([]byte("id: x\nurl: null\nas_token: a\nhs_token: h\nsender_localpart: b\n"))
	f.Add([]byte("a: &a {id: x}\n<<: [*a, {url: null}]\nas_token: on\nhs_token: h\nsender_localpart: b\n"))
	f.Add([]byte("id: x\nid: y\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("---\n...\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			require.NotEmpty(t, err.Reason)
			require.Nil(t, file)
			return
		}
		again, werr := write(file)
		if werr != nil {
			t.Skip("yaml.Marshal cannot write it:", werr)
		}
		reread, err := Parse(again)
		require.Nil(t, err, "%s", again)
		require.Equal(t, file, reread, "%s", again)
	})
}
