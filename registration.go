package scheduler

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/asdeliver/scheduler/internal/interest"
	"go.yaml.in/yaml/v3"
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
	// on, an absolute http or https URL without a trailing '/' (one is
	// removed); transactions are PUT to URL + "/_matrix/app/v1/transactions/{txnId}".
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
//   - url is required: an absolute http or https URL with a host and
//     without query or fragment, or null (the service receives nothing).
//     The empty string is an error, not null: Synapse would try to send to
//     it and fail forever.
//   - namespaces is optional (Synapse requires it); when present, a mapping
//     whose optional users, aliases and rooms are lists of mappings, each
//     with a string regex and a boolean exclusive. Every regex must compile
//     in Go's RE2 syntax, which has no look-arounds or back-references.
//   - protocols is an optional list of strings; rate_limited,
//     receive_ephemeral, de.sorunome.msc2409.push_ephemeral,
//     org.matrix.msc3202 and io.element.msc4190 are optional booleans. A
//     null value counts as absent.
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
	root, err := r.parseYAML(data)
	if err != nil {
		return err
	}
	w := yamlWalker{budget: maxYAMLMergeWork}
	top, rerr := w.fields(root, "")
	if rerr != nil {
		return r.regError(rerr.field, rerr.reason)
	}

	// The required strings. id first, so that later errors can name it.
	for _, f := range []struct {
		key string
		dst *string
	}{
		{"id", &r.ID},
		{"as_token", &r.ASToken},
		{"hs_token", &r.HSToken},
		{"sender_localpart", &r.SenderLocalpart},
	} {
		n, ok := top[f.key]
		if !ok {
			return r.regError(f.key, "missing: it is required")
		}
		s, reason := yamlString(n)
		if reason != "" {
			return r.regError(f.key, "must be a string, but it is "+reason)
		}
		*f.dst = s
	}

	n, ok := top["url"]
	switch {
	case !ok:
		return r.regError("url", "missing: set it to the base URL the application service listens on "+
			"(e.g. http://localhost:29318), or to null if it should receive no events")
	case isYAMLNull(n):
		r.URL = ""
	default:
		s, reason := yamlString(n)
		if reason != "" {
			return r.regError("url", "must be a string or null, but it is "+reason)
		}
		if s == "" {
			return r.regError("url", `is "": set it to the base URL the application service listens on `+
				"(e.g. http://localhost:29318), or to null if it should receive no events")
		}
		r.URL = s
	}

	if n, ok := top["rate_limited"]; ok && !isYAMLNull(n) {
		b, reason := yamlBool(n)
		if reason != "" {
			return r.regError("rate_limited", "must be true or false, but it is "+reason)
		}
		r.RateLimited = &b
	}
	for _, f := range []struct {
		key string
		dst *bool
	}{
		{"receive_ephemeral", &r.ReceiveEphemeral},
		{"de.sorunome.msc2409.push_ephemeral", &r.PushEphemeral},
		{"org.matrix.msc3202", &r.MSC3202},
		{"io.element.msc4190", &r.MSC4190},
	} {
		if n, ok := top[f.key]; ok && !isYAMLNull(n) {
			b, reason := yamlBool(n)
			if reason != "" {
				return r.regError(f.key, "must be true or false, but it is "+reason)
			}
			*f.dst = b
		}
	}

	if n, ok := top["protocols"]; ok && !isYAMLNull(n) {
		n = resolveAlias(n)
		if n.Kind != yaml.SequenceNode {
			return r.regError("protocols", "must be a list of strings, but it is "+describeYAML(n))
		}
		for i, item := range n.Content {
			s, reason := yamlString(item)
			if reason != "" {
				return r.regError(fmt.Sprintf("protocols[%d]", i), "must be a string, but it is "+reason)
			}
			r.Protocols = append(r.Protocols, s)
		}
	}

	if n, ok := top["namespaces"]; ok && !isYAMLNull(n) {
		nsFields, rerr := w.fields(n, "namespaces")
		if rerr != nil {
			return r.regError(rerr.field, rerr.reason)
		}
		for _, kind := range []struct {
			key string
			dst *[]Namespace
		}{
			{"users", &r.Namespaces.Users},
			{"aliases", &r.Namespaces.Aliases},
			{"rooms", &r.Namespaces.Rooms},
		} {
			list, ok := nsFields[kind.key]
			if !ok {
				continue
			}
			field := "namespaces." + kind.key
			list = resolveAlias(list)
			if list.Kind != yaml.SequenceNode {
				return r.regError(field, "must be a list of {regex, exclusive} entries, but it is "+describeYAML(list))
			}
			for i, entry := range list.Content {
				entryField := fmt.Sprintf("%s[%d]", field, i)
				ef, rerr := w.fields(entry, entryField)
				if rerr != nil {
					return r.regError(rerr.field, rerr.reason)
				}
				var ns Namespace
				var reason string
				re, ok := ef["regex"]
				if !ok {
					return r.regError(entryField+".regex", "missing: every namespace entry needs a regex")
				}
				if ns.Regex, reason = yamlString(re); reason != "" {
					return r.regError(entryField+".regex", "must be a string, but it is "+reason)
				}
				ex, ok := ef["exclusive"]
				if !ok {
					return r.regError(entryField+".exclusive", "missing: every namespace entry needs exclusive: true or false")
				}
				if ns.Exclusive, reason = yamlBool(ex); reason != "" {
					return r.regError(entryField+".exclusive", "must be true or false, but it is "+reason)
				}
				*kind.dst = append(*kind.dst, ns)
			}
		}
	}
	return nil
}

// parseYAML returns the root node of the single YAML document in data.
func (r *Registration) parseYAML(data []byte) (root *yaml.Node, err error) {
	// The YAML parser is not ours; whatever it does, a bad file must not
	// panic the homeserver.
	defer func() {
		if p := recover(); p != nil {
			root, err = nil, r.regError("", fmt.Sprintf("the YAML parser failed: %v", p))
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, r.regError("", "the file is empty: a registration is a YAML mapping")
		}
		return nil, r.regError("", "invalid YAML: "+strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, r.regError("", "the file holds more than one YAML document: keep only the registration")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, r.regError("", "the file is empty: a registration is a YAML mapping")
	}
	return doc.Content[0], nil
}

// maxYAMLMergeWork bounds the mapping entries yamlWalker visits, so that
// nested merge keys cannot make it work exponentially (a "billion laughs").
const maxYAMLMergeWork = 100000

// yamlWalker reads YAML mappings, tracking the work left.
type yamlWalker struct {
	budget int
}

// yamlError is a problem with a YAML field.
type yamlError struct {
	field, reason string
}

// fields returns the entries of the YAML mapping n, named field, by key.
// Aliases and merge keys are resolved as PyYAML does: the mapping's own keys
// win over merged ones, and earlier merged mappings over later ones. A key
// that appears twice in the mapping itself is an error. Keys that are not
// strings are skipped: no field has such a name.
func (w *yamlWalker) fields(n *yaml.Node, field string) (map[string]*yaml.Node, *yamlError) {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		what := "the file"
		if field != "" {
			what = "it"
		}
		return nil, &yamlError{field, "must be a mapping (key: value lines), but " + what + " is " + describeYAML(n)}
	}
	m := make(map[string]*yaml.Node, len(n.Content)/2)
	if rerr := w.collect(n, field, m, 0); rerr != nil {
		return nil, rerr
	}
	return m, nil
}

// collect adds to m the entries of mapping n, merged depth merge keys deep,
// then those n merges, keeping the entries m already has.
func (w *yamlWalker) collect(n *yaml.Node, field string, m map[string]*yaml.Node, depth int) *yamlError {
	w.budget -= len(n.Content)/2 + 1
	if w.budget < 0 || depth > 10 {
		return &yamlError{field, "merge keys (<<) nested too deeply, or aliases repeating too much: write the mapping out"}
	}
	own := make(map[string]int, len(n.Content)/2) // key: line
	var merged []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolveAlias(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			continue
		}
		if k.ShortTag() == "!!merge" {
			merged = append(merged, v)
			continue
		}
		if k.ShortTag() != "!!str" {
			continue
		}
		if first, dup := own[k.Value]; dup {
			where := field
			if where == "" {
				where = "the file"
			}
			return &yamlError{joinField(field, k.Value), fmt.Sprintf("appears twice in %s (lines %d and %d): keep one", where, first, k.Line)}
		}
		own[k.Value] = k.Line
		if _, done := m[k.Value]; !done {
			m[k.Value] = v
		}
	}
	for _, v := range merged {
		v = resolveAlias(v)
		var maps []*yaml.Node
		switch v.Kind {
		case yaml.MappingNode:
			maps = []*yaml.Node{v}
		case yaml.SequenceNode:
			maps = v.Content
		default:
			return &yamlError{field, fmt.Sprintf("a merge key (<<) at line %d must refer to a mapping or a list of mappings", v.Line)}
		}
		for _, mm := range maps {
			mm = resolveAlias(mm)
			if mm.Kind != yaml.MappingNode {
				return &yamlError{field, fmt.Sprintf("a merge key (<<) at line %d must refer to a mapping or a list of mappings", mm.Line)}
			}
			if rerr := w.collect(mm, field, m, depth+1); rerr != nil {
				return rerr
			}
		}
	}
	return nil
}

func joinField(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// resolveAlias returns the node an alias refers to, or n itself. Alias
// targets are never aliases.
func resolveAlias(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

func isYAMLNull(n *yaml.Node) bool {
	n = resolveAlias(n)
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// yaml11Bool reports whether a plain scalar is a boolean to a YAML 1.1
// parser such as PyYAML, which Synapse uses, and its value.
func yaml11Bool(n *yaml.Node) (value, ok bool) {
	if n.Kind != yaml.ScalarNode || n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle|yaml.TaggedStyle) != 0 {
		return false, false
	}
	switch n.Value {
	case "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON":
		return true, true
	case "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF":
		return false, true
	}
	return false, false
}

// yamlString returns the string n holds, or a description of what it is
// instead. It never returns the value of a scalar that is not a string: the
// field may be a token.
func yamlString(n *yaml.Node) (string, string) {
	n = resolveAlias(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return "", describeYAML(n)
	}
	if _, ok := yaml11Bool(n); ok {
		return "", "a boolean to Synapse's YAML 1.1 parser (yes, no, on and off are booleans): quote it"
	}
	return n.Value, ""
}

// yamlBool returns the boolean n holds, or a description of what it is
// instead.
func yamlBool(n *yaml.Node) (bool, string) {
	n = resolveAlias(n)
	if b, ok := yaml11Bool(n); ok {
		return b, ""
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		// An explicitly tagged !!bool.
		switch strings.ToLower(n.Value) {
		case "true", "yes", "on":
			return true, ""
		case "false", "no", "off":
			return false, ""
		}
	}
	return false, describeYAML(n)
}

// describeYAML says what kind of value n is, without its value.
func describeYAML(n *yaml.Node) string {
	n = resolveAlias(n)
	switch n.Kind {
	case yaml.MappingNode:
		return fmt.Sprintf("a mapping (line %d)", n.Line)
	case yaml.SequenceNode:
		return fmt.Sprintf("a list (line %d)", n.Line)
	case yaml.ScalarNode:
		what := map[string]string{
			"!!str":       "a string",
			"!!int":       "a number",
			"!!float":     "a number",
			"!!bool":      "a boolean",
			"!!null":      "null",
			"!!timestamp": "a date",
			"!!binary":    "binary data",
		}[n.ShortTag()]
		if what == "" {
			what = "a value tagged " + strconv.Quote(n.Tag)
		}
		return fmt.Sprintf("%s (line %d)", what, n.Line)
	}
	return fmt.Sprintf("an unexpected YAML node (line %d)", n.Line)
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
	case hasControl(r.ASToken):
		return r.regError("as_token", "contains a control character (a newline?): remove it")
	case r.HSToken == "":
		return r.regError("hs_token", "is empty: set it to the secret token the application service expects from the homeserver")
	case hasControl(r.HSToken):
		return r.regError("hs_token", "contains a control character (a newline?), which cannot be sent in an HTTP header: remove it")
	case r.SenderLocalpart == "":
		return r.regError("sender_localpart", "is empty: set it to the localpart of the application service's user")
	case !urlSafeLocalpart(r.SenderLocalpart):
		return r.regError("sender_localpart", fmt.Sprintf("%s has characters that a URL would have to encode, "+
			"which Synapse rejects: use only a-z, 0-9, '-', '.', '_', '~' and '/'", quoteShort(r.SenderLocalpart)))
	}
	if r.URL != "" {
		u, reason := checkASURL(r.URL)
		if reason != "" {
			return r.regError("url", reason+": set it to the base URL the application service listens on "+
				"(e.g. http://localhost:29318), or to null if it should receive no events")
		}
		if u != r.URL {
			r.URL = u
		}
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

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// urlSafeLocalpart reports whether Python's urllib.parse.quote leaves s as
// it is, which Synapse requires of sender_localpart.
func urlSafeLocalpart(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
			return false
		}
	}
	return true
}

// checkASURL checks that raw is an absolute http or https URL with a host
// and no query or fragment, and returns it without trailing '/'; or it
// returns why not. The reason shows the URL without its password.
func checkASURL(raw string) (string, string) {
	u, err := url.Parse(raw)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", "is not a valid URL (" + err.Error() + ")"
	}
	shown := strconv.Quote(u.Redacted())
	switch {
	case u.Scheme == "":
		return "", shown + " is not absolute: it needs http:// or https://"
	case u.Scheme != "http" && u.Scheme != "https":
		return "", shown + " uses " + u.Scheme + ": only http and https are supported"
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return "", shown + " has no host"
	case u.RawQuery != "" || u.ForceQuery:
		return "", shown + " has a query ('?'): a base URL cannot have one"
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "", shown + " has a fragment ('#'): a base URL cannot have one"
	}
	return strings.TrimRight(raw, "/"), ""
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
