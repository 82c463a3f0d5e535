package train

import (
	"context"
	"fmt"
	"testing"

	"github.com/moec-dev/moec/compiler/catalog"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/pagepool"
	"github.com/moec-dev/moec/runtime/dist"
)

// TestPlanPredictsMemory runs layouts of the tiny MoE through step programs and holds
// each rank's memory, per component and tier, to the local plan's prediction for the same
// layout, byte for byte: the plan lowers its candidate to the step programs the run
// executes and reads their memory plans, so any difference between the layout (or batch)
// the planner lowers and the one the run lowers shows here. The arenas each executor
// allocated equal the plan's too.
func TestPlanPredictsMemory(t *testing.T) {
	cases := []struct {
		l         Sharding
		recompute bool // recompute = full in the train block
	}{
		{l: Sharding{Ranks: 1, EP: 1, ZeRO: 0}},
		{l: Sharding{Ranks: 1, EP: 1, ZeRO: 0}, recompute: true},
		{l: Sharding{Ranks: 2, EP: 2, ZeRO: 1}},
		{l: Sharding{Ranks: 2, EP: 2, ZeRO: 3}},
		{l: Sharding{Ranks: 2, EP: 1, ZeRO: 0, TP: 2}},
		{l: Sharding{Ranks: 2, EP: 1, ZeRO: 0, PP: 2}},
		{l: Sharding{Ranks: 4, EP: 2, ZeRO: 2, TP: 2}},
		{l: Sharding{Ranks: 2, EP: 1, ZeRO: 2, Offload: true}},
		{l: Sharding{Ranks: 4, EP: 4, ZeRO: 3, Offload: true}},
		{l: Sharding{Ranks: 2, EP: 1, ZeRO: 0, TP: 2, SP: true}},
		{l: Sharding{Ranks: 1, EP: 1, ZeRO: 0, Cache: &CacheConfig{Budget: 8 << 20, Page: 64 << 10, Eviction: "lru"}}},
		{l: Sharding{Ranks: 2, EP: 1, ZeRO: 1, TP: 2, Cache: &CacheConfig{Budget: 8 << 20, Page: 64 << 10, Eviction: "lru"}}},
	}
	for _, tc := range cases {
		l, recompute := tc.l, tc.recompute
		l.Program = true
		name := fmt.Sprintf("ranks%d-ep%d-tp%d-pp%d-zero%d-offload%v-recompute%v-sp%v-cache%v", l.Ranks, l.EP, max(l.TP, 1), max(l.PP, 1), l.ZeRO, l.Offload, recompute, l.SP, l.Cache != nil)
		t.Run(name, func(t *testing.T) {
			p := shardProgram(2)
			if recompute {
				p.Trains["tiny"].Memory.Recompute = program.RecomputeFull
			}
			cpu, ok := catalog.Lookup("cpu")
			if !ok {
				t.Fatal("no cpu device in the catalog")
			}
			p.Clusters = map[string]*program.Cluster{"local": {Name: "local", Device: cpu, Nodes: 1, GPUsPerNode: 1,
				Ranks: l.Ranks, HostMemory: 16 << 30, HostUsable: 0.8}}
			tr := p.Trains["tiny"]
			st := tr.Stages[len(tr.Stages)-1]
			opts := plan.LocalOptions{EP: l.EP, ZeRO: l.ZeRO, ZeROSet: true, Offload: l.Offload, TP: l.TP, PP: l.PP, SequenceParallel: l.SP}
			if c := l.Cache; c != nil {
				opts.StepCache = step.Cache{Budget: c.Budget, Page: c.Page, Eviction: pagepool.Policy(c.Eviction)}
			}
			pl, ds := plan.LocalWith(p, tr, st, l.Ranks, opts)
			if pl == nil || ds.HasErrors() {
				t.Fatalf("local plan: %v", ds.Err())
			}
			dp := l.Ranks / (max(l.TP, 1) * max(l.PP, 1))
			if pl.Layout.EP != l.EP || pl.Layout.ZeRO != l.ZeRO || pl.Layout.MicroBatch*dp != tr.MicroBatch {
				t.Fatalf("plan layout ep %d zero %d micro-batch %d per replica; want ep %d zero %d and %d sequences split over %d replicas",
					pl.Layout.EP, pl.Layout.ZeRO, pl.Layout.MicroBatch, l.EP, l.ZeRO, tr.MicroBatch, dp)
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
				pr := pl.Placement.Ranks[rm.Rank]
				want := map[string]int64{}
				for _, b := range pr.Bytes {
					want[b.Name] = b.Bytes
				}
				var total int64
				for c := dist.Component(0); c < dist.NumComponents; c++ {
					got := rm.Measured[dist.Device][c] + rm.Measured[dist.Host][c]
					total += got
					pred, ok := want[c.String()]
					if !ok || got != pred {
						t.Errorf("rank %d %s: measured %d bytes, predicted %d (in plan: %v)", rm.Rank, c, got, pred, ok)
					}
				}
				if total != pr.Predicted || total == 0 {
					t.Errorf("rank %d: measured %d bytes in all, predicted %d", rm.Rank, total, pr.Predicted)
				}
				if rm.Arena[dist.Device] != pr.ArenaDevice || rm.Arena[dist.Host] != pr.ArenaHost || pr.ArenaDevice == 0 {
					t.Errorf("rank %d: arenas allocated %v, planned device %d host %d", rm.Rank, rm.Arena, pr.ArenaDevice, pr.ArenaHost)
				}
				// The offloaded states are in the host tier, and only there.
				host, inHost := rm.Measured[dist.Host][dist.Optimizer], l.Offload || l.Cache != nil
				if inHost != (host > 0) || inHost && rm.Measured[dist.Device][dist.Optimizer] != 0 {
					t.Errorf("rank %d: optimizer states %d bytes on the device, %d on the host, offload %v",
						rm.Rank, rm.Measured[dist.Device][dist.Optimizer], host, l.Offload)
				}
			}
		})
	}
}
