package optim

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol*math.Max(1, math.Abs(b)) }

func TestSchedule(t *testing.T) {
	c := Config{LR: 1e-3, MinLR: 1e-4, Warmup: 10, TotalSteps: 111, Schedule: "cosine"}
	for _, tc := range []struct {
		step int64
		want float64
	}{
		{0, 1e-4}, {4, 5e-4}, {9, 1e-3}, {10, 1e-3}, {60, 5.5e-4}, {110, 1e-4}, {500, 1e-4},
	} {
		if got := c.LRAt(tc.step); !near(got, tc.want, 1e-9) {
			t.Errorf("cosine LRAt(%d) = %g, want %g", tc.step, got, tc.want)
		}
	}
	c.Schedule = "linear"
	if got := c.LRAt(60); !near(got, 5.5e-4, 1e-9) {
		t.Errorf("linear LRAt(60) = %g", got)
	}
	c.Schedule = "constant"
	if got := c.LRAt(100); got != 1e-3 {
		t.Errorf("constant LRAt(100) = %g", got)
	}
	// Monotone non-increasing after warmup.
	c.Schedule = "cosine"
	for s := c.Warmup; s < c.TotalSteps; s++ {
		if c.LRAt(s+1) > c.LRAt(s) {
			t.Fatalf("cosine increases at step %d", s)
		}
	}
}

// TestAdamWMatchesTorch replays testdata/adamw_torch.json, made by PyTorch's AdamW
// (testdata/adamw_torch.py), with decay on the 2-D tensor only and global-norm clipping.
func TestAdamWMatchesTorch(t *testing.T) {
	b, err := os.ReadFile("testdata/adamw_torch.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Grads [][2]json.RawMessage
		Steps []struct {
			W, B []float64
			Norm float64
		}
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	w := Param{Name: "w", Shape: []int{2, 3}, W: []float32{0.5, -1.0, 2.0, 0.25, 0.0, -0.75}, G: make([]float32, 6)}
	bias := Param{Name: "b", Shape: []int{3}, W: []float32{0.1, -0.2, 0.3}, G: make([]float32, 3)}
	o, err := NewAdamW(Config{LR: 1e-2, MinLR: 2e-3, WeightDecay: 0.1, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8,
		TotalSteps: 3, Schedule: "linear", ClipNorm: 1}, []Param{w, bias})
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range ref.Grads {
		var gw [][]float32
		var gb []float32
		json.Unmarshal(g[0], &gw)
		json.Unmarshal(g[1], &gb)
		copy(w.G, append(gw[0], gw[1]...))
		copy(bias.G, gb)
		info, err := o.Step(1)
		if err != nil {
			t.Fatal(err)
		}
		want := ref.Steps[i]
		if !near(info.GradNorm, want.Norm, 1e-6) || info.Clipped != (want.Norm > 1) {
			t.Errorf("step %d: norm %g clipped %v, want %g", i, info.GradNorm, info.Clipped, want.Norm)
		}
		for j := range w.W {
			if !near(float64(w.W[j]), want.W[j], 2e-6) {
				t.Errorf("step %d: w[%d] = %.8g, torch %.8g", i, j, w.W[j], want.W[j])
			}
		}
		for j := range bias.W {
			if !near(float64(bias.W[j]), want.B[j], 2e-6) {
				t.Errorf("step %d: b[%d] = %.8g, torch %.8g", i, j, bias.W[j], want.B[j])
			}
		}
	}
}

// TestGradScale checks that accumulating two micro-batch gradients and scaling by 1/2
// gives the same update as the mean gradient in one go, clipping included.
func TestGradScale(t *testing.T) {
	g1 := []float32{3, -1, 0.5, 2}
	g2 := []float32{1, 1, -0.5, 4}
	run := func(g []float32, scale float64) ([]float32, float64) {
		p := Param{Name: "w", Shape: []int{2, 2}, W: []float32{1, 2, 3, 4}, G: g}
		o, _ := NewAdamW(Config{LR: 0.1, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.1, ClipNorm: 1, TotalSteps: 1}, []Param{p})
		info, err := o.Step(scale)
		if err != nil {
			t.Fatal(err)
		}
		return p.W, info.GradNorm
	}
	sum := make([]float32, 4)
	mean := make([]float32, 4)
	for i := range sum {
		sum[i] = g1[i] + g2[i]
		mean[i] = sum[i] / 2
	}
	a, na := run(sum, 0.5)
	b, nb := run(mean, 1)
	if na != nb {
		t.Errorf("norms %g vs %g", na, nb)
	}
	for i := range a {
		if a[i] != b[i] {
			t.Errorf("w[%d]: %g vs %g", i, a[i], b[i])
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	mk := func() (*AdamW, Param) {
		p := Param{Name: "x.weight", Shape: []int{2, 2}, W: []float32{1, 2, 3, 4}, G: []float32{0.1, 0.2, -0.3, 0.4}}
		o, err := NewAdamW(Config{LR: 0.01, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, TotalSteps: 10}, []Param{p})
		if err != nil {
			t.Fatal(err)
		}
		return o, p
	}
	a, pa := mk()
	a.Step(1)
	a.Step(1)
	b, pb := mk()
	copy(pb.W, pa.W)
	if err := b.LoadState(a.State(), a.StepCount()); err != nil {
		t.Fatal(err)
	}
	a.Step(1)
	b.Step(1)
	for i := range pa.W {
		if pa.W[i] != pb.W[i] {
			t.Fatalf("after restore, w[%d] = %g vs %g", i, pb.W[i], pa.W[i])
		}
	}
	st := a.State()
	if err := b.LoadState(st[:1], 1); err == nil || !strings.Contains(err.Error(), "x.weight.exp_avg_sq") {
		t.Errorf("missing moment: %v", err)
	}
	st[0].Shape = []int{4}
	if err := b.LoadState(st, 1); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("wrong shape: %v", err)
	}
}

func TestNonFinite(t *testing.T) {
	p := Param{Name: "w", Shape: []int{2}, W: []float32{1, 2}, G: []float32{float32(math.NaN()), 0}}
	o, _ := NewAdamW(Config{LR: 0.1, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8}, []Param{p})
	if _, err := o.Step(1); err == nil {
		t.Fatal("NaN gradient accepted")
	}
	if p.W[0] != 1 || o.StepCount() != 0 {
		t.Error("failed step changed state")
	}
	for _, c := range []Config{{LR: 0}, {LR: 1, Beta1: 1, Eps: 1}, {LR: 1, Eps: 1, Schedule: "wavy"}, {LR: 1, MinLR: 2, Eps: 1}} {
		if _, err := NewAdamW(c, nil); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}

// BenchmarkAdamW updates 2.8M parameters, about hunyuan_tiny's 8-expert stage.
func BenchmarkAdamW(b *testing.B) {
	var ps []Param
	for i := 0; i < 40; i++ {
		n := 70_000
		p := Param{Name: "p", Shape: []int{n / 100, 100}, W: make([]float32, n), G: make([]float32, n)}
		for j := range p.G {
			p.G[j] = float32(j%7) * 1e-3
		}
		ps = append(ps, p)
	}
	o, err := NewAdamW(Config{LR: 1e-3, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, ClipNorm: 1, TotalSteps: 100}, ps)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := o.Step(1); err != nil {
			b.Fatal(err)
		}
	}
}

// TestStepReduced checks the ZeRO entry point: Step equals StepReduced with no reduce
// and with the identity; two shards whose reduce adds their local sums update exactly as
// one optimizer over all tensors (clipping included, so the global norm is what clips);
// and a failing reduce leaves weights, moments and the step count untouched.
func TestStepReduced(t *testing.T) {
	mk := func() []Param {
		r := rand.New(rand.NewPCG(3, 4))
		var ps []Param
		for i, shape := range [][]int{{4, 5}, {5}, {3, 2, 2}} {
			n := 1
			for _, s := range shape {
				n *= s
			}
			p := Param{Name: fmt.Sprint("p", i), Shape: shape, W: make([]float32, n), G: make([]float32, n)}
			for j := range p.W {
				p.W[j] = float32(r.NormFloat64())
			}
			ps = append(ps, p)
		}
		return ps
	}
	cfg := Config{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, ClipNorm: 1, TotalSteps: 10}
	plain, viaNil, viaID, sharded := mk(), mk(), mk(), mk()
	oPlain, _ := NewAdamW(cfg, plain)
	oNil, _ := NewAdamW(cfg, viaNil)
	oID, _ := NewAdamW(cfg, viaID)
	oA, _ := NewAdamW(cfg, sharded[:2])
	oB, _ := NewAdamW(cfg, sharded[2:])
	r := rand.New(rand.NewPCG(5, 6))
	clipped := false
	for step := 0; step < 4; step++ {
		for i := range plain {
			for j := range plain[i].G {
				g := float32(r.NormFloat64() * 0.4)
				plain[i].G[j], viaNil[i].G[j], viaID[i].G[j], sharded[i].G[j] = g, g, g, g
			}
		}
		want, err := oPlain.Step(0.5)
		if err != nil {
			t.Fatal(err)
		}
		clipped = clipped || want.Clipped
		if got, err := oNil.StepReduced(0.5, nil); err != nil || got != want {
			t.Fatalf("step %d: StepReduced(nil) = %+v, %v; Step = %+v", step, got, err, want)
		}
		id := func(s float64) (float64, error) { return s, nil }
		if got, err := oID.StepReduced(0.5, id); err != nil || got != want {
			t.Fatalf("step %d: StepReduced(identity) = %+v, %v; Step = %+v", step, got, err, want)
		}
		// Each shard's reduce sees its own local sum; both return the total, in the order
		// one optimizer over all tensors adds them.
		var local [2]float64
		if _, err := oA.StepReduced(0.5, func(s float64) (float64, error) { local[0] = s; return s + sumSquares(sharded[2:], 0.5), nil }); err != nil {
			t.Fatal(err)
		}
		gotB, err := oB.StepReduced(0.5, func(s float64) (float64, error) { local[1] = s; return local[0] + s, nil })
		if err != nil {
			t.Fatal(err)
		}
		if gotB.GradNorm != want.GradNorm || gotB.Clipped != want.Clipped {
			t.Fatalf("step %d: sharded norm %+v, whole %+v", step, gotB, want)
		}
		for i := range plain {
			for j := range plain[i].W {
				if viaNil[i].W[j] != plain[i].W[j] || viaID[i].W[j] != plain[i].W[j] || sharded[i].W[j] != plain[i].W[j] {
					t.Fatalf("step %d: %s[%d]: Step %v, nil %v, identity %v, sharded %v", step, plain[i].Name, j,
						plain[i].W[j], viaNil[i].W[j], viaID[i].W[j], sharded[i].W[j])
				}
			}
		}
	}
	if !clipped {
		t.Error("no step clipped: the test does not exercise the global norm")
	}

	before := make([][]float32, len(sharded))
	for i, p := range sharded {
		before[i] = append([]float32(nil), p.W...)
	}
	m0 := append([]float32(nil), oA.State()[0].Data...)
	boom := errors.New("rank 3 went away")
	_, err := oA.StepReduced(1, func(float64) (float64, error) { return 0, boom })
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "gradient norm") {
		t.Fatalf("reduce error: %v", err)
	}
	if oA.StepCount() != 4 {
		t.Errorf("failed reduce counted a step: %d", oA.StepCount())
	}
	for i, p := range sharded[:2] {
		for j := range p.W {
			if p.W[j] != before[i][j] {
				t.Fatalf("failed reduce changed %s[%d]", p.Name, j)
			}
		}
	}
	for j, x := range oA.State()[0].Data {
		if x != m0[j] {
			t.Fatalf("failed reduce changed exp_avg[%d]", j)
		}
	}
}

// sumSquares is the sum of squares of the scaled gradients of ps, tensor by tensor in
// order, as the optimizer measures it.
func sumSquares(ps []Param, scale float64) float64 {
	var total float64
	for _, p := range ps {
		var sq float64
		for _, g := range p.G {
			x := float64(g) * scale
			sq += x * x
		}
		total += sq
	}
	return total
}

// TestTensorUpdate: an optimizer built with NewAdamWWith decides the step as NewAdamW's
// does (clipping, decay on matrices only, the update count) and hands each tensor the
// constants of the update its documentation states; the documented formula, computed in
// float64, lands where the fused pass lands. An error of the update is returned.
func TestTensorUpdate(t *testing.T) {
	cfg := Config{LR: 0.05, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.1, ClipNorm: 0.5, TotalSteps: 4}
	mk := func() []Param {
		r := rand.New(rand.NewPCG(3, 4))
		ps := []Param{{Name: "mat", Shape: []int{3, 2}}, {Name: "vec", Shape: []int{4}}, {Name: "empty", Shape: []int{0}}}
		for i := range ps {
			n := 1
			for _, s := range ps[i].Shape {
				n *= s
			}
			ps[i].W, ps[i].G = make([]float32, n), make([]float32, n)
			for j := range ps[i].W {
				ps[i].W[j], ps[i].G[j] = float32(r.NormFloat64()), float32(r.NormFloat64())
			}
		}
		return ps
	}
	var seen []Update
	formula := func(p Param, m, v []float32, u Update) error {
		seen = append(seen, u)
		bc1, bc2 := u.BiasCorrections()
		for j := range p.W {
			g := float64(p.G[j]) * u.Scale
			mj := u.Beta1*float64(m[j]) + (1-u.Beta1)*g
			vj := u.Beta2*float64(v[j]) + (1-u.Beta2)*g*g
			m[j], v[j] = float32(mj), float32(vj)
			w := float64(p.W[j])
			p.W[j] = float32(w - u.LR*u.WeightDecay*w - (u.LR/bc1)*mj/(math.Sqrt(vj/bc2)+u.Eps))
		}
		return nil
	}
	want, got := mk(), mk()
	ref, err := NewAdamW(cfg, want)
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewAdamWWith(cfg, got, formula)
	if err != nil {
		t.Fatal(err)
	}
	for step := int64(1); step <= 3; step++ {
		a, err := ref.Step(0.5)
		if err != nil {
			t.Fatal(err)
		}
		seen = seen[:0]
		b, err := o.Step(0.5)
		if err != nil {
			t.Fatal(err)
		}
		if a != b || !b.Clipped {
			t.Fatalf("step %d: fused %+v, with the update %+v (want equal, clipped)", step, a, b)
		}
		if len(seen) != 2 {
			t.Fatalf("step %d: the update saw %d tensors, want 2 (the empty one skipped)", step, len(seen))
		}
		for i, u := range seen {
			wantDecay := 0.0
			if i == 0 {
				wantDecay = cfg.WeightDecay
			}
			if u.Step != step || u.WeightDecay != wantDecay || !near(u.Scale, 0.5*cfg.ClipNorm/b.GradNorm, 1e-12) || u.LR != b.LR {
				t.Errorf("step %d tensor %d: %+v", step, i, u)
			}
		}
		for i := range want {
			for j := range want[i].W {
				if !near(float64(got[i].W[j]), float64(want[i].W[j]), 1e-5) {
					t.Fatalf("step %d: %s[%d] = %v by the formula, %v fused", step, want[i].Name, j, got[i].W[j], want[i].W[j])
				}
			}
		}
	}
	failing, _ := NewAdamWWith(cfg, mk(), func(Param, []float32, []float32, Update) error { return errors.New("kernel failed") })
	if _, err := failing.Step(1); err == nil || !strings.Contains(err.Error(), "updating mat: kernel failed") {
		t.Errorf("the update's error: %v", err)
	}
}

// TestStepGlobal: an update from a norm the caller summed (a step program's grad_norm op)
// is the update StepReduced makes from the same global sum, clipping included, and a
// non-finite sum is refused without touching the weights.
func TestStepGlobal(t *testing.T) {
	run := func(step func(o *AdamW) (StepInfo, error)) ([]float32, StepInfo, error) {
		p := Param{Name: "w", Shape: []int{2, 2}, W: []float32{1, 2, 3, 4}, G: []float32{3, -1, 0.5, 2}}
		o, _ := NewAdamW(Config{LR: 0.1, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.1, ClipNorm: 1, TotalSteps: 1}, []Param{p})
		info, err := step(o)
		return p.W, info, err
	}
	const global = 40.0 // the other shards' squares too: the norm clips
	a, ia, err := run(func(o *AdamW) (StepInfo, error) {
		return o.StepReduced(0.5, func(float64) (float64, error) { return global, nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	b, ib, err := run(func(o *AdamW) (StepInfo, error) { return o.StepGlobal(0.5, global) })
	if err != nil {
		t.Fatal(err)
	}
	if ia != ib || !ib.Clipped {
		t.Errorf("step info %+v, StepReduced's %+v", ib, ia)
	}
	for i := range a {
		if a[i] != b[i] {
			t.Errorf("w[%d]: %g, StepReduced's %g", i, b[i], a[i])
		}
	}
	w, _, err := run(func(o *AdamW) (StepInfo, error) { return o.StepGlobal(1, math.NaN()) })
	if err == nil || w[0] != 1 {
		t.Errorf("a NaN sum: %v, w %v", err, w)
	}
}

// TestAdamWOverCallerMoments: NewAdamWOver updates exactly as NewAdamW does, keeps its
// moments in the caller's slices (zeroed first) and refuses moments of the wrong length.
func TestAdamWOverCallerMoments(t *testing.T) {
	cfg := Config{LR: 0.01, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, TotalSteps: 10}
	mk := func() []Param {
		return []Param{
			{Name: "a.weight", Shape: []int{2, 2}, W: []float32{1, 2, 3, 4}, G: []float32{0.1, 0.2, -0.3, 0.4}},
			{Name: "a.bias", Shape: []int{3}, W: []float32{0.5, -1, 2}, G: []float32{1, -2, 0.25}},
		}
	}
	pa, pb := mk(), mk()
	a, err := NewAdamW(cfg, pa)
	if err != nil {
		t.Fatal(err)
	}
	m := [][]float32{{9, 9, 9, 9}, {9, 9, 9}} // stale values the constructor clears
	v := [][]float32{{7, 7, 7, 7}, {7, 7, 7}}
	b, err := NewAdamWOver(cfg, pb, m, v)
	if err != nil {
		t.Fatal(err)
	}
	for s := 0; s < 3; s++ {
		if _, err := a.Step(1); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Step(1); err != nil {
			t.Fatal(err)
		}
	}
	sa, sb := a.State(), b.State()
	for i := range pa {
		for k := range pa[i].W {
			if pa[i].W[k] != pb[i].W[k] {
				t.Errorf("%s[%d]: %g over caller moments, %g with its own", pa[i].Name, k, pb[i].W[k], pa[i].W[k])
			}
		}
		for k := range m[i] {
			if m[i][k] != sa[2*i].Data[k] || v[i][k] != sa[2*i+1].Data[k] {
				t.Errorf("%s: the caller's moments (%g, %g) are not the optimizer's (%g, %g)", pa[i].Name, m[i][k], v[i][k], sa[2*i].Data[k], sa[2*i+1].Data[k])
			}
		}
		if &sb[2*i].Data[0] != &m[i][0] || &sb[2*i+1].Data[0] != &v[i][0] {
			t.Errorf("%s: the optimizer keeps its moments outside the caller's slices", pa[i].Name)
		}
	}
	if _, err := NewAdamWOver(cfg, mk(), [][]float32{{0, 0, 0, 0}, {0, 0}}, v); err == nil || !strings.Contains(err.Error(), "a.bias") {
		t.Errorf("moments of the wrong length: %v", err)
	}
}
