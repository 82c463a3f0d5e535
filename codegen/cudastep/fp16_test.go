package cudastep

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
)

// TestFP16Lowering: Options.FP16 runs every weight product on kernels_mma.cu's f16
// kernels (the weights cast by mma_cast_f16, no bf16 kernel anywhere), the loss
// gradients' seeds (the cross-entropy's, the route's balance and z-loss coefficients) are
// the loss-scaled host values the host program multiplies by opt[9], and the settle step
// can skip the update. BF16 and FP16 together are refused.
func TestFP16Lowering(t *testing.T) {
	m := tinyStage(t, 2, 4)
	progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := progs[0]
	if _, err := LowerWith(p, m, Options{BF16: true, FP16: true}); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("bf16 and fp16 together: %v", err)
	}
	low, err := LowerWith(p, m, Options{FP16: true})
	if err != nil {
		t.Fatal(err)
	}
	kernels := map[string]int{}
	scaled := map[step.OpKind]int{}
	for i, ol := range low.Ops {
		for _, ln := range ol.Launches {
			kernels[ln.Kernel]++
			for _, a := range ln.Args {
				if a.Host == HostLossScale {
					scaled[p.Ops[i].Kind]++
				}
			}
		}
	}
	for _, k := range []string{"mma_fwd_f16", "mma_dx_f16", "mma_dw_f16", "mma_cast_f16"} {
		if kernels[k] == 0 {
			t.Errorf("no %s launch (kernels: %v)", k, kernels)
		}
	}
	for k := range kernels {
		if strings.HasSuffix(k, "_bf16") {
			t.Errorf("an fp16 lowering launches %s", k)
		}
	}
	if scaled[step.OpCrossEntropy] != 1 || scaled[step.OpRouterBwd] == 0 || scaled[step.OpRouterBwd]%2 != 0 {
		t.Errorf("loss-scaled seeds by op: %v; want the cross-entropy's one and two per route_bwd", scaled)
	}
	host, err := HostProgram(low)
	if err != nil {
		t.Fatal(err)
	}
	// The loss-scaled seeds sit in launch tables (S cells, launch_table.go), scaled as
	// each launch is issued.
	for _, want := range []string{" S(", "cells[j].f = (float)(a->f * (opt[9] > 0 ? opt[9] : 1.0));", "if (update && !moec_settle(s, opt, &update)) return 0;",
		"if (loss_scale > 0) sq /= loss_scale * loss_scale;", "out[5] = s->skipped;"} {
		if !strings.Contains(host, want) {
			t.Errorf("the fp16 host program has no %q", want)
		}
	}
}
