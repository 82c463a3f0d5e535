package train

import (
	"fmt"

	"github.com/moec-dev/moec/internal/pagepool"
)

// CacheConfig is the unified cache (AngelPTM): every model state is partitioned as in
// ZeRO-3 with the host as its backing store, and a pool of fixed-size device pages keeps
// the units gathered most recently (or most often, or first) so a unit used again — the
// backward pass after the forward, the tied embedding at the head — is not gathered again.
type CacheConfig struct {
	Budget   int64  // device bytes for cached pages
	Page     int64  // page size in bytes [4 MiB]
	Eviction string // "lru", "lfu" or "fifo" [lru]
}

// unitCache is the device page pool of one rank: internal/pagepool's decisions (which
// compiler/plan replays to predict the pool's size) over the gathered dense and expert
// weights of each cached unit.
type unitCache struct {
	cfg CacheConfig
	*pagepool.Pool[[2][]float32]
}

// cached is one cached unit; its Value holds the gathered dense and expert weights.
type cached = pagepool.Entry[[2][]float32]

func newUnitCache(cfg CacheConfig) (*unitCache, error) {
	if cfg.Page <= 0 {
		cfg.Page = 4 << 20
	}
	policy, err := pagepool.ParsePolicy(cfg.Eviction)
	if err != nil {
		return nil, err
	}
	cfg.Eviction = string(policy)
	if cfg.Budget < 0 {
		return nil, fmt.Errorf("cache budget %d bytes is negative", cfg.Budget)
	}
	return &unitCache{cfg: cfg, Pool: pagepool.New[[2][]float32](cfg.Budget/cfg.Page, policy)}, nil
}

// pagesFor is the pages bytes occupy.
func (c *unitCache) pagesFor(bytes int64) int64 { return pagepool.PagesFor(bytes, c.cfg.Page) }

// put caches unit u's gathered weights (pinned) after a miss; see pagepool.Pool.Put.
func (c *unitCache) put(u int, bytes int64, bufs [2][]float32) (bool, []*cached) {
	return c.Put(u, c.pagesFor(bytes), bufs)
}
