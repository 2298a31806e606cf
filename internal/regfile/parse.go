package regfile

import "fmt"

// File is what a registration file says, read as Synapse reads it; the
// values are not checked yet. Absent and null optional fields are zero.
type File struct {
	ID, ASToken, HSToken, SenderLocalpart string
	// URL is "" when the file says url: null.
	URL                   string
	Users, Aliases, Rooms []Namespace
	Protocols             []string
	RateLimited           *bool
	ReceiveEphemeral      bool // receive_ephemeral
	PushEphemeral         bool // de.sorunome.msc2409.push_ephemeral
	MSC3202               bool // org.matrix.msc3202
	MSC4190               bool // io.element.msc4190
}

// Namespace is one entry of namespaces.users, .aliases or .rooms.
type Namespace struct {
	Regex     string
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
	root, err := parseYAML(data)
	if err != nil {
		return err
	}
	w := walker{budget: maxMergeWork}
	top, err := w.fields(root, "")
	if err != nil {
		return err
	}

	// The required strings. id first, so that later errors can name it.
	for _, field := range []struct {
		key string
		dst *string
	}{
		{"id", &f.ID},
		{"as_token", &f.ASToken},
		{"hs_token", &f.HSToken},
		{"sender_localpart", &f.SenderLocalpart},
	} {
		n, err := top.required(field.key, "it is required")
		if err != nil {
			return err
		}
		if *field.dst, err = top.str(field.key, n); err != nil {
			return err
		}
	}

	n, err := top.required("url", URLHint)
	if err != nil {
		return err
	}
	if !isNull(n) {
		s, reason := yamlString(n)
		switch {
		case reason != "":
			return top.err("url", "must be a string or null, but it is "+reason)
		case s == "":
			return top.err("url", `is "": `+URLHint)
		}
		f.URL = s
	}

	if n := top.optional("rate_limited"); n != nil {
		b, err := top.boolean("rate_limited", n)
		if err != nil {
			return err
		}
		f.RateLimited = &b
	}
	for _, field := range []struct {
		key string
		dst *bool
	}{
		{"receive_ephemeral", &f.ReceiveEphemeral},
		{"de.sorunome.msc2409.push_ephemeral", &f.PushEphemeral},
		{"org.matrix.msc3202", &f.MSC3202},
		{"io.element.msc4190", &f.MSC4190},
	} {
		if n := top.optional(field.key); n != nil {
			if *field.dst, err = top.boolean(field.key, n); err != nil {
				return err
			}
		}
	}

	if n := top.optional("protocols"); n != nil {
		items, err := top.list("protocols", n, "strings")
		if err != nil {
			return err
		}
		for i, item := range items {
			s, err := top.str(fmt.Sprintf("protocols[%d]", i), item)
			if err != nil {
				return err
			}
			f.Protocols = append(f.Protocols, s)
		}
	}

	if n := top.optional("namespaces"); n != nil {
		ns, err := w.fields(n, "namespaces")
		if err != nil {
			return err
		}
		for _, kind := range []struct {
			key string
			dst *[]Namespace
		}{
			{"users", &f.Users},
			{"aliases", &f.Aliases},
			{"rooms", &f.Rooms},
		} {
			if *kind.dst, err = w.namespaces(ns, kind.key); err != nil {
				return err
			}
		}
	}
	return nil
}

// namespaces reads the list of namespace entries at key in ns, if any.
func (w *walker) namespaces(ns mapping, key string) ([]Namespace, *Error) {
	n, ok := ns.entries[key]
	if !ok {
		return nil, nil
	}
	entries, err := ns.list(key, n, "{regex, exclusive} entries")
	if err != nil {
		return nil, err
	}
	var out []Namespace
	for i, entry := range entries {
		e, err := w.fields(entry, fmt.Sprintf("%s.%s[%d]", ns.field, key, i))
		if err != nil {
			return nil, err
		}
		var item Namespace
		re, err := e.required("regex", "every namespace entry needs a regex")
		if err != nil {
			return nil, err
		}
		if item.Regex, err = e.str("regex", re); err != nil {
			return nil, err
		}
		ex, err := e.required("exclusive", "every namespace entry needs exclusive: true or false")
		if err != nil {
			return nil, err
		}
		if item.Exclusive, err = e.boolean("exclusive", ex); err != nil {
			return nil, err
		}
		out = append(out, item)
	}
	return out, nil
}
