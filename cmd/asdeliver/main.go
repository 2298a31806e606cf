// Command asdeliver looks into the store of an asdeliver scheduler and
// steers it: which services have work waiting, the stored transactions of
// one, a transaction as it is sent, and purging a removed service's work.
//
//	go install github.com/asdeliver/scheduler/cmd/asdeliver@latest
//
//	asdeliver -db /var/lib/homeserver/asdeliver.db status
//	asdeliver -postgres postgres://synapse@db/synapse -registrations /etc/synapse/appservices status
//	asdeliver -db FILE txns SERVICE
//	asdeliver -db FILE show SERVICE TXN
//	asdeliver -db FILE purge [-yes] SERVICE
//	asdeliver -postgres DSN retry SERVICE
//
// It never changes a store a running scheduler is using behind its back.
// A SQLite store is locked by the scheduler that has it open, so asdeliver
// refuses it while the homeserver runs. PostgreSQL is shared by design:
// every command works while schedulers run, and purge takes the service's
// lease first, so it fails while a scheduler still delivers to it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"
)

// usage is printed for -h and for a command line that makes no sense.
const usage = `usage: asdeliver (-db FILE | -postgres DSN [-schema NAME]) [-registrations PATHS] COMMAND

Commands:
  status               every service with work in the store (and every registered one)
  txns SERVICE         the transactions stored for SERVICE, oldest first
  show SERVICE TXN     one stored transaction as it is sent: request line, headers, body
  purge [-yes] SERVICE delete everything stored for SERVICE (asks unless -yes)
  retry SERVICE        cut a running scheduler's retry wait for SERVICE short (PostgreSQL)

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// errUsage marks a command line that makes no sense: run prints the usage.
var errUsage = errors.New("usage")

// run runs the command line args and returns the exit status: 0 on
// success, 1 when the command failed, 2 for a bad command line.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("asdeliver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o storeOptions
	fs.StringVar(&o.db, "db", "", "the SQLite `file` of the store")
	fs.StringVar(&o.postgres, "postgres", "", "the PostgreSQL `DSN` of the store")
	fs.StringVar(&o.schema, "schema", "", "the PostgreSQL `schema` of the store (default asdeliver)")
	regs := fs.String("registrations", "", "registration files or directories of *.yaml, comma-separated: "+
		"names configured services, shows URLs and redacts their tokens")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	err := dispatch(ctx, o, *regs, fs.Args(), stdin, stdout)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "asdeliver: %v\n\n", err)
		fs.Usage()
		return 2
	default:
		fmt.Fprintf(stderr, "asdeliver: %v\n", err)
		return 1
	}
}

// dispatch runs one command on the store o names.
func dispatch(ctx context.Context, o storeOptions, regPaths string, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: no command", errUsage)
	}
	cmd, args := args[0], args[1:]
	yes := false
	if cmd == "purge" && len(args) > 0 && (args[0] == "-yes" || args[0] == "--yes") {
		yes, args = true, args[1:]
	}
	want := map[string]int{"status": 0, "txns": 1, "show": 2, "purge": 1, "retry": 1}
	n, ok := want[cmd]
	if !ok {
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	if len(args) != n {
		return fmt.Errorf("%w: %s takes %d argument(s), not %d", errUsage, cmd, n, len(args))
	}
	reg, err := loadRegistrations(regPaths)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, o)
	if err != nil {
		return err
	}
	defer st.Close()
	a := &admin{store: st, regs: reg, out: stdout, now: time.Now()}
	switch cmd {
	case "status":
		return a.status(ctx)
	case "txns":
		return a.txns(ctx, args[0])
	case "show":
		return a.show(ctx, args[0], args[1])
	case "purge":
		return a.purge(ctx, args[0], yes, stdin)
	default: // retry
		return a.retry(ctx, args[0])
	}
}

// quoted returns s quoted when it holds anything a terminal would not
// show plainly, else s.
func quoted(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f || r == ' ' }) >= 0 {
		return fmt.Sprintf("%q", s)
	}
	return s
}
