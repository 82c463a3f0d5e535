package cudastep

import (
	"flag"
	"os"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// tinyStage is examples/hunyuan_tiny.moe's model with experts experts (1: the dense
// stage) cut to layers layers.
func tinyStage(t *testing.T, layers, experts int) *program.Model {
	t.Helper()
	src, err := os.ReadFile("../../examples/hunyuan_tiny.moe")
	if err != nil {
		t.Fatal(err)
	}
	prog, _, ds := check.Load("hunyuan_tiny.moe", func(string) ([]byte, error) { return src, nil })
	if ds.HasErrors() {
		t.Fatalf("%v", ds)
	}
	m := program.StageModel(prog.Models["hunyuan_tiny"], &program.Stage{Experts: experts})
	m.Layers = layers
	return m
}

func lowerOne(t *testing.T, m *program.Model, b step.Batch, l step.Layout) (*step.Program, *Lowered, error) {
	t.Helper()
	progs, err := step.Lower(m, b, l)
	if err != nil {
		t.Fatal(err)
	}
	low, err := Lower(progs[0], m)
	return progs[0], low, err
}

// TestHostProgramGolden holds the generated host program of a two-layer dense stage (one
// layer sharing the attention weights of the other) to testdata/host_tiny.txtar
// (go test -update rewrites it).
func TestHostProgramGolden(t *testing.T) {
	_, low, err := lowerOne(t, tinyStage(t, 2, 1), step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	if err != nil {
		t.Fatal(err)
	}
	host, err := HostProgram(low)
	if err != nil {
		t.Fatal(err)
	}
	// Layer 1's shared attention: its launches are table rows on dice[1] (launch_table.go),
	// 2 when it recomputes, -2 when it reuses layer 0's weights.
	for _, want := range []string{"}, // dense_gemm\n", ", 19, 2}, // dense_gemm\n", ", 19, -2}, // dense_zero\n", "moec_launch_run(s, opt, dice, moec_launches_0",
		"moec_settle(s, opt, &update)", "cuLaunchKernel", "MOEC_DEVICE_BYTES"} {
		if !strings.Contains(host, want) {
			t.Errorf("the host program has no %q", want)
		}
	}
	golden.Archive(t, "testdata/host_tiny.txtar", &txtar.Archive{
		Comment: []byte("The host program of hunyuan_tiny's dense stage cut to two layers, one sequence of 8 tokens.\nRegenerate with go test ./codegen/cudastep -run TestHostProgramGolden -update.\n"),
		Files:   []txtar.File{{Name: HostName, Data: []byte(host)}},
	}, *update)
}

// TestRefusesLayoutsNotLoweredYet: a distillation stage under tensor parallelism (the
// vocabulary-parallel loss's passes) is an error that says what is not lowered yet (the
// unified cache is lowered on every layout now: cache.go; distillation at tp 1:
// distill.go).
func TestRefusesLayoutsNotLoweredYet(t *testing.T) {
	m := tinyStage(t, 4, 1)
	m.Attention.TalkingHeads = false // tensor parallelism splits the heads
	m.Attention.ShareWeights = 1     // a pipeline stage would reuse another stage's weights
	b := step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 2}
	for _, c := range []struct {
		layout step.Layout
		want   string
	}{
		{step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, Cache: step.Cache{Budget: 1 << 30}, Distill: step.Distill{Temperature: 2, SoftWeight: 0.7, HardWeight: 0.3}}, "distillation under tensor parallelism"},
	} {
		_, _, err := lowerOne(t, m, b, c.layout)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "not lower") {
			t.Errorf("%s: got %v, want an error naming %q", c.layout, err, c.want)
		}
	}
}

// TestMoEOpsGoToTheMoELowering: in a stage with experts, the routing ops and the experts'
// activations go to lowerMoE, blocked ([experts, capacity, width]) and packed (dropless:
// [rows, width]) alike, and the dense layer's activations stay dense.
func TestMoEOpsGoToTheMoELowering(t *testing.T) {
	for _, capacity := range []float64{1.25, 0} {
		m := tinyStage(t, 2, 4)
		moe := *m.MoE
		moe.CapacityFactor = capacity
		m.MoE = &moe
		progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
		if err != nil {
			t.Fatal(err)
		}
		p := progs[0]
		expert := expertBuffers(p)
		acts := map[bool]int{}
		routes := 0
		for i := range p.Ops {
			op := &p.Ops[i]
			switch op.Kind {
			case step.OpAct, step.OpActBwd:
				acts[isMoE(p, op, expert)]++
				if isMoE(p, op, expert) != (op.Layer == 1) {
					t.Errorf("capacity %v: op %d (%s, layer %d) goes to the MoE lowering: %v", capacity, i, op.Kind, op.Layer, isMoE(p, op, expert))
				}
			case step.OpRouter:
				if !isMoE(p, op, expert) {
					t.Errorf("capacity %v: the route op stays dense", capacity)
				}
				routes++
			}
		}
		if routes == 0 || acts[true] != 2 || acts[false] != 2 {
			t.Errorf("capacity %v: %d routes, %d expert and %d dense activations", capacity, routes, acts[true], acts[false])
		}
	}
}
