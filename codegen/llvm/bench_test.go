package llvm_test

import (
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/kernels"
)

// BenchmarkKernels compares the compiled LLVM kernels (one thread, so the comparison is
// per core) with the Go reference kernels on a mid-sized shape:
//
//	go test ./codegen/llvm -run '^$' -bench Kernels
func BenchmarkKernels(b *testing.B) {
	sh := kernels.Shape{DModel: 512, Experts: 16, TopK: 2, Hidden: 512, Activation: program.GELU, RouterDim: 512,
		Normalize: true, Vocab: 8192, Heads: 8, HeadDim: 64, NormEps: 1e-6}
	ks, lib := library(b, sh)
	env, err := kernels.Fixture(ks, sh, 64, 64, 1)
	if err != nil {
		b.Fatal(err)
	}
	env.S["numel"] = 1 << 20
	for _, name := range []string{"adamw"} {
		k := kernels.Find(ks, name)
		for _, p := range k.Params {
			if p.Buffer {
				env.F[p.Name] = make([]float32, 1<<20)
			}
		}
		for i := range env.F["adam_v"] {
			env.F["adam_v"][i] = 1
		}
	}
	for _, name := range []string{"rmsnorm_fwd", "rmsnorm_bwd", "xent_fwd", "xent_bwd", "attn_softmax_fwd", "adamw",
		"router_logits", "router_fwd", "unpermute_fwd", "expert_up_fwd"} {
		k := kernels.Find(ks, name)
		ck, err := lib.Kernel(k)
		if err != nil {
			b.Fatal(err)
		}
		work := env.Clone()
		b.Run(name+"/go", func(b *testing.B) {
			for b.Loop() {
				if err := k.Ref(work); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/llvm", func(b *testing.B) {
			for b.Loop() {
				if err := ck.Run(work, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
