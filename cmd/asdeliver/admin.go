package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/internal/wire"
	"github.com/asdeliver/scheduler/store"
)

// stuckAfter is the age past which a stored transaction is taken for one
// that failed: a delivery that succeeds completes its transaction within
// the scheduler's AnswerTimeout (60 s by default).
const stuckAfter = time.Minute

// purgeLease is how long purge holds a service's lease.
const purgeLease = 30 * time.Second

// admin runs the commands on one store.
type admin struct {
	store openedStore
	regs  map[string]*scheduler.Registration // by service ID; empty without -registrations
	out   io.Writer
	now   time.Time
}

// status prints a line per service with work in the store, and per
// registered service: what the store holds for it and what that says.
func (a *admin) status(ctx context.Context) error {
	backlogs, err := a.store.Backlogs(ctx)
	if err != nil {
		return fmt.Errorf("reading the store: %w", err)
	}
	byID := make(map[string]store.Backlog)
	for _, b := range backlogs {
		byID[b.Service] = b
	}
	ids := slices.Sorted(maps.Keys(byID))
	for id := range a.regs {
		if _, ok := byID[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	w := tabwriter.NewWriter(a.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "SERVICE\tSTATE\tQUEUED\tSTORED TXNS\tOLDEST\tOLDEST TXN")
	for _, id := range ids {
		b := byID[id]
		oldestTxn := ""
		state := a.state(id, b)
		if b.Txns > 0 {
			txns, err := a.store.Txns(ctx, id, 1)
			if err != nil {
				return fmt.Errorf("reading the transactions of %q: %w", id, err)
			}
			if len(txns) > 0 {
				age := a.now.Sub(txns[0].Created)
				oldestTxn = fmt.Sprintf("%d, %s old", txns[0].ID, short(age))
				if state == "sending" && age > stuckAfter {
					state = "failing"
				}
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\n", quoted(id), state, b.Queued, b.Txns, ageOf(a.now, b.Oldest), dash(oldestTxn))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "\nSTATE is what the store shows: idle (nothing waits), sending (a transaction is out), "+
		"failing (one has waited over %s: deliveries fail), UNCONFIGURED (no registration given for it).\n"+
		"The store keeps no errors: the running scheduler's Status and metrics have the last one.\n", short(stuckAfter))
	return nil
}

// state says what the store shows of a service.
func (a *admin) state(id string, b store.Backlog) string {
	switch {
	case len(a.regs) > 0 && a.regs[id] == nil:
		return "UNCONFIGURED"
	case b.Txns > 0:
		return "sending"
	case b.Queued > 0:
		return "queued"
	default:
		return "idle"
	}
}

// txns prints the transactions stored for service, oldest first.
func (a *admin) txns(ctx context.Context, service string) error {
	txns, err := a.store.Txns(ctx, service, 0)
	if err != nil {
		return fmt.Errorf("reading the transactions of %q: %w", service, err)
	}
	if len(txns) == 0 {
		fmt.Fprintf(a.out, "no transactions stored for %s\n", quoted(service))
		return nil
	}
	w := tabwriter.NewWriter(a.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "TXN\tITEMS\tBODY BYTES\tAGE\tCONTENTS")
	for _, t := range txns {
		size := "?"
		if body, err := wire.Body(t.Format, t.Items); err == nil {
			size = strconv.Itoa(len(body))
		}
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\t%s\n", t.ID, len(t.Items), size, short(a.now.Sub(t.Created)), contents(t.Items))
	}
	return w.Flush()
}

// show prints one stored transaction as the scheduler sends it: the
// request line, the headers and the body, with the service's tokens
// redacted when its registration is known.
func (a *admin) show(ctx context.Context, service, txnArg string) error {
	id, err := strconv.ParseInt(txnArg, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: transaction ID %q is not a number", errUsage, txnArg)
	}
	txns, err := a.store.Txns(ctx, service, 0)
	if err != nil {
		return fmt.Errorf("reading the transactions of %q: %w", service, err)
	}
	i := slices.IndexFunc(txns, func(t store.Txn) bool { return t.ID == id })
	if i < 0 {
		return fmt.Errorf("no transaction %d is stored for %s (delivered ones are deleted): see `asdeliver txns %s`",
			id, quoted(service), service)
	}
	t := txns[i]
	body, err := wire.Body(t.Format, t.Items)
	if err != nil {
		return fmt.Errorf("transaction %d cannot be assembled: %w", id, err)
	}
	if !slices.Equal(store.HashItems(t.Items), t.Hash) {
		fmt.Fprintf(a.out, "WARNING: transaction %d fails its hash check: the store was damaged, and the scheduler will not send it\n\n", id)
	}
	base, secrets := "{url}", []string(nil)
	if reg := a.regs[service]; reg != nil {
		base, secrets = reg.URL, []string{reg.HSToken, reg.ASToken}
	}
	fmt.Fprintf(a.out, "PUT %s/_matrix/app/v1/transactions/%d\n", base, t.ID)
	fmt.Fprintf(a.out, "Authorization: Bearer <redacted>\nContent-Type: application/json\nContent-Length: %d\n\n", len(body))
	_, err = a.out.Write(append(wire.Redact(body, secrets...), '\n'))
	return err
}

// purge deletes everything stored for service, after asking unless yes.
// It takes the service's lease first, so it fails while a scheduler
// delivers to the service.
func (a *admin) purge(ctx context.Context, service string, yes bool, stdin io.Reader) error {
	backlogs, err := a.store.Backlogs(ctx)
	if err != nil {
		return fmt.Errorf("reading the store: %w", err)
	}
	var b store.Backlog
	for _, x := range backlogs {
		if x.Service == service {
			b = x
		}
	}
	if b.Txns == 0 && b.Queued == 0 {
		fmt.Fprintf(a.out, "nothing is stored for %s\n", quoted(service))
		return nil
	}
	if a.regs[service] != nil {
		fmt.Fprintf(a.out, "note: %s is registered; a scheduler configured with it will deliver what comes next\n", service)
	}
	if !yes {
		fmt.Fprintf(a.out, "Delete %d stored transactions and %d queued items of %s? They will never be delivered.\n"+
			"Type the service ID to confirm: ", b.Txns, b.Queued, quoted(service))
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if strings.TrimSpace(line) != service {
			return errors.New("not confirmed: nothing was deleted")
		}
	}
	owner := fmt.Sprintf("asdeliver-admin-%d", os.Getpid())
	epoch, err := a.store.Claim(ctx, service, owner, purgeLease)
	if errors.Is(err, store.ErrLeaseHeld) {
		return fmt.Errorf("a running scheduler delivers to %s (it holds the service's lease): remove the service "+
			"from its configuration (UpdateServices, or a restart without it) and purge again", quoted(service))
	}
	if err != nil {
		return fmt.Errorf("taking the lease of %q: %w", service, err)
	}
	defer func() { _ = a.store.Release(context.WithoutCancel(ctx), service, epoch) }()
	if err := a.store.Purge(ctx, service, epoch); err != nil {
		return fmt.Errorf("purging %q: %w", service, err)
	}
	fmt.Fprintf(a.out, "purged %s: %d stored transactions and %d queued items deleted\n", quoted(service), b.Txns, b.Queued)
	return nil
}

// retry tells the scheduler that delivers to service, in whichever
// process, that its application service is back, cutting its retry wait
// short. Only a store shared by processes (store.Notifier) carries it.
func (a *admin) retry(ctx context.Context, service string) error {
	n, ok := a.store.(store.Notifier)
	if !ok {
		return errors.New("this store cannot reach a running scheduler (a SQLite store belongs to one process, " +
			"which holds it locked): call Scheduler.ServiceUp in the homeserver, as a ping of the application service does")
	}
	if err := n.ServiceUp(ctx, service); err != nil {
		return fmt.Errorf("telling the schedulers that %q is up: %w", service, err)
	}
	fmt.Fprintf(a.out, "told the schedulers on this store that %s is up: a retry wait in progress ends now\n", quoted(service))
	return nil
}

// contents counts a transaction's items by kind: "98 events, 2 ephemeral".
func contents(items []store.Item) string {
	names := map[store.Kind]string{
		store.KindEvent: "events", store.KindEphemeral: "ephemeral", store.KindToDevice: "to-device",
		store.KindDeviceLists: "device lists", store.KindKeyCounts: "key counts",
	}
	counts := make(map[store.Kind]int)
	for _, it := range items {
		counts[it.Kind]++
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		name, ok := names[k]
		if !ok {
			name = fmt.Sprintf("kind %d", k)
		}
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], name))
	}
	return strings.Join(parts, ", ")
}

// ageOf returns how long ago t was, "-" for the zero time.
func ageOf(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return short(now.Sub(t))
}

// short rounds d for a table: 850ms, 42s, 3m10s, 5h2m.
func short(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

// dash returns s, or "-" when it is empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
