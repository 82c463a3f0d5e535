package plan

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/internal/human"
)

// Title names the plan in one line ("hunyuan_1t, stage trillion", "serve hunyuan_1t"),
// for the heading Markdown goes under.
func (p *Plan) Title() string {
	switch p.Kind {
	case "serve":
		return fmt.Sprintf("serve %s (%s)", p.Serve, p.Model)
	case "local":
		return fmt.Sprintf("%s, stage %s (local CPU ranks)", p.Train, p.Stage)
	}
	return fmt.Sprintf("%s, stage %s", p.Train, p.Stage)
}

// Markdown is the body of the plan's section of report.md (and what `moec plan` prints
// under a heading with Title): the layout, the memory table per tier, the communication
// table, time and totals, the alternatives and every assumption with its value. Its
// subsections are level-3 headings, to sit under a level-2 section heading.
func (p *Plan) Markdown() string {
	var b strings.Builder
	c := p.Cluster
	fmt.Fprintf(&b, "Cluster `%s`: %d × %d × %s (%s, %s peak at %s), host %s per node, network %s/s per node.\n\n",
		c.Name, c.Nodes, c.GPUsPerNode, c.Device, human.Bytes(c.GPUMemory), human.SI(c.PeakFLOPs, "FLOP/s"), p.Workload.Precision,
		human.Bytes(c.HostMemory), human.SI(c.Network, "B"))
	wl := p.Workload
	fmt.Fprintf(&b, "Model: %s parameters (%s active per token", human.Count(float64(wl.Params)), human.Count(float64(wl.ActiveParams)))
	if wl.Experts > 1 {
		fmt.Fprintf(&b, "; %d experts, top-%d, %s in experts", wl.Experts, wl.TopK, human.Count(float64(wl.ExpertParams)))
	}
	fmt.Fprintf(&b, "), sequence %d.\n\n", wl.SeqLen)
	if wl.Compression != "" {
		fmt.Fprintf(&b, "Weights served compressed (%s).\n\n", wl.Compression)
	}

	l := p.Layout
	fmt.Fprintf(&b, "**Layout** (objective: %s, %d layouts evaluated): %s on %s — ", p.Objective, p.Searched,
		devices(p.GPUs, c.Device), plural(p.Nodes, "node"))
	if p.Kind == "serve" {
		fmt.Fprintf(&b, "%s, batch %d.\n\n", serveLayoutText(l), l.Batch)
	} else {
		fmt.Fprintf(&b, "%s; expert-data-parallel group %d; %d sequences per step.\n\n", layoutText(l), l.EDP, l.Batch)
	}

	b.WriteString("### Memory\n\n| component |")
	for _, t := range p.Memory {
		name, per := t.Tier, t.Per
		if c.Device == "cpu" && name == "gpu" {
			// CPU ranks have no GPU: their device tier is each rank's share of the host.
			name, per = "device", "rank"
		}
		fmt.Fprintf(&b, " %s (per %s) |", name, per)
	}
	b.WriteString("\n|---|")
	for range p.Memory {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	if len(p.Memory) > 0 {
		for i, comp := range p.Memory[0].Components {
			fmt.Fprintf(&b, "| %s |", comp.Name)
			for _, t := range p.Memory {
				v := int64(0)
				if i < len(t.Components) {
					v = t.Components[i].Bytes
				}
				fmt.Fprintf(&b, " %s |", human.Bytes(v))
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("| **used / capacity** |")
	for _, t := range p.Memory {
		pct := 0.0
		if t.Capacity > 0 {
			pct = 100 * float64(t.Used) / float64(t.Capacity)
		}
		fmt.Fprintf(&b, " %s / %s (%.0f%%) |", human.Bytes(t.Used), human.Bytes(t.Capacity), pct)
	}
	b.WriteString("\n\n")

	if len(p.Comm) > 0 {
		b.WriteString("### Communication per step (per device)\n\n| collective | purpose | group | tier | bytes | seconds | on critical path |\n|---|---|---:|---|---:|---:|---|\n")
		for _, cm := range p.Comm {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.4g | %t |\n", cm.Collective, cm.Purpose, cm.GroupText(), cm.Tier, human.Bytes(int64(cm.Bytes)), cm.Seconds, cm.Exposed)
		}
		if p.Kind == "serve" {
			// Decoding has no backward pass and no optimizer: nothing hides the traffic.
			b.WriteString("\nOverlap: none; a decoding step waits for its tensor, expert and pipeline traffic.\n\n")
		} else {
			b.WriteString("\nOverlap: data-parallel/ZeRO traffic hides behind `overlap_dp` of the last micro-batch's backward pass under ZeRO 0 and 1 (the gradients' bucketed all-reduces), of all compute under ZeRO-3 for the weights' all-gathers (one layer ahead; the gradients' reduce-scatter after the backward hides behind nothing), and of nothing under ZeRO 2 (one reduce-scatter after the backward); offload traffic behind `overlap_offload` of compute; tensor, expert and pipeline traffic is on the critical path.\n\n")
		}
	}

	t := p.Time
	b.WriteString("### Time\n\n")
	if p.Kind == "serve" {
		fmt.Fprintf(&b, "Decoding step (one token per sequence): %.4g s (weights and KV cache from HBM %.4g s, tensor %.3g s, expert %.3g s, pipeline %.3g s): %.4g tokens/s.\n\n",
			t.StepSeconds, t.ComputeSeconds, t.TPSeconds, t.EPSeconds, t.PPSeconds, t.TokensPerSecond)
	} else {
		fmt.Fprintf(&b, "| part | seconds |\n|---|---:|\n")
		for _, part := range stepParts(t) {
			fmt.Fprintf(&b, "| %s | %.4g |\n", part[0], part[1])
		}
		fmt.Fprintf(&b, "| data-parallel traffic (total, before overlap) | %.4g |\n| offload traffic (total) | %.4g |\n| optimizer step (total, before overlap) | %.4g |\n| offload and host optimizer hidden behind GPU work | %.4g |\n| **step** | **%.4g** |\n\n",
			t.DPSeconds, t.OffloadSeconds, t.OptimizerSeconds, t.HostOverlapped, t.StepSeconds)
		if w := hostUpdateText(t.HostUpdate); w != "" {
			b.WriteString("Host update: " + w + "\n\n")
		}
		tt := p.Totals
		fmt.Fprintf(&b, "%.4g tokens/s, MFU %.1f%%. Stage budget %s tokens at %s: %s steps (rounded down), %.3g days, %.4g GPU-hours",
			t.TokensPerSecond, 100*t.MFU, human.Count(float64(wl.Tokens)), batchText(wl), human.Exact(tt.Steps), tt.Days, tt.GPUHours)
		if tt.Cost > 0 {
			fmt.Fprintf(&b, ", cost %.4g", tt.Cost)
		}
		b.WriteString(".\n\n")
	}

	if len(p.Alternatives) > 0 {
		b.WriteString("### Alternatives\n\n| layout | devices | step s | why it lost |\n|---|---:|---:|---|\n")
		for _, a := range p.Alternatives {
			lt := layoutText(a.Layout)
			if p.Kind == "serve" {
				lt = serveLayoutText(a.Layout)
			}
			fmt.Fprintf(&b, "| %s | %d | %.4g | %s |\n", lt, a.GPUs, a.StepSeconds, a.Why)
		}
		b.WriteString("\n")
	}
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "Note: %s\n\n", n)
	}
	b.WriteString(assumptionTable(p.Assumptions))
	return b.String()
}

// plural is "1 node", "2 nodes".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// devices counts devices of a kind for people: "192 GPUs", "1 GPU", "2 CPU ranks"
// (a cpu cluster's devices are ranks sharing the host).
func devices(n int, device string) string {
	if device == "cpu" {
		return plural(n, "CPU rank")
	}
	return plural(n, "GPU")
}

func assumptionTable(as []Assumption) string {
	var b strings.Builder
	b.WriteString("### Assumptions\n\n| name | value | meaning |\n|---|---|---|\n")
	for _, a := range as {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", a.Name, a.Value, a.Why)
	}
	b.WriteString("\n")
	return b.String()
}
