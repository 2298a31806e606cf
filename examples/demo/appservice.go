package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
)

// appService is a demo application service on 127.0.0.1. It checks the
// token, decodes every transaction as a bridge would, and keeps what the
// final table needs. down() makes it answer 503 until up().
type appService struct {
	name  string
	token string
	srv   *httptest.Server

	mu        sync.Mutex
	isDown    bool
	failures  int               // requests answered with an error
	txns      int               // transactions accepted
	bodies    map[string][]byte // txn ID → body, to check retries are identical
	mismatch  int               // retried transactions whose body changed
	seen      map[string]int    // event ID → times received
	delivered []string          // event IDs in order of first receipt
	edus      map[string]int    // demo marker of a typing notification or receipt → times received
	toDevice  map[string]int    // demo marker of a to-device message → times received
}

func newAppService(name, token string) *appService {
	as := &appService{name: name, token: token, bodies: map[string][]byte{}, seen: map[string]int{},
		edus: map[string]int{}, toDevice: map[string]int{}}
	as.srv = httptest.NewServer(http.HandlerFunc(as.serve))
	return as
}

func (as *appService) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	txnID, ok := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
	as.mu.Lock()
	defer as.mu.Unlock()
	switch {
	case err != nil || !ok || r.Method != http.MethodPut:
		as.failures++
		http.Error(w, `{"errcode":"M_UNRECOGNIZED"}`, http.StatusNotFound)
		return
	case r.Header.Get("Authorization") != "Bearer "+as.token:
		as.failures++
		http.Error(w, `{"errcode":"M_FORBIDDEN"}`, http.StatusForbidden)
		return
	case as.isDown:
		as.failures++
		http.Error(w, `{"errcode":"M_UNKNOWN","error":"bridge restarting"}`, http.StatusServiceUnavailable)
		return
	}
	// A marker in the content identifies each typing notification, receipt
	// and to-device message the demo sends.
	type marked struct {
		Content struct {
			Marker string `json:"demo_marker"`
		} `json:"content"`
	}
	var txn struct {
		Events []struct {
			ID string `json:"event_id"`
		} `json:"events"`
		Ephemeral []marked `json:"ephemeral"`
		ToDevice  []marked `json:"de.sorunome.msc2409.to_device"`
	}
	if err := json.Unmarshal(body, &txn); err != nil {
		as.failures++
		http.Error(w, `{"errcode":"M_NOT_JSON"}`, http.StatusBadRequest)
		return
	}
	if prev, ok := as.bodies[txnID]; ok && string(prev) != string(body) {
		as.mismatch++
	}
	as.bodies[txnID] = body
	as.txns++
	for _, e := range txn.Ephemeral {
		as.edus[e.Content.Marker]++
	}
	for _, m := range txn.ToDevice {
		as.toDevice[m.Content.Marker]++
	}
	for _, e := range txn.Events {
		if as.seen[e.ID] == 0 {
			as.delivered = append(as.delivered, e.ID)
		}
		as.seen[e.ID]++
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{}")
}

func (as *appService) setDown(down bool) {
	as.mu.Lock()
	as.isDown = down
	as.mu.Unlock()
}

// stats is a snapshot of what the service received.
type stats struct {
	delivered, duplicates, txns, failures, mismatch int
	edus, toDevice                                  int // distinct markers received
	order                                           []string
}

func (as *appService) stats() stats {
	as.mu.Lock()
	defer as.mu.Unlock()
	st := stats{delivered: len(as.delivered), txns: as.txns, failures: as.failures, mismatch: as.mismatch,
		order: append([]string(nil), as.delivered...), edus: len(as.edus), toDevice: len(as.toDevice)}
	for _, n := range as.seen {
		st.duplicates += n - 1
	}
	return st
}
