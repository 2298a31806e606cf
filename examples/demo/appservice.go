package main

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/asdeliver/scheduler/astest"
)

// appService is a demo application service on 127.0.0.1: an astest server,
// which checks the token, decodes every transaction as a bridge would and
// checks that a retried transaction keeps its bytes, plus the count of the
// typing notifications, receipts and to-device messages the demo marked.
type appService struct {
	*astest.Server
	name string

	mu       sync.Mutex
	counted  int            // requests whose markers are counted
	edus     map[string]int // demo marker of a typing notification or receipt → times received
	toDevice map[string]int // demo marker of a to-device message → times received
}

func newAppService(name, token string) *appService {
	return &appService{Server: astest.NewServer(token), name: name, edus: map[string]int{}, toDevice: map[string]int{}}
}

// stats is a snapshot of what the service received.
type stats struct {
	delivered, duplicates, txns, failures int
	edus, toDevice                        int // distinct markers received
	order                                 []string
	problems                              []string
}

func (as *appService) stats() stats {
	order := as.Delivered()
	counts := as.Stats()
	st := stats{delivered: len(order), duplicates: counts.Events - len(order), txns: counts.Txns,
		failures: counts.Failed, order: order, problems: as.Problems()}
	as.mu.Lock()
	defer as.mu.Unlock()
	as.countMarkers()
	st.edus, st.toDevice = len(as.edus), len(as.toDevice)
	return st
}

// countMarkers counts the markers of the transactions accepted since it
// last ran: a marker in the content identifies each typing notification,
// receipt and to-device message the demo sends. as.mu is held.
func (as *appService) countMarkers() {
	type marked struct {
		Content struct {
			Marker string `json:"demo_marker"`
		} `json:"content"`
	}
	count := func(into map[string]int, items []json.RawMessage) {
		for _, raw := range items {
			var m marked
			if json.Unmarshal(raw, &m) == nil {
				into[m.Content.Marker]++
			}
		}
	}
	reqs := as.Requests()
	for _, r := range reqs[as.counted:] {
		if r.Status == http.StatusOK && r.Txn != nil {
			count(as.edus, r.Txn.Ephemeral)
			count(as.toDevice, r.Txn.ToDevice)
		}
	}
	as.counted = len(reqs)
}
