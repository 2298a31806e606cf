package interop

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler"
)

// TestMautrixReceivesEverythingIntactAndInOrder delivers room events,
// typing notifications, read receipts, presence, to-device messages,
// device-list changes and key counts, interleaved, and checks what mautrix
// hands its application: every item it is owed, once, intact, each kind in
// enqueue order, nothing it is not owed. The first transaction waits at
// mautrix's door while the rest is enqueued, so the backlog then leaves in
// full transactions, as after an outage.
func TestMautrixReceivesEverythingIntactAndInOrder(t *testing.T) {
	m := newMautrixAS(t, nil)
	h := startHomeserver(t, "", m.ourRegistration(), nil)
	tr := newTraffic(t, "main", 320, 400, 400)
	const rounds = 10

	release := m.Hold()
	tr.enqueue(t, h, 0, rounds)
	waitFor(t, "the first transaction to reach mautrix", func() bool { return m.Arrived() >= 1 })
	for r := 1; r < rounds; r++ {
		tr.enqueue(t, h, r, rounds)
	}
	release()

	waitFor(t, "mautrix to hand over everything", func() bool { return tr.complete(m.App.snapshot()) })
	waitFor(t, "the scheduler to have delivered everything", h.drained)
	puts := m.Puts()
	got := barrier(t, h, m, "main")

	tr.check(t, got)
	tr.checkFallback(t, puts)
	checkTransactions(t, puts, 1)
	full := 0
	for _, p := range puts {
		if len(p.Txn.Events) == scheduler.DefaultMaxEventsPerTxn ||
			len(p.Txn.EphemeralEvents) == scheduler.MaxEphemeralPerTxn ||
			len(p.Txn.MSC2409ToDeviceEvents) == scheduler.MaxToDevicePerTxn {
			full++
		}
	}
	assert.Positive(t, full, "the backlog leaves in transactions full up to a per-transaction limit")
	assert.Empty(t, m.Log.problems(), "mautrix's warnings and errors")
	t.Logf("mautrix handed the application: %s", tally(got, puts))
}

// TestRetriedTransactionIsNotHandedOverTwice lets mautrix process every
// transaction in full and then loses its answer, as a 500 or as a dropped
// connection. The scheduler resends the same transaction ID with the same
// bytes; mautrix's transaction-ID cache must recognise it, and the
// application must get every item exactly once.
func TestRetriedTransactionIsNotHandedOverTwice(t *testing.T) {
	for _, mode := range []frontMode{processThen500, processThenDrop} {
		t.Run(mode.String(), func(t *testing.T) {
			m := newMautrixAS(t, func(_ string, attempt int) frontMode {
				if attempt == 1 {
					return mode
				}
				return pass
			})
			h := startHomeserver(t, "", m.ourRegistration(), nil)
			tr := newTraffic(t, "retry", 120, 45, 45)
			tr.enqueueAll(t, h, 6)

			waitFor(t, "mautrix to hand over everything", func() bool { return tr.complete(m.App.snapshot()) })
			waitFor(t, "the scheduler to have delivered everything", h.drained)
			got := barrier(t, h, m, "retry")
			puts := m.Puts()

			tr.check(t, got)
			// Every transaction was PUT twice with the same bytes, and
			// mautrix answered both with success.
			txnIDs := checkTransactions(t, puts, 2)
			dups := m.Log.find("Ignoring duplicate transaction")
			require.Len(t, dups, len(txnIDs), "mautrix's log of the transactions it recognised as repeated")
			for i, d := range dups {
				assert.Equal(t, txnIDs[i], d.Fields["transaction_id"])
			}
			st := h.status()
			assert.Equal(t, scheduler.StateUp, st.State)
			assert.Zero(t, st.ConsecutiveFailures)
			assert.Empty(t, m.Log.problems(), "mautrix's warnings and errors")
			t.Logf("mautrix handed the application: %s", tally(got, puts))
		})
	}
}

// TestWrongHSTokenIsRefusedAndCountsAsFailure sends with an hs_token that
// mautrix does not know: it must refuse every transaction (401
// M_UNKNOWN_TOKEN) and hand nothing over, and the scheduler must count it as
// a failure and keep the transactions. Once the operator fixes the
// registration and restarts on the same store, the stored transactions are
// delivered, once, in order.
func TestWrongHSTokenIsRefusedAndCountsAsFailure(t *testing.T) {
	m := newMautrixAS(t, nil)
	reg := m.ourRegistration()
	goodToken := reg.HSToken
	reg.HSToken = "interop-wrong-hs-token-8e2a"
	db := filepath.Join(t.TempDir(), "asdeliver.db")
	h := startHomeserver(t, db, reg, nil)
	tr := newTraffic(t, "token", 40, 12, 12)
	tr.enqueueAll(t, h, 4)

	waitFor(t, "the service to be DOWN after a 401", func() bool {
		st := h.status()
		return st.State == scheduler.StateDown && st.LastHTTPStatus == 401
	})
	st := h.status()
	assert.Contains(t, st.LastAnswer, "M_UNKNOWN_TOKEN")
	assert.NotEmpty(t, st.LastError)
	assert.Positive(t, st.ConsecutiveFailures)
	assert.Positive(t, st.StoredTxns+st.QueuedEvents)

	_, err := h.Ping(deadline(t), serviceID, "wrong-token-ping")
	require.ErrorIs(t, err, scheduler.ErrBadStatus)
	var se *scheduler.StatusError
	require.True(t, errors.As(err, &se))
	assert.Equal(t, 401, se.Status)
	assert.Contains(t, se.Answer, "M_UNKNOWN_TOKEN")

	refused := m.Puts()
	require.NotEmpty(t, refused)
	for _, p := range refused {
		require.Equal(t, 401, p.MautrixStatus, "mautrix's answer to transaction %s", p.TxnID)
	}
	assert.Equal(t, received{}, m.App.snapshot(), "nothing may reach the application")
	assert.Empty(t, m.Log.find("Starting handling of transaction"))
	assert.Empty(t, m.Log.find("Received ping from homeserver"))
	logs := h.logs.String()
	assert.Contains(t, logs, "hs_token mismatch?")
	assert.NotContains(t, logs, reg.HSToken)
	assert.NotContains(t, logs, goodToken)

	// The operator fixes the registration and restarts the homeserver.
	h.Stop()
	h = startHomeserver(t, db, m.ourRegistration(), nil)
	waitFor(t, "mautrix to hand over everything", func() bool { return tr.complete(m.App.snapshot()) })
	waitFor(t, "the scheduler to have delivered everything", h.drained)
	got := barrier(t, h, m, "token")
	tr.check(t, got)

	accepted := m.Puts()[len(refused):]
	require.NotEmpty(t, accepted)
	assert.Equal(t, refused[0].TxnID, accepted[0].TxnID, "the refused transaction is resent under its ID")
	assert.Equal(t, string(refused[0].Body), string(accepted[0].Body), "the refused transaction is resent byte for byte")
	assert.Empty(t, m.Log.problems(), "mautrix's warnings and errors")
	t.Logf("refused: %d PUTs answered 401; then mautrix handed the application: %s", len(refused), tally(got, accepted))
}

// TestPingReachesMautrix pings mautrix's POST /_matrix/app/v1/ping (MSC2659,
// AppService.PostPing) and checks that mautrix read the transaction ID.
func TestPingReachesMautrix(t *testing.T) {
	m := newMautrixAS(t, nil)
	h := startHomeserver(t, "", m.ourRegistration(), nil)

	rtt, err := h.Ping(deadline(t), serviceID, "interop-ping-1")
	require.NoError(t, err)
	assert.Positive(t, rtt)
	_, err = h.Ping(deadline(t), serviceID, "")
	require.NoError(t, err)

	pings := m.Log.find("Received ping from homeserver")
	require.Len(t, pings, 2)
	assert.Equal(t, "interop-ping-1", pings[0].Fields["txn_id"])
	assert.Equal(t, "", pings[1].Fields["txn_id"])
	assert.Empty(t, m.Log.problems(), "mautrix's warnings and errors")
	t.Logf("mautrix answered the ping in %v", rtt)
}

// TestPingCutsTheRetryWaitShort takes mautrix down (503 at its door) with
// an hour's retry wait, brings it back and pings it, as a homeserver's
// ping endpoint does when a bridge starts: the backlog must arrive at once.
func TestPingCutsTheRetryWaitShort(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	m := newMautrixAS(t, func(string, int) frontMode {
		if down.Load() {
			return refuse503
		}
		return pass
	})
	h := startHomeserver(t, "", m.ourRegistration(), func(cfg *scheduler.Config) {
		cfg.RetryInitial = time.Hour
		cfg.RetryMax = time.Hour
	})
	tr := newTraffic(t, "ping", 30, 9, 9)
	tr.enqueueAll(t, h, 4)

	waitFor(t, "the service to be DOWN after a 503, its next retry an hour away", func() bool {
		st := h.status()
		return st.State == scheduler.StateDown && st.LastHTTPStatus == 503 &&
			st.NextRetry.After(time.Now().Add(30*time.Minute))
	})

	down.Store(false)
	_, err := h.Ping(deadline(t), serviceID, "bridge-started")
	require.NoError(t, err)
	waitFor(t, "mautrix to hand over everything", func() bool { return tr.complete(m.App.snapshot()) })
	waitFor(t, "the scheduler to have delivered everything", h.drained)
	tr.check(t, barrier(t, h, m, "ping"))
	assert.Empty(t, m.Log.problems(), "mautrix's warnings and errors")
}

// TestLegacyQueryAuthIsAcceptedByMautrix sends the hs_token in the query
// string too (Config.LegacyQueryAuth): mautrix reads only the header and
// must not mind the query.
func TestLegacyQueryAuthIsAcceptedByMautrix(t *testing.T) {
	m := newMautrixAS(t, nil)
	h := startHomeserver(t, "", m.ourRegistration(), func(cfg *scheduler.Config) {
		cfg.LegacyQueryAuth = true
	})
	tr := newTraffic(t, "legacy", 20, 6, 6)
	tr.enqueueAll(t, h, 4)
	waitFor(t, "mautrix to hand over everything", func() bool { return tr.complete(m.App.snapshot()) })
	waitFor(t, "the scheduler to have delivered everything", h.drained)
	puts := m.Puts()
	tr.check(t, barrier(t, h, m, "legacy"))
	checkTransactions(t, puts, 1)
	for _, p := range puts {
		assert.Contains(t, p.RawQuery, "access_token=", "transaction %s", p.TxnID)
	}
}

// barrier enqueues a marker room event and a marker to-device message and
// waits until the application has both. mautrix hands room events and
// to-device messages over in order, each through one channel, so
// everything it received before has then been handed over too: a
// duplicate would be in the snapshot. It also waits for mautrix's OTK and
// device-list channels to be empty; their handlers run on goroutines of
// their own, so those two kinds cannot be fenced more tightly. It returns
// what the application got, without the markers.
func barrier(t *testing.T, h *homeserver, m *mautrixAS, prefix string) received {
	t.Helper()
	ev, err := scheduler.ParseEvent([]byte(`{"event_id":"$` + prefix + `-barrier","room_id":"` + bridgedRoom +
		`","sender":"` + ghost1 + `","type":"m.room.message","content":{"msgtype":"m.notice","body":"barrier"}}`))
	require.NoError(t, err)
	msg := scheduler.ToDeviceMessage{
		Sender: alice, Type: typeCustomToDevice.Type, ToUserID: ghost1, ToDeviceID: "GHOST1DEV",
		Content: json.RawMessage(`{"barrier":"` + prefix + `"}`),
	}
	require.NoError(t, h.Enqueue(deadline(t), ev))
	require.NoError(t, h.EnqueueToDevice(deadline(t), msg))
	waitFor(t, "the barrier to reach the application", func() bool {
		got := m.App.snapshot()
		return len(got.Events) > 0 && got.Events[len(got.Events)-1].ID.String() == ev.ID &&
			len(got.ToDevice) > 0 && string(got.ToDevice[len(got.ToDevice)-1].Content.VeryRaw) == string(msg.Content) &&
			len(m.AS.OTKCounts) == 0 && len(m.AS.DeviceLists) == 0
	})
	waitFor(t, "the scheduler to have delivered the barrier", h.drained)
	got := m.App.snapshot()
	got.Events = got.Events[:len(got.Events)-1]
	got.ToDevice = got.ToDevice[:len(got.ToDevice)-1]
	return got
}

// checkTransactions checks the transaction PUTs mautrix saw, and returns
// their IDs in order: decimal, strictly increasing, each PUT attempts
// times in a row with the same bytes, never a newer one before an older
// one is done; a JSON body with "events" always present, within the
// per-transaction limits, the same content under both ephemeral keys; and
// mautrix answered every PUT with success.
func checkTransactions(t *testing.T, puts []put, attempts int) []string {
	t.Helper()
	var ids []string
	var last uint64
	for i, p := range puts {
		if i%attempts == 0 {
			n, err := strconv.ParseUint(p.TxnID, 10, 64)
			require.NoError(t, err, "transaction ID %q", p.TxnID)
			if i > 0 {
				require.Greater(t, n, last, "transaction %s follows %d", p.TxnID, last)
			}
			last = n
			ids = append(ids, p.TxnID)
		} else {
			first := puts[i-i%attempts]
			require.Equal(t, first.TxnID, p.TxnID, "PUT %d", i)
			require.Equal(t, string(first.Body), string(p.Body), "repeated PUT of transaction %s", p.TxnID)
		}
		require.Equal(t, i%attempts+1, p.Attempt, "PUT %d (transaction %s)", i, p.TxnID)
		require.Equal(t, "application/json", p.ContentType, "transaction %s", p.TxnID)
		require.NoError(t, p.DecodeErr, "transaction %s, decoded with mautrix's Transaction type", p.TxnID)
		require.Equal(t, 200, p.MautrixStatus, "mautrix's answer to transaction %s: %s", p.TxnID, p.MautrixAnswer)
		require.NotNil(t, p.Txn.Events, "transaction %s has \"events\"", p.TxnID)
		require.LessOrEqual(t, len(p.Txn.Events), scheduler.DefaultMaxEventsPerTxn)
		require.LessOrEqual(t, len(p.Txn.EphemeralEvents), scheduler.MaxEphemeralPerTxn)
		require.LessOrEqual(t, len(p.Txn.MSC2409ToDeviceEvents), scheduler.MaxToDevicePerTxn)

		var keys map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(p.Body, &keys))
		require.Equal(t, string(keys["ephemeral"]), string(keys["de.sorunome.msc2409.ephemeral"]),
			"transaction %s: both ephemeral keys carry the same events", p.TxnID)
	}
	require.Zero(t, len(puts)%attempts, "every transaction is PUT %d times", attempts)
	return ids
}
