package store

import (
	"bytes"
	"errors"
	"strings"
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

func TestLimitsValidate(t *testing.T) {
	ok := Limits{MaxItems: 1, MaxBytes: 1, MaxItemsByKind: map[Kind]int{KindEvent: 1}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v", ok, err)
	}
	for _, tt := range []struct {
		lim   Limits
		field string
	}{
		{Limits{MaxItems: 0, MaxBytes: 1}, "MaxItems"},
		{Limits{MaxItems: 1, MaxBytes: 0}, "MaxBytes"},
		{Limits{MaxItems: 1, MaxBytes: 1, MaxItemsByKind: map[Kind]int{KindToDevice: 0}}, "MaxItemsByKind[3]"},
	} {
		err := tt.lim.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid naming %s", tt.lim, err, tt.field)
		}
	}
}

func TestFitTakesAContiguousRunWithinTheLimits(t *testing.T) {
	lim := Limits{MaxItems: 3, MaxBytes: 10, MaxItemsByKind: map[Kind]int{KindEphemeral: 1}}
	type item struct {
		k    Kind
		size int
	}
	for _, tt := range []struct {
		name  string
		items []item
		want  int
	}{
		{"the first always fits", []item{{KindEvent, 50}, {KindEvent, 1}}, 1},
		{"bytes", []item{{KindEvent, 4}, {KindEvent, 6}, {KindEvent, 1}}, 2},
		{"per kind", []item{{KindEvent, 1}, {KindEvent, 1}, {KindEvent, 1}, {KindEvent, 1}}, 3},
		{"by kind override", []item{{KindEphemeral, 1}, {KindEvent, 1}, {KindEphemeral, 1}}, 2},
		{"kinds count apart", []item{{KindEvent, 1}, {KindToDevice, 1}, {KindEvent, 1}, {KindToDevice, 1}}, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := lim.NewFit()
			n := 0
			for _, it := range tt.items {
				if !f.Take(it.k, it.size) {
					break
				}
				n++
			}
			if n != tt.want || f.Len() != tt.want {
				t.Fatalf("took %d (Len %d), want %d", n, f.Len(), tt.want)
			}
		})
	}
}
