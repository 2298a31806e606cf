package wire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of NewSender's timeouts.
const (
	// DefaultConnectTimeout bounds the time to obtain a connection: dial,
	// TLS handshake, or waiting for an idle connection.
	DefaultConnectTimeout = 15 * time.Second
	// DefaultAnswerTimeout bounds the time from obtaining a connection until
	// the answer is fully read: sending the body, the AS's processing, and
	// reading its answer.
	DefaultAnswerTimeout = 60 * time.Second
)

// maxAnswer is the most bytes of an answer's body that are read. A longer
// 2xx answer is a failure.
const maxAnswer = 64 << 10

// Settings of the transport NewSender builds when it is given no client.
const (
	// maxIdlePerHost keeps the connection of every AS (one transaction in
	// flight each), with headroom for a ping and for several ASes behind
	// one reverse proxy, which share a host.
	maxIdlePerHost = 16
	// writeBuffer lets a typical transaction (100 events of a few hundred
	// bytes) leave in one write.
	writeBuffer = 64 << 10
)

// Paths of the Application Service API, under the AS's base URL.
const (
	txnPath  = "/_matrix/app/v1/transactions/"
	pingPath = "/_matrix/app/v1/ping"
)

// Header values shared by every request. The slices have len == cap == 1,
// so an Add by a RoundTripper copies them instead of writing into them.
var (
	jsonContentType = []string{"application/json"}
)

// Endpoint is where and how to reach one application service. It is read at
// every call and not retained, so a changed registration takes effect at the
// next request.
type Endpoint struct {
	// URL is the AS's base URL from its registration: absolute, http or
	// https, without credentials, query or fragment; it may have a path. A
	// trailing slash is ignored.
	URL string
	// HSToken is sent as "Authorization: Bearer <HSToken>". It is never
	// written into a URL or an error, and is redacted from excerpts.
	HSToken string
	// Redact lists other secrets, such as the AS's as_token, to replace by
	// "<redacted>" in excerpts and error messages should the AS echo them.
	// Empty strings are ignored.
	Redact []string
	// QueryAuth also sends HSToken in the URL, as ?access_token=<HSToken>:
	// the legacy authentication of the Application Service API, for ASes
	// that predate the Authorization header (which is sent all the same).
	// It is insecure: URLs end up in the access logs of the AS and of
	// proxies. Errors never contain the URL, and the token, raw or
	// URL-escaped, is redacted from errors and excerpts.
	QueryAuth bool
}

// Result is what the AS answered: set whenever an answer arrived, also when
// the call failed because of it.
type Result struct {
	// Status is the HTTP status code; 0 when no answer arrived.
	Status int
	// Excerpt is the start of the answer's body, at most about 200 bytes,
	// with non-printable bytes replaced and HSToken and Endpoint.Redact
	// replaced by "<redacted>".
	Excerpt string
	// RetryAfter is how long a 429 (Too Many Requests) or 503 answer asks
	// the caller to wait, from its Retry-After header (seconds, or an
	// HTTP date counted from the answer's Date header, else from now);
	// zero when the header is absent, unreadable or in the past.
	RetryAfter time.Duration
}

// Sender PUTs transactions and POSTs pings to application services. It is
// safe for concurrent use; one Sender serves every AS.
type Sender struct {
	client         *http.Client
	unix           *unixDialer // for the unix:// URLs, whatever client is
	own            bool        // client was built by NewSender
	connectTimeout time.Duration
	answerTimeout  time.Duration
}

// NewSender returns a Sender that sends through client with the given
// timeouts; a timeout <= 0 means its default (DefaultConnectTimeout,
// DefaultAnswerTimeout).
//
// If client is nil, NewSender builds its own client: no proxy, keep-alive
// connections (an idle one per AS and more), response headers limited to
// 64 KiB, no transparent compression, and a dialer bounded by the connect
// timeout. CloseIdleConnections closes that client's idle connections.
//
// A caller's client is used through a shallow copy whose CheckRedirect
// refuses to follow redirects; client itself is not modified, and its
// Transport, Jar and Timeout are used as they are. The timeouts apply even
// if client has none: they are enforced through each request's context.
//
// The connect timer stops when the transport reports the connection
// (httptrace's GotConn, as http.Transport does); with a RoundTripper that
// reports nothing, it stops when the answer's headers arrive. When the
// connect timeout expires the request fails at once, but net/http lets the
// dial itself go on in the background for a later request, until the
// dialer's own timeout (NewSender's client: the connect timeout) or the
// transport's CloseIdleConnections ends it.
func NewSender(client *http.Client, connectTimeout, answerTimeout time.Duration) *Sender {
	if connectTimeout <= 0 {
		connectTimeout = DefaultConnectTimeout
	}
	if answerTimeout <= 0 {
		answerTimeout = DefaultAnswerTimeout
	}
	s := &Sender{connectTimeout: connectTimeout, answerTimeout: answerTimeout, unix: newUnixDialer(connectTimeout)}
	if client == nil {
		dialer := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
		s.client = &http.Client{Transport: &http.Transport{
			Proxy:                  nil, // an AS is reached directly; pass a client to use a proxy
			DialContext:            dialer.DialContext,
			ForceAttemptHTTP2:      true,
			TLSHandshakeTimeout:    connectTimeout,
			MaxIdleConns:           100,
			MaxIdleConnsPerHost:    maxIdlePerHost,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: maxAnswer,
			DisableCompression:     true,
			WriteBufferSize:        writeBuffer,
		}}
		s.own = true
	} else {
		c := *client
		s.client = &c
	}
	s.client.CheckRedirect = noRedirect
	return s
}

// noRedirect makes an http.Client return a 3xx answer instead of following
// it: an AS that redirects has not accepted the transaction.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// CloseIdleConnections closes the idle connections, and cancels the dials no
// request waits for any more, of the client NewSender built. It does nothing
// for a client the caller supplied: that client's connections are the
// caller's to manage.
func (s *Sender) CloseIdleConnections() {
	if s.own {
		s.client.CloseIdleConnections()
	}
	s.unix.client.CloseIdleConnections()
}

// PutTxn sends transaction txnID with body (from Body) to the AS at ep:
// PUT {URL}/_matrix/app/v1/transactions/{txnID} with the hs_token as a
// bearer token. It returns a nil error only when the AS answered 2xx with a
// JSON body.
//
// The request is marked idempotent (a transaction ID identifies it to the
// AS), so that if a kept-alive connection turns out to have been closed by
// the AS, the client resends the body on a new connection instead of
// failing. Errors: a *StatusError when the AS answered with something else
// than success, a *TimeoutError (ErrTimeout) when a timeout expired, ctx's
// error (context.Canceled, context.DeadlineExceeded) when ctx ended,
// ErrInvalidEndpoint for an unusable URL, and otherwise the connection
// error. Result is set whenever an answer arrived.
func (s *Sender) PutTxn(ctx context.Context, ep Endpoint, txnID int64, body []byte) (Result, error) {
	res, _, err := s.do(ctx, http.MethodPut, "transaction", ep, txnPath, strconv.FormatInt(txnID, 10), body)
	return res, err
}

// Ping asks the AS at ep whether it is reachable, as MSC2659 has a
// homeserver do: POST {URL}/_matrix/app/v1/ping with {"transaction_id":
// txnID} ({} when txnID is empty). It returns the round trip time, from
// sending the request until the answer was read, and the same results and
// errors as PutTxn.
func (s *Sender) Ping(ctx context.Context, ep Endpoint, txnID string) (time.Duration, Result, error) {
	body := []byte("{}")
	if txnID != "" {
		var err error
		if body, err = json.Marshal(struct {
			TxnID string `json:"transaction_id"`
		}{txnID}); err != nil {
			return 0, Result{}, fmt.Errorf("wire: ping: encoding the body: %w", err)
		}
	}
	res, rtt, err := s.do(ctx, http.MethodPost, "ping", ep, pingPath, "", body)
	return rtt, res, err
}

// do sends one request of the Application Service API and reads its
// answer: method to ep.URL + path + id, where id also names the request in
// errors, after what.
func (s *Sender) do(parent context.Context, method, what string, ep Endpoint, path, id string, body []byte) (Result, time.Duration, error) {
	secrets := ep.Redact
	var query string
	if ep.QueryAuth {
		query = "access_token=" + url.QueryEscape(ep.HSToken)
		// The token as it travels in the URL, should the AS echo it.
		secrets = append(slices.Clip(secrets), url.QueryEscape(ep.HSToken))
	}
	// fail builds the error; op strings are only built on failure.
	fail := func(err error) error {
		op := method + " " + what
		if id != "" {
			op += " " + id
		}
		return failure(op, err, ep.HSToken, secrets)
	}
	if parent.Err() != nil {
		return Result{}, 0, fail(contextError(parent))
	}
	client, target, own := s.client, strings.TrimRight(ep.URL, "/")+path+id, s.own
	socket, isUnix := UnixSocket(ep.URL)
	if isUnix {
		if !strings.HasPrefix(socket, "/") {
			return Result{}, 0, fail(fmt.Errorf("%w: a unix:// URL needs an absolute socket path (unix:///run/as.sock)", ErrInvalidEndpoint))
		}
		client, target, own = s.unix.client, s.unix.target(socket, path+id), true
	}
	ctx, cancel := context.WithCancelCause(parent)
	c := &call{
		cancel:         cancel,
		connectTimeout: s.connectTimeout,
		answerTimeout:  s.answerTimeout,
		ownDialer:      own,
	}
	c.trace.GotConn = c.gotConn
	defer c.finish()

	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, &c.trace), method, target, bytes.NewReader(body))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue repeats the URL
		}
		return Result{}, 0, fail(fmt.Errorf("%w: %w", ErrInvalidEndpoint, err))
	}
	if err := checkURL(req.URL); err != nil {
		return Result{}, 0, fail(err)
	}
	// Added after the check, which refuses a query in the AS's URL. No
	// error repeats the URL: see call.error.
	req.URL.RawQuery = query
	req.Header["Authorization"] = []string{"Bearer " + ep.HSToken}
	req.Header["Content-Type"] = jsonContentType
	// A zero-length Idempotency-Key is not sent; it lets the transport
	// resend on a new connection when a kept-alive one was closed by the AS
	// just as the request went out.
	req.Header["Idempotency-Key"] = nil
	if isUnix {
		req.Host = unixHost
	}

	c.start()
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return Result{}, 0, fail(c.error(parent, ctx, err))
	}
	c.answering() // in case the RoundTripper reports no GotConn
	buf := getBuffer()
	defer putBuffer(buf)
	answer, readErr := readAnswer(resp.Body, (*buf)[:0])
	*buf = answer
	resp.Body.Close()
	rtt := time.Since(start)

	res := Result{Status: resp.StatusCode, Excerpt: excerpt(answer, ep.HSToken, secrets)}
	if res.Status == http.StatusTooManyRequests || res.Status == http.StatusServiceUnavailable {
		res.RetryAfter = retryAfter(resp.Header, time.Now())
	}
	var reason string
	switch {
	case readErr != nil && parent.Err() != nil:
		return res, rtt, fail(contextError(parent))
	case res.Status < 200 || res.Status > 299:
		// A failure whatever the body; a partial excerpt still helps.
		reason = "status is not 2xx"
	case readErr != nil:
		return res, rtt, fail(fmt.Errorf("reading the answer: %w", c.error(parent, ctx, readErr)))
	case len(answer) > maxAnswer:
		reason = "answer larger than 64 KiB"
	case len(answer) == 0:
		reason = "empty answer, JSON expected"
	case !json.Valid(answer):
		reason = "answer is not JSON"
	default:
		return res, rtt, nil
	}
	return res, rtt, fail(&StatusError{Status: res.Status, Excerpt: res.Excerpt, Reason: reason})
}

// error returns the error to report for a request that failed with err: the
// parent's error if the parent ended; a *TimeoutError if one of the call's
// timers ended ctx, or if err is a timeout of the client's own (such as
// http.Client.Timeout, so that it does not pass for the end of the parent);
// else err without the URL that a *url.Error repeats.
func (c *call) error(parent, ctx context.Context, err error) error {
	if parent.Err() != nil {
		return contextError(parent)
	}
	var te *TimeoutError
	if errors.As(context.Cause(ctx), &te) {
		return te
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		c.mu.Lock()
		connecting := c.state == stateConnecting
		c.mu.Unlock()
		te := &TimeoutError{Connect: connecting}
		if connecting && c.ownDialer {
			te.After = c.connectTimeout // the dialer's timeout is the connect timeout
		}
		return te
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// contextError returns the error of a context that is done: ctx.Err(), and
// the cause too when it says more.
func contextError(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("%w: %w", err, cause)
	}
	return err
}

// checkURL reports whether u can be an AS's URL, without repeating it.
func checkURL(u *url.URL) error {
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: scheme must be http or https", ErrInvalidEndpoint)
	case u.Host == "":
		return fmt.Errorf("%w: no host", ErrInvalidEndpoint)
	case u.User != nil:
		return fmt.Errorf("%w: credentials in the URL are not supported", ErrInvalidEndpoint)
	case u.RawQuery != "" || u.ForceQuery:
		return fmt.Errorf("%w: a query is not allowed", ErrInvalidEndpoint)
	case u.Fragment != "":
		return fmt.Errorf("%w: a fragment is not allowed", ErrInvalidEndpoint)
	}
	return nil
}

// readAnswer appends body to buf until EOF, or until it holds more than
// maxAnswer bytes; reading to EOF lets the connection be reused.
func readAnswer(body io.Reader, buf []byte) ([]byte, error) {
	for len(buf) <= maxAnswer {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow
		}
		n, err := body.Read(buf[len(buf):min(cap(buf), maxAnswer+1)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// answerBuffers holds buffers for answers. Most answers are {}; a buffer
// that grew past keepBuffer is dropped rather than kept.
var answerBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, 512)
	return &b
}}

const keepBuffer = 4 << 10

func getBuffer() *[]byte { return answerBuffers.Get().(*[]byte) }

func putBuffer(b *[]byte) {
	if cap(*b) <= keepBuffer {
		*b = (*b)[:0]
		answerBuffers.Put(b)
	}
}

// call enforces the timeouts of one request through its context: the
// connect timer runs until a connection is obtained, then the answer timer
// until finish. One timer serves both; fire tells them apart by state.
type call struct {
	cancel         context.CancelCauseFunc
	connectTimeout time.Duration
	answerTimeout  time.Duration
	ownDialer      bool // the dialer is NewSender's, bounded by connectTimeout
	trace          httptrace.ClientTrace

	mu    sync.Mutex
	state callState
	timer *time.Timer
}

type callState uint8

const (
	stateNew callState = iota
	stateConnecting
	stateAnswering
	stateFinished
)

// start arms the connect timer. The lock keeps fire from running before
// the state says what it times.
func (c *call) start() {
	c.mu.Lock()
	c.state = stateConnecting
	c.timer = time.AfterFunc(c.connectTimeout, c.fire)
	c.mu.Unlock()
}

// gotConn is the httptrace hook: the request has its connection.
func (c *call) gotConn(httptrace.GotConnInfo) { c.answering() }

// answering stops the connect timer and starts the answer timer, once; it
// does nothing if the connect timer already fired.
func (c *call) answering() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateConnecting || !c.timer.Stop() {
		return
	}
	c.state = stateAnswering
	c.timer.Reset(c.answerTimeout)
}

// fire ends the request with the timeout of the current state.
func (c *call) fire() {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	switch st {
	case stateConnecting:
		c.cancel(&TimeoutError{Connect: true, After: c.connectTimeout})
	case stateAnswering:
		c.cancel(&TimeoutError{After: c.answerTimeout})
	}
}

// finish stops the timer and releases the request's context.
func (c *call) finish() {
	c.mu.Lock()
	c.state = stateFinished
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	c.cancel(nil)
}
