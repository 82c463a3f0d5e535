package plan

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/human"
)

// StrategyName names a layout's memory strategy as --memory spells it.
func StrategyName(l ParallelLayout) string {
	if l.Memory == program.MemoryUnifiedCache {
		return "unified_cache"
	}
	switch l.Offload {
	case program.OffloadCPU:
		return fmt.Sprintf("zero%d-offload", l.ZeRO)
	case program.OffloadNVMe:
		return fmt.Sprintf("zero%d-nvme", l.ZeRO)
	}
	return fmt.Sprintf("zero%d", l.ZeRO)
}

// Compare puts two training plans of one stage side by side (`moec plan --compare`):
// devices, memory per device and per node, the step broken down, MFU and the stage's
// cost. The last column is b against a.
func Compare(a, b *Plan) string {
	var s strings.Builder
	fmt.Fprintf(&s, "| | %s | %s | %s / %s |\n|---|---:|---:|---:|\n", StrategyName(a.Layout), StrategyName(b.Layout), StrategyName(b.Layout), StrategyName(a.Layout))
	ratio := func(x, y float64) string {
		if x == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3g×", y/x)
	}
	row := func(name, x, y, r string) { fmt.Fprintf(&s, "| %s | %s | %s | %s |\n", name, x, y, r) }
	num := func(name string, x, y float64, format string) {
		row(name, fmt.Sprintf(format, x), fmt.Sprintf(format, y), ratio(x, y))
	}
	row("layout", layoutText(a.Layout), layoutText(b.Layout), "")
	num("GPUs", float64(a.GPUs), float64(b.GPUs), "%.0f")
	tierOf := func(p *Plan, name string) (Tier, bool) {
		for _, t := range p.Memory {
			if t.Tier == name {
				return t, true
			}
		}
		return Tier{}, false
	}
	for _, name := range []string{"gpu", "host", "nvme"} {
		ta, okA := tierOf(a, name)
		tb, okB := tierOf(b, name)
		if !okA && !okB {
			continue
		}
		used := func(t Tier, ok bool) string {
			if !ok || t.Used == 0 {
				return "-"
			}
			return fmt.Sprintf("%s / %s", human.Bytes(t.Used), human.Bytes(t.Capacity))
		}
		per := "device"
		if name != "gpu" {
			per = "node"
		}
		row(fmt.Sprintf("%s memory per %s", name, per), used(ta, okA), used(tb, okB), ratio(float64(ta.Used), float64(tb.Used)))
	}
	pa, pb := stepParts(a.Time), stepParts(b.Time)
	for i := range pa {
		x, y := pa[i][1].(float64), pb[i][1].(float64)
		if x == 0 && y == 0 {
			continue
		}
		num(pa[i][0].(string)+" (s)", x, y, "%.4g")
	}
	num("offload and host optimizer hidden (s)", a.Time.HostOverlapped, b.Time.HostOverlapped, "%.4g")
	row("host update", orDash(a.Time.HostUpdate), orDash(b.Time.HostUpdate), "")
	num("**step (s)**", a.Time.StepSeconds, b.Time.StepSeconds, "%.4g")
	num("tokens/s", a.Time.TokensPerSecond, b.Time.TokensPerSecond, "%.4g")
	num("MFU (%)", 100*a.Time.MFU, 100*b.Time.MFU, "%.2f")
	num("days for the stage", a.Totals.Days, b.Totals.Days, "%.3g")
	num("GPU-hours for the stage", a.Totals.GPUHours, b.Totals.GPUHours, "%.4g")
	if a.Totals.Cost > 0 || b.Totals.Cost > 0 {
		num("cost", a.Totals.Cost, b.Totals.Cost, "%.4g")
	}
	return s.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
