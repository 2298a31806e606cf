package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTokensEchoedInAnySpellingAreRedacted: an AS that echoes the tokens
// JSON-escaped (as Go's encoder writes <, > and &) or percent-encoded must
// not get them into Status or the logs.
func TestTokensEchoedInAnySpellingAreRedacted(t *testing.T) {
	const hsToken, asToken = "hs<tok>&1", "as<tok>&2"
	escaped, err := json.Marshal(hsToken) // "hs\u003ctok\u003e\u00261"
	require.NoError(t, err)
	require.NotContains(t, string(escaped), hsToken, "the encoder escapes the token")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"errcode":"M_FORBIDDEN","error":"bad token %s, as %s"}`,
			escaped[1:len(escaped)-1], url.QueryEscape(asToken))
	}))
	defer srv.Close()
	r := &Registration{ID: "a", URL: srv.URL, HSToken: hsToken, ASToken: asToken, SenderLocalpart: "abot",
		Namespaces: Namespaces{Users: []Namespace{{Regex: "@a_.*", Exclusive: true}}}}
	cfg := testConfig(t, r)
	logs := &logRecorder{}
	cfg.Logger = slog.New(logs)
	s := start(t, cfg)
	ctx := context.Background()
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")))
	waitDown(t, s, "a")
	st, err := s.Status(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, st.LastHTTPStatus)
	shown := append([]string{st.LastError, st.LastAnswer}, logs.texts()...)
	for _, text := range shown {
		for _, secret := range []string{hsToken, asToken} {
			for _, spelling := range []string{secret, string(mustJSON(t, secret)), url.QueryEscape(secret)} {
				assert.NotContains(t, text, strings.Trim(spelling, `"`))
			}
		}
	}
	assert.Contains(t, st.LastAnswer, "<redacted>")
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}
