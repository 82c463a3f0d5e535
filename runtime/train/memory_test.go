package train

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/moec-dev/moec/compiler/catalog"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/dist"
)

// TestPlanPredictsMemory runs sharded layouts of the tiny MoE and holds each rank's metered
// peak, per component (device and host tiers together), to the local plan's prediction for
// the same layout: the model states exactly (they are shape arithmetic on both sides),
// the step buffers within 10% (the expert-parallel receive buffers follow the routing,
// which the plan takes as balanced).
func TestPlanPredictsMemory(t *testing.T) {
	layouts := []Sharding{
		{Ranks: 2, EP: 2, ZeRO: 1},
		{Ranks: 4, EP: 2, ZeRO: 2},
		{Ranks: 4, EP: 4, ZeRO: 3},
		{Ranks: 4, EP: 1, ZeRO: 2, Offload: true},
		{Ranks: 2, EP: 2, ZeRO: 3, Offload: true, Cache: &CacheConfig{Budget: 160 << 10, Page: 16 << 10, Eviction: "lru"}},
		{Ranks: 4, EP: 2, ZeRO: 3, Offload: true, Cache: &CacheConfig{Budget: 96 << 10, Page: 8 << 10, Eviction: "lfu"}},
		{Ranks: 2, EP: 1, ZeRO: 3, Offload: true, Cache: &CacheConfig{Budget: 1 << 20, Page: 64 << 10, Eviction: "fifo"}},
	}
	exact := map[dist.Component]bool{dist.Params: true, dist.Grads: true, dist.Optimizer: true}
	for _, l := range layouts {
		name := fmt.Sprintf("ranks%d-ep%d-zero%d-offload%v", l.Ranks, l.EP, l.ZeRO, l.Offload)
		if l.Cache != nil {
			name += "-cache-" + l.Cache.Eviction
		}
		t.Run(name, func(t *testing.T) {
			p := shardProgram(3)
			cpu, ok := catalog.Lookup("cpu")
			if !ok {
				t.Fatal("no cpu device in the catalog")
			}
			p.Clusters = map[string]*program.Cluster{"local": {Name: "local", Device: cpu, Nodes: 1, GPUsPerNode: 1,
				Ranks: l.Ranks, HostMemory: 16 << 30, HostUsable: 0.8}}
			tr := p.Trains["tiny"]
			st := tr.Stages[len(tr.Stages)-1]
			opts := plan.LocalOptions{EP: l.EP, ZeRO: l.ZeRO, ZeROSet: true, Offload: l.Offload, Workers: runtime.GOMAXPROCS(0)}
			if c := l.Cache; c != nil {
				opts.Cache = &plan.CacheOptions{Budget: c.Budget, Page: c.Page, Eviction: c.Eviction}
			}
			pl, ds := plan.LocalWith(p, tr, st, l.Ranks, opts)
			if pl == nil || ds.HasErrors() {
				t.Fatalf("local plan: %v", ds.Err())
			}
			if pl.Layout.EP != l.EP || pl.Layout.ZeRO != l.ZeRO || pl.Layout.MicroBatch*l.Ranks != tr.MicroBatch {
				t.Fatalf("plan layout ep %d zero %d micro-batch %d per rank; want ep %d zero %d and %d sequences split over %d ranks",
					pl.Layout.EP, pl.Layout.ZeRO, pl.Layout.MicroBatch, l.EP, l.ZeRO, tr.MicroBatch, l.Ranks)
			}
			if pl.Placement == nil || len(pl.Placement.Ranks) != l.Ranks {
				t.Fatalf("placement %+v for %d ranks", pl.Placement, l.Ranks)
			}
			res, err := Run(context.Background(), Options{Program: p, OutRoot: t.TempDir(), Layout: &l, ValWindows: 2})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Memory) != l.Ranks {
				t.Fatalf("memory report for %d ranks, want %d", len(res.Memory), l.Ranks)
			}
			for _, rm := range res.Memory {
				want := map[string]int64{}
				for _, b := range pl.Placement.Ranks[rm.Rank].Bytes {
					want[b.Name] = b.Bytes
				}
				for c := dist.Component(0); c < dist.NumComponents; c++ {
					got := rm.Measured[dist.Device][c] + rm.Measured[dist.Host][c]
					pred, ok := want[c.String()]
					if pred > 0 {
						t.Logf("rank %d %-20s measured %9d predicted %9d ratio %.3f", rm.Rank, c, got, pred, float64(got)/float64(pred))
					}
					switch {
					case !ok:
						t.Errorf("rank %d: the plan has no %s", rm.Rank, c)
					case pred == 0:
						if got >= 1<<10 {
							t.Errorf("rank %d %s: measured %d bytes, predicted none", rm.Rank, c, got)
						}
					case exact[c] && got != pred:
						t.Errorf("rank %d %s: measured %d bytes, predicted %d", rm.Rank, c, got, pred)
					default:
						if r := float64(got) / float64(pred); r < 0.9 || r > 1.1 {
							t.Errorf("rank %d %s: measured %d bytes, predicted %d (ratio %.3f, want within 10%%)", rm.Rank, c, got, pred, float64(got)/float64(pred))
						}
					}
				}
				// The offloaded states are in the host tier, and only there.
				host := rm.Measured[dist.Host][dist.Optimizer]
				if l.Offload != (host > 0) || l.Offload && rm.Measured[dist.Device][dist.Optimizer] != 0 {
					t.Errorf("rank %d: optimizer states %d bytes on the device, %d on the host, offload %v",
						rm.Rank, rm.Measured[dist.Device][dist.Optimizer], host, l.Offload)
				}
			}
		})
	}
}
