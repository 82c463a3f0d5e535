package experiment

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/golden"
)

var update = flag.Bool("update", false, "rewrite testdata/report.txtar")

// synthetic builds an outcome with chosen numbers, so the report's arithmetic and verdicts
// can be read off the golden file.
func synthetic() *Result {
	curve := func(scale float64) []Point {
		var c []Point
		for i := range 50 {
			c = append(c, Point{Tokens: float64(1024 * (i + 1)), FLOPs: 1e9 * float64(i+1), Seconds: 0.2 * float64(i+1), Loss: scale * (5 - 2*float64(i)/50)})
		}
		return c
	}
	arm := func(name string, ov map[string]string, experts int, vals, times []float64, stab [][]float64) *Arm {
		a := &Arm{Name: name, Overrides: ov, Stages: []string{"scratch"}, Steps: []int64{50}, Experts: experts}
		for i, v := range vals {
			t := &Trial{Seed: int64(i + 1), Curve: curve(v / 3), ValLoss: v, StepTime: times[i], Tokens: 51200, FLOPs: 5e10}
			if stab != nil {
				t.Stability = stab[i]
			}
			a.Trials = append(a.Trials, t)
		}
		return a
	}
	sharing := &Outcome{Experiment: &program.Experiment{Name: "sharing", Train: "tiny", Equal: "tokens"}, Tokens: 51200, Seeds: []int64{1, 2, 3},
		Arms: []*Arm{
			arm("baseline", map[string]string{"attention.share_weights": "1"}, 4, []float64{3.00, 3.02, 3.04}, []float64{0.100, 0.102, 0.101}, [][]float64{{0.7, 0.8}, {0.72, 0.8}, {0.74, 0.8}}),
			arm("half", map[string]string{"attention.share_weights": "0.5"}, 4, []float64{3.01, 3.03, 3.05}, []float64{0.080, 0.082, 0.081}, [][]float64{{1, 1}, {1, 1}, {1, 1}}),
		}}
	scaling := &Outcome{Experiment: &program.Experiment{Name: "scaling", Train: "tiny"}, Tokens: 51200, Seeds: []int64{1, 2},
		Arms: []*Arm{
			arm("baseline", map[string]string{"moe.experts": "1"}, 1, []float64{3.5, 3.6}, []float64{0.1, 0.1}, nil),
			arm("e2", map[string]string{"moe.experts": "2"}, 2, []float64{3.2, 3.3}, []float64{0.1, 0.1}, [][]float64{{0.9}, {0.9}}),
			arm("e4", map[string]string{"moe.experts": "4"}, 4, []float64{3.0, 3.1}, []float64{0.1, 0.1}, [][]float64{{0.9}, {0.9}}),
			arm("e8", map[string]string{"moe.experts": "8"}, 8, []float64{3.05, 3.08}, []float64{0.1, 0.1}, [][]float64{{0.9}, {0.9}}),
		}}
	// An equal-FLOPs experiment whose variant spent 13% fewer FLOPs than the baseline (a
	// reduced run's rounding): its ratio is printed and its loss verdict withheld.
	curriculum := arm("curriculum", map[string]string{"stage": "sixteen"}, 4, []float64{2.0, 2.01}, []float64{0.1, 0.1}, [][]float64{{1}, {1}})
	curriculum.Stages, curriculum.Steps = []string{"dense", "four", "sixteen"}, []int64{3, 2, 2}
	for _, t := range curriculum.Trials {
		t.FLOPs = 0.87 * 5e10
	}
	warm := &Outcome{Experiment: &program.Experiment{Name: "warm", Train: "tiny", Equal: "flops"}, Tokens: 51200, Seeds: []int64{1, 2},
		Arms: []*Arm{arm("baseline", map[string]string{"stage": "scratch"}, 4, []float64{3.0, 3.01}, []float64{0.1, 0.1}, [][]float64{{1}, {1}}), curriculum}}
	return &Result{Experiments: []*Outcome{sharing, scaling, warm}}
}

// TestReportGolden checks results.md for synthetic numbers: means, spreads, deltas, the
// verdicts (overlapping ranges are "within spread") and where the scaling curve flattens.
func TestReportGolden(t *testing.T) {
	dir := t.TempDir()
	path, err := Report(synthetic(), dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	golden.Archive(t, filepath.Join("testdata", "report.txtar"), &txtar.Archive{
		Comment: []byte("results.md written by Report for synthetic(); go test -update rewrites it.\n"),
		Files:   []txtar.File{{Name: "results.md", Data: got}}}, *update)
	for _, must := range []string{"within spread", "real (lower)", "moe.experts = 4 → 8",
		"| 0.870 |", "not judged (training FLOPs differ by more than 2%)", "**Not held here:** curriculum (-13.0%), so no loss verdict",
		"trailing mean over 20% of its run's steps (10 for the baseline)"} {
		if !strings.Contains(string(got), must) {
			t.Errorf("results.md lacks %q", must)
		}
	}
	for _, png := range []string{"sharing-loss-vs-tokens.png", "sharing-loss-vs-time.png", "sharing-loss-vs-flops.png", "scaling-scaling.png"} {
		if _, err := os.Stat(filepath.Join(dir, png)); err != nil {
			t.Error(err)
		}
	}
}
