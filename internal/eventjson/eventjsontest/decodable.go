// Package eventjsontest holds what the tests of the event JSON scanner and
// of the events built on it check the scanner against: a reference
// written with encoding/json, independent of the scanner.
package eventjsontest

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Decodable reports whether the valid JSON data nests at most maxDepth
// deep (eventjson.MaxDepth) and has no number beyond a 64-bit float's
// range: what the scanner accepts, as encoding/json decodes it.
func Decodable(data []byte, maxDepth int) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return false
	}
	var walk func(v any, depth int) bool
	walk = func(v any, depth int) bool {
		var items []any
		switch v := v.(type) {
		case json.Number:
			_, err := strconv.ParseFloat(string(v), 64)
			return err == nil
		case []any:
			items = v
		case map[string]any:
			for _, e := range v {
				items = append(items, e)
			}
		default:
			return true
		}
		if depth+1 > maxDepth {
			return false
		}
		for _, e := range items {
			if !walk(e, depth+1) {
				return false
			}
		}
		return true
	}
	return walk(v, 0)
}
