package pagepool

import "fmt"

// Policy is the order in which unpinned entries are evicted.
type Policy string

// The policies. Ties go to the lower unit.
const (
	LRU  Policy = "lru"  // least recently used first
	LFU  Policy = "lfu"  // least often used first, then least recently used
	FIFO Policy = "fifo" // first cached first
)

// ParsePolicy reads a policy name; "" is LRU, the default.
func ParsePolicy(s string) (Policy, error) {
	switch Policy(s) {
	case "":
		return LRU, nil
	case LRU, LFU, FIFO:
		return Policy(s), nil
	}
	return "", fmt.Errorf("unknown eviction policy %q (want lru, lfu or fifo)", s)
}

// PagesFor is the pages of size page that bytes occupy.
func PagesFor(bytes, page int64) int64 { return (bytes + page - 1) / page }

// Entry is one cached unit and the value the pool holds for it.
type Entry[T any] struct {
	Unit  int
	Pages int64
	Value T

	inserted, lastUse, uses int64
	pinned                  bool
}

// Pool is the page pool of one rank.
type Pool[T any] struct {
	policy   Policy
	capacity int64 // pages
	used     int64 // pages
	tick     int64 // requests so far
	entries  map[int]*Entry[T]

	hits, misses, evicted int64
}

// New returns an empty pool of capacity pages.
func New[T any](capacity int64, policy Policy) *Pool[T] {
	return &Pool[T]{policy: policy, capacity: max(capacity, 0), entries: map[int]*Entry[T]{}}
}

// Get is a request for unit u: its entry, pinned until Unpin, or nil on a miss (the caller
// then gathers the unit and offers it to Put).
func (p *Pool[T]) Get(u int) *Entry[T] {
	p.tick++
	e := p.entries[u]
	if e == nil {
		p.misses++
		return nil
	}
	p.hits++
	e.lastUse, e.uses, e.pinned = p.tick, e.uses+1, true
	return e
}

// Put caches unit u (pinned) after a miss, evicting unpinned entries by the policy until
// it fits. It returns the evicted entries, and false when the unit cannot fit even with
// every unpinned entry evicted (the caller keeps it in a temporary buffer; nothing is
// evicted then).
func (p *Pool[T]) Put(u int, pages int64, v T) (bool, []*Entry[T]) {
	var pinned int64
	for _, e := range p.entries {
		if e.pinned {
			pinned += e.Pages
		}
	}
	if pages > p.capacity-pinned {
		return false, nil
	}
	var out []*Entry[T]
	for p.used+pages > p.capacity {
		v := p.victim()
		delete(p.entries, v.Unit)
		p.used -= v.Pages
		p.evicted++
		out = append(out, v)
	}
	p.entries[u] = &Entry[T]{Unit: u, Pages: pages, Value: v, inserted: p.tick, lastUse: p.tick, uses: 1, pinned: true}
	p.used += pages
	return true, out
}

// victim is the unpinned entry the policy evicts first.
func (p *Pool[T]) victim() *Entry[T] {
	var best *Entry[T]
	for _, e := range p.entries {
		if !e.pinned && (best == nil || p.before(e, best)) {
			best = e
		}
	}
	return best
}

// before reports whether a is evicted before b.
func (p *Pool[T]) before(a, b *Entry[T]) bool {
	key := func(e *Entry[T]) [2]int64 {
		switch p.policy {
		case LFU:
			return [2]int64{e.uses, e.lastUse}
		case FIFO:
			return [2]int64{e.inserted, int64(e.Unit)}
		}
		return [2]int64{e.lastUse, int64(e.Unit)}
	}
	ka, kb := key(a), key(b)
	if ka != kb {
		return ka[0] < kb[0] || ka[0] == kb[0] && ka[1] < kb[1]
	}
	return a.Unit < b.Unit
}

// Unpin ends a use of unit u: it may be evicted again.
func (p *Pool[T]) Unpin(u int) {
	if e := p.entries[u]; e != nil {
		e.pinned = false
	}
}

// Holds reports whether unit u is cached.
func (p *Pool[T]) Holds(u int) bool { return p.entries[u] != nil }

// Used is the pages the cached units occupy.
func (p *Pool[T]) Used() int64 { return p.used }

// Stats are the requests that hit, those that missed, and the entries evicted so far.
func (p *Pool[T]) Stats() (hits, misses, evicted int64) { return p.hits, p.misses, p.evicted }

// Drop empties the pool (the weights changed) and returns what it held.
func (p *Pool[T]) Drop() []*Entry[T] {
	out := make([]*Entry[T], 0, len(p.entries))
	for u, e := range p.entries {
		out = append(out, e)
		delete(p.entries, u)
	}
	p.used = 0
	return out
}
