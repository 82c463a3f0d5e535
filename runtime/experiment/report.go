package experiment

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/internal/human"
	"github.com/moec-dev/moec/runtime/plot"
)

// Summary is the mean and spread of one measurement over an arm's seeds.
type Summary struct {
	N                  int
	Mean, SD, Min, Max float64
}

func summarize(x []float64) Summary {
	s := Summary{N: len(x), Min: math.Inf(1), Max: math.Inf(-1)}
	if len(x) == 0 {
		return Summary{Mean: math.NaN(), SD: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	for _, v := range x {
		s.Mean += v
		s.Min, s.Max = math.Min(s.Min, v), math.Max(s.Max, v)
	}
	s.Mean /= float64(len(x))
	if len(x) > 1 {
		for _, v := range x {
			s.SD += (v - s.Mean) * (v - s.Mean)
		}
		s.SD = math.Sqrt(s.SD / float64(len(x)-1))
	}
	return s
}

// Verdict says whether the difference between two arms' measurements is real by the
// package's rule: at least two seeds each and ranges over seeds that do not overlap.
type Verdict int

const (
	Covered Verdict = iota // the spread over seeds covers the difference
	Lower                  // real: every seed of a is below every seed of b
	Higher                 // real: every seed of a is above every seed of b
	OneSeed                // too few seeds to judge
)

// Compare applies the rule to a against b.
func Compare(a, b Summary) Verdict {
	switch {
	case a.N < 2 || b.N < 2:
		return OneSeed
	case a.Max < b.Min:
		return Lower
	case a.Min > b.Max:
		return Higher
	}
	return Covered
}

func (v Verdict) String() string {
	switch v {
	case Lower:
		return "real (lower)"
	case Higher:
		return "real (higher)"
	case OneSeed:
		return "not judged (one seed)"
	}
	return "within spread"
}

// ValLoss, StepTime and Stability summarise an arm's trials.
func (a *Arm) ValLoss() Summary  { return a.summary(func(t *Trial) float64 { return t.ValLoss }) }
func (a *Arm) StepTime() Summary { return a.summary(func(t *Trial) float64 { return t.StepTime }) }
func (a *Arm) summary(f func(*Trial) float64) Summary {
	x := make([]float64, len(a.Trials))
	for i, t := range a.Trials {
		x[i] = f(t)
	}
	return summarize(x)
}

// Stability summarises routing stability per MoE layer (nil for a dense arm).
func (a *Arm) Stability() []Summary {
	if len(a.Trials) == 0 || len(a.Trials[0].Stability) == 0 {
		return nil
	}
	out := make([]Summary, len(a.Trials[0].Stability))
	for l := range out {
		out[l] = a.summary(func(t *Trial) float64 {
			if l < len(t.Stability) {
				return t.Stability[l]
			}
			return math.NaN()
		})
	}
	return out
}

// Report writes dir/results.md and its PNG plots for every experiment of res.
func Report(res *Result, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("experiment report: %w", err)
	}
	var b bytes.Buffer
	b.WriteString("# Experiment results\n\n")
	b.WriteString("Written by `moec experiment`. Each arm ran once per seed; a cell shows mean ± sample standard deviation over seeds [min, max]. ")
	b.WriteString("A difference from the baseline is called real only when every seed of one arm lies beyond every seed of the other (ranges do not overlap) with at least two seeds each; otherwise the spread covers it. Loss is training cross-entropy in nats per byte token; validation loss is measured on held-out text after the last step.\n")
	for _, o := range res.Experiments {
		if err := writeExperiment(&b, o, dir); err != nil {
			return "", err
		}
	}
	path := filepath.Join(dir, "results.md")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("experiment report: %w", err)
	}
	return path, nil
}

func writeExperiment(b *bytes.Buffer, o *Outcome, dir string) error {
	ex := o.Experiment
	fmt.Fprintf(b, "\n## %s\n\n", ex.Name)
	seeds := make([]string, len(o.Seeds))
	for i, sd := range o.Seeds {
		seeds[i] = strconv.FormatInt(sd, 10)
	}
	flops := ex.Equal == "flops"
	base := o.Arms[0]
	budget := base.summary(func(t *Trial) float64 { return t.Budget(flops) }).Mean
	// ratio is an arm's budget over the baseline's; off says it is beyond the tolerance,
	// where a difference in loss may be the budget's and no verdict is given.
	ratio := func(a *Arm) float64 {
		return a.summary(func(t *Trial) float64 { return t.Budget(flops) }).Mean / budget
	}
	off := func(a *Arm) bool { r := ratio(a); return !(math.Abs(r-1) <= BudgetTolerance) }
	var offArms []string
	for _, a := range o.Arms[1:] {
		if off(a) {
			offArms = append(offArms, fmt.Sprintf("%s (%+.1f%%)", a.Name, 100*(ratio(a)-1)))
		}
	}
	fmt.Fprintf(b, "train `%s`; %s tokens per baseline run; seeds %s; every arm gets as many %s as the baseline, to within %g%% "+
		"(whole steps; an arm's last stage takes what its earlier stages left).",
		ex.Train, human.Count(float64(o.Tokens)), strings.Join(seeds, ", "), equalWhat(ex.Equal), 100*BudgetTolerance)
	if len(offArms) > 0 {
		them := "it"
		if len(offArms) > 1 {
			them = "them"
		}
		fmt.Fprintf(b, " **Not held here:** %s, so no loss verdict is given for %s (a longer run, more --tokens, rounds closer).", strings.Join(offArms, ", "), them)
	}
	b.WriteString("\n\n")
	fmt.Fprintf(b, "| arm | overrides | stages (steps) | tokens | train FLOPs | %s vs baseline | val loss | Δ val loss | verdict | ms/step | Δ step time | verdict |\n", equalWhat(ex.Equal))
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	bv, bt := base.ValLoss(), base.StepTime()
	for _, a := range o.Arms {
		v, t := a.ValLoss(), a.StepTime()
		var stages []string
		for i, s := range a.Stages {
			stages = append(stages, fmt.Sprintf("%s (%d)", s, a.Steps[i]))
		}
		tok, fl := a.summary(func(t *Trial) float64 { return float64(t.Tokens) }), a.summary(func(t *Trial) float64 { return t.FLOPs })
		dv, vv, dt, vt := "—", "—", "—", "—"
		if a != base {
			dv, vv = fmt.Sprintf("%+.4f", v.Mean-bv.Mean), Compare(v, bv).String()
			dt, vt = fmt.Sprintf("%+.1f%%", 100*(t.Mean/bt.Mean-1)), Compare(t, bt).String()
			if off(a) {
				vv = fmt.Sprintf("not judged (%s differ by more than %g%%)", equalWhat(ex.Equal), 100*BudgetTolerance)
			}
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %.3f | %s | %s | %s | %s | %s | %s |\n", a.Name, overrides(a.Overrides), strings.Join(stages, " → "),
			human.Count(tok.Mean), human.SI(fl.Mean, "FLOP"), ratio(a), fmtSummary(v, 4, 1), dv, vv, fmtSummary(t, 1, 1000), dt, vt)
	}
	writeReach(b, o)
	if hasStability(o) {
		b.WriteString("\nRouting stability (fraction of a token's occurrences routed to its most frequent expert, first choice, validation text), per MoE layer:\n\n")
		b.WriteString("| arm | experts | per layer |\n|---|---|---|\n")
		for _, a := range o.Arms {
			st := a.Stability()
			if st == nil {
				fmt.Fprintf(b, "| %s | %d | dense |\n", a.Name, a.Experts)
				continue
			}
			var cells []string
			for l, s := range st {
				cells = append(cells, fmt.Sprintf("L%d %s", l, fmtSummary(s, 3, 1)))
			}
			fmt.Fprintf(b, "| %s | %d | %s |\n", a.Name, a.Experts, strings.Join(cells, "; "))
		}
	}
	if err := writeScaling(b, o, dir); err != nil {
		return err
	}
	for _, p := range []struct {
		suffix, xlabel string
		x              func(Point) float64
	}{
		{"tokens", "training tokens", func(p Point) float64 { return p.Tokens }},
		{"time", "wall-clock seconds", func(p Point) float64 { return p.Seconds }},
		{"flops", "training FLOPs", func(p Point) float64 { return p.FLOPs }},
	} {
		name := fmt.Sprintf("%s-loss-vs-%s.png", ex.Name, p.suffix)
		c := plot.Chart{Title: fmt.Sprintf("%s: training loss (mean over %d seeds, band: min-max, smoothed)", ex.Name, len(o.Seeds)), XLabel: p.xlabel, YLabel: "cross-entropy (nats/token)"}
		for _, a := range o.Arms {
			c.Series = append(c.Series, meanCurve(a, p.x))
		}
		if err := plot.WriteFile(filepath.Join(dir, name), c); err != nil {
			return fmt.Errorf("experiment %s: %w", ex.Name, err)
		}
		fmt.Fprintf(b, "\n![%s: loss against %s](%s)\n", ex.Name, p.xlabel, name)
	}
	return nil
}

func hasStability(o *Outcome) bool {
	for _, a := range o.Arms {
		if a.Stability() != nil {
			return true
		}
	}
	return false
}

// meanCurve averages an arm's loss curves step by step over seeds (runs of one arm take
// the same steps) and smooths with a trailing mean over about 4% of the steps.
func meanCurve(a *Arm, xf func(Point) float64) plot.Series {
	n := math.MaxInt
	for _, t := range a.Trials {
		n = min(n, len(t.Curve))
	}
	if n == math.MaxInt {
		n = 0
	}
	x, y := make([]float64, n), make([]float64, n)
	for i := range n {
		for _, t := range a.Trials {
			x[i] += xf(t.Curve[i])
			y[i] += t.Curve[i].Loss
		}
		x[i] /= float64(len(a.Trials))
		y[i] /= float64(len(a.Trials))
	}
	series := plot.Series{Name: a.Name, X: x, Y: smooth(y)}
	if len(a.Trials) > 1 && n > 0 {
		// The band is the spread over seeds: at each step the lowest and highest of the
		// seeds' smoothed curves.
		lo, hi := make([]float64, n), make([]float64, n)
		for i := range n {
			lo[i], hi[i] = math.Inf(1), math.Inf(-1)
		}
		for _, t := range a.Trials {
			ys := make([]float64, n)
			for i := range n {
				ys[i] = t.Curve[i].Loss
			}
			for i, v := range smooth(ys) {
				lo[i], hi[i] = math.Min(lo[i], v), math.Max(hi[i], v)
			}
		}
		series.Low, series.High = lo, hi
	}
	return series
}

// smooth is a trailing mean over about 4% of the points, for the plots: single steps are
// too noisy to read a curve from, and a trailing window never borrows from the future.
func smooth(y []float64) []float64 {
	return smoothOver(y, max(1, len(y)/25))
}

// reachShare is the share of a run's steps the reach table's trailing mean spans. The
// plots' 4% (8 steps of a 192-step run) is within batch noise: over the seed claims'
// runs the baseline "reached" its own final loss at 42–65% of its tokens with it. Over
// 20% of the steps it reaches it at 84–94%, so a level crossed earlier is a real gain.
const reachShare = 5 // 1/5 of the steps

// reachWindow is the reach table's window for a curve of n steps.
func reachWindow(n int) int { return max(1, n/reachShare) }

// smoothOver is a trailing mean over w points (fewer at the start).
func smoothOver(y []float64, w int) []float64 {
	n := len(y)
	sm := make([]float64, n)
	sum := 0.0
	for i := range n {
		sum += y[i]
		if i >= w {
			sum -= y[i-w]
		}
		sm[i] = sum / float64(min(i+1, w))
	}
	return sm
}

// writeReach reports how much training each arm needed to reach the baseline's final
// training loss (smoothed; the highest over the baseline's seeds): convergence speed in
// tokens and FLOPs, as a fraction of what the baseline spent.
func writeReach(b *bytes.Buffer, o *Outcome) {
	base := o.Arms[0]
	var finals []float64
	window := 0
	for _, t := range base.Trials {
		window = max(window, reachWindow(len(t.Curve)))
		if sm := smoothOver(losses(t.Curve), reachWindow(len(t.Curve))); len(sm) > 0 {
			finals = append(finals, sm[len(sm)-1])
		}
	}
	if len(o.Arms) < 2 || len(finals) == 0 {
		return
	}
	// The worst baseline seed's final loss: a level every baseline seed reached.
	target := summarize(finals).Max
	baseTok := base.summary(func(t *Trial) float64 { return float64(t.Tokens) }).Mean
	baseFL := base.summary(func(t *Trial) float64 { return t.FLOPs }).Mean
	fmt.Fprintf(b, "\nTraining needed to reach the baseline's final training loss (%.4f: the highest over its seeds), as a share of the baseline's tokens and FLOPs. "+
		"Every curve here is a trailing mean over %d%% of its run's steps (%d for the baseline), wide enough that batch noise does not reach the level early:\n\n", target, 100/reachShare, window)
	b.WriteString("| arm | seeds that reached it | tokens | FLOPs |\n|---|---|---|---|\n")
	for _, a := range o.Arms {
		var tok, fl []float64
		for _, t := range a.Trials {
			sm := smoothOver(losses(t.Curve), reachWindow(len(t.Curve)))
			for i, v := range sm {
				if v <= target {
					tok, fl = append(tok, t.Curve[i].Tokens/baseTok), append(fl, t.Curve[i].FLOPs/baseFL)
					break
				}
			}
		}
		fmt.Fprintf(b, "| %s | %d of %d | %s | %s |\n", a.Name, len(tok), len(a.Trials), fmtShare(summarize(tok)), fmtShare(summarize(fl)))
	}
}

func losses(c []Point) []float64 {
	y := make([]float64, len(c))
	for i, p := range c {
		y[i] = p.Loss
	}
	return y
}

func fmtShare(s Summary) string {
	if s.N == 0 {
		return "not reached"
	}
	if s.N == 1 {
		return fmt.Sprintf("%.0f%%", 100*s.Mean)
	}
	return fmt.Sprintf("%.0f%% [%.0f%%, %.0f%%]", 100*s.Mean, 100*s.Min, 100*s.Max)
}

// writeScaling adds a scaling table and plot when the arms differ in exactly one key and
// its values are numbers (expert count scaling): validation loss against the value, the
// gain of each step over the previous one, and where the gain stops being real.
func writeScaling(b *bytes.Buffer, o *Outcome, dir string) error {
	key, ok := scalingKey(o)
	if !ok {
		return nil
	}
	type pt struct {
		v float64
		a *Arm
	}
	var pts []pt
	for _, a := range o.Arms {
		v, _ := strconv.ParseFloat(a.Overrides[key], 64)
		pts = append(pts, pt{v, a})
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].v < pts[j].v })
	fmt.Fprintf(b, "\nScaling in `%s`:\n\n| %s | val loss | gain over previous | verdict |\n|---|---|---|---|\n", key, key)
	flat, firstFlat := "", false
	var xs, mean, lo, hi []float64
	for i, p := range pts {
		s := p.a.ValLoss()
		gain, verdict := "—", "—"
		if i > 0 {
			prev := pts[i-1].a.ValLoss()
			gain = fmt.Sprintf("%+.4f", prev.Mean-s.Mean)
			cmp := Compare(s, prev)
			verdict = cmp.String()
			if cmp != Lower && flat == "" {
				flat, firstFlat = fmt.Sprintf("%g → %g", pts[i-1].v, p.v), i == 1
			}
		}
		fmt.Fprintf(b, "| %g | %s | %s | %s |\n", p.v, fmtSummary(s, 4, 1), gain, verdict)
		xs = append(xs, math.Log2(p.v))
		mean, lo, hi = append(mean, s.Mean), append(lo, s.Min), append(hi, s.Max)
	}
	switch {
	case flat == "":
		fmt.Fprintf(b, "\nEvery step in %s gave a real gain: no flattening within this range.\n", key)
	case firstFlat:
		fmt.Fprintf(b, "\nNot even the first step (%s = %s) gave a gain beyond the spread over seeds: at this scale and budget no flattening point can be told apart.\n", key, flat)
	default:
		fmt.Fprintf(b, "\nThe first step without a real gain is %s = %s: the curve flattens there at this scale and budget.\n", key, flat)
	}
	name := o.Experiment.Name + "-scaling.png"
	c := plot.Chart{Title: fmt.Sprintf("%s: validation loss against log2(%s)", o.Experiment.Name, key), XLabel: "log2(" + key + ")", YLabel: "validation loss (nats/token)",
		Series: []plot.Series{{Name: "mean", X: xs, Y: mean}, {Name: "min over seeds", X: xs, Y: lo}, {Name: "max over seeds", X: xs, Y: hi}}}
	if err := plot.WriteFile(filepath.Join(dir, name), c); err != nil {
		return fmt.Errorf("experiment %s: %w", o.Experiment.Name, err)
	}
	fmt.Fprintf(b, "\n![%s: scaling](%s)\n", o.Experiment.Name, name)
	return nil
}

// scalingKey is the one override path whose value differs between arms, when every arm
// sets it to a positive number and there are at least three arms.
func scalingKey(o *Outcome) (string, bool) {
	if len(o.Arms) < 3 {
		return "", false
	}
	keys := map[string]bool{}
	for _, a := range o.Arms {
		for k := range a.Overrides {
			keys[k] = true
		}
	}
	var differ []string
	for k := range keys {
		first, same := o.Arms[0].Overrides[k], true
		for _, a := range o.Arms[1:] {
			same = same && a.Overrides[k] == first
		}
		if !same {
			differ = append(differ, k)
		}
	}
	if len(differ) != 1 {
		return "", false
	}
	for _, a := range o.Arms {
		v, err := strconv.ParseFloat(a.Overrides[differ[0]], 64)
		if err != nil || v <= 0 {
			return "", false
		}
	}
	return differ[0], true
}

func fmtSummary(s Summary, prec int, scale float64) string {
	if s.N == 0 {
		return "—"
	}
	f := "%." + strconv.Itoa(prec) + "f"
	if s.N == 1 {
		return fmt.Sprintf(f+" (1 seed)", s.Mean*scale)
	}
	return fmt.Sprintf(f+" ± "+f+" ["+f+", "+f+"]", s.Mean*scale, s.SD*scale, s.Min*scale, s.Max*scale)
}

func overrides(ov map[string]string) string {
	if len(ov) == 0 {
		return "(as written)"
	}
	keys := make([]string, 0, len(ov))
	for k := range ov {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("`%s = %s`", k, ov[k])
	}
	return strings.Join(parts, ", ")
}

func equalWhat(equal string) string {
	if equal == "flops" {
		return "training FLOPs"
	}
	return "tokens"
}
