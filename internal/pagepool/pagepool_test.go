package pagepool

import "testing"

// TestPolicies: which unit each policy gives up, that pinned units are never evicted, that
// a unit that cannot fit evicts nothing, and the counts.
func TestPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy Policy
		want   int // the unit evicted when unit 9 arrives
	}{{LRU, 2}, {LFU, 3}, {FIFO, 1}} {
		t.Run(string(tc.policy), func(t *testing.T) {
			p := New[string](3, tc.policy)
			// Units 1, 2, 3 fill the pool, then 2 is used twice, 3 and 1 once each: 2 is the
			// least recent (lru), 3 the least used with the older last use (lfu), 1 the
			// first in (fifo).
			for _, u := range []int{1, 2, 3} {
				if p.Get(u) != nil {
					t.Fatal("hit in an empty pool")
				}
				if ok, ev := p.Put(u, 1, "w"); !ok || len(ev) != 0 {
					t.Fatalf("unit %d: ok %v, evicted %d", u, ok, len(ev))
				}
				p.Unpin(u)
			}
			for _, u := range []int{2, 2, 3, 1} {
				if e := p.Get(u); e == nil || e.Value != "w" {
					t.Fatalf("unit %d missed", u)
				}
				p.Unpin(u)
			}
			p.Get(9)
			ok, ev := p.Put(9, 1, "nine")
			if !ok || len(ev) != 1 || ev[0].Unit != tc.want {
				t.Fatalf("evicted %v, want unit %d", ev, tc.want)
			}
			// 9 is pinned: a two-page unit evicts the two others, never 9.
			if ok, ev := p.Put(10, 2, ""); !ok || len(ev) != 2 || !p.Holds(9) || p.Used() != 3 {
				t.Fatalf("two-page unit beside a pinned one: ok %v, evicted %d, 9 held %v, used %d", ok, len(ev), p.Holds(9), p.Used())
			}
			p.Unpin(10)
			// A unit that needs the pinned unit's page stays out and evicts nothing.
			if ok, ev := p.Put(11, 3, ""); ok || len(ev) != 0 || !p.Holds(10) {
				t.Fatalf("a unit that needs a pinned page: ok %v, evicted %d", ok, len(ev))
			}
			if h, m, e := p.Stats(); h != 4 || m != 4 || e != 3 {
				t.Errorf("stats: %d hits, %d misses, %d evicted; want 4, 4, 3", h, m, e)
			}
			if got := p.Drop(); len(got) != 2 || p.Used() != 0 || p.Holds(9) {
				t.Errorf("drop returned %d entries, %d pages used after", len(got), p.Used())
			}
		})
	}
}

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]Policy{"": LRU, "lru": LRU, "lfu": LFU, "fifo": FIFO} {
		if got, err := ParsePolicy(in); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParsePolicy("random"); err == nil {
		t.Error("unknown policy accepted")
	}
}

func TestPagesFor(t *testing.T) {
	for _, tc := range []struct{ bytes, page, want int64 }{{0, 4, 0}, {1, 4, 1}, {4, 4, 1}, {5, 4, 2}} {
		if got := PagesFor(tc.bytes, tc.page); got != tc.want {
			t.Errorf("PagesFor(%d, %d) = %d, want %d", tc.bytes, tc.page, got, tc.want)
		}
	}
}
