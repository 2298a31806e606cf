package regfile

import (
	"bytes"
	"fmt"
)

// MaxNesting is how deep collections (mappings and lists, block or flow)
// may nest in a registration file, the file's own mapping counting as the
// first level. A registration needs four (the file, namespaces, a list, an
// entry); the YAML parser's own limit is 10,000 levels, which it reaches
// only after seconds of work, so Parse checks this bound first, in one
// cheap pass over the text.
const MaxNesting = 64

// checkNesting returns an error if collections in the YAML document data
// nest more than MaxNesting levels deep, found without parsing it: a pass
// over its lines that follows block indentation (one level per indentation
// column in use, and per "- " or "? " that starts a nested collection on
// the same line) and flow brackets, and skips quoted scalars, comments and
// block scalars. It may count a level too many where a plain scalar
// follows "- " and holds ": ", never fewer for a document the parser would
// accept; it stops at the first line too deep.
func checkNesting(data []byte) *Error {
	n := nestingScanner{}
	line := 0
	for len(data) > 0 {
		line++
		var l []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			l, data = data[:i], data[i+1:]
		} else {
			l, data = data, nil
		}
		if n.scanLine(bytes.TrimSuffix(l, []byte("\r"))) {
			return &Error{Reason: fmt.Sprintf("the file is nested more than %d levels deep (line %d): "+
				"no registration needs that; write it flat", MaxNesting, line)}
		}
	}
	return nil
}

// nestingScanner is the state of checkNesting between lines.
type nestingScanner struct {
	// indents are the columns of the block collections that enclose the
	// current line, innermost last.
	indents []int
	// flow is how many flow collections ('[', '{') are open.
	flow int
	// quote is the quote character of a quoted scalar that continues on
	// the next line, or 0.
	quote byte
	// inBlockScalar is set after a block scalar's header ('|' or '>'):
	// the lines indented more than blockScalar, the column of the
	// collection that holds it (-1 at the top), are its content.
	inBlockScalar bool
	blockScalar   int
}

// scanLine reads one line and reports whether it nests too deeply.
func (n *nestingScanner) scanLine(l []byte) bool {
	indent := 0
	for indent < len(l) && l[indent] == ' ' {
		indent++
	}
	if n.inBlockScalar {
		if indent == len(l) || indent > n.blockScalar {
			return false // a content line of the block scalar
		}
		n.inBlockScalar = false
	}
	i := 0
	if n.quote != 0 {
		if i = n.skipQuote(l, 0); n.quote != 0 {
			return false // the quoted scalar goes on
		}
	} else if n.flow == 0 {
		// Block context: the line's first token sits in the collection at
		// its indentation.
		if indent == len(l) || l[indent] == '#' {
			return false
		}
		if n.push(indent) {
			return true
		}
		i = indent
		// "- " and "? " open a nested collection where more follows on
		// the line: another indicator, or a "key: value".
		for i < len(l) && (l[i] == '-' || l[i] == '?') && (i+1 == len(l) || l[i+1] == ' ') {
			j := i + 1
			for j < len(l) && l[j] == ' ' {
				j++
			}
			if j == len(l) || l[j] == '#' {
				return false
			}
			nested := (l[j] == '-' || l[j] == '?') && (j+1 == len(l) || l[j+1] == ' ')
			if nested || bytes.Contains(l[j:], []byte(": ")) || bytes.HasSuffix(l[j:], []byte(":")) {
				if n.push(j) {
					return true
				}
			}
			i = j
		}
	}
	return n.scanTokens(l, i)
}

// push records a block collection at column col, after leaving those at
// col or deeper, and reports whether that is too deep.
func (n *nestingScanner) push(col int) bool {
	for len(n.indents) > 0 && n.indents[len(n.indents)-1] >= col {
		n.indents = n.indents[:len(n.indents)-1]
	}
	n.indents = append(n.indents, col)
	return len(n.indents)+n.flow > MaxNesting
}

// scanTokens reads l from i on, after the block indicators: flow brackets,
// quoted scalars, comments and block scalar headers. It reports whether
// the line nests too deeply.
func (n *nestingScanner) scanTokens(l []byte, i int) bool {
	// atToken is set where a token may start: a quote there opens a
	// quoted scalar, and '|' or '>' a block scalar.
	atToken := true
	for ; i < len(l); i++ {
		c := l[i]
		switch {
		case c == ' ' || c == '\t':
			continue
		case c == '#' && (i == 0 || l[i-1] == ' ' || l[i-1] == '\t'):
			return false // a comment
		case (c == '\'' || c == '"') && atToken:
			n.quote = c
			if i = n.skipQuote(l, i+1); n.quote != 0 {
				return false
			}
			i-- // at the closing quote
			atToken = false
			continue
		case (c == '|' || c == '>') && atToken && n.flow == 0:
			n.inBlockScalar, n.blockScalar = true, -1
			if len(n.indents) > 0 {
				n.blockScalar = n.indents[len(n.indents)-1]
			}
			return false
		case c == '[' || c == '{':
			if n.flow > 0 || atToken {
				n.flow++
				if len(n.indents)+n.flow > MaxNesting {
					return true
				}
				atToken = true
				continue
			}
		case (c == ']' || c == '}') && n.flow > 0:
			n.flow--
		case c == ',' && n.flow > 0:
			atToken = true
			continue
		case c == ':' && (i+1 == len(l) || l[i+1] == ' ' || (n.flow > 0 && (l[i+1] == ',' || l[i+1] == ']' || l[i+1] == '}'))):
			// A mapping's value follows. (A plain scalar cannot hold ": ";
			// "- " and "? " are indicators only where a line's content
			// starts, which scanLine reads.)
			atToken = true
			continue
		case c == '?' && n.flow > 0 && atToken && (i+1 == len(l) || l[i+1] == ' '):
			continue // an explicit key in a flow mapping
		case (c == '&' || c == '!') && atToken:
			// An anchor or a tag: the token after it starts a node too.
			for i+1 < len(l) && l[i+1] != ' ' && l[i+1] != '\t' {
				i++
			}
			continue
		}
		atToken = false
	}
	return false
}

// skipQuote returns the index just past the quote that closes the quoted
// scalar n.quote, looking from i on in l; or len(l), with n.quote still
// set, when the scalar goes on to the next line.
func (n *nestingScanner) skipQuote(l []byte, i int) int {
	for ; i < len(l); i++ {
		switch {
		case n.quote == '"' && l[i] == '\\':
			i++ // an escaped character
		case l[i] == n.quote && n.quote == '\'' && i+1 < len(l) && l[i+1] == '\'':
			i++ // '' is a quote in a single-quoted scalar
		case l[i] == n.quote:
			n.quote = 0
			return i + 1
		}
	}
	return len(l)
}
