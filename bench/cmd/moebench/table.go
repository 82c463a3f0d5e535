package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// span is the min, median and max of repeated measurements.
type span struct{ Min, Med, Max float64 }

func spanOf(xs []float64) span {
	if len(xs) == 0 {
		return span{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return span{s[0], med, s[len(s)-1]}
}

// row is one line of the table: moec's and PyTorch's value per repetition (repetition i of
// one side ran next to repetition i of the other, so ratios are taken pairwise).
type row struct {
	Name, Unit  string
	Moec, Torch []float64
	// Target is the floor moec / PyTorch must reach (higher is better) or, with Ceiling,
	// the ceiling it must stay under; 0 means no target.
	Target  float64
	Ceiling bool
	// Single marks a row with no PyTorch side (moec's fraction of its sgemm peak, the bf16
	// loss curve's final losses). Its Unit "%" prints a percentage, "loss" four digits.
	Single bool
	// Peer names the PyTorch the row compares against (torch version, MoE formulation).
	Peer string
}

func (r row) ratios() []float64 {
	var out []float64
	for i := range min(len(r.Moec), len(r.Torch)) {
		if r.Torch[i] > 0 {
			out = append(out, r.Moec[i]/r.Torch[i])
		}
	}
	return out
}

// verdict says whether the median meets the target.
func (r row) verdict() string {
	if r.Target == 0 {
		return ""
	}
	v := spanOf(r.ratios()).Med
	if r.Single {
		v = spanOf(r.Moec).Med
	}
	ok := v >= r.Target
	if r.Ceiling {
		ok = v <= r.Target
	}
	if ok {
		return "met"
	}
	return "**missed**"
}

func (r row) target() string {
	switch {
	case r.Target == 0:
		return ""
	case r.Ceiling && r.Single && r.Unit == "%":
		return fmt.Sprintf("≤ %.2g%%", 100*r.Target)
	case r.Ceiling:
		return fmt.Sprintf("≤ %.2g×", r.Target)
	case r.Single && r.Unit == "%":
		return fmt.Sprintf("≥ %.0f%%", 100*r.Target)
	}
	return fmt.Sprintf("≥ %.2g×", r.Target)
}

func fmtSpan(s span, unit string) string {
	switch {
	case unit == "%" && 100*s.Max < 10: // a small difference, as the bf16 curve's, in hundredths
		return fmt.Sprintf("%.2f%% (%.2f–%.2f)", 100*s.Med, 100*s.Min, 100*s.Max)
	case unit == "%":
		return fmt.Sprintf("%.0f%% (%.0f–%.0f)", 100*s.Med, 100*s.Min, 100*s.Max)
	case unit == "loss" && s.Min == s.Max: // one run
		return fmt.Sprintf("%.4g", s.Med)
	case unit == "loss":
		return fmt.Sprintf("%.4g (%.4g–%.4g)", s.Med, s.Min, s.Max)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtNum(s.Med), fmtNum(s.Min), fmtNum(s.Max))
}

func fmtNum(x float64) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}

// writeTable prints rows as Markdown: each cell is median (min–max) over repetitions.
func writeTable(w io.Writer, rows []row) {
	fmt.Fprintln(w, "| measure | moec | PyTorch | moec / PyTorch | target | |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range rows {
		if r.Single {
			fmt.Fprintf(w, "| %s | %s | | | %s | %s |\n", r.Name, fmtSpan(spanOf(r.Moec), r.Unit), r.target(), r.verdict())
			continue
		}
		ratio := spanOf(r.ratios())
		torch := fmtSpan(spanOf(r.Torch), "")
		if r.Peer != "" {
			torch += " [" + r.Peer + "]"
		}
		fmt.Fprintf(w, "| %s (%s) | %s | %s | %.2f× (%.2f–%.2f) | %s | %s |\n", r.Name, r.Unit,
			fmtSpan(spanOf(r.Moec), ""), torch, ratio.Med, ratio.Min, ratio.Max,
			r.target(), r.verdict())
	}
}

// tableCaption describes how a table was measured.
func tableCaption(coretype string, reps int, seconds float64, peers []*peer, load string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "OPENBLAS_CORETYPE=%s; %d interleaved repetitions of about %.0f s each; ", coretype, reps, seconds)
	for _, p := range peers {
		fmt.Fprintf(&b, "PyTorch %s: %s; ", p.Torch, p.Setting)
	}
	fmt.Fprintf(&b, "moec: GOMAXPROCS=%s; load average before: %s", gomaxprocs(), load)
	return b.String()
}
