package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
)

// frontMode says what the front of the mautrix AS does with one PUT of a
// transaction.
type frontMode int

const (
	// pass hands the request to mautrix and its answer back.
	pass frontMode = iota
	// processThen500 hands the request to mautrix, lets it process the
	// transaction in full, and answers 500 instead of mautrix's answer: the
	// answer was lost on the way back.
	processThen500
	// processThenDrop hands the request to mautrix, lets it process the
	// transaction in full, and closes the connection without an answer.
	processThenDrop
	// refuse503 answers 503 without handing the request to mautrix: the AS
	// is down.
	refuse503
)

func (m frontMode) String() string {
	return [...]string{"pass", "processThen500", "processThenDrop", "refuse503"}[m]
}

// put is one PUT /_matrix/app/v1/transactions/{txnId} that reached the
// front of the mautrix AS.
type put struct {
	TxnID       string
	Attempt     int // 1 for the first PUT of TxnID
	Mode        frontMode
	Body        []byte
	ContentType string
	RawQuery    string
	// MautrixStatus is what mautrix's handler answered, 0 when the front
	// did not ask it (refuse503).
	MautrixStatus int
	MautrixAnswer string
	// Txn is Body decoded with mautrix's own appservice.Transaction type,
	// separately from the decoding mautrix's handler does.
	Txn       appservice.Transaction
	DecodeErr error
}

// mautrixAS is mautrix's appservice.AppService running in-process as the
// receiving application service, set up as a mautrix bridge sets it up.
//
// Its HTTP handler (AppService.Router, which routes PUT
// /_matrix/app/v1/transactions/{txnID} to AppService.PutTransaction and POST
// /_matrix/app/v1/ping to AppService.PostPing) is served on 127.0.0.1 by an
// httptest server, behind a front that records every transaction PUT and,
// as its policy says, lets mautrix process a transaction and then loses the
// answer. Everything mautrix hands the application goes through an
// appservice.EventProcessor (ExecMode Sync, as bridgev2 uses it) into App.
type mautrixAS struct {
	t   *testing.T
	AS  *appservice.AppService
	EP  *appservice.EventProcessor
	Reg *appservice.Registration // mautrix's registration; Reg.URL is the front's URL
	App *application
	Log *logRecorder

	srv *httptest.Server
	hs  *httptest.Server // stands in for the homeserver's client API; must never be called

	mu       sync.Mutex
	policy   func(txnID string, attempt int) frontMode
	attempts map[string]int
	puts     []put
	hold     chan struct{} // while non-nil, transaction PUTs wait for it to close
	arrived  int           // transaction PUTs that reached the front
}

// handledTypes are the event types the application registers handlers
// for, as a bridge does for what it bridges. mautrix's EventProcessor
// drops an event of a type without a handler, so every type the tests send
// is here.
var handledTypes = []event.Type{
	event.StateMember,
	event.StateRoomName,
	typeCustomState,
	event.EventMessage,
	event.EventReaction,
	event.EventRedaction,
	event.EventEncrypted,
	typeCustomEvent,
	event.EphemeralEventTyping,
	event.EphemeralEventReceipt,
	event.EphemeralEventPresence,
	event.ToDeviceEncrypted,
	event.ToDeviceRoomKeyRequest,
	typeCustomToDevice,
}

var (
	typeCustomEvent    = event.Type{Type: "com.example.interop.custom", Class: event.MessageEventType}
	typeCustomState    = event.Type{Type: "com.example.interop.state", Class: event.StateEventType}
	typeCustomToDevice = event.Type{Type: "com.example.interop.to_device", Class: event.ToDeviceEventType}
)

// newMautrixAS starts mautrix's AppService on 127.0.0.1. policy decides
// what the front does with each transaction PUT (nil: pass everything).
// Everything it starts is stopped by t.Cleanup; register the scheduler
// after it, so that the scheduler stops first.
func newMautrixAS(t *testing.T, policy func(txnID string, attempt int) frontMode) *mautrixAS {
	t.Helper()
	m := &mautrixAS{
		t:        t,
		App:      newApplication(),
		Log:      &logRecorder{},
		policy:   policy,
		attempts: map[string]int{},
	}

	// mautrix wants a homeserver URL for the clients it would create; it
	// creates none here, and this stub on 127.0.0.1 fails the test if it is
	// ever called.
	m.hs = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("mautrix called the homeserver: %s %s", r.Method, r.URL.Path)
		w.WriteHeader(http.StatusInternalServerError)
	}))

	rateLimited := false
	m.Reg = &appservice.Registration{
		ID:              serviceID,
		AppToken:        "interop-as-token-5f1c0e9a",
		ServerToken:     hsToken,
		SenderLocalpart: botLocalpart,
		RateLimited:     &rateLimited,
		Namespaces: appservice.Namespaces{
			UserIDs: appservice.NamespaceList{
				{Regex: "^@" + botLocalpart + ":example\\.org$", Exclusive: true},
				{Regex: "^@interop_.*:example\\.org$", Exclusive: true},
			},
		},
		// The opt-ins of a mautrix bridge with end-to-bridge encryption in
		// appservice mode (bridgev2/bridgeconfig: EphemeralEvents and
		// SoruEphemeralEvents from one setting, MSC3202 from
		// encryption.appservice).
		EphemeralEvents:     true,
		SoruEphemeralEvents: true,
		MSC3202:             true,
	}

	as, err := appservice.CreateFull(appservice.CreateOpts{
		Registration:     m.Reg,
		HomeserverDomain: serverName,
		HomeserverURL:    m.hs.URL,
	})
	require.NoError(t, err)
	as.Log = zerolog.New(m.Log).Level(zerolog.DebugLevel)
	m.AS = as

	m.EP = appservice.NewEventProcessor(as)
	m.EP.ExecMode = appservice.Sync
	for _, typ := range handledTypes {
		m.EP.On(typ, m.App.onEvent)
	}
	m.EP.OnOTK(m.App.onOTK)
	m.EP.OnDeviceList(m.App.onDeviceList)
	m.EP.Start(context.Background())

	m.srv = httptest.NewServer(http.HandlerFunc(m.serveFront))
	m.Reg.URL = m.srv.URL

	t.Cleanup(func() {
		m.releaseHold()
		m.srv.Close()
		m.EP.Stop()
		m.hs.Close()
		if t.Failed() {
			for _, line := range m.Log.lines() {
				t.Logf("mautrix log: %s", line)
			}
		}
	})
	return m
}

// serveFront is the front of mautrix's handler: transaction PUTs are
// recorded and treated as the policy says; everything else goes to mautrix
// as it is.
func (m *mautrixAS) serveFront(w http.ResponseWriter, r *http.Request) {
	txnID, isTxn := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
	if r.Method != http.MethodPut || !isTxn {
		m.AS.Router.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "front: reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))

	m.mu.Lock()
	m.attempts[txnID]++
	p := put{
		TxnID:       txnID,
		Attempt:     m.attempts[txnID],
		Body:        body,
		ContentType: r.Header.Get("Content-Type"),
		RawQuery:    r.URL.RawQuery,
	}
	if m.policy != nil {
		p.Mode = m.policy(txnID, p.Attempt)
	}
	m.arrived++
	hold := m.hold
	m.mu.Unlock()

	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	p.DecodeErr = json.Unmarshal(body, &p.Txn)

	if p.Mode == refuse503 {
		m.record(p)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"errcode":"M_UNKNOWN","error":"front: the AS is down"}`)
		return
	}

	rec := httptest.NewRecorder()
	m.AS.Router.ServeHTTP(rec, r)
	p.MautrixStatus = rec.Code
	p.MautrixAnswer = rec.Body.String()
	m.record(p)

	switch p.Mode {
	case processThen500:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"errcode":"M_UNKNOWN","error":"front: the answer was lost"}`)
	case processThenDrop:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			m.t.Errorf("front: hijacking the connection: %v", err)
			return
		}
		_ = conn.Close()
	default:
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}
}

func (m *mautrixAS) record(p put) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts = append(m.puts, p)
}

// Puts returns the transaction PUTs the front has finished with, in order.
func (m *mautrixAS) Puts() []put {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.puts)
}

// Arrived counts the transaction PUTs that reached the front, including
// one waiting on a hold.
func (m *mautrixAS) Arrived() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.arrived
}

// Hold makes transaction PUTs wait at the front until the returned
// function is called.
func (m *mautrixAS) Hold() (release func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hold = make(chan struct{})
	return m.releaseHold
}

func (m *mautrixAS) releaseHold() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hold != nil {
		close(m.hold)
		m.hold = nil
	}
}

// application records what mautrix hands the application, in the order its
// EventProcessor calls the handlers.
type application struct {
	mu          sync.Mutex
	events      []*event.Event // timeline events (PDUs)
	ephemeral   []*event.Event
	toDevice    []*event.Event
	deviceLists []*mautrix.DeviceLists
	otks        []*mautrix.OTKCount
}

func newApplication() *application { return &application{} }

func (a *application) onEvent(_ context.Context, evt *event.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch evt.Type.Class {
	case event.EphemeralEventType:
		a.ephemeral = append(a.ephemeral, evt)
	case event.ToDeviceEventType:
		a.toDevice = append(a.toDevice, evt)
	default:
		a.events = append(a.events, evt)
	}
}

func (a *application) onOTK(_ context.Context, otk *mautrix.OTKCount) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.otks = append(a.otks, otk)
}

func (a *application) onDeviceList(_ context.Context, dl *mautrix.DeviceLists, _ string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.deviceLists = append(a.deviceLists, dl)
}

// received is a copy of what the application has been handed so far.
type received struct {
	Events, Ephemeral, ToDevice []*event.Event
	DeviceLists                 []*mautrix.DeviceLists
	OTKs                        []*mautrix.OTKCount
}

func (a *application) snapshot() received {
	a.mu.Lock()
	defer a.mu.Unlock()
	return received{
		Events:      slices.Clone(a.events),
		Ephemeral:   slices.Clone(a.ephemeral),
		ToDevice:    slices.Clone(a.toDevice),
		DeviceLists: slices.Clone(a.deviceLists),
		OTKs:        slices.Clone(a.otks),
	}
}

// logRecorder is the io.Writer of mautrix's zerolog logger: zerolog
// writes one JSON object per Write.
type logRecorder struct {
	mu      sync.Mutex
	entries []logEntry
}

type logEntry struct {
	Level   string
	Message string
	Fields  map[string]any
	Line    string
}

func (l *logRecorder) Write(p []byte) (int, error) {
	var fields map[string]any
	line := strings.TrimSpace(string(p))
	if err := json.Unmarshal(p, &fields); err != nil {
		fields = map[string]any{}
	}
	level, _ := fields[zerolog.LevelFieldName].(string)
	msg, _ := fields[zerolog.MessageFieldName].(string)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, logEntry{Level: level, Message: msg, Fields: fields, Line: line})
	return len(p), nil
}

// find returns the entries whose message is msg.
func (l *logRecorder) find(msg string) []logEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var found []logEntry
	for _, e := range l.entries {
		if e.Message == msg {
			found = append(found, e)
		}
	}
	return found
}

// problems returns the lines logged at warn level or above, but for
// "Event channel is full": mautrix logs that when the application is
// slower than a transaction and then waits for it, which is back-pressure,
// not a loss.
func (l *logRecorder) problems() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var found []string
	for _, e := range l.entries {
		switch e.Level {
		case "debug", "trace", "info":
			continue
		}
		if e.Message == "Event channel is full" {
			continue
		}
		found = append(found, e.Line)
	}
	return found
}

func (l *logRecorder) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, len(l.entries))
	for i, e := range l.entries {
		out[i] = e.Line
	}
	return out
}
