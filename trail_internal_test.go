package live

import "testing"

func TestTrail(t *testing.T) {
	pos := func(e string, s uint64) Position { return Position{e, s} }
	var tr trail
	if first, from, to := tr.ready(pos("a", 3)); !first || from != to {
		t.Fatalf("first ready: %v %v %v", first, from, to)
	}
	for _, tc := range []struct {
		at       Position
		seen     bool
		from, to Position
	}{
		{pos("a", 4), false, pos("a", 3), pos("a", 3)}, // the next
		{pos("a", 4), true, pos("a", 4), pos("a", 4)},  // again
		{pos("a", 7), false, pos("a", 4), pos("a", 6)}, // 5 and 6 skipped
		{pos("b", 1), false, pos("a", 7), pos("b", 0)}, // another epoch
	} {
		seen, from, to := tr.next(tc.at)
		if seen != tc.seen || from != tc.from || to != tc.to {
			t.Errorf("next(%v) = %v (%v, %v]; want %v (%v, %v]", tc.at, seen, from, to, tc.seen, tc.from, tc.to)
		}
	}
	if first, from, to := tr.ready(pos("b", 1)); first || from != to {
		t.Errorf("resubscribed at the last position: %v (%v, %v]; want no hole", first, from, to)
	}
	if first, from, to := tr.ready(pos("b", 5)); first || from != pos("b", 1) || to != pos("b", 5) {
		t.Errorf("resubscribed ahead: %v (%v, %v]; want (1.b, 5.b]", first, from, to)
	}
}
