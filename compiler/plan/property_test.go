package plan

import (
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// randomProgram draws a small-to-large decoder (dense or MoE) and a cluster.
func randomProgram(t *testing.T, r *rand.Rand) *program.Program {
	heads := []int{8, 16, 32, 64}[r.IntN(4)]
	h := int64(heads) * []int64{64, 128}[r.IntN(2)]
	layers := []int{4, 8, 12, 24, 32, 48}[r.IntN(6)]
	m := denseModel(h, heads, layers, []int64{512, 1024, 2048, 4096}[r.IntN(4)])
	m.Name = "m"
	if r.IntN(2) == 0 {
		m.MoE = &program.MoE{Experts: []int{8, 16, 64, 128}[r.IntN(4)], TopK: 1 + r.IntN(2), ExpertHidden: 4 * h,
			Activation: program.GELU, Every: 1 + r.IntN(2), Router: program.RouteHidden, Score: program.Softmax,
			CapacityFactor: []float64{1, 1.25, 0}[r.IntN(3)], DroplessSkew: 2}
	}
	dev := []string{"a100_40gb", "a100_80gb", "h100_80gb", "h200_141gb"}[r.IntN(4)]
	c := testCluster(t, dev, 1+r.IntN(16), 8)
	c.Name = "c"
	c.HostMemory = []int64{256e9, 1e12, 2e12}[r.IntN(3)]
	mem := []program.MemoryStrategy{
		{Kind: "zero", ZeROStage: 1, Offload: "none"}, {Kind: "zero", ZeROStage: 3, Offload: "none"},
		{Kind: "zero", ZeROStage: 3, Offload: "cpu"}, {Kind: "unified_cache", ZeROStage: 3, Offload: "none"},
	}[r.IntN(4)]
	tr := &program.Train{Name: "m", Model: "m", Cluster: "c", TokensPerBatch: int64(256+r.IntN(2048)) * m.SeqLen,
		Precision: program.BF16, Optimizer: program.Optimizer{Kind: "adamw"}, Memory: mem,
		Stages: []*program.Stage{{Name: "s", Tokens: 1e9}}}
	return &program.Program{
		Models: map[string]*program.Model{"m": m}, Clusters: map[string]*program.Cluster{"c": c},
		Trains: map[string]*program.Train{"m": tr}, ModelOrder: []string{"m"}, ClusterOrder: []string{"c"}, TrainOrder: []string{"m"},
	}
}

// TestPlansFit: a plan the search says fits never exceeds any device's capacity, recomputed
// independently from its layout, and the plan's memory table agrees.
func TestPlansFit(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	planned := 0
	for i := 0; i < 60; i++ {
		prog := randomProgram(t, r)
		tr := prog.Trains["m"]
		p, ds := ForStage(prog, tr, tr.Stages[0], Options{})
		if p == nil {
			if len(ds) == 0 || ds[0].Code != diag.CodeNoFit && ds[0].Code != diag.CodeNoLayout {
				t.Fatalf("case %d: no plan and no E0501/E0505 diagnostic: %v", i, ds)
			}
			continue
		}
		planned++
		for _, tier := range p.Memory {
			var sum int64
			for _, c := range tier.Components {
				sum += c.Bytes
			}
			if tier.Used > tier.Capacity || sum > tier.Capacity+int64(len(tier.Components)) {
				t.Errorf("case %d: %s tier uses %d of %d bytes (%s)", i, tier.Tier, tier.Used, tier.Capacity, layoutText(p.Layout))
			}
		}
		// Recompute the memory of every pipeline stage, not just the reported one.
		s, _ := setupTrain(prog, tr, tr.Stages[0], Options{})
		for _, st := range s.env.stageShapes(p.Layout.PP) {
			m := s.env.stageMemory(p.Layout, st)
			if !m.fits() {
				r, tier := m.overflow()
				t.Errorf("case %d: stage %d overflows %s by ×%.3f under %s", i, st.index, tier, r, layoutText(p.Layout))
			}
		}
		l := p.Layout
		if l.World() > prog.Clusters["c"].GPUs() || l.DP%l.EP != 0 || l.EDP*l.EP != l.DP {
			t.Errorf("case %d: inconsistent layout %+v", i, l)
		}
	}
	t.Logf("%d of 60 random programs planned", planned)
	if planned < 20 {
		t.Errorf("only %d of 60 random programs planned: the generator or the planner is off", planned)
	}
}

// TestMoreGPUsNeverSlower: with a larger device budget the best plan is never slower (per
// sequence) by more than rounding, because every smaller layout is still searchable.
func TestMoreGPUsNeverSlower(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 25; i++ {
		prog := randomProgram(t, r)
		tr := prog.Trains["m"]
		c := prog.Clusters["c"]
		prev := 0.0
		for _, n := range []int{8, 16, 24, 48, 64, 128} {
			if n > c.GPUs() {
				c.Nodes = n / c.GPUsPerNode
			}
			p, _ := ForStage(prog, tr, tr.Stages[0], Options{GPUs: n})
			if p == nil {
				if prev > 0 {
					t.Errorf("case %d: fits on fewer GPUs but not on %d", i, n)
				}
				continue
			}
			perSeq := p.Time.StepSeconds / float64(p.Layout.Batch)
			if prev > 0 && perSeq > prev*(1+1e-6) {
				t.Errorf("case %d: %d GPUs give %.6g s/sequence, worse than %.6g with fewer", i, n, perSeq, prev)
			}
			prev = perSeq
		}
	}
}
