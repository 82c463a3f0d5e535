package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// modesFor are the workloads measured at size; moec's train and forward run through step
// programs (the engine `moec run` trains with). The -nn modes are moec's hand-written
// model, the step programs' oracle, measured on the moec side only and at the small size
// only, as is the sgemm peak.
func modesFor(size string) []string {
	if size == sizeLarge {
		return []string{"train", "forward", "gen1", "gen16", "stream"}
	}
	return []string{"train", "train-bf16", "forward", "train-nn", "forward-nn", "gen1", "gen16", "gen1-int8", "gen16-int8", "sgemm", "bgemm"}
}

// moecOnly reports whether mode has no PyTorch counterpart of its own.
func moecOnly(mode string) bool { return strings.HasSuffix(mode, "-nn") }

// compare tunes every peer and checks that both sides train under one OpenBLAS setting,
// then measures and prints the table of each model size.
func (d *driver) compare(coretype string, stdout io.Writer) error {
	fmt.Fprintf(stdout, "## OPENBLAS_CORETYPE=%s\n\n", coretype)
	load := loadAverage()
	for _, p := range d.peers {
		if err := d.tune(p, coretype, stdout); err != nil {
			return err
		}
	}
	// Correctness under this setting: 8 AdamW steps on one batch must lower the loss, and
	// every formulation of a peer must start from the same loss.
	m, err := d.child(job{mode: "check", coretype: coretype})
	if err != nil {
		return err
	}
	if !(m.Result.Loss < m.Result.FirstLoss) {
		return fmt.Errorf("moec did not train under this setting: loss %.4f -> %.4f", m.Result.FirstLoss, m.Result.Loss)
	}
	fmt.Fprintf(stdout, "correctness (moec): loss %.4f -> %.4f after 8 AdamW steps on one batch\n", m.Result.FirstLoss, m.Result.Loss)
	for _, p := range d.peers {
		m, err := d.child(job{mode: "check", coretype: coretype, p: p})
		if err != nil {
			return err // the peer exits non-zero when a formulation does not train or disagrees
		}
		var impls []string
		for _, impl := range peerImpls() {
			if l, ok := m.Result.Impls[impl]; ok && len(l) == 2 {
				impls = append(impls, fmt.Sprintf("%s %.4f -> %.4f", impl, l[0], l[1]))
			}
		}
		fmt.Fprintf(stdout, "correctness (%s): every formulation starts from the same loss and lowers it in 8 AdamW steps: %s\n",
			p.Name(), strings.Join(impls, "; "))
	}
	fmt.Fprintln(stdout)
	if err := d.measure(coretype, sizeSmall, d.o.reps, d.o.seconds, load, stdout); err != nil {
		return err
	}
	if d.o.large {
		return d.measure(coretype, sizeLarge, d.o.largeReps, d.o.largeSeconds, loadAverage(), stdout)
	}
	return nil
}

// measure runs reps interleaved repetitions of every workload at size and prints the table.
func (d *driver) measure(coretype, size string, reps int, seconds float64, load string, stdout io.Writer) error {
	vals := map[string]map[string][]float64{"moec": {}}
	rss, cpuRate := map[string][]float64{}, map[string][]float64{}
	sides := []*peer{nil}
	for _, p := range d.peers {
		vals[p.Name()] = map[string][]float64{}
		sides = append(sides, p)
	}
	for rep := range reps {
		order := slices.Clone(sides)
		if rep%2 == 1 { // alternate who goes first so no side always meets the same load
			slices.Reverse(order)
		}
		for _, mode := range modesFor(size) {
			for _, p := range order {
				j := job{mode: mode, coretype: coretype, size: size, p: p, seconds: seconds}
				if p != nil {
					if moecOnly(mode) {
						continue
					}
					j.impl = p.implFor(mode)
				}
				m, err := d.child(j)
				if err != nil {
					return err
				}
				v := m.Result.TokensPerS
				switch mode {
				case "sgemm", "bgemm":
					v = m.Result.GFLOPS
				case "stream":
					v = m.Result.GBps
				}
				side := j.side()
				vals[side][mode] = append(vals[side][mode], v)
				if mode == "train" {
					cpuRate[side] = append(cpuRate[side], float64(benchBatch*benchSeq*m.Result.Iters)/m.Result.CPUSeconds)
					rss[side] = append(rss[side], float64(m.MaxRSSKiB)/1024)
				}
			}
		}
	}
	// The loss curves: once per run (minutes each, not per repetition), after the small
	// model's repetitions under the first OpenBLAS setting.
	var curveRows []row
	var curveNote string
	if size == sizeSmall && d.o.curveSteps > 0 && !d.curved {
		d.curved = true
		curveRows, curveNote = d.curves(coretype)
	}
	peerVals := func(mode string) map[string][]float64 {
		out := map[string][]float64{}
		for _, p := range d.peers {
			out[p.Name()] = vals[p.Name()][mode]
		}
		return out
	}
	peerOf := func(values map[string][]float64) map[string][]float64 {
		out := map[string][]float64{}
		for _, p := range d.peers {
			out[p.Name()] = values[p.Name()]
		}
		return out
	}
	var rows []row
	add := func(r row, mode string, peers map[string][]float64) {
		rows = append(rows, d.peerRows(r, mode, peers)...)
	}
	add(row{Name: "training step, fwd+bwd+AdamW (step programs)", Unit: "tokens/s", Moec: vals["moec"]["train"], Target: 2}, "train", peerVals("train"))
	add(row{Name: "training step per CPU-second (load-independent)", Unit: "tokens/CPU-s", Moec: cpuRate["moec"]}, "train", peerOf(cpuRate))
	if size == sizeSmall {
		// precision = bf16: moec's bfloat16 products (AVX512-BF16 where the CPU has it)
		// against torch.autocast("cpu", dtype=torch.bfloat16), and against PyTorch in fp32.
		add(row{Name: "training step, bf16 products", Unit: "tokens/s", Moec: vals["moec"]["train-bf16"], Target: 1.5}, "train-bf16", peerVals("train-bf16"))
		add(row{Name: "training step, moec bf16 against PyTorch fp32", Unit: "tokens/s", Moec: vals["moec"]["train-bf16"], Target: 3}, "train", peerVals("train"))
		add(row{Name: "training step, hand-written model", Unit: "tokens/s", Moec: vals["moec"]["train-nn"]}, "train", peerVals("train"))
	}
	add(row{Name: "inference forward (step programs)", Unit: "tokens/s", Moec: vals["moec"]["forward"], Target: 2}, "forward", peerVals("forward"))
	if size == sizeSmall {
		add(row{Name: "inference forward, hand-written model", Unit: "tokens/s", Moec: vals["moec"]["forward-nn"]}, "forward", peerVals("forward"))
	}
	add(row{Name: "generation, KV cache, batch 1", Unit: "tokens/s", Moec: vals["moec"]["gen1"], Target: 3}, "gen1", peerVals("gen1"))
	add(row{Name: "generation, KV cache, batch 16", Unit: "tokens/s", Moec: vals["moec"]["gen16"]}, "gen16", peerVals("gen16"))
	if size == sizeLarge {
		// Batch-1 decoding at this size reads its active weights from memory at every
		// token (all experts' weights are several times the L3 cache): the bound is the
		// memory bandwidth, measured as the best weight-streaming product any side ran.
		add(row{Name: "weight streaming, batch-1 product over 512 MiB", Unit: "GB/s", Moec: vals["moec"]["stream"]}, "", peerVals("stream"))
		stream := peerVals("stream")
		stream["moec"] = vals["moec"]["stream"]
		rows = append(rows, bandwidthBound("generation, batch 1", decodeBytesPerToken(modelFor(size)), 3, vals["moec"]["gen1"], peerVals("gen1"), stream)...)
	}
	if size == sizeSmall {
		// Weight-only int8 (moec compress --quantize 8) against PyTorch's dynamic int8
		// (quantize_dynamic of every nn.Linear), and against moec's own float32.
		add(row{Name: "generation int8, batch 1", Unit: "tokens/s", Moec: vals["moec"]["gen1-int8"], Target: 2}, "gen1-int8", peerVals("gen1-int8"))
		add(row{Name: "generation int8, batch 16", Unit: "tokens/s", Moec: vals["moec"]["gen16-int8"]}, "gen16-int8", peerVals("gen16-int8"))
		rows = append(rows, row{Name: "moec generation int8 / float32, batch 1", Unit: "×",
			Moec: ratios(vals["moec"]["gen1-int8"], vals["moec"]["gen1"]), Target: 1.5, Single: true})
	}
	add(row{Name: "peak resident memory, training process", Unit: "MiB", Moec: rss["moec"], Target: 1, Ceiling: true}, "", peerOf(rss))
	if size == sizeSmall {
		// The floor: moec's large-product peak at least 0.95× the strongest PyTorch's.
		add(row{Name: "sgemm peak, 1024³", Unit: "GFLOP/s", Moec: vals["moec"]["sgemm"], Target: 0.95}, "", peerVals("sgemm"))
		flops := trainFLOPsPerToken(benchModel())
		var frac []float64
		for i, tps := range vals["moec"]["train"] {
			frac = append(frac, tps*flops/1e9/vals["moec"]["sgemm"][i])
		}
		rows = append(rows, row{Name: fmt.Sprintf("moec training step as a fraction of its sgemm peak (%.1f MFLOP/token)", flops/1e6),
			Unit: "%", Moec: frac, Target: 0.6, Single: true})
		// How far the 2× floors sit from the machine's product peak: each side's useful
		// GFLOP/s against the best sgemm any side ran in the same repetition.
		sgemm := peerVals("sgemm")
		sgemm["moec"] = vals["moec"]["sgemm"]
		rows = append(rows, productBound("training step", "sgemm peak", flops, 2, vals["moec"]["train"], peerVals("train"), sgemm)...)
		rows = append(rows, productBound("inference forward", "sgemm peak", forwardFLOPsPerToken(benchModel()), 2, vals["moec"]["forward"], peerVals("forward"), sgemm)...)
		add(row{Name: "bf16 product peak, 1024³ (bfloat16 operands, float32 sums)", Unit: "GFLOP/s", Moec: vals["moec"]["bgemm"]}, "", peerVals("bgemm"))
		bgemm := peerVals("bgemm")
		bgemm["moec"] = vals["moec"]["bgemm"]
		rows = append(rows, productBound("training step, moec bf16 against PyTorch fp32", "bf16 product peak", flops, 3, vals["moec"]["train-bf16"], peerVals("train"), bgemm)...)
		rows = append(rows, curveRows...)
	}
	fmt.Fprintf(stdout, "### %s\n\n", sizeTitle(size))
	fmt.Fprintln(stdout, tableCaption(coretype, reps, seconds, d.peers, load))
	fmt.Fprintln(stdout)
	writeTable(stdout, rows)
	if curveNote != "" {
		fmt.Fprintf(stdout, "\n%s\n", curveNote)
	}
	fmt.Fprintf(stdout, "\nload average after: %s\n\n", loadAverage())
	return nil
}

// peerRows completes r, moec's row of one workload, against the strongest peer: in each
// repetition the best of the peers' values (the lowest, for a ceiling), labelled with the
// peer whose median is best; with several peers, a row per peer follows, without a target.
func (d *driver) peerRows(r row, mode string, peers map[string][]float64) []row {
	label := func(p *peer) string {
		if impl := p.implFor(mode); impl != "" {
			return p.Name() + ", " + impl
		}
		return p.Name()
	}
	better := func(a, b float64) bool {
		if r.Ceiling {
			return a < b
		}
		return a > b
	}
	var best *peer
	for _, p := range d.peers {
		vs := peers[p.Name()]
		for i, v := range vs {
			if i == len(r.Torch) {
				r.Torch = append(r.Torch, v)
			} else if better(v, r.Torch[i]) {
				r.Torch[i] = v
			}
		}
		if len(vs) > 0 && (best == nil || better(spanOf(vs).Med, spanOf(peers[best.Name()]).Med)) {
			best = p
		}
	}
	if best == nil {
		return []row{r}
	}
	r.Peer = label(best)
	if len(d.peers) > 1 {
		r.Peer = "best of the peers; median: " + r.Peer
	}
	out := []row{r}
	if len(d.peers) == 1 {
		return out
	}
	for _, p := range d.peers {
		out = append(out, row{Name: "↳ against " + label(p) + " alone", Unit: r.Unit, Moec: r.Moec, Torch: peers[p.Name()]})
	}
	return out
}

// ratios is a[i]/b[i] for each repetition i.
func ratios(a, b []float64) []float64 {
	out := make([]float64, min(len(a), len(b)))
	for i := range out {
		out[i] = a[i] / b[i]
	}
	return out
}
