package regfile

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// validFile is a registration that Parse accepts; tests append to it.
const validFile = "id: bridge\nurl: null\nas_token: a\nhs_token: h\nsender_localpart: bot\n"

// blockNesting returns a mapping nested depth levels deep by indentation.
func blockNesting(depth int) string {
	spaces := strings.Repeat(" ", depth)
	var b strings.Builder
	b.Grow(depth * (depth + 5) / 2)
	for i := range depth {
		b.WriteString(spaces[:i])
		b.WriteString("a:\n")
	}
	return b.String()
}

func TestParseRejectsDeepNestingEarly(t *testing.T) {
	for name, doc := range map[string]string{
		"block mappings, 10100 levels":   blockNesting(10100),
		"block mappings under a key":     validFile + "extra:\n" + blockNesting(200),
		"block sequences":                strings.Repeat("- ", 10100) + "x\n",
		"block sequences, one per line":  strings.ReplaceAll(blockNesting(1000), "a:", "-"),
		"flow sequences":                 strings.Repeat("[", 10100) + strings.Repeat("]", 10100),
		"flow mappings":                  "a: " + strings.Repeat("{a: ", 100) + strings.Repeat("}", 100) + "\n",
		"flow sequences over many lines": "a:\n" + strings.Repeat("  [\n", 100) + strings.Repeat("  ]\n", 100),
		"block and flow":                 blockNesting(40) + strings.Repeat(" ", 40) + "b: " + strings.Repeat("[", 30) + strings.Repeat("]", 30) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			f, err := Parse([]byte(doc))
			require.Nil(t, f)
			require.NotNil(t, err)
			require.Equal(t, "", err.Field)
			require.Contains(t, err.Reason, "nested more than 64 levels deep")
			require.Contains(t, err.Reason, "line ")
		})
	}
}

func TestParseAcceptsNestingUpToTheLimit(t *testing.T) {
	// 63 levels of mappings under extra, the file's own mapping being the
	// first: 64 in all.
	deepest := "extra:\n" + indentLines(blockNesting(62), "  ") + strings.Repeat(" ", 62+2) + "b: 1\n"
	var blockScalar strings.Builder
	blockScalar.WriteString("extra: |\n")
	for i := range 100 {
		blockScalar.WriteString("  " + strings.Repeat(" ", i) + "[{x\n")
	}
	for name, extra := range map[string]string{
		"64 block levels":                 deepest,
		"64 flow levels":                  "extra: " + strings.Repeat("[", 63) + strings.Repeat("]", 63) + "\n",
		"brackets in quotes":              "extra: '" + strings.Repeat("[{", 100) + "'\nmore: \"" + strings.Repeat(`[\"{`, 100) + "\"\n",
		"brackets in a multi-line quote":  "extra: '" + strings.Repeat("[\n  ", 100) + "'\n",
		"brackets in comments":            "# " + strings.Repeat("[", 100) + "\nextra: 1 # " + strings.Repeat("{", 100) + "\n",
		"brackets in a plain scalar":      "extra: a" + strings.Repeat("[", 100) + "\n",
		"apostrophes in a plain scalar":   "extra: don't [x] won't\nmore: [a, b]\n",
		"a block scalar":                  blockScalar.String(),
		"a folded block scalar in a list": "extra:\n  - >-\n" + strings.Repeat("     [[[[\n", 30) + "  - x\n",
	} {
		t.Run(name, func(t *testing.T) {
			f, err := Parse([]byte(validFile + extra))
			require.Nil(t, err, "input:\n%s", extra)
			require.Equal(t, "bridge", f.ID)
		})
	}
	_, err := Parse([]byte(validFile + "extra:\n" + indentLines(blockNesting(63), "  ") + strings.Repeat(" ", 63+2) + "b: 1\n"))
	require.NotNil(t, err)
	require.Contains(t, err.Reason, "nested more than 64 levels deep", "one more level is too many")
}

// indentLines puts prefix before every line of s.
func indentLines(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}

// depth returns how deep collections nest in n, aliases not followed.
func depth(n *yaml.Node) int {
	d := 0
	for _, c := range n.Content {
		d = max(d, depth(c))
	}
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		d++
	}
	return d
}

// FuzzCheckNesting checks checkNesting against the nesting the YAML
// parser finds: a document it parses that nests more than MaxNesting
// levels is refused, and one that nests less than MaxNesting (the scan may
// count one level too many) is not.
func FuzzCheckNesting(f *testing.F) {
	f.Add([]byte(validFile + "namespaces:\n  users:\n    - regex: '@a_.*'\n      exclusive: true\n"))
	f.Add([]byte(blockNesting(70)))
	f.Add([]byte("- - - - - - x\n"))
	f.Add([]byte("a: [[{b: [c]}], 'd[', \"e{\\\"\"] # [\n"))
	f.Add([]byte("a: |\n  [[[\n    {{{\nb: >-\n  x\n"))
	f.Add([]byte("? - a\n  - b\n: - c\n"))
	f.Add([]byte("a: &x [1]\nb: !!seq [*x]\n"))
	f.Add([]byte("- a: b\n  c:\n  - d: [e]\n"))
	f.Add([]byte("'a\n [': 'b'\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var doc yaml.Node
		if yaml.Unmarshal(data, &doc) != nil {
			return
		}
		d, err := depth(&doc), checkNesting(data)
		if d > MaxNesting {
			require.NotNil(t, err, "nesting %d not found in:\n%s", d, data)
		}
		if d < MaxNesting {
			require.Nil(t, err, "nesting %d refused in:\n%s", d, data)
		}
	})
}

// BenchmarkParseDeepNesting measures how long a file of 10,100 levels of
// block nesting takes to refuse.
func BenchmarkParseDeepNesting(b *testing.B) {
	data := []byte(blockNesting(10100))
	for b.Loop() {
		if _, err := Parse(data); err == nil {
			b.Fatal("accepted")
		}
	}
}
