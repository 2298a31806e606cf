package astest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The paths of the Application Service API that a Server answers.
const (
	txnPrefix = "/_matrix/app/v1/transactions/"
	pingPath  = "/_matrix/app/v1/ping"
)

// Server is a fake application service listening on 127.0.0.1. It is safe
// for concurrent use: a test changes its behaviour and reads what it
// recorded while requests arrive.
type Server struct {
	srv     *httptest.Server
	hsToken string
	report  func(problem string) // t.Errorf for a server made by New; nil otherwise

	closeOnce sync.Once
	closing   chan struct{} // closed by Close: waits end, requests are dropped
	countOnly atomic.Bool

	// Counts, read by Stats without the lock.
	arrived, finished, failed, txns, events atomic.Int64
	inFlight, maxInFlight                   atomic.Int64 // transaction PUTs being handled

	mu        sync.Mutex
	respond   func(Request) Answer // nil: answer 200
	hang      chan struct{}        // non-nil: requests wait until it is closed
	delay     time.Duration
	requests  []Request
	bodies    map[string][]byte // txn ID → the first body received under it
	delivered []string          // event IDs, in order of first successful delivery
	seen      map[string]int    // event ID → successful deliveries
	problems  []string
	changed   chan struct{} // closed at the next change; nil until a wait asks for it
}

// Answer says how a Server answers one request; Respond installs a
// function that returns one for each request. The zero Answer is a
// success: 200 with {}.
type Answer struct {
	// Status is the HTTP status of the answer: 200 (or 0) answers {},
	// anything else an error body {"errcode":"M_UNKNOWN",...}.
	Status int
	// Delay, when positive, makes the server wait this long before it
	// answers, instead of the delay set with Server.Delay.
	Delay time.Duration
	// Hold, when not nil, makes the server wait until it is closed before
	// it answers.
	Hold <-chan struct{}
	// Drop makes the server close the connection instead of answering, as
	// an application service that crashed does. The request is recorded
	// with Status 0.
	Drop bool
	// Recorded, when not nil, is called once the request is recorded and
	// before the answer is written: the moment at which the application
	// service has processed a transaction but its sender does not know it
	// yet. It may block.
	Recorded func()
	// Answered, when not nil, is called once the answer is written and
	// flushed to the connection.
	Answered func()
}

// New starts a Server for a test: it answers requests that carry hsToken
// ("Authorization: Bearer hsToken"), is closed when the test and its
// subtests end, and reports each problem it finds with tb.Errorf.
func New(tb testing.TB, hsToken string) *Server {
	tb.Helper()
	s := newServer(hsToken, func(problem string) { tb.Errorf("astest: %s", problem) })
	tb.Cleanup(s.Close)
	return s
}

// NewServer starts a Server outside a test: it answers requests that carry
// hsToken ("Authorization: Bearer hsToken"). Call Close when done, and
// read what went wrong with Problems.
func NewServer(hsToken string) *Server {
	return newServer(hsToken, nil)
}

func newServer(hsToken string, report func(string)) *Server {
	s := &Server{
		hsToken: hsToken,
		report:  report,
		closing: make(chan struct{}),
		bodies:  map[string][]byte{},
		seen:    map[string]int{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// URL returns the server's base URL, http://127.0.0.1:port: the url of an
// application service's registration.
func (s *Server) URL() string { return s.srv.URL }

// HSToken returns the hs_token the server expects: the hs_token of an
// application service's registration.
func (s *Server) HSToken() string { return s.hsToken }

// Close shuts the server down: requests still waiting (Hang, Delay,
// Answer.Hold) are dropped unanswered and recorded with Status 0. Close
// returns once every request has ended; what was recorded stays readable.
// Calls after the first do nothing.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.srv.Close()
	})
}

// FailWith makes the server answer request n (counting every request it
// received, from 0: Request.N) with the status status(n), or with success
// when that is 0 or 200. FailWith(nil) makes every request succeed. It
// replaces what Respond, Down and Up installed.
func (s *Server) FailWith(status func(n int) int) {
	if status == nil {
		s.Respond(nil)
		return
	}
	s.Respond(func(r Request) Answer { return Answer{Status: status(r.N)} })
}

// Down makes the server answer every request with 503, as an application
// service that is restarting does, until Up.
func (s *Server) Down() {
	s.FailWith(func(int) int { return http.StatusServiceUnavailable })
}

// Up makes the server answer every request with success again: it removes
// what Down, FailWith or Respond installed.
func (s *Server) Up() { s.Respond(nil) }

// Respond makes the server answer each request with the Answer that answer
// returns for it. answer is called as the request arrives, with the body
// read and decoded, once the hs_token, the path and the body have passed
// the server's checks (a request that fails them gets 403, 404 or 400
// without answer being called). It may be called concurrently and must not
// modify the Request. Respond(nil) makes every request succeed.
func (s *Server) Respond(answer func(Request) Answer) {
	s.mu.Lock()
	s.respond = answer
	s.mu.Unlock()
}

// Hang makes every request that arrives from now on wait, unanswered,
// until Release (or until its sender gives up: it is then recorded with
// Status 0).
func (s *Server) Hang() {
	s.mu.Lock()
	if s.hang == nil {
		s.hang = make(chan struct{})
	}
	s.mu.Unlock()
}

// Release lets the requests that Hang holds be answered, and stops holding
// new ones.
func (s *Server) Release() {
	s.mu.Lock()
	if s.hang != nil {
		close(s.hang)
		s.hang = nil
	}
	s.mu.Unlock()
}

// Delay makes the server wait d before it answers each request that
// arrives from now on, as a slow application service does; 0 answers at
// once. An Answer's own Delay takes precedence.
func (s *Server) Delay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

// CountOnly makes the server keep nothing of the requests that end from
// now on but their counts (Stats): no Requests, Delivered, Deliveries, nor
// the bodies that the check of resent transactions needs, so its memory
// does not grow with the traffic. For benchmarks and long runs; wait on
// Stats with Wait, as WaitDelivered no longer advances.
func (s *Server) CountOnly() { s.countOnly.Store(true) }

// serve answers one request: it reads and checks it, decides the answer,
// waits as told, records the request, then answers.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	req := Request{
		Method:      r.Method,
		Path:        r.URL.Path,
		Query:       r.URL.RawQuery,
		Auth:        r.Header.Get("Authorization"),
		ContentType: r.Header.Get("Content-Type"),
		Header:      r.Header.Clone(),
		Arrived:     time.Now(),
	}
	body, err := io.ReadAll(r.Body)
	req.Body, req.Truncated = body, err != nil
	txnID, onTxnPath := strings.CutPrefix(req.Path, txnPrefix)
	isTxn := onTxnPath && req.Method == http.MethodPut && txnID != "" && !strings.Contains(txnID, "/")
	var problems []string
	if onTxnPath {
		req.TxnID = txnID
	}
	if isTxn && !req.Truncated {
		req.Txn, problems = decodeTxn(body)
	}
	if isTxn {
		defer s.inFlight.Add(-1)
		for n := s.inFlight.Add(1); ; {
			top := s.maxInFlight.Load()
			if n <= top || s.maxInFlight.CompareAndSwap(top, n) {
				break
			}
		}
	}
	respond, hang, delay := s.arrive(&req, isTxn, problems)

	var ans Answer
	errBody := ""
	switch {
	case req.Truncated:
		ans.Drop = true
	case req.Auth != "Bearer "+s.hsToken:
		ans.Status, errBody = http.StatusForbidden, `{"errcode":"M_FORBIDDEN","error":"astest: wrong hs_token"}`
	case isTxn && req.Txn == nil:
		ans.Status, errBody = http.StatusBadRequest, `{"errcode":"M_NOT_JSON","error":"astest: body is not a transaction"}`
	case !isTxn && (req.Method != http.MethodPost || req.Path != pingPath):
		ans.Status, errBody = http.StatusNotFound, `{"errcode":"M_UNRECOGNIZED","error":"astest: unknown endpoint"}`
	case respond != nil:
		ans = respond(req)
	}
	status := ans.Status
	if status == 0 {
		status = http.StatusOK
	}
	if ans.Delay > 0 {
		delay = ans.Delay
	}
	if ans.Drop || !s.wait(r.Context(), hang, delay, ans.Hold) {
		status = 0
	}
	req.Status, req.Done = status, time.Now()
	s.record(req, isTxn)
	if ans.Recorded != nil {
		ans.Recorded()
	}
	if status == 0 {
		panic(http.ErrAbortHandler) // close the connection, answer nothing
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	switch {
	case status == http.StatusOK:
		_, _ = io.WriteString(w, "{}")
	case errBody != "":
		_, _ = io.WriteString(w, errBody)
	default:
		_, _ = fmt.Fprintf(w, `{"errcode":"M_UNKNOWN","error":"failing on purpose (%d)"}`, status)
	}
	if ans.Answered != nil {
		_ = http.NewResponseController(w).Flush()
		ans.Answered()
	}
}

// arrive numbers a request, checks a transaction against the earlier
// bodies of its ID, and returns how the server behaves now.
func (s *Server) arrive(req *Request, isTxn bool, problems []string) (func(Request) Answer, <-chan struct{}, time.Duration) {
	s.mu.Lock()
	req.N = int(s.arrived.Add(1) - 1)
	if isTxn && !req.Truncated && !s.countOnly.Load() {
		if prev, ok := s.bodies[req.TxnID]; !ok {
			s.bodies[req.TxnID] = req.Body
		} else if !bytes.Equal(prev, req.Body) {
			problems = append(problems, "sent again with a different body: "+diff(prev, req.Body))
		}
	}
	for i, p := range problems {
		problems[i] = "txn " + req.TxnID + ": " + p
	}
	s.problems = append(s.problems, problems...)
	respond, hang, delay := s.respond, s.hang, s.delay
	s.notifyLocked()
	s.mu.Unlock()
	if s.report != nil {
		for _, p := range problems {
			s.report(p)
		}
	}
	return respond, hang, delay
}

// wait waits for hang to be released, then d, then hold. It reports false
// if the request's sender gave up or the server closed first.
func (s *Server) wait(ctx context.Context, hang <-chan struct{}, d time.Duration, hold <-chan struct{}) bool {
	if hang != nil && !s.until(ctx, hang) {
		return false
	}
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		case <-s.closing:
			return false
		}
	}
	return hold == nil || s.until(ctx, hold)
}

// until waits for c to be closed, and reports false if the request's
// sender gave up or the server closed first.
func (s *Server) until(ctx context.Context, c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	case <-ctx.Done():
	case <-s.closing:
	}
	return false
}

// record keeps a request that ended and counts it.
func (s *Server) record(req Request, isTxn bool) {
	ok := req.Status == http.StatusOK
	delivered := ok && isTxn && req.Txn != nil
	s.mu.Lock()
	s.finished.Add(1)
	if !ok {
		s.failed.Add(1)
	}
	if delivered {
		s.txns.Add(1)
		s.events.Add(int64(len(req.Txn.Events)))
	}
	if !s.countOnly.Load() {
		s.requests = append(s.requests, req)
		if delivered {
			for _, e := range req.Txn.Events {
				if s.seen[e.ID] == 0 {
					s.delivered = append(s.delivered, e.ID)
				}
				s.seen[e.ID]++
			}
		}
	}
	s.notifyLocked()
	s.mu.Unlock()
}

// notifyLocked wakes the waits; s.mu is held.
func (s *Server) notifyLocked() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// diff says where b first differs from a.
func diff(a, b []byte) string {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	lo := max(0, n-30)
	return fmt.Sprintf("%d then %d bytes, first difference at byte %d: %q, then %q",
		len(a), len(b), n, a[lo:min(len(a), n+30)], b[lo:min(len(b), n+30)])
}

// Requests returns every request that has ended (answered, dropped, or
// given up by its sender), in the order they ended.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Delivered returns the IDs of the events the server received in
// transactions it answered with 200, in the order of their first such
// delivery.
func (s *Server) Delivered() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.delivered)
}

// Deliveries returns how many transactions answered with 200 carried the
// event eventID: 1 when it was delivered once, more when it was delivered
// again.
func (s *Server) Deliveries(eventID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[eventID]
}

// Problems returns what the server found wrong in what it received, in
// the order it found it: a transaction ID sent again with another body, a
// body that is not JSON or has no "events", the two ephemeral keys (or the
// two one-time key count keys) with different content.
func (s *Server) Problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.problems)
}

// Stats counts what the server received so far.
type Stats struct {
	// Arrived counts the requests that arrived, ended or not.
	Arrived int
	// Requests counts the requests that ended: answered, dropped, or
	// given up by their sender.
	Requests int
	// Failed counts the requests that ended without a 200 answer.
	Failed int
	// Txns counts the transactions answered with 200, a transaction sent
	// again counted again.
	Txns int
	// Events counts the events in those transactions.
	Events int
	// MaxInFlight is the most transaction PUTs the server handled at
	// once. A scheduler sends one at a time per service, so with one
	// service on the server anything above 1 breaks that promise.
	MaxInFlight int
}

// Stats returns the server's counts. It is cheap enough to call in a busy
// loop.
func (s *Server) Stats() Stats {
	return Stats{
		Arrived:  int(s.arrived.Load()),
		Requests: int(s.finished.Load()),
		Failed:   int(s.failed.Load()),
		Txns:     int(s.txns.Load()),
		Events:   int(s.events.Load()),

		MaxInFlight: int(s.maxInFlight.Load()),
	}
}

// Wait returns nil once cond returns true, or ctx.Err() (wrapped) if ctx
// ends first. cond is called now and again after each change on the
// server (a request arriving or ending); it may call the server's methods.
func (s *Server) Wait(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		changed := s.changed
		s.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("astest: condition not met: %w", ctx.Err())
		}
	}
}

// WaitDelivered waits until the server has received n distinct events in
// transactions it answered with 200 (len(Delivered()) >= n). It returns
// an error wrapping ctx.Err() if ctx ends first.
func (s *Server) WaitDelivered(ctx context.Context, n int) error {
	count := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.delivered)
	}
	if err := s.Wait(ctx, func() bool { return count() >= n }); err != nil {
		return fmt.Errorf("astest: %d of %d events delivered: %w", count(), n, ctx.Err())
	}
	return nil
}

// WaitArrived waits until n requests have arrived, whether answered yet or
// not: with Hang, until n requests are in flight. It returns an error
// wrapping ctx.Err() if ctx ends first.
func (s *Server) WaitArrived(ctx context.Context, n int) error {
	if err := s.Wait(ctx, func() bool { return s.Stats().Arrived >= n }); err != nil {
		return fmt.Errorf("astest: %d of %d requests arrived: %w", s.Stats().Arrived, n, ctx.Err())
	}
	return nil
}
