package gogen_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/train"
)

// TestStepProgramPrecisions: a train block's precision = bf16 or fp16 reaches the step
// program's Go form (bfloat16 or half products, and for fp16 the dynamic loss scale),
// which then trains as moec run does: the same losses, bit for bit, and, for fp16 started
// at 2^26 (-loss-scale; moec run's InitialLossScale), the same steps skipped for an
// overflow, at the same scales. The default precision stays float32 (no product setter).
func TestStepProgramPrecisions(t *testing.T) {
	gobin := needGoBuild(t)
	const steps = 8
	for _, c := range []struct {
		precision, call string
		initial         float64
	}{
		{"fp32", "", 0},
		{"bf16", "SetBF16Products(true)", 0},
		{"fp16", "SetFP16Products(true)", 1 << 26},
	} {
		t.Run(c.precision, func(t *testing.T) {
			src := strings.Replace(gapsModel, "precision        = fp32", "precision        = "+c.precision, 1)
			src = strings.Replace(src, "tie_embeddings = true", "tie_embeddings = false", 1)
			prog := loadSections(t, map[string][]byte{"input.moe": []byte(src)})
			res, err := train.Run(context.Background(), train.Options{Program: prog, StageName: "moe", OutRoot: t.TempDir(),
				Steps: steps, ValWindows: 2, InitialLossScale: c.initial, Layout: &train.Sharding{Ranks: 1, EP: 1, Program: true}})
			if err != nil {
				t.Fatal(err)
			}
			want, wantSkips := runRecords(t, res)
			sp, cfg := stepProgramFor(t, prog, "moe")
			gen := emitProgram(t, cfg, sp)
			b, err := os.ReadFile(gen)
			if err != nil {
				t.Fatal(err)
			}
			for _, call := range []string{"SetBF16Products(true)", "SetFP16Products(true)"} {
				if strings.Contains(string(b), call) != (call == c.call) {
					t.Fatalf("%s: the program calls %s: %v", c.precision, call, call != c.call)
				}
			}
			exe, err := buildStepSource(t, gobin, gen, nil)
			if err != nil {
				t.Fatalf("go build of the step program: %v", err)
			}
			args := []string{"-steps", strconv.Itoa(steps)}
			if c.precision == "fp16" {
				args = append(args, "-loss-scale", strconv.FormatFloat(c.initial, 'g', -1, 64))
			}
			got, out := runProgram(t, exe, args...)
			if len(got) != steps || len(want) != steps {
				t.Fatalf("%d losses from the program, %d from moec run; want %d", len(got), len(want), steps)
			}
			for i := range got {
				// The same kernels in the same order on the same batches: equal, not close.
				if got[i] != want[i] {
					t.Errorf("step %d: the program's loss %v, moec run's %v", i+1, got[i], want[i])
				}
			}
			if c.precision != "fp16" {
				return
			}
			var gotSkips []string
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) == 14 && f[0] == "step" {
					gotSkips = append(gotSkips, f[11]+" "+f[13])
				}
			}
			if strings.Join(gotSkips, ", ") != strings.Join(wantSkips, ", ") {
				t.Errorf("loss scale and skipped per step:\nprogram  %v\nmoec run %v", gotSkips, wantSkips)
			}
			if !strings.Contains(strings.Join(wantSkips, ","), "true") || !strings.Contains(strings.Join(wantSkips, ","), "false") {
				t.Errorf("want some steps skipped and some trained from 2^26; moec run: %v", wantSkips)
			}
			t.Logf("fp16 from 2^26: %v", wantSkips)
		})
	}
}

// runRecords reads the losses train.Run logged, and each step's loss scale and whether it
// was skipped, as the generated program prints them.
func runRecords(t *testing.T, res *train.Result) ([]float64, []string) {
	t.Helper()
	b, err := os.ReadFile(res.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var losses []float64
	var skips []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r train.StepRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		losses = append(losses, r.Loss)
		skips = append(skips, strconv.FormatFloat(r.LossScale, 'g', -1, 64)+" "+strconv.FormatBool(r.Skipped))
	}
	return losses, skips
}
