package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// escapeAll spells every character of s as a JSON \u escape.
func escapeAll(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r > 0xFFFF {
			r1, r2 := (r-0x10000)>>10+0xD800, (r-0x10000)&0x3FF+0xDC00
			fmt.Fprintf(&b, `\u%04x\u%04X`, r1, r2)
			continue
		}
		fmt.Fprintf(&b, `\u%04X`, r)
	}
	return b.String()
}

// percentAll percent-encodes every byte of s.
func percentAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02x", s[i])
	}
	return b.String()
}

func TestRedactFindsEverySpellingOfASecret(t *testing.T) {
	const secret = `hs<tok>&"/é😀`
	goJSON, err := json.Marshal(secret) // Go escapes <, > and & as \u003c...
	require.NoError(t, err)
	spellings := map[string]string{
		"raw":                        secret,
		"Go's JSON encoding":         string(goJSON[1 : len(goJSON)-1]),
		"every character escaped":    escapeAll(secret),
		"query-escaped":              url.QueryEscape(secret),
		"path-escaped":               url.PathEscape(secret),
		"every byte percent-encoded": percentAll(secret),
		"mixed":                      `hs\u003ctok%3E&\"\/` + "é" + escapeAll("😀"),
	}
	for name, spelled := range spellings {
		t.Run(name, func(t *testing.T) {
			answer := []byte(`{"error":"bad token ` + spelled + ` given"}`)
			got := string(redact(answer, secret, nil))
			require.Equal(t, `{"error":"bad token `+redactedMark+` given"}`, got)
		})
	}
	t.Run("a second secret", func(t *testing.T) {
		got := redact([]byte("a "+escapeAll("as-1")+" b"), "hs-1", []string{"", "as-1"})
		require.Equal(t, "a "+redactedMark+" b", string(got))
	})
	t.Run("nothing to redact", func(t *testing.T) {
		in := []byte(`{"error":"\u0041 100% fine"}`)
		got := redact(in, secret, nil)
		require.Equal(t, in, got)
	})
}

// FuzzRedact checks that no spelling of the secret survives: what is left
// between the marks holds it neither as is nor once its escapes are
// decoded.
func FuzzRedact(f *testing.F) {
	f.Add([]byte(`{"error":"bad hs\u003ctok\u003e"}`), "hs<tok>")
	f.Add([]byte(`token=hs%3Ctok%3E&x=1`), "hs<tok>")
	f.Add([]byte(`\ud83d\ude00 and %F0%9F%98%80`), "😀")
	f.Add([]byte(`\u12 %zz \`), "x")
	f.Add([]byte(">\x80\x80"), ">\x80")
	f.Fuzz(func(t *testing.T, answer []byte, secret string) {
		if secret == "" {
			return
		}
		out := redact(answer, secret, nil)
		for _, kept := range bytes.Split(out, []byte(redactedMark)) {
			if bytes.Contains(kept, []byte(secret)) || bytes.Contains(decode(kept).text, []byte(secret)) {
				t.Fatalf("redact(%q) = %q keeps %q", answer, out, secret)
			}
		}
	})
}
