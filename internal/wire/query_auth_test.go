package wire

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// queryAS is an AS that records the query and Authorization header of each
// request and answers as answer says.
type queryAS struct {
	*httptest.Server
	mu      sync.Mutex
	queries []url.Values
	raw     []string
	auth    []string
	paths   []string
}

func startQueryAS(t *testing.T, answer http.HandlerFunc) *queryAS {
	t.Helper()
	as := &queryAS{}
	as.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		as.mu.Lock()
		as.queries = append(as.queries, r.URL.Query())
		as.raw = append(as.raw, r.URL.RawQuery)
		as.auth = append(as.auth, r.Header.Get("Authorization"))
		as.paths = append(as.paths, r.URL.Path)
		as.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(as.Close)
	return as
}

// oddToken is a token with characters a query must escape.
const oddToken = "hs+tok/en=with&odd?chars %"

func TestQueryAuthSendsTokenInQueryAndHeader(t *testing.T) {
	as := startQueryAS(t, answer(200, `{}`))
	s := newSender(t, nil, 0, 0)
	ep := Endpoint{URL: as.URL + "/base/", HSToken: oddToken, QueryAuth: true}
	_, err := s.PutTxn(t.Context(), ep, 7, []byte(`{"events":[]}`))
	require.NoError(t, err)
	_, _, err = s.Ping(t.Context(), ep, "p")
	require.NoError(t, err)

	require.Equal(t, []string{"/base/_matrix/app/v1/transactions/7", "/base/_matrix/app/v1/ping"}, as.paths)
	for i := range 2 {
		require.Equal(t, url.Values{"access_token": {oddToken}}, as.queries[i], "the token, escaped in the URL")
		require.Equal(t, "Bearer "+oddToken, as.auth[i], "the header is sent as well")
	}
}

func TestNoQueryAuthByDefault(t *testing.T) {
	as := startQueryAS(t, answer(200, `{}`))
	s := newSender(t, nil, 0, 0)
	_, err := s.PutTxn(t.Context(), Endpoint{URL: as.URL, HSToken: hsToken}, 1, []byte(`{"events":[]}`))
	require.NoError(t, err)
	_, _, err = s.Ping(t.Context(), Endpoint{URL: as.URL, HSToken: hsToken}, "p")
	require.NoError(t, err)
	require.Equal(t, []string{"", ""}, as.raw)
	require.Equal(t, []string{"Bearer " + hsToken, "Bearer " + hsToken}, as.auth)
}

func TestQueryAuthTokenNeverInErrorsOrExcerpts(t *testing.T) {
	escaped := url.QueryEscape(oddToken)
	check := func(t *testing.T, shown ...string) {
		t.Helper()
		for _, s := range shown {
			require.NotContains(t, s, oddToken)
			require.NotContains(t, s, escaped)
		}
	}

	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		s := newSender(t, nil, 0, 0)
		ep := Endpoint{URL: "http://" + addr, HSToken: oddToken, QueryAuth: true}
		_, err = s.PutTxn(t.Context(), ep, 1, []byte(`{"events":[]}`))
		require.Error(t, err)
		var opErr *net.OpError
		require.ErrorAs(t, err, &opErr)
		check(t, err.Error())
		require.NotContains(t, err.Error(), "access_token", "no URL in the error")
		_, _, err = s.Ping(t.Context(), ep, "p")
		require.Error(t, err)
		check(t, err.Error())
		require.NotContains(t, err.Error(), "access_token", "no URL in the error")
	})

	t.Run("AS echoes the URL", func(t *testing.T) {
		as := startQueryAS(t, func(w http.ResponseWriter, r *http.Request) {
			answer(403, `{"error":"bad `+r.URL.String()+` and `+r.URL.Query().Get("access_token")+`"}`)(w, r)
		})
		s := newSender(t, nil, 0, 0)
		res, err := s.PutTxn(t.Context(), Endpoint{URL: as.URL, HSToken: oddToken, QueryAuth: true}, 1, []byte(`{"events":[]}`))
		var se *StatusError
		require.ErrorAs(t, err, &se)
		require.Contains(t, res.Excerpt, "<redacted>")
		check(t, res.Excerpt, se.Excerpt, err.Error())
	})
}
