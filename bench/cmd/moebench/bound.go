package main

import "fmt"

// productBound is three rows that put a workload's speed against the machine's product
// peak measured in the same repetition (the best sgemm 1024³ of moec and every peer): moec's
// achieved GFLOP/s as a share of it, the strongest peer's share, and the share a floor of
// target× the strongest peer needs. A floor that needs more than 100% asks for more useful
// work per second than the fastest float32 product this machine ran: no scheduling of the
// same arithmetic reaches it. flops is the useful work per token (moec's counter:
// products and attention); tokens/s per repetition in moec and peers, the sgemm peaks per
// repetition in sgemm (moec's under "moec").
func productBound(name string, flops, target float64, moec []float64, peers, sgemm map[string][]float64) []row {
	var own, best, need []float64
	for i, tps := range moec {
		peak := 0.0
		for _, g := range sgemm {
			if i < len(g) {
				peak = max(peak, g[i])
			}
		}
		strongest := 0.0
		for _, v := range peers {
			if i < len(v) {
				strongest = max(strongest, v[i])
			}
		}
		if peak <= 0 || strongest <= 0 {
			continue
		}
		share := func(tokensPerS float64) float64 { return tokensPerS * flops / 1e9 / peak }
		own = append(own, share(tps))
		best = append(best, share(strongest))
		need = append(need, target*share(strongest))
	}
	if len(own) == 0 {
		return nil
	}
	head := fmt.Sprintf("%s (%.1f MFLOP/token) as a share of the repetition's best sgemm peak", name, flops/1e6)
	return []row{
		{Name: head + ": moec", Unit: "%", Moec: own, Single: true},
		{Name: head + ": the strongest PyTorch", Unit: "%", Moec: best, Single: true},
		{Name: fmt.Sprintf("%s: the share %.2g× the strongest PyTorch needs (over 100%%: beyond the product peak)", name, target), Unit: "%", Moec: need, Single: true},
	}
}
