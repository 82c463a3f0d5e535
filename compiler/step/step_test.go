package step

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/golden"
	"github.com/moec-dev/moec/internal/pagepool"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// loadModel checks src and returns its only model.
func loadModel(t *testing.T, src []byte) *program.Model {
	t.Helper()
	prog, _, ds := check.Load("tiny.moe", func(string) ([]byte, error) { return src, nil })
	if ds.HasErrors() {
		t.Fatalf("check: %v", ds)
	}
	if len(prog.ModelOrder) != 1 {
		t.Fatalf("want one model, have %v", prog.ModelOrder)
	}
	return prog.Models[prog.ModelOrder[0]]
}

// stageModel is the model's "dense" (one expert) or "moe" (all its experts) stage.
func stageModel(base *program.Model, stage string) *program.Model {
	experts := 1
	if stage == "moe" && base.MoE != nil {
		experts = base.MoE.Experts
	}
	m := program.StageModel(base, &program.Stage{Name: stage, Experts: experts})
	return m
}

type layoutCase struct {
	stage  string
	batch  Batch
	layout Layout
	rank   int
}

func parseLayout(t *testing.T, line string) layoutCase {
	t.Helper()
	c := layoutCase{}
	for _, f := range strings.Fields(line) {
		k, v, _ := strings.Cut(f, "=")
		var n int
		if k != "stage" && k != "offload" && k != "recompute" && k != "evict" {
			if _, err := fmt.Sscan(v, &n); err != nil {
				t.Fatalf("layout %q: %s: %v", line, f, err)
			}
		}
		switch k {
		case "stage":
			c.stage = v
		case "micro_batch":
			c.batch.MicroBatch = n
		case "micro":
			c.batch.Micro = n
		case "dp":
			c.layout.DP = n
		case "ep":
			c.layout.EP = n
		case "tp":
			c.layout.TP = n
		case "pp":
			c.layout.PP = n
		case "zero":
			c.layout.ZeRO = n
		case "rank":
			c.rank = n
		case "offload":
			c.layout.OffloadOpt = true
		case "sp":
			c.layout.SequenceParallel = n != 0
		case "recompute":
			c.layout.Recompute = program.Recompute(v)
		case "cache":
			c.layout.Cache.Budget = int64(n)
		case "page":
			c.layout.Cache.Page = int64(n)
		case "evict":
			c.layout.Cache.Eviction = pagepool.Policy(v)
		default:
			t.Fatalf("layout %q: unknown key %s", line, k)
		}
	}
	return c
}

// TestGolden holds the listings of every layout an archive names, after checking the
// whole layout with VerifyLayout.
func TestGolden(t *testing.T) {
	golden.Files(t, "testdata/*.txtar", *update, func(t *testing.T, in map[string][]byte) []golden.Section {
		base := loadModel(t, in["tiny.moe"])
		var out []golden.Section
		for _, line := range strings.Split(strings.TrimSpace(string(in["layouts"])), "\n") {
			c := parseLayout(t, line)
			m := stageModel(base, c.stage)
			c.batch.SeqLen = int(m.SeqLen)
			progs, err := Lower(m, c.batch, c.layout)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if err := VerifyLayout(progs); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			p := progs[c.rank]
			p.Stage = c.stage
			var b bytes.Buffer
			if err := Format(&b, p); err != nil {
				t.Fatal(err)
			}
			out = append(out, golden.Section{Name: line, Data: b.Bytes()})
		}
		return out
	})
}

// hunyuanTiny is examples/hunyuan_tiny.moe's model at the stage with experts experts.
func hunyuanTiny(t *testing.T, experts int) *program.Model {
	t.Helper()
	src, err := os.ReadFile("../../examples/hunyuan_tiny.moe")
	if err != nil {
		t.Fatal(err)
	}
	prog, _, ds := check.Load("hunyuan_tiny.moe", func(string) ([]byte, error) { return src, nil })
	if ds.HasErrors() {
		t.Fatalf("%v", ds)
	}
	return program.StageModel(prog.Models["hunyuan_tiny"], &program.Stage{Experts: experts})
}

// TestEveryLocalLayoutLowers lowers hunyuan_tiny's stages (dense, four and eight experts)
// at every layout of 1, 2 and 4 ranks that divides the model and every ZeRO stage, with and
// without an offloaded optimizer, and verifies each layout's programs together; layouts
// the step program cannot lower must say why.
func TestEveryLocalLayoutLowers(t *testing.T) {
	lowered, refused := 0, 0
	for _, experts := range []int{1, 4, 8} {
		m := hunyuanTiny(t, experts)
		d, err := m.Dims()
		if err != nil {
			t.Fatal(err)
		}
		for _, world := range []int{1, 2, 4} {
			for tp := 1; tp <= world; tp *= 2 {
				for pp := 1; tp*pp <= world; pp *= 2 {
					dp := world / (tp * pp)
					for ep := 1; ep <= dp; ep *= 2 {
						for zero := 0; zero <= 3; zero++ {
							for _, offload := range []bool{false, true} {
								l := Layout{DP: dp, EP: ep, TP: tp, PP: pp, ZeRO: zero, OffloadOpt: offload}
								b := Batch{MicroBatch: 2, SeqLen: 16, Micro: 2}
								progs, err := Lower(m, b, l)
								if len(Check(l, d, b)) > 0 {
									if err == nil {
										t.Errorf("%d experts, %s: Check finds problems but Lower lowered", experts, l)
									}
									continue
								}
								if err != nil {
									if !strings.Contains(err.Error(), "does not lower") {
										t.Errorf("%d experts, %s: %v", experts, l, err)
									}
									refused++
									continue
								}
								if err := VerifyLayout(progs); err != nil {
									t.Errorf("%d experts, %s:\n%v", experts, l, err)
								}
								lowered++
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d layouts lowered and verified, %d refused with a reason", lowered, refused)
	if lowered < 50 {
		t.Errorf("only %d layouts lowered", lowered)
	}
}

// TestMutationsAreCaught drops or reorders collectives, reorders compute ops and moves a
// buffer in the arena: VerifyLayout must fail on each (the pipeline's sends and receives:
// TestPipelineMutations).
func TestMutationsAreCaught(t *testing.T) {
	m := hunyuanTiny(t, 8)
	lowerOK := func(l Layout, b Batch) []*Program {
		progs, err := Lower(m, b, l)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyLayout(progs); err != nil {
			t.Fatalf("%s before mutation: %v", l, err)
		}
		return progs
	}
	find := func(p *Program, pred func(Op) bool) []int {
		var out []int
		for i, op := range p.Ops {
			if pred(op) {
				out = append(out, i)
			}
		}
		return out
	}
	remove := func(p *Program, i int) { p.Ops = append(p.Ops[:i:i], p.Ops[i+1:]...) }
	cases := []struct {
		name   string
		layout Layout
		mutate func(t *testing.T, progs []*Program)
	}{
		{"drop an all-to-all", Layout{DP: 2, EP: 2, TP: 1, PP: 1}, func(t *testing.T, progs []*Program) {
			i := find(progs[1], func(op Op) bool { return op.Kind == OpAllToAllV })
			remove(progs[1], i[0])
		}},
		{"drop the gradient all-reduce", Layout{DP: 2, EP: 1, TP: 1, PP: 1}, func(t *testing.T, progs []*Program) {
			i := find(progs[0], func(op Op) bool { return op.Kind == OpAllReduce && op.Phase == Reduce })
			remove(progs[0], i[0])
		}},
		{"swap two collectives", Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3}, func(t *testing.T, progs []*Program) {
			i := find(progs[0], func(op Op) bool { return op.Kind.Collective() })
			a, b := i[0], -1
			for _, j := range i[1:] {
				if progs[0].Ops[j].Kind != progs[0].Ops[a].Kind {
					b = j
					break
				}
			}
			progs[0].Ops[a], progs[0].Ops[b] = progs[0].Ops[b], progs[0].Ops[a]
		}},
		{"a bucket reduced before its last gradient write", Layout{DP: 2, EP: 1, TP: 1, PP: 1}, func(t *testing.T, progs []*Program) {
			// Move the first bucket's all-reduce (on every rank, so that the ranks still
			// agree on the collectives) to just before the op that finishes its gradients.
			for _, p := range progs {
				i := find(p, func(op Op) bool { return op.Kind == OpAllReduce && op.Phase == Reduce })[0]
				if p.Ops[i-1].Phase != Backward {
					t.Fatalf("rank %d: the first gradient all-reduce (op %d) does not follow a backward op", p.Rank, i)
				}
				p.Ops[i-1], p.Ops[i] = p.Ops[i], p.Ops[i-1]
			}
		}},
		{"read before write", Layout{DP: 1, EP: 1, TP: 1, PP: 1}, func(t *testing.T, progs []*Program) {
			// Move the first product after the op that reads its output.
			p := progs[0]
			i := find(p, func(op Op) bool { return op.Kind == OpMatMul })[0]
			out := p.Ops[i].Out[0]
			j := find(p, func(op Op) bool {
				for _, b := range op.In {
					if b == out {
						return true
					}
				}
				return false
			})[0]
			p.Ops[i], p.Ops[j] = p.Ops[j], p.Ops[i]
		}},
		{"overlapping buffers", Layout{DP: 1, EP: 1, TP: 1, PP: 1}, func(t *testing.T, progs []*Program) {
			p := progs[0]
			// Place the first activation where the embedding table lives.
			var param, act *Buffer
			for _, b := range p.Buffers {
				if b.Kind == KindParam && param == nil {
					param = b
				}
				if b.Kind == KindActivation && act == nil {
					act = b
				}
			}
			act.Offset = param.Offset
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := Batch{MicroBatch: 2, SeqLen: 16, Micro: 2}
			progs := lowerOK(c.layout, b)
			c.mutate(t, progs)
			if err := VerifyLayout(progs); err == nil {
				t.Errorf("mutation %q not caught", c.name)
			} else {
				t.Logf("caught: %v", firstLine(err.Error()))
			}
		})
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// TestPipelineMutations runs the pipeline mutations on a model the pipeline lowers.
func TestPipelineMutations(t *testing.T) {
	base := hunyuanTiny(t, 8)
	base.Attention.ShareWeights = 1
	base.Attention.TalkingHeads = false
	base.MoE.Router = program.RouteHidden
	b := Batch{MicroBatch: 1, SeqLen: 16, Micro: 4}
	for _, tc := range []struct {
		name string
		kind OpKind
	}{{"drop a receive", OpRecv}, {"drop a send", OpSend}} {
		t.Run(tc.name, func(t *testing.T) {
			progs, err := Lower(base, b, Layout{DP: 1, EP: 1, TP: 1, PP: 2})
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyLayout(progs); err != nil {
				t.Fatal(err)
			}
			for r, p := range progs {
				for i, op := range p.Ops {
					if op.Kind == tc.kind {
						p.Ops = append(p.Ops[:i:i], p.Ops[i+1:]...)
						if err := VerifyLayout(progs); err == nil {
							t.Errorf("rank %d: dropping %s op %d not caught", r, tc.kind, i)
						}
						return
					}
				}
			}
			t.Fatalf("no %s op", tc.kind)
		})
	}
}

// TestSchedule1F1B checks the schedule's shape: every micro-batch's forward before its
// backward, at most pp−s micro-batches in flight on stage s.
func TestSchedule1F1B(t *testing.T) {
	for pp := 1; pp <= 4; pp++ {
		for s := 0; s < pp; s++ {
			for micro := 1; micro <= 6; micro++ {
				steps := schedule1F1B(pp, s, micro)
				if len(steps) != 2*micro {
					t.Fatalf("pp %d stage %d micro %d: %d steps", pp, s, micro, len(steps))
				}
				done := map[int]bool{}
				inflight, peak := 0, 0
				for _, st := range steps {
					if st.forward {
						inflight++
						done[st.micro] = true
					} else {
						if !done[st.micro] {
							t.Fatalf("pp %d stage %d: backward of %d before its forward", pp, s, st.micro)
						}
						inflight--
					}
					peak = max(peak, inflight)
				}
				if peak > min(pp-s, micro) {
					t.Errorf("pp %d stage %d micro %d: %d in flight, want at most %d", pp, s, micro, peak, pp-s)
				}
			}
		}
	}
}

// TestLayoutProblems: a layout that does not divide the model is refused before anything
// is lowered, naming the axis and the value.
func TestLayoutProblems(t *testing.T) {
	m := hunyuanTiny(t, 8) // heads 4, layers 4, experts 8, ffn 512
	b := Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}
	cases := []struct {
		layout Layout
		want   string
	}{
		{Layout{DP: 1, EP: 1, TP: 3, PP: 1}, "tp 3 does not divide heads 4"},
		{Layout{DP: 1, EP: 1, TP: 1, PP: 3}, "pp 3 does not divide layers 4"},
		{Layout{DP: 3, EP: 3, TP: 1, PP: 1}, "ep 3 does not divide experts 8"},
		{Layout{DP: 1, EP: 1, TP: 8, PP: 1}, "tp 8 is more than the model's heads (4)"},
		{Layout{DP: 1, EP: 1, TP: 1, PP: 8}, "pp 8 is more than the model's layers (4)"},
		{Layout{DP: 16, EP: 16, TP: 1, PP: 1}, "ep 16 is more than the model's experts (8)"},
		{Layout{DP: 2, EP: 4, TP: 1, PP: 1}, "ep 4 is more than the model's dp (2)"},
	}
	for _, c := range cases {
		_, err := Lower(m, b, c.layout)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.layout, err, c.want)
		}
	}
}

// TestPersistentMemory holds a single rank's persistent bytes to the parameters the
// walker lists: the weights, their gradients and two AdamW moments, 4 bytes each.
func TestPersistentMemory(t *testing.T) {
	for _, experts := range []int{1, 8} {
		m := hunyuanTiny(t, experts)
		ps, err := params.Walk(m)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, p := range ps {
			n += p.Elements()
		}
		progs, err := Lower(m, Batch{MicroBatch: 8, SeqLen: 128, Micro: 1}, Layout{DP: 1, EP: 1, TP: 1, PP: 1})
		if err != nil {
			t.Fatal(err)
		}
		mp := progs[0].Memory
		if got, want := mp.Persistent[Device], 4*4*n; got != want {
			t.Errorf("%d experts: persistent %d bytes, want %d (4 × 4 bytes × %d parameters)", experts, got, want, n)
		}
		if mp.Arena[Device] < mp.Peak[Device] || mp.Peak[Device] < mp.Persistent[Device] {
			t.Errorf("%d experts: arena %d, peak %d, persistent %d", experts, mp.Arena[Device], mp.Peak[Device], mp.Persistent[Device])
		}
		t.Logf("%d experts: arena %d, peak %d (%.3f), persistent %d", experts, mp.Arena[Device], mp.Peak[Device],
			float64(mp.Arena[Device])/float64(mp.Peak[Device]), mp.Persistent[Device])
	}
}

// TestShardsAddUp: under ep and zero, the ranks' parameter bytes add up to the model's
// (experts split over ep, states over dp).
func TestShardsAddUp(t *testing.T) {
	m := hunyuanTiny(t, 8)
	ps, _ := params.Walk(m)
	var dense, expert int64
	for _, p := range ps {
		if p.ID.Role.Routed() {
			expert += p.Elements()
		} else {
			dense += p.Elements()
		}
	}
	progs, err := Lower(m, Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}, Layout{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 3})
	if err != nil {
		t.Fatal(err)
	}
	var shards int64
	for _, p := range progs {
		for _, b := range p.Buffers {
			if b.Kind == KindParam {
				shards += b.Elements()
			}
		}
	}
	// dense: 4 shards of ceil(dense/4); experts: each of 2 ep ranks' halves in 2 shards.
	want := 4*ceilDiv(dense, 4) + 2*2*ceilDiv(expert/2, 2)
	if shards != want {
		t.Errorf("ZeRO-3 shards hold %d elements, want %d (dense %d, expert %d)", shards, want, dense, expert)
	}
}

// TestShareWeightsUnset: a Go-built model that leaves share_weights at 0 means "no
// sharing", as program.Attention.SharesWeights says everywhere else: its program has no
// conditional ops and no share_select, exactly like share_weights = 1.
func TestShareWeightsUnset(t *testing.T) {
	b := Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}
	text := map[float64]string{}
	for _, sw := range []float64{0, 1} {
		m := hunyuanTiny(t, 4)
		m.Attention.ShareWeights = sw
		progs, err := Lower(m, b, Layout{DP: 1, EP: 1, TP: 1, PP: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range progs[0].Ops {
			if op.WhenRecompute || op.Kind == "share_select" {
				t.Fatalf("share_weights = %g: op %s (%s) is conditional on attention sharing", sw, op.Kind, op.Attr)
			}
		}
		text[sw] = fmt.Sprint(len(progs[0].Ops), len(progs[0].Buffers))
	}
	if text[0] != text[1] {
		t.Errorf("share_weights 0 and 1 lower differently: ops,buffers %s vs %s", text[0], text[1])
	}
}
