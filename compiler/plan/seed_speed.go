package plan

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/human"
)

// Assumptions of the seed's cost and speed figures: what the seed states or implies
// without giving a number moec can derive.
const (
	// seedColdStartTokens is what a trillion-parameter model trained from scratch needs:
	// the seed cites ~700B tokens for models of that size.
	seedColdStartTokens = 700e9
	// seedTrillionGPUs is the device count of the seed's "about one day" claim.
	seedTrillionGPUs = 256
	// seedCompareGPUs is where ZeRO-Infinity-style offload and the unified cache are timed
	// against each other: the seed's ZeRO-Infinity device count, where both fit.
	seedCompareGPUs = 320
	// seedNVMeBytes and seedNVMeBandwidth are the NVMe of a node when the cluster declares
	// none: a DGX A100's four 3.84 TB drives, ~25 GB/s read, the machine the seed's cluster
	// is built from.
	seedNVMeBytes     = 15e12
	seedNVMeBandwidth = 25e9
)

// seedSpeedAssumptions names the numbers the cost and speed rows rest on.
func seedSpeedAssumptions(c *program.Cluster) []Assumption {
	nvme := fmt.Sprintf("%s at %s/s per node", human.Bytes(int64(seedNVMeBytes)), human.Bytes(int64(seedNVMeBandwidth)))
	why := "NVMe of a node for the third-tier figure when the cluster declares none (DGX A100: 4 × 3.84 TB, ~25 GB/s)"
	if c.NVMe > 0 {
		nvme = fmt.Sprintf("%s at %s/s per node", human.Bytes(c.NVMe), human.Bytes(int64(c.NVMeBW)))
		why = "NVMe of a node for the third-tier figure, as the cluster declares it"
	}
	return []Assumption{
		{"cold_start_tokens", human.Count(seedColdStartTokens), "tokens a trillion-parameter model trained from scratch needs (the seed cites ~700B)"},
		{"seed_trillion_gpus", fmt.Sprint(seedTrillionGPUs), "devices of the seed's \"about one day\" for the trillion stage"},
		{"seed_compare_gpus", fmt.Sprint(seedCompareGPUs), "devices at which ZeRO-Infinity-style offload and the unified cache are timed (the seed's ZeRO-Infinity count, where both fit)"},
		{"seed_nvme", nvme, why},
	}
}

// seedSpeedRows computes the seed's cost and speed figures from plans of train's stages
// on cluster: the curriculum against a cold start, the trillion stage's days on 256
// devices, ZeRO-Infinity-style offload against the unified cache, and NVMe as a third tier.
func seedSpeedRows(prog *program.Program, train *program.Train, cluster *program.Cluster, top *program.Stage) []SeedRow {
	if top == nil || len(train.Stages) == 0 {
		return nil
	}
	var rows []SeedRow
	perToken := func(p *Plan) float64 { // GPU-hours per token
		return p.Time.StepSeconds / float64(p.Workload.BatchTokens) * float64(p.GPUs) / 3600
	}
	stepPerToken := func(p *Plan) float64 { return p.Time.StepSeconds / float64(p.Workload.BatchTokens) }
	missing := func(fig, unit string, seed float64, bound bool, why string) SeedRow {
		return SeedRow{Figure: fig, Unit: unit, Seed: seed, Bound: bound, Note: why}
	}

	// 1. The curriculum against a cold start of the full model on the same cluster.
	fig := "curriculum cost / cold start of the full model"
	var hours float64
	var parts []string
	var topPlan *Plan
	ok := true
	for _, st := range train.Stages {
		p, ds := ForStage(prog, train, st, Options{})
		if p == nil {
			rows = append(rows, missing(fig, "×", 0.125, false, fmt.Sprintf("stage %s does not plan: %v", st.Name, ds.Err())))
			ok = false
			break
		}
		h := perToken(p) * float64(p.Workload.Tokens)
		hours += h
		parts = append(parts, fmt.Sprintf("%s %s tokens %.4g GPU-hours", st.Name, human.Count(float64(p.Workload.Tokens)), h))
		if st == top {
			topPlan = p
		}
	}
	if ok && topPlan != nil {
		cold := perToken(topPlan) * seedColdStartTokens
		ratio := hours / cold
		note := fmt.Sprintf("each stage's tokens at its plan's throughput on %d GPUs (%s; %.4g GPU-hours in all) against %s tokens (cold_start_tokens) at the %s stage's throughput (%.4g GPU-hours), 1/%.3g",
			topPlan.GPUs, strings.Join(parts, ", "), hours, human.Count(seedColdStartTokens), top.Name, cold, 1/ratio)
		if r := seedRow(fig, "×", 0.125, ratio, ""); !r.Within {
			note += fmt.Sprintf("; the ratio is the curriculum's tokens over cold_start_tokens weighted by throughput: the seed's 1/8 follows from %.4g GPU-hours of curriculum, or a cold start of %s tokens; "+
				"the seed does not say which tokens its curriculum counts (a warm start from an existing dense model would leave out the dense stage)",
				cold/8, human.Count(hours/perToken(topPlan)*8))
		}
		rows = append(rows, seedRow(fig, "×", 0.125, ratio, note))
	}

	// 2. The trillion stage on 256 devices.
	fig = fmt.Sprintf("days to train the %s stage on %d GPUs", top.Name, seedTrillionGPUs)
	if p, ds := ForStage(prog, train, top, Options{GPUs: seedTrillionGPUs}); p == nil {
		rows = append(rows, missing(fig, "days", 1, false, fmt.Sprintf("does not plan: %v", ds.Err())))
	} else {
		note := fmt.Sprintf("%s tokens (the stage's budget) at %.4g s per step of %s tokens on %d GPUs (%s): %s steps; step time %.4g s, of which the host optimizer exposes %.4g s (%s)",
			human.Count(float64(p.Workload.Tokens)), p.Time.StepSeconds, human.Exact(p.Workload.BatchTokens), p.GPUs, layoutText(p.Layout),
			human.Exact(p.Totals.Steps), p.Time.StepSeconds, p.Time.OptimizerExposed, p.Time.HostUpdate)
		if r := seedRow(fig, "days", 1, p.Totals.Days, ""); !r.Within {
			note += fmt.Sprintf("; the days scale with the stage's tokens (written in the file; one day at this speed is %s tokens) and with cpu_adam_rate, which sets the exposed host optimizer",
				human.Count(86400/stepPerToken(p)))
		}
		rows = append(rows, seedRow(fig, "days", 1, p.Totals.Days, note))
	}

	// 3. ZeRO-Infinity-style offload against the unified cache at equal devices.
	fig = fmt.Sprintf("speed per GPU, unified cache / ZeRO-Infinity-style offload, at most %d GPUs each", seedCompareGPUs)
	zi, dsZ := ForStage(prog, train, top, Options{GPUs: seedCompareGPUs, Memory: "zero3-offload"})
	uc, dsU := ForStage(prog, train, top, Options{GPUs: seedCompareGPUs, Memory: "unified_cache"})
	switch {
	case zi == nil:
		rows = append(rows, missing(fig, "×", 2, false, fmt.Sprintf("ZeRO-Infinity-style offload does not plan: %v", dsZ.Err())))
	case uc == nil:
		rows = append(rows, missing(fig, "×", 2, false, fmt.Sprintf("the unified cache does not plan: %v", dsU.Err())))
	default:
		ratio := perToken(zi) / perToken(uc)
		note := fmt.Sprintf("GPU-seconds per token of the fastest layout of each: zero3-offload a %.4g s step of %s tokens on %d GPUs (exposed optimizer %.4g s, after the backward), unified cache a %.4g s step of %s tokens on %d GPUs (exposed optimizer %.4g s, %s); per token of wall time %.3g×",
			zi.Time.StepSeconds, human.Exact(zi.Workload.BatchTokens), zi.GPUs, zi.Time.OptimizerExposed,
			uc.Time.StepSeconds, human.Exact(uc.Workload.BatchTokens), uc.GPUs, uc.Time.OptimizerExposed, uc.Time.HostUpdate,
			stepPerToken(zi)/stepPerToken(uc))
		if uc.GPUs != zi.GPUs {
			note += " (each uses the devices its fastest layout divides the batch over, so speed is compared per GPU)"
		}
		if r := seedRow(fig, "×", 2, ratio, ""); !r.Within && uc.Time.HostUpdate == HostUpdateNone {
			note += "; the unified cache holds every state on the GPU here, so the gap is ZeRO-Infinity's CPU-Adam and PCIe traffic (cpu_adam_rate, overlap_offload)"
		} else if !r.Within {
			note += "; both wait on the same CPU-Adam (cpu_adam_rate): the unified cache gains by what it caches on the GPU and by hiding the host update behind the backward (host_update_overlap), and reaches the seed's 2× only when the CPU optimizer is short enough to hide"
		}
		rows = append(rows, seedRow(fig, "×", 2, ratio, note))
	}

	// 4. NVMe as a third tier: ZeRO-Infinity's NVMe offload against its CPU offload.
	fig = fmt.Sprintf("slowdown of NVMe as a third tier (zero3-nvme / zero3-offload), %d GPUs", seedCompareGPUs)
	p2 := *prog
	cc := *cluster
	if cc.NVMe <= 0 {
		cc.NVMe, cc.NVMeBW = int64(seedNVMeBytes), seedNVMeBandwidth
	}
	p2.Clusters = map[string]*program.Cluster{}
	for k, v := range prog.Clusters {
		p2.Clusters[k] = v
	}
	p2.Clusters[train.Cluster] = &cc
	nv, dsN := ForStage(&p2, train, top, Options{GPUs: seedCompareGPUs, Memory: "zero3-nvme"})
	switch {
	case zi == nil || nv == nil:
		why := "ZeRO-Infinity-style CPU offload does not plan"
		if nv == nil {
			why = fmt.Sprintf("NVMe offload does not plan: %v", dsN.Err())
		}
		rows = append(rows, missing(fig, "×", 5, true, why))
	default:
		ratio := stepPerToken(nv) / stepPerToken(zi)
		nvme := 0.0
		for _, cm := range nv.Comm {
			if cm.Tier == "nvme" {
				nvme += cm.Seconds
			}
		}
		note := fmt.Sprintf("time per token of zero3-nvme (%.4g s a step, %.4g s of it reading and writing optimizer states at %s/s per node, seed_nvme) over zero3-offload (%.4g s)",
			nv.Time.StepSeconds, nvme, human.Bytes(int64(cc.NVMeBW)), zi.Time.StepSeconds)
		if ratio < 5 {
			// The NVMe seconds a 5× step would need, the rest of the step unchanged.
			target := 5 * stepPerToken(zi) * float64(nv.Workload.BatchTokens)
			if need := target - (nv.Time.StepSeconds - nvme); need > 0 && nvme > 0 {
				note += fmt.Sprintf("; the slowdown is the NVMe traffic added to CPU offload's step: 5× takes about %s/s per node (seed_nvme)", human.Bytes(int64(cc.NVMeBW*nvme/need)))
			}
		} else {
			note += "; the seed says \"more than 5×\", a bound this meets"
		}
		rows = append(rows, SeedRow{Figure: fig, Unit: "×", Seed: 5, Ours: ratio, Bound: true, Within: ratio >= 5, Note: note})
	}
	return rows
}
