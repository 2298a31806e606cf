package scheduler

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/asdeliver/scheduler/internal/interest"
	"github.com/asdeliver/scheduler/internal/regfile"
)

// Registration is an application service registration: the YAML file a
// homeserver administrator installs for each application service (bridge,
// bot), read as Synapse reads it. Parse one with ParseRegistration or
// LoadRegistration, or build it by hand; New checks it either way.
//
// The tokens are secrets: no error, log line or String result of this
// package contains them.
type Registration struct {
	// ID is the file's id: the unique name of the application service. It
	// keys the service's stored work, so keep it stable. It may not contain
	// '|'.
	ID string
	// URL is the file's url: the base URL the application service listens
	// on, an absolute http or https URL without user information, query,
	// fragment or trailing '/' (one is removed); transactions are PUT to URL + "/_matrix/app/v1/transactions/{txnId}".
	// As in Dendrite, it may instead be unix:// and the absolute path of a
	// Unix domain socket (unix:///run/bridge.sock): requests then go to the
	// socket's root, with Host "localhost", whatever Config.HTTPClient is.
	// It is "" when the file says url: null: the service receives nothing.
	URL string
	// ASToken is the file's as_token: the token the application service
	// presents to the homeserver. The scheduler only checks that every
	// service has its own.
	ASToken string
	// HSToken is the file's hs_token: the token the homeserver presents to
	// the application service, as "Authorization: Bearer {HSToken}".
	HSToken string
	// SenderLocalpart is the file's sender_localpart: the localpart of the
	// application service's own user, @SenderLocalpart:server (see UserID).
	// It is kept as written.
	SenderLocalpart string
	// Namespaces is the file's namespaces: the users, room aliases and room
	// IDs the application service is interested in.
	Namespaces Namespaces
	// Protocols is the file's protocols: the third-party protocols the
	// application service bridges (e.g. "irc"), or nil.
	Protocols []string
	// RateLimited is the file's rate_limited, nil when absent. Synapse
	// rate-limits the users of an application service unless it is false.
	// The scheduler does not use it.
	RateLimited *bool
	// ReceiveEphemeral is the file's receive_ephemeral (MSC2409, stable):
	// send ephemeral events (typing, receipts, presence) under "ephemeral",
	// and to-device messages under "de.sorunome.msc2409.to_device".
	ReceiveEphemeral bool
	// PushEphemeral is the file's de.sorunome.msc2409.push_ephemeral (the
	// unstable name of the same opt-in): send ephemeral events under
	// "de.sorunome.msc2409.ephemeral" (under both keys when ReceiveEphemeral
	// is set too), and to-device messages.
	PushEphemeral bool
	// MSC3202 is the file's org.matrix.msc3202: send the MSC3202 extensions
	// (device-list changes, one-time key counts, unused fallback key
	// types). To-device messages follow the ephemeral opt-ins, as in
	// Synapse.
	MSC3202 bool
	// MSC4190 is the file's io.element.msc4190: the application service
	// manages its devices itself (MSC4190). It changes client-server API
	// behaviour only; the scheduler does not use it.
	MSC4190 bool
	// Source is the file's path when LoadRegistration read it, else "".
	// Error messages name it.
	Source string
}

// Namespaces lists the regular expressions of a registration, by kind.
type Namespaces struct {
	// Users is namespaces.users: matched against user IDs (a sender, the
	// state_key of an m.room.member event).
	Users []Namespace
	// Aliases is namespaces.aliases: matched against room aliases.
	Aliases []Namespace
	// Rooms is namespaces.rooms: matched against room IDs.
	Rooms []Namespace
}

// Namespace is one entry of a registration's namespaces.
type Namespace struct {
	// Regex is a regular expression in Go's RE2 syntax, which is Python's
	// for everything registrations use but look-arounds and
	// back-references. As with Synapse's re.match, it matches at the start
	// of the string and need not reach its end: "@irc_" matches
	// "@irc_bob:example.org"; end it with '$' to match whole strings only.
	//
	// As in Python 3's re (and unlike RE2, where they are ASCII), \w, \d,
	// \s and \b are Unicode-aware: \w is any letter or number (Unicode
	// categories L and N) or '_', \d any decimal digit (Nd), \s any white
	// space Python's str.isspace accepts, \b a boundary between a \w and
	// a non-\w character; \W, \D, \S and \B are their opposites, also
	// inside a character class, where \b is a backspace as in Python. So
	// "@w_\w+:hs" matches "@w_josé:hs", as in Synapse. The classes are
	// rewritten into RE2's Unicode classes when the registration is
	// checked; a pattern with \b or \B is matched, on strings that are not
	// all ASCII, by a matcher of the package's own that decides word
	// boundaries in Unicode, in time linear in the string as RE2.
	Regex string
	// Exclusive says that only this application service may create users or
	// aliases in the namespace. As in Synapse, it does not change which
	// events the service is sent.
	Exclusive bool

	// re is Regex compiled, set by compile (called by validate).
	re *interest.Pattern
}

// UserID returns the user ID of the application service's own user,
// "@" + SenderLocalpart + ":" + serverName, serverName being the
// homeserver's name (Config.ServerName). Events that user sends or is the
// subject of are delivered to the service, as Synapse does.
func (r *Registration) UserID(serverName string) string {
	return "@" + r.SenderLocalpart + ":" + serverName
}

// String describes r without its tokens, for logs.
func (r Registration) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Registration{ID:%q URL:%q ASToken:<redacted> HSToken:<redacted> SenderLocalpart:%q",
		r.ID, redactURL(r.URL), r.SenderLocalpart)
	if r.Source != "" {
		fmt.Fprintf(&b, " Source:%q", r.Source)
	}
	b.WriteString("}")
	return b.String()
}

// GoString is String, so that %#v does not print the tokens either.
func (r Registration) GoString() string { return r.String() }

// LogValue describes r without its tokens, for log/slog.
func (r Registration) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("id", r.ID),
		slog.String("url", redactURL(r.URL)),
		slog.String("sender_localpart", r.SenderLocalpart),
		slog.String("source", r.Source),
	)
}

// redactURL hides a password in u.
func redactURL(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	return u
}

// regError returns a *RegistrationError for r's field.
func (r *Registration) regError(field, reason string) *RegistrationError {
	return &RegistrationError{Source: r.Source, ID: r.ID, Field: field, Reason: reason}
}

// ParseRegistration reads a registration from the YAML in data, as Synapse
// does, and checks it (see Registration and its fields):
//
//   - id, as_token, hs_token and sender_localpart are required non-empty
//     strings (a YAML number is not a string: quote it); id may not contain
//     '|'; sender_localpart may only use the characters a URL does not
//     encode (A-Z a-z 0-9 - . _ ~ /); the tokens may not contain control
//     characters.
//   - url is required: an absolute http or https URL with a host, a port
//     from 1 to 65535 if any, and without user information
//     ("user:password@"), query or fragment, or
//     null (the service receives nothing). The error about user
//     information does not show it.
//     The empty string is an error, not null: Synapse would try to send to
//     it and fail forever.
//   - namespaces is optional (Synapse requires it); when present, a mapping
//     whose optional users, aliases and rooms are lists of mappings, each
//     with a string regex and a boolean exclusive, at most 1000 entries in
//     all (each is a regex to compile and to run for every event; one
//     alternation can replace many entries).
//     Every regex must compile
//     in Go's RE2 syntax, which has no look-arounds or back-references;
//     \w, \d, \s and \b are Unicode-aware, as in Python 3 (see
//     Namespace.Regex).
//   - protocols is an optional list of strings; rate_limited,
//     receive_ephemeral, de.sorunome.msc2409.push_ephemeral,
//     org.matrix.msc3202 and io.element.msc4190 are optional booleans. A
//     null value counts as absent.
//   - Collections may nest at most 64 levels deep (the file's own mapping
//     is the first; a registration needs four): a deeper file is refused
//     before the YAML parser, whose work grows faster than the nesting,
//     reads it.
//   - Other keys are ignored, as Synapse does. A key may not appear twice in
//     a mapping. Anchors, aliases and merge keys ("<<") work. Booleans are
//     read as Synapse's YAML 1.1 parser reads them: unquoted yes, no, on and
//     off (in any of their three spellings) are booleans too, so one where a
//     string is expected is an error: quote it.
//
// Every error is a *RegistrationError naming the field, matching
// ErrInvalidRegistration.
func ParseRegistration(data []byte) (*Registration, error) {
	return parseRegistration(data, "")
}

// LoadRegistration reads the registration file at path with
// ParseRegistration and sets Source to path. An error reading the file wraps
// the os error and does not match ErrInvalidRegistration.
func LoadRegistration(path string) (*Registration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("error reading registration: %w", err)
	}
	return parseRegistration(data, path)
}

func parseRegistration(data []byte, source string) (*Registration, error) {
	r := &Registration{Source: source}
	if err := r.decode(data); err != nil {
		return nil, err
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// decode fills r from the YAML document in data, checking the presence and
// type of each field; validate checks their values.
func (r *Registration) decode(data []byte) error {
	f, err := regfile.Parse(data)
	if err != nil {
		return &RegistrationError{Source: r.Source, ID: err.ID, Field: err.Field, Reason: err.Reason}
	}
	r.ID, r.URL, r.ASToken, r.HSToken, r.SenderLocalpart = f.ID, f.URL, f.ASToken, f.HSToken, f.SenderLocalpart
	r.Namespaces = Namespaces{Users: namespaces(f.Users), Aliases: namespaces(f.Aliases), Rooms: namespaces(f.Rooms)}
	r.Protocols, r.RateLimited = f.Protocols, f.RateLimited
	r.ReceiveEphemeral, r.PushEphemeral, r.MSC3202, r.MSC4190 = f.ReceiveEphemeral, f.PushEphemeral, f.MSC3202, f.MSC4190
	return nil
}

// namespaces returns the namespace entries of a file, nil for none.
func namespaces(entries []regfile.Namespace) []Namespace {
	var ns []Namespace
	for _, e := range entries {
		ns = append(ns, Namespace{Regex: e.Regex, Exclusive: e.Exclusive})
	}
	return ns
}

// Validate checks r as New does and returns the *RegistrationError (which
// matches ErrInvalidRegistration) New would fail with, or nil. It is for a
// registration built by hand, say from a homeserver's own configuration:
// it removes a trailing '/' from URL and compiles the namespace regexes, so
// a registration that passes is ready for New and UpdateServices.
func (r *Registration) Validate() error {
	if r == nil {
		return fmt.Errorf("%w: nil *Registration", ErrInvalidRegistration)
	}
	return r.validate()
}

// validate checks the values of r's fields, removes trailing '/' from URL,
// and compiles every namespace regex. New calls it for every registration,
// ParseRegistration for the ones it reads. It is idempotent, and it writes
// to r only what changed, so that validating an already valid registration
// again is a read.
func (r *Registration) validate() error {
	switch {
	case r.ID == "":
		return r.regError("id", "is empty: give the application service a unique id")
	case strings.Contains(r.ID, "|"):
		return r.regError("id", "contains '|', which Synapse forbids in application service ids: remove it")
	case r.ASToken == "":
		return r.regError("as_token", "is empty: set it to the secret token the application service uses")
	case regfile.HasControl(r.ASToken):
		return r.regError("as_token", "contains a control character (a newline?): remove it")
	case r.HSToken == "":
		return r.regError("hs_token", "is empty: set it to the secret token the application service expects from the homeserver")
	case regfile.HasControl(r.HSToken):
		return r.regError("hs_token", "contains a control character (a newline?), which cannot be sent in an HTTP header: remove it")
	case r.SenderLocalpart == "":
		return r.regError("sender_localpart", "is empty: set it to the localpart of the application service's user")
	case !regfile.URLSafe(r.SenderLocalpart):
		return r.regError("sender_localpart", fmt.Sprintf("%s has characters that a URL would have to encode, "+
			"which Synapse rejects: use only a-z, 0-9, '-', '.', '_', '~' and '/'", quoteShort(r.SenderLocalpart)))
	}
	if r.URL != "" {
		u, reason := regfile.CheckURL(r.URL)
		if reason != "" {
			return r.regError("url", reason+": "+regfile.URLHint)
		}
		if u != r.URL {
			r.URL = u
		}
	}
	if len(r.Namespaces.Users)+len(r.Namespaces.Aliases)+len(r.Namespaces.Rooms) > regfile.MaxNamespaces {
		return r.regError("namespaces", "has "+regfile.TooManyNamespaces)
	}
	for _, kind := range []struct {
		name string
		list []Namespace
	}{
		{"users", r.Namespaces.Users},
		{"aliases", r.Namespaces.Aliases},
		{"rooms", r.Namespaces.Rooms},
	} {
		for i := range kind.list {
			if reason := kind.list[i].compile(); reason != "" {
				return r.regError(fmt.Sprintf("namespaces.%s[%d].regex", kind.name, i), reason)
			}
		}
	}
	return nil
}

// compile compiles n.Regex into n.re unless that is done, and returns why
// it cannot (then n matches nothing).
func (n *Namespace) compile() string {
	if n.re != nil && n.re.Regex() == n.Regex {
		return ""
	}
	n.re = nil
	re, err := interest.Compile(n.Regex)
	if err != nil {
		return fmt.Sprintf("%s does not compile: %v", quoteShort(n.Regex), err)
	}
	n.re = re
	return ""
}
