package regfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// parseYAML returns the root node of the single YAML document in data.
func parseYAML(data []byte) (root *yaml.Node, err *Error) {
	// The YAML parser is not ours; whatever it does, a bad file must not
	// panic the homeserver.
	defer func() {
		if p := recover(); p != nil {
			root, err = nil, &Error{Reason: fmt.Sprintf("the YAML parser failed: %v", p)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Reason: "the file is empty: a registration is a YAML mapping"}
		}
		return nil, &Error{Reason: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, &Error{Reason: "the file holds more than one YAML document: keep only the registration"}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, &Error{Reason: "the file is empty: a registration is a YAML mapping"}
	}
	return doc.Content[0], nil
}

// maxMergeWork bounds the mapping entries a walker visits, so that nested
// merge keys cannot make it work exponentially (a "billion laughs").
const maxMergeWork = 100000

// walker reads YAML mappings, tracking the work left.
type walker struct {
	budget int
}

// mapping is the entries of a YAML mapping by key, and its field name.
type mapping struct {
	field   string
	entries map[string]*yaml.Node
}

// fields returns the entries of the YAML mapping n, named field, by key.
// Aliases and merge keys are resolved as PyYAML does: the mapping's own keys
// win over merged ones, and earlier merged mappings over later ones. A key
// that appears twice in the mapping itself is an error. Keys that are not
// strings are skipped: no field has such a name.
func (w *walker) fields(n *yaml.Node, field string) (mapping, *Error) {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		what := "the file"
		if field != "" {
			what = "it"
		}
		return mapping{}, &Error{Field: field, Reason: "must be a mapping (key: value lines), but " + what + " is " + describe(n)}
	}
	m := mapping{field: field, entries: make(map[string]*yaml.Node, len(n.Content)/2)}
	if err := w.collect(n, field, m.entries, 0); err != nil {
		return mapping{}, err
	}
	return m, nil
}

// collect adds to m the entries of mapping n, merged depth merge keys deep,
// then those n merges, keeping the entries m already has.
func (w *walker) collect(n *yaml.Node, field string, m map[string]*yaml.Node, depth int) *Error {
	w.budget -= len(n.Content)/2 + 1
	if w.budget < 0 || depth > 10 {
		return &Error{Field: field, Reason: "merge keys (<<) nested too deeply, or aliases repeating too much: write the mapping out"}
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
			return &Error{Field: joinField(field, k.Value), Reason: fmt.Sprintf("appears twice in %s (lines %d and %d): keep one", where, first, k.Line)}
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
			return &Error{Field: field, Reason: fmt.Sprintf("a merge key (<<) at line %d must refer to a mapping or a list of mappings", v.Line)}
		}
		for _, mm := range maps {
			mm = resolveAlias(mm)
			if mm.Kind != yaml.MappingNode {
				return &Error{Field: field, Reason: fmt.Sprintf("a merge key (<<) at line %d must refer to a mapping or a list of mappings", mm.Line)}
			}
			if err := w.collect(mm, field, m, depth+1); err != nil {
				return err
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

// errorAt returns an *Error for the entry key of m.
func (m mapping) errorAt(key, reason string) *Error {
	return &Error{Field: joinField(m.field, key), Reason: reason}
}

// required returns the node at key, or an error saying that it is
// missing and why it is needed.
func (m mapping) required(key, why string) (*yaml.Node, *Error) {
	n, ok := m.entries[key]
	if !ok {
		return nil, m.errorAt(key, "missing: "+why)
	}
	return n, nil
}

// optional returns the node at key, nil when it is absent or null.
func (m mapping) optional(key string) *yaml.Node {
	if n, ok := m.entries[key]; ok && !isNull(n) {
		return n
	}
	return nil
}

// str returns the string n, the entry key of m, holds.
func (m mapping) str(key string, n *yaml.Node) (string, *Error) {
	s, reason := yamlString(n)
	if reason != "" {
		return "", m.errorAt(key, "must be a string, but it is "+reason)
	}
	return s, nil
}

// boolean returns the boolean n, the entry key of m, holds.
func (m mapping) boolean(key string, n *yaml.Node) (bool, *Error) {
	b, reason := yamlBool(n)
	if reason != "" {
		return false, m.errorAt(key, "must be true or false, but it is "+reason)
	}
	return b, nil
}

// list returns the items of the YAML list n, the entry key of m; what
// names its items in the error.
func (m mapping) list(key string, n *yaml.Node, what string) ([]*yaml.Node, *Error) {
	n = resolveAlias(n)
	if n.Kind != yaml.SequenceNode {
		return nil, m.errorAt(key, "must be a list of "+what+", but it is "+describe(n))
	}
	return n.Content, nil
}

// resolveAlias returns the node an alias refers to, or n itself. Alias
// targets are never aliases.
func resolveAlias(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
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
		return "", describe(n)
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
	return false, describe(n)
}

// describe says what kind of value n is, without its value.
func describe(n *yaml.Node) string {
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
