package experiment

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func load(t *testing.T, path string) Options {
	t.Helper()
	prog, files, _, diags := Load(path, os.ReadFile)
	if diags.HasErrors() {
		t.Fatalf("%s does not check:\n%v", path, diags.Err())
	}
	base, _ := filepath.Abs(filepath.Dir(path))
	return Options{Program: prog, Files: files, BaseDir: base, OutDir: t.TempDir(), ValWindows: 8}
}

// TestTinyBudget runs every experiment of testdata/tiny.moe (the four seed claims at a
// tiny budget) and checks that what the report says follows from the runs.
func TestTinyBudget(t *testing.T) {
	opt := load(t, "testdata/tiny.moe")
	res, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*Outcome{}
	for _, o := range res.Experiments {
		byName[o.Experiment.Name] = o
		for _, a := range o.Arms {
			if len(a.Trials) != len(o.Seeds) {
				t.Errorf("%s/%s: %d trials for %d seeds", o.Experiment.Name, a.Name, len(a.Trials), len(o.Seeds))
			}
			for _, tr := range a.Trials {
				if !(tr.ValLoss > 0 && tr.ValLoss < 10) || len(tr.Curve) == 0 || tr.FLOPs <= 0 {
					t.Errorf("%s/%s seed %d: val loss %v, %d points, %v FLOPs", o.Experiment.Name, a.Name, tr.Seed, tr.ValLoss, len(tr.Curve), tr.FLOPs)
				}
			}
		}
	}
	if len(byName) != 4 {
		t.Fatalf("ran %d experiments, want 4", len(byName))
	}

	// Sharing: the arms differ only in share_weights; each trains 8 steps of 128 tokens, and
	// different seeds give different numbers (else the spread would be meaningless).
	sh := byName["sharing"]
	for _, a := range sh.Arms {
		if a.Trials[0].Tokens != 8*128 || a.Trials[0].ValLoss == a.Trials[1].ValLoss {
			t.Errorf("sharing/%s: tokens %d, val losses %v %v", a.Name, a.Trials[0].Tokens, a.Trials[0].ValLoss, a.Trials[1].ValLoss)
		}
	}

	// Routing: a token-embedding router sends every occurrence of a token to one expert.
	rt := byName["routing"]
	for _, s := range rt.Arms[1].Stability() {
		if s.Min != 1 {
			t.Errorf("token_embedding routing stability %v, want exactly 1", s)
		}
	}
	if st := rt.Arms[0].Stability(); len(st) != 2 || st[0].Mean <= 0 || st[0].Mean > 1 {
		t.Errorf("hidden routing stability %v", st)
	}

	// Growth: the curriculum runs dense → two → four; equal FLOPs within a step's worth.
	gr := byName["growth"]
	if got := strings.Join(gr.Arms[1].Stages, ","); got != "dense,two,four" {
		t.Errorf("curriculum stages %s", got)
	}
	f0, f1 := gr.Arms[0].Trials[0].FLOPs, gr.Arms[1].Trials[0].FLOPs
	if math.Abs(f1-f0) > 0.15*f0 {
		t.Errorf("growth FLOPs %g vs %g, not equal", f1, f0)
	}
	if c := gr.Arms[1].Trials[0].Curve; c[len(c)-1].FLOPs <= c[0].FLOPs || c[len(c)-1].Tokens != float64(gr.Arms[1].Trials[0].Tokens) {
		t.Errorf("curriculum curve does not accumulate over stages: %+v ... %+v", c[0], c[len(c)-1])
	}

	// Scaling: experts 1, 2, 4; the dense arm has no routing.
	sc := byName["scaling"]
	if sc.Arms[0].Experts != 1 || sc.Arms[2].Experts != 4 || sc.Arms[0].Stability() != nil {
		t.Errorf("scaling arms: experts %d, %d", sc.Arms[0].Experts, sc.Arms[2].Experts)
	}

	path, err := Report(res, opt.OutDir)
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## sharing", "## routing", "## growth", "## scaling", "Routing stability", "Scaling in `moe.experts`",
		"sharing-loss-vs-time.png", "growth-loss-vs-flops.png", "scaling-scaling.png"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q", want)
		}
	}
	for _, png := range []string{"sharing-loss-vs-tokens.png", "routing-loss-vs-time.png", "growth-loss-vs-flops.png", "scaling-scaling.png"} {
		if fi, err := os.Stat(filepath.Join(opt.OutDir, png)); err != nil || fi.Size() < 1000 {
			t.Errorf("plot %s: %v", png, err)
		}
	}
}

func TestCompare(t *testing.T) {
	a := summarize([]float64{1.0, 1.1, 1.2})
	for _, c := range []struct {
		b    []float64
		want Verdict
	}{
		{[]float64{1.3, 1.4}, Lower},
		{[]float64{0.5, 0.9}, Higher},
		{[]float64{1.15, 1.5}, Covered}, // ranges overlap: the spread covers the difference
		{[]float64{2}, OneSeed},
	} {
		if got := Compare(a, summarize(c.b)); got != c.want {
			t.Errorf("Compare(%v, %v) = %v, want %v", a, c.b, got, c.want)
		}
	}
	s := summarize([]float64{1, 2, 3})
	if s.Mean != 2 || s.SD != 1 || s.Min != 1 || s.Max != 3 {
		t.Errorf("summarize = %+v", s)
	}
}

func TestBadOverrideIsAnError(t *testing.T) {
	opt := load(t, "testdata/tiny.moe")
	ex := *opt.Program.Experiments["scaling"]
	ex.Baseline = map[string]string{"moe.experts": "0"} // experts must be positive
	opt.Program.Experiments["scaling"] = &ex
	opt.Only = []string{"scaling"}
	_, err := Run(context.Background(), opt)
	if err == nil || !strings.Contains(err.Error(), "does not check") {
		t.Fatalf("experts = 0 override: %v", err)
	}
}

// TestReuse: a second invocation reads finished runs instead of retraining them (their
// measured step times come back unchanged), a changed budget retrains, and Fresh retrains.
func TestReuse(t *testing.T) {
	opt := load(t, "testdata/tiny.moe")
	opt.Only, opt.Seeds = []string{"growth"}, []int64{1}
	first, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	a, b := first.Experiments[0].Arms[1].Trials[0], again.Experiments[0].Arms[1].Trials[0]
	if a.StepTime != b.StepTime || a.ValLoss != b.ValLoss || a.Seconds != b.Seconds {
		t.Errorf("finished curriculum was not reused: %+v vs %+v", a, b)
	}
	opt.Fresh = true
	fresh, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if c := fresh.Experiments[0].Arms[1].Trials[0]; c.Seconds == a.Seconds || c.ValLoss != a.ValLoss {
		t.Errorf("fresh run: %v s (was %v), val loss %v (was %v): want retrained, same numbers", c.Seconds, a.Seconds, c.ValLoss, a.ValLoss)
	}
	opt.Fresh, opt.Tokens = false, 4*128
	smaller, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if c := smaller.Experiments[0].Arms[0].Trials[0]; c.Tokens != 4*128 {
		t.Errorf("changed budget: %d tokens, want %d", c.Tokens, 4*128)
	}
}

// TestSeedClaimsTiny runs every experiment of examples/seed-claims.moe as declared (arms,
// stages, equal-FLOPs budgets) at a tiny budget, one seed, on a small slice of the data:
// the full run is `make experiments`.
func TestSeedClaimsTiny(t *testing.T) {
	opt := load(t, "../../examples/seed-claims.moe")
	opt.Tokens, opt.Seeds, opt.ValWindows = 1024, []int64{1}, 2
	opt.Set = map[string]string{"data": `"$GOROOT/src/strings/*.go"`}
	res, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"attention_sharing": 2, "routing": 2, "warm_start": 2, "expert_scaling": 6}
	for _, o := range res.Experiments {
		if len(o.Arms) != want[o.Experiment.Name] {
			t.Errorf("%s: %d arms, want %d", o.Experiment.Name, len(o.Arms), want[o.Experiment.Name])
		}
		delete(want, o.Experiment.Name)
	}
	if len(want) != 0 {
		t.Errorf("experiments not run: %v", want)
	}
	if _, err := Report(res, opt.OutDir); err != nil {
		t.Fatal(err)
	}
}
