package regfile

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// File is what a registration file says, read as Synapse reads it; the
// values are not checked yet. Absent and null optional fields are zero.
type File struct {
	// ID, ASToken, HSToken and SenderLocalpart are id, as_token, hs_token
	// and sender_localpart.
	ID, ASToken, HSToken, SenderLocalpart string
	// URL is url, "" when the file says url: null.
	URL string
	// Users, Aliases and Rooms are the entries of namespaces.users,
	// .aliases and .rooms.
	Users, Aliases, Rooms []Namespace
	// Protocols is protocols.
	Protocols []string
	// RateLimited is rate_limited, nil when absent.
	RateLimited *bool
	// ReceiveEphemeral, PushEphemeral, MSC3202 and MSC4190 are the
	// opt-ins receive_ephemeral, de.sorunome.msc2409.push_ephemeral,
	// org.matrix.msc3202 and io.element.msc4190.
	ReceiveEphemeral, PushEphemeral, MSC3202, MSC4190 bool
}

// Namespace is one entry of namespaces.users, .aliases or .rooms.
type Namespace struct {
	// Regex is regex, as written.
	Regex string
	// Exclusive is exclusive.
	Exclusive bool
}

// Error is what is wrong with a registration file.
type Error struct {
	// ID is the file's id, when it was read before the error.
	ID string
	// Field names the field as the file spells it, such as
	// "namespaces.users[1].regex"; "" when the file as a whole is wrong.
	Field string
	// Reason says what is wrong and how to fix it.
	Reason string
}

// Error returns "{Field}: {Reason}", or Reason for the file as a whole.
func (e *Error) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// Parse reads the registration in data, a YAML document, and checks the
// presence and type of each field (see the root package's
// ParseRegistration for the rules).
func Parse(data []byte) (*File, *Error) {
	f := &File{}
	if err := f.read(data); err != nil {
		err.ID = f.ID
		return nil, err
	}
	return f, nil
}

// URLHint says how to fix a url field.
const URLHint = "set it to the base URL the application service listens on " +
	"(e.g. http://localhost:29318), or to null if it should receive no events"

func (f *File) read(data []byte) *Error {
	// Before the parser, whose work grows faster than the nesting.
	if err := checkNesting(data); err != nil {
		return err
	}
	root, err := parseYAML(data)
	if err != nil {
		return err
	}
	w := &walker{budget: maxMergeWork}
	top, err := w.fields(root, "")
	if err != nil {
		return err
	}
	r := reader{mapping: top}
	// The required strings. id first, so that later errors can name it.
	r.str("id", "it is required", &f.ID)
	r.str("as_token", "it is required", &f.ASToken)
	r.str("hs_token", "it is required", &f.HSToken)
	r.str("sender_localpart", "it is required", &f.SenderLocalpart)
	r.url(&f.URL)
	var rateLimited bool
	if r.optionalBool("rate_limited", &rateLimited) {
		f.RateLimited = &rateLimited
	}
	r.optionalBool("receive_ephemeral", &f.ReceiveEphemeral)
	r.optionalBool("de.sorunome.msc2409.push_ephemeral", &f.PushEphemeral)
	r.optionalBool("org.matrix.msc3202", &f.MSC3202)
	r.optionalBool("io.element.msc4190", &f.MSC4190)
	r.protocols(&f.Protocols)
	if n := r.optional("namespaces"); n != nil {
		ns := reader{}
		ns.mapping, ns.err = w.fields(n, "namespaces")
		count := 0
		ns.namespaces(w, "users", &f.Users, &count)
		ns.namespaces(w, "aliases", &f.Aliases, &count)
		ns.namespaces(w, "rooms", &f.Rooms, &count)
		r.fail(ns.err)
	}
	return r.err
}

// reader reads the fields of a mapping. It keeps the first error; a read
// after it does nothing.
type reader struct {
	mapping
	err *Error
}

func (r *reader) fail(err *Error) {
	if r.err == nil {
		r.err = err
	}
}

// optional returns the node at key, nil when it is absent or null, or
// after an error.
func (r *reader) optional(key string) *yaml.Node {
	if r.err != nil {
		return nil
	}
	return r.mapping.optional(key)
}

// required returns the node at key, or nil after an error, such as the
// one that it is missing: why says why it is needed.
func (r *reader) required(key, why string) *yaml.Node {
	if r.err != nil {
		return nil
	}
	n, err := r.mapping.required(key, why)
	r.fail(err)
	return n
}

// str reads the string at key into dst; why says why it is required.
func (r *reader) str(key, why string, dst *string) {
	if n := r.required(key, why); n != nil {
		s, err := r.mapping.str(key, n)
		if err == nil {
			*dst = s
		}
		r.fail(err)
	}
}

// boolean reads the boolean at key into dst, if the node n is not nil,
// and reports whether it did.
func (r *reader) boolean(key string, n *yaml.Node, dst *bool) bool {
	if n == nil {
		return false
	}
	b, err := r.mapping.boolean(key, n)
	if err != nil {
		r.fail(err)
		return false
	}
	*dst = b
	return true
}

// optionalBool reads the boolean at key into dst, if there is one, and
// reports whether there was.
func (r *reader) optionalBool(key string, dst *bool) bool {
	return r.boolean(key, r.optional(key), dst)
}

// url reads url: a non-empty string, or null for "".
func (r *reader) url(dst *string) {
	n := r.required("url", URLHint)
	if n == nil || isNull(n) {
		return
	}
	s, reason := yamlString(n)
	switch {
	case reason != "":
		r.fail(r.errorAt("url", "must be a string or null, but it is "+reason))
	case s == "":
		r.fail(r.errorAt("url", `is "": `+URLHint))
	default:
		*dst = s
	}
}

// protocols reads the optional list of strings at protocols.
func (r *reader) protocols(dst *[]string) {
	n := r.optional("protocols")
	if n == nil {
		return
	}
	items, err := r.list("protocols", n, "strings")
	r.fail(err)
	for i := 0; r.err == nil && i < len(items); i++ {
		if s, err := r.mapping.str(fmt.Sprintf("protocols[%d]", i), items[i]); err != nil {
			r.fail(err)
		} else {
			*dst = append(*dst, s)
		}
	}
}

// MaxNamespaces is the most namespace entries (users, aliases and rooms
// together) a registration may have. Each is a regex to compile and to run
// for every event; real registrations have a handful, and one alternation
// can replace many entries.
const MaxNamespaces = 1000

// TooManyNamespaces is the reason of the error for more than
// MaxNamespaces namespace entries.
var TooManyNamespaces = fmt.Sprintf("more than %d namespace entries in all (users, aliases and rooms), "+
	"each a regex to compile and to run for every event: merge them into fewer regexes, "+
	"such as one alternation (a|b|c)", MaxNamespaces)

// namespaces reads the optional list of namespace entries at key (a null
// one is an error: Synapse would fail on it); count is the number of
// entries read before, in all lists.
func (r *reader) namespaces(w *walker, key string, dst *[]Namespace, count *int) {
	n, ok := r.entries[key]
	if r.err != nil || !ok {
		return
	}
	entries, err := r.list(key, n, "{regex, exclusive} entries")
	r.fail(err)
	if *count += len(entries); r.err == nil && *count > MaxNamespaces {
		r.fail(r.errorAt(key, "has "+TooManyNamespaces))
		return
	}
	for i := 0; r.err == nil && i < len(entries); i++ {
		e := reader{}
		e.mapping, e.err = w.fields(entries[i], fmt.Sprintf("%s.%s[%d]", r.field, key, i))
		var ns Namespace
		e.str("regex", "every namespace entry needs a regex", &ns.Regex)
		if !e.boolean("exclusive", e.required("exclusive", "every namespace entry needs exclusive: true or false"), &ns.Exclusive) {
			r.fail(e.err)
			return
		}
		*dst = append(*dst, ns)
	}
}
