package store

import (
	"bytes"
	"testing"
)

func TestHashItemsDistinguishesWhatConcatenationWouldNot(t *testing.T) {
	base := []Item{{Kind: KindEvent, Key: "$a", Data: []byte(`{"x":1}`)}}
	same := []Item{{Kind: KindEvent, Key: "$a", Data: []byte(`{"x":1}`)}}
	if !bytes.Equal(HashItems(base), HashItems(same)) {
		t.Fatal("equal item lists must hash equally")
	}
	variants := map[string][]Item{
		"other data":  {{Kind: KindEvent, Key: "$a", Data: []byte(`{"x":2}`)}},
		"other key":   {{Kind: KindEvent, Key: "$b", Data: []byte(`{"x":1}`)}},
		"other kind":  {{Kind: 2, Key: "$a", Data: []byte(`{"x":1}`)}},
		"key to data": {{Kind: KindEvent, Key: "$a{", Data: []byte(`"x":1}`)}},
		"split in two": {
			{Kind: KindEvent, Key: "$a", Data: []byte(`{"x"`)},
			{Kind: KindEvent, Key: "", Data: []byte(`:1}`)},
		},
		"empty": nil,
	}
	for name, items := range variants {
		if bytes.Equal(HashItems(base), HashItems(items)) {
			t.Errorf("%s: hash collides with the base list", name)
		}
	}
	if len(HashItems(nil)) != 32 {
		t.Errorf("HashItems returns a SHA-256 digest")
	}
}

func TestLimitsMaxFor(t *testing.T) {
	lim := Limits{MaxItems: 7, MaxItemsByKind: map[Kind]int{KindEphemeral: 3, KindEvent: 50}, MaxBytes: 1}
	for k, want := range map[Kind]int{KindEvent: 50, KindEphemeral: 3, KindToDevice: 7, Kind(200): 7} {
		if got := lim.MaxFor(k); got != want {
			t.Errorf("MaxFor(%d): got %d, want %d", k, got, want)
		}
	}
	if got := (Limits{MaxItems: 4}).MaxFor(KindEphemeral); got != 4 {
		t.Errorf("MaxFor with nil MaxItemsByKind: got %d, want MaxItems 4", got)
	}
}
