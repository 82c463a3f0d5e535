package train

import "fmt"

// CacheConfig is the unified cache (AngelPTM): every model state is partitioned as in
// ZeRO-3 with the host as its backing store, and a pool of fixed-size device pages keeps
// the units gathered most recently (or most often, or first) so a unit used again — the
// backward pass after the forward, the tied embedding at the head — is not gathered again.
type CacheConfig struct {
	Budget   int64  // device bytes for cached pages
	Page     int64  // page size in bytes [4 MiB]
	Eviction string // "lru", "lfu" or "fifo" [lru]
}

// unitCache is the device page pool of one rank. Its decisions depend only on the
// sequence of units asked for and their sizes, which every rank shares, so all ranks hit
// and miss together and their gathers stay collective.
type unitCache struct {
	cfg      CacheConfig
	capacity int64 // pages
	used     int64 // pages
	tick     int64
	entries  map[int]*cached
	hits     int64
	misses   int64
	evicted  int64
}

type cached struct {
	unit              int
	pages             int64
	bufs              [2][]float32 // gathered dense and expert weights
	inserted, lastUse int64
	uses              int64
	pinned            bool
}

func newUnitCache(cfg CacheConfig) (*unitCache, error) {
	if cfg.Page <= 0 {
		cfg.Page = 4 << 20
	}
	switch cfg.Eviction {
	case "":
		cfg.Eviction = "lru"
	case "lru", "lfu", "fifo":
	default:
		return nil, fmt.Errorf("unknown eviction policy %q (want lru, lfu or fifo)", cfg.Eviction)
	}
	if cfg.Budget < 0 {
		return nil, fmt.Errorf("cache budget %d bytes is negative", cfg.Budget)
	}
	return &unitCache{cfg: cfg, capacity: cfg.Budget / cfg.Page, entries: map[int]*cached{}}, nil
}

// pagesFor is the pages bytes occupy.
func (c *unitCache) pagesFor(bytes int64) int64 { return (bytes + c.cfg.Page - 1) / c.cfg.Page }

// get returns unit u's cached weights, pinned until unpin, or nil on a miss.
func (c *unitCache) get(u int) *cached {
	c.tick++
	e := c.entries[u]
	if e == nil {
		c.misses++
		return nil
	}
	c.hits++
	e.lastUse, e.uses, e.pinned = c.tick, e.uses+1, true
	return e
}

// put caches unit u's gathered weights (pinned), evicting unpinned units by the policy
// until they fit. It returns the evicted entries, and false when the unit cannot fit even
// with everything unpinned evicted (the caller then keeps it in a temporary buffer).
func (c *unitCache) put(u int, bytes int64, bufs [2][]float32) (bool, []*cached) {
	pages := c.pagesFor(bytes)
	var pinned int64
	for _, e := range c.entries {
		if e.pinned {
			pinned += e.pages
		}
	}
	if pages > c.capacity-pinned {
		return false, nil
	}
	var out []*cached
	for c.used+pages > c.capacity {
		v := c.victim()
		delete(c.entries, v.unit)
		c.used -= v.pages
		c.evicted++
		out = append(out, v)
	}
	c.entries[u] = &cached{unit: u, pages: pages, bufs: bufs, inserted: c.tick, lastUse: c.tick, uses: 1, pinned: true}
	c.used += pages
	return true, out
}

// victim picks the unpinned entry the policy evicts first; ties go to the lower unit.
func (c *unitCache) victim() *cached {
	var best *cached
	for _, e := range c.entries {
		if e.pinned {
			continue
		}
		if best == nil || c.before(e, best) {
			best = e
		}
	}
	return best
}

func (c *unitCache) before(a, b *cached) bool {
	key := func(e *cached) [2]int64 {
		switch c.cfg.Eviction {
		case "lfu":
			return [2]int64{e.uses, e.lastUse}
		case "fifo":
			return [2]int64{e.inserted, int64(e.unit)}
		}
		return [2]int64{e.lastUse, int64(e.unit)}
	}
	ka, kb := key(a), key(b)
	if ka != kb {
		return ka[0] < kb[0] || ka[0] == kb[0] && ka[1] < kb[1]
	}
	return a.unit < b.unit
}

func (c *unitCache) unpin(u int) {
	if e := c.entries[u]; e != nil {
		e.pinned = false
	}
}

// drop empties the cache (the weights changed) and returns what it held.
func (c *unitCache) drop() []*cached {
	var out []*cached
	for u, e := range c.entries {
		out = append(out, e)
		delete(c.entries, u)
	}
	c.used = 0
	return out
}
