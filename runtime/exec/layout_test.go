package exec

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// layoutRun is what the ranks of one layout computed for a step: the loss terms summed
// over data-parallel replicas (and pipeline stages), and every parameter's reduced
// gradient assembled into its whole tensor.
type layoutRun struct {
	ce, balance, zloss float64
	grads              map[params.ID][]float32
}

// runLayout lowers m at l, loads the weights of net into every rank, runs one step of
// the micro-batches (dp·micro of them: replica r takes the r-th run of micro) and
// assembles the result.
func runLayout(t *testing.T, m *program.Model, net *nn.Model, l step.Layout, b step.Batch, micro [][]int32, o Options) layoutRun {
	t.Helper()
	progs, err := step.Lower(m, b, l)
	if err != nil {
		t.Fatalf("%s: %v", l, err)
	}
	return runPrograms(t, m, net, progs, b, micro, o)
}

// runPrograms runs one step of a layout's lowered programs (see runLayout).
func runPrograms(t *testing.T, m *program.Model, net *nn.Model, progs []*step.Program, b step.Batch, micro [][]int32, o Options) layoutRun {
	t.Helper()
	whole := map[params.ID][]float32{}
	for _, p := range net.Params() {
		whole[p.ID] = p.W
	}
	return runWeights(t, m, whole, progs, b, micro, o)
}

// runWeights is runPrograms from whole tensors by parameter.
func runWeights(t *testing.T, m *program.Model, whole map[params.ID][]float32, progs []*step.Program, b step.Batch, micro [][]int32, o Options) layoutRun {
	t.Helper()
	l := progs[0].Layout
	world := NewWorld(20 * time.Second)
	exs := make([]*Executor, len(progs))
	walk, err := params.Walk(m)
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[params.ID][]int{}
	for _, p := range walk {
		shapes[p.ID] = p.Shape
	}
	for r, p := range progs {
		ex, err := New(p, m, world.Rank(r))
		if err != nil {
			t.Fatal(err)
		}
		exs[r] = ex
		if err := ex.LoadParams(func(id params.ID) ([]float32, []int) { return whole[id], shapes[id] }); err != nil {
			t.Fatal(err)
		}
	}
	stats := make([]Stats, len(progs))
	errs := make([]error, len(progs))
	var wg sync.WaitGroup
	for r := range progs {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			c := progs[r].Coord
			stats[r], errs[r] = exs[r].Run(micro[c.DP*b.Micro:(c.DP+1)*b.Micro], o)
			if errs[r] != nil {
				world.Fail(fmt.Errorf("rank %d failed: %w", r, errs[r]))
			}
		}(r)
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("%s: rank %d: %v", l, r, err)
		}
	}
	var out layoutRun
	for r, p := range progs {
		if p.Coord.TP != 0 {
			continue
		}
		out.ce += stats[r].CE
		out.balance += stats[r].Balance
		out.zloss += stats[r].ZLoss
	}
	// Routing terms: every rank of an expert-parallel group routes its own tokens, and tp
	// ranks repeat the same routing, so tp rank 0 of every replica and stage counts.
	for _, op := range progs[0].Ops {
		if op.Phase == step.Backward { // an evaluation program has no gradients
			out.grads = assemble(t, progs, exs, walk)
			break
		}
	}
	return out
}

// assemble rebuilds each parameter's gradient from the ranks that hold its pieces.
func assemble(t *testing.T, progs []*step.Program, exs []*Executor, walk []params.Param) map[params.ID][]float32 {
	t.Helper()
	out := map[params.ID][]float32{}
	for _, p := range walk {
		out[p.ID] = make([]float32, p.Elements())
	}
	for r, p := range progs {
		// Only data-parallel replica 0's (or, for sharded gradients, every replica's shard).
		for _, buf := range p.Buffers {
			if buf.Param == nil || buf.Kind == step.KindGathered || (buf.Kind != step.KindGrad && buf.Kind != step.KindActGrad) {
				continue
			}
			id := *buf.Param
			shard := id.Shard
			id.Shard = params.Shard{}
			grp := groupFor(p, id)
			if grp.ZeRO >= 2 {
				continue // read from the shards below
			}
			if grp.Index != 0 {
				continue
			}
			src := exs[r].Grad(id)
			place(out[id], src, shapeOf(walk, id), shard)
		}
		for _, g := range p.Groups {
			if g.ZeRO < 2 {
				continue
			}
			sh := exs[r].GradShard(g.Name)
			lo := int64(g.Index) * g.Shard
			for _, buf := range p.Buffers {
				if buf.Param == nil || buf.Kind == step.KindGathered || buf.Flat < 0 || buf.Kind != step.KindActGrad {
					continue
				}
				id := *buf.Param
				shard := id.Shard
				id.Shard = params.Shard{}
				if groupFor(p, id).Name != g.Name {
					continue
				}
				// The part of this tensor's (tp shard's) flat range that this rank's shard covers.
				n := buf.Elements()
				a, z := max(lo, buf.Flat), min(lo+g.Shard, buf.Flat+n)
				if a >= z {
					continue
				}
				local := make([]float32, n)
				// Other ranks fill the rest; place writes only what local holds here.
				copy(local[a-buf.Flat:z-buf.Flat], sh[a-lo:z-lo])
				placeRange(out[id], local, shapeOf(walk, id), shard, int(a-buf.Flat), int(z-buf.Flat))
			}
		}
	}
	return out
}

func groupFor(p *step.Program, id params.ID) step.Group {
	if id.Role.Routed() && len(p.Groups) > 1 {
		return p.Groups[1]
	}
	return p.Groups[0]
}

func shapeOf(walk []params.Param, id params.ID) []int {
	for _, p := range walk {
		if p.ID == id {
			return p.Shape
		}
	}
	return nil
}

// place copies a tp shard of a tensor into the whole tensor.
func place(whole, part []float32, shape []int, s params.Shard) {
	placeRange(whole, part, shape, s, 0, len(part))
}

// TestLayoutInvariance runs one training step (forward, backward, gradient reduction) of
// hunyuan_tiny's stages at many layouts of up to four in-process ranks, and holds the
// loss terms and every reduced gradient to one rank running the same micro-batches.
func TestLayoutInvariance(t *testing.T) {
	type tc struct {
		name   string
		edit   func(m *program.Model)
		layout step.Layout
	}
	plain := func(m *program.Model) { // what tensor and pipeline parallelism lower today
		m.Attention.TalkingHeads = false
		m.Attention.ShareWeights = 1
		if m.MoE != nil {
			m.MoE.Router = program.RouteHidden
		}
	}
	shipped := func(*program.Model) {}
	cases := []tc{
		{"dp2", shipped, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1}},
		{"dp2 ep2", shipped, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1}},
		{"dp4 ep2 zero1", shipped, step.Layout{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 1}},
		{"dp2 ep2 zero2", shipped, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 2}},
		{"dp4 ep2 zero3", shipped, step.Layout{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 3}},
		{"tp2", plain, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1}},
		{"tp4", plain, step.Layout{DP: 1, EP: 1, TP: 4, PP: 1}},
		{"pp2", plain, step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}},
		{"pp4", plain, step.Layout{DP: 1, EP: 1, TP: 1, PP: 4}},
		{"dp2 ep2 tp2 zero3", plain, step.Layout{DP: 2, EP: 2, TP: 2, PP: 1, ZeRO: 3}},
		{"pp2 dp2 zero1", plain, step.Layout{DP: 2, EP: 1, TP: 1, PP: 2, ZeRO: 1}},
		{"pp2 tp2", plain, step.Layout{DP: 1, EP: 1, TP: 2, PP: 2}},
		{"tp2 sp", plain, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true}},
		{"pp2 tp2 sp", plain, step.Layout{DP: 1, EP: 1, TP: 2, PP: 2, SequenceParallel: true}},
		{"dp2 ep2 tp2 zero3 sp", plain, step.Layout{DP: 2, EP: 2, TP: 2, PP: 1, ZeRO: 3, SequenceParallel: true}},
	}
	const mb, T, M = 2, 16, 2
	for _, experts := range []int{1, 8} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%d experts/%s", experts, c.name), func(t *testing.T) {
				m := hunyuanTiny(t, experts)
				if m.MoE != nil {
					moe := *m.MoE
					m.MoE = &moe
				}
				c.edit(m)
				if experts == 1 && c.layout.EP > 1 {
					_, err := step.Lower(m, step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}, c.layout)
					if err == nil {
						t.Fatal("expert parallelism on a dense stage lowered")
					}
					return
				}
				net, err := nn.New(m, 3)
				if err != nil {
					t.Fatal(err)
				}
				micro := make([][]int32, c.layout.DP*M)
				for i := range micro {
					micro[i] = randomTokens(mb, T, int(m.Vocab), int64(100+i))
				}
				o := Options{Seed: 9, Step: 1}
				ref := runLayout(t, m, net, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Batch{MicroBatch: mb, SeqLen: T, Micro: c.layout.DP * M}, micro, o)
				got := runLayout(t, m, net, c.layout, step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}, micro, o)
				for _, x := range []struct {
					what      string
					got, want float64
				}{{"CE", got.ce, ref.ce}, {"balance", got.balance, ref.balance}, {"z-loss", got.zloss, ref.zloss}} {
					if math.Abs(x.got-x.want) > 1e-5*math.Max(1, math.Abs(x.want)) {
						t.Errorf("%s %.9g, one rank %.9g", x.what, x.got, x.want)
					}
				}
				worst, worstID := 0.0, params.ID{}
				for id, want := range ref.grads {
					if e := relErr(got.grads[id], want); e > worst {
						worst, worstID = e, id
					}
				}
				if worst > 1e-5 {
					t.Errorf("gradient of %s differs from one rank's by %.3g (relative)", worstID, worst)
				}
				if c.layout.SequenceParallel {
					// Sequence parallelism computes what the same layout computes without it.
					l := c.layout
					l.SequenceParallel = false
					tp := runLayout(t, m, net, l, step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}, micro, o)
					if math.Abs(got.ce-tp.ce) > 1e-5*math.Abs(tp.ce) || math.Abs(got.balance-tp.balance) > 1e-5*math.Max(1, math.Abs(tp.balance)) {
						t.Errorf("CE %.9g balance %.9g with sp, %.9g %.9g without", got.ce, got.balance, tp.ce, tp.balance)
					}
					for id, want := range tp.grads {
						if e := relErr(got.grads[id], want); e > 1e-5 {
							t.Errorf("gradient of %s differs from the layout's without sp by %.3g (relative)", id, e)
						}
					}
				}
				t.Logf("CE %.7f (one rank %.7f); worst gradient error %.2g (%s)", got.ce, ref.ce, worst, worstID)
			})
		}
	}
}
