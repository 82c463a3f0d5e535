package main

import "fmt"

// productBound is three rows that put a workload's speed against the machine's product
// peak measured in the same repetition (the best 1024³ product of moec and every peer,
// float32 or bfloat16 as peak names it): moec's achieved GFLOP/s as a share of it, the
// strongest peer's share, and the share a floor of target× the strongest peer needs. A
// floor that needs more than 100% asks for more useful work per second than the fastest
// product this machine ran: no scheduling of the same arithmetic reaches it. flops is the
// useful work per token (moec's counter: products and attention); tokens/s per repetition
// in moec and peers; the product peaks per repetition in peaks (moec's under "moec").
func productBound(name, peak string, flops, target float64, moec []float64, peers, peaks map[string][]float64) []row {
	return peakBound(name, fmt.Sprintf("%.1f MFLOP/token", flops/1e6), "best "+peak, "the product peak", flops/1e9, target, moec, peers, peaks)
}

// bandwidthBound is productBound for a workload bound by memory: bytes are the weight
// bytes one token reads, peaks the best weight-streaming GB/s of each side per repetition.
// A floor that needs over 100% asks to read the weights faster than any side streamed
// them in the same repetition.
func bandwidthBound(name string, bytes, target float64, moec []float64, peers, peaks map[string][]float64) []row {
	return peakBound(name, fmt.Sprintf("%.1f MB of weights/token", bytes/1e6), "best weight streaming", "the memory bandwidth", bytes/1e9, target, moec, peers, peaks)
}

// peakBound puts tokens/s against a peak in units per second: work is one token's work in
// the peak's units (GFLOP or GB), per names it in the heads, peak names the peak, beyond
// what a need over 100% is beyond.
func peakBound(name, per, peak, beyond string, work, target float64, moec []float64, peers, peaks map[string][]float64) []row {
	var own, peer, need []float64
	for i, tps := range moec {
		best := 0.0
		for _, g := range peaks {
			if i < len(g) {
				best = max(best, g[i])
			}
		}
		strongest := 0.0
		for _, v := range peers {
			if i < len(v) {
				strongest = max(strongest, v[i])
			}
		}
		if best <= 0 || strongest <= 0 {
			continue
		}
		share := func(tokensPerS float64) float64 { return tokensPerS * work / best }
		own = append(own, share(tps))
		peer = append(peer, share(strongest))
		need = append(need, target*share(strongest))
	}
	if len(own) == 0 {
		return nil
	}
	head := fmt.Sprintf("%s (%s) as a share of the repetition's %s", name, per, peak)
	return []row{
		{Name: head + ": moec", Unit: "%", Moec: own, Single: true},
		{Name: head + ": the strongest PyTorch", Unit: "%", Moec: peer, Single: true},
		{Name: fmt.Sprintf("%s: the share %.2g× the strongest PyTorch needs (over 100%%: beyond %s)", name, target, beyond), Unit: "%", Moec: need, Single: true},
	}
}
