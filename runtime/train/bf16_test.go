package train

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/blas"
)

// TestBF16TrainingFollowsFP32 trains the tiny MoE model 50 steps with float32 products
// and again with bfloat16 products (precision = bf16: CPUProducts), through the
// hand-written model and through step programs: every bf16 step's loss is finite and
// within 2% of the float32 run's at the same step, the last ten steps' mean within 1%,
// and the runs are not the same numbers (the products did round).
func TestBF16TrainingFollowsFP32(t *testing.T) {
	t.Logf("bf16 instructions on this CPU: %v", blas.BF16Compute())
	const steps = 50
	for _, engine := range []struct {
		name   string
		layout *Sharding
	}{{"hand-written", nil}, {"step programs", &Sharding{Ranks: 1, EP: 1, Program: true}}} {
		t.Run(engine.name, func(t *testing.T) {
			losses := map[program.Precision][]float64{}
			for _, prec := range []program.Precision{"", program.BF16} {
				p := tinyProgram()
				tr := p.Trains["tiny"]
				tr.CPUProducts = prec
				tr.Stages = []*program.Stage{{Name: "moe", Experts: 4, Steps: steps}}
				dir := t.TempDir()
				if _, err := Run(context.Background(), Options{Program: p, StageName: "moe", OutDir: dir, ValWindows: 2, Layout: engine.layout}); err != nil {
					t.Fatal(err)
				}
				losses[prec] = readLosses(t, filepath.Join(dir, LogFile))
				if len(losses[prec]) != steps {
					t.Fatalf("precision %q: %d logged steps, want %d", prec, len(losses[prec]), steps)
				}
			}
			fp32, bf16 := losses[""], losses[program.BF16]
			same := true
			var tail32, tail16 float64
			for i := range fp32 {
				if math.IsNaN(bf16[i]) || math.IsInf(bf16[i], 0) || math.Abs(bf16[i]-fp32[i]) > 0.02*fp32[i] {
					t.Errorf("step %d: bf16 loss %.5f, float32 %.5f: more than 2%% apart", i+1, bf16[i], fp32[i])
				}
				same = same && bf16[i] == fp32[i]
				if i >= steps-10 {
					tail32 += fp32[i] / 10
					tail16 += bf16[i] / 10
				}
			}
			if math.Abs(tail16-tail32) > 0.01*tail32 {
				t.Errorf("last ten steps: bf16 mean loss %.5f, float32 %.5f: more than 1%% apart", tail16, tail32)
			}
			if same {
				t.Error("the bf16 run's losses are the float32 run's: the products did not round")
			}
			t.Logf("loss at step 1: %.5f (float32 %.5f); last ten steps' mean %.5f (float32 %.5f)", bf16[0], fp32[0], tail16, tail32)
		})
	}
}

// readLosses reads each step's loss from a run's log.jsonl.
func readLosses(t *testing.T, path string) []float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Loss *float64 `json:"loss"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if rec.Loss != nil {
			out = append(out, *rec.Loss)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBF16Note: `moec run` notes a bf16 block's float32 fallback on a CPU without
// AVX512-BF16, and says nothing where the CPU has it or the block does not ask.
func TestBF16Note(t *testing.T) {
	if note := BF16Note(&program.Train{Precision: program.BF16}); note != "" {
		t.Errorf("a block that leaves precision at its default got the note %q", note)
	}
	note := BF16Note(&program.Train{Precision: program.BF16, CPUProducts: program.BF16})
	if blas.BF16Compute() != (note == "") {
		t.Errorf("bf16 instructions %v, note %q", blas.BF16Compute(), note)
	}
}
