package train

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/blas"
)

// bf16Products reports whether the run's train block asks for bfloat16 weight products
// (a written precision = bf16: program.Train.CPUProducts).
func bf16Products(spec *Spec) bool {
	return spec.Train != nil && spec.Train.CPUProducts == program.BF16
}

// setBF16Products turns net's weight products to bfloat16 when the run asks for them,
// refusing a model whose kernels multiply in float32 only (the LLVM kernels).
func setBF16Products(net any, spec *Spec) error {
	if fp16Products(spec) {
		return refuseFP16(spec, fmt.Sprintf("the hand-written engine (%T)", net), "leave --engine and --llvm out: step programs train fp16; or write precision = bf16")
	}
	if !bf16Products(spec) {
		return nil
	}
	m, ok := net.(interface{ SetBF16Products(on bool) })
	if !ok {
		e := diag.Runtimef(diag.CodeBadRunOption, "precision = bf16 in train %s: these kernels (%T) multiply in float32 only", spec.Train.Name, net)
		e.Suggestion = "drop --llvm, or write precision = fp32"
		return e
	}
	m.SetBF16Products(true)
	return nil
}

// BF16Note is the line `moec run` prints for a train block with precision = bf16 on a
// CPU without AVX512-BF16 ("" where the CPU has it, or the block does not ask): the
// products then round to bfloat16 and multiply in float32.
func BF16Note(t *program.Train) string {
	if t == nil || t.CPUProducts != program.BF16 || blas.BF16Compute() {
		return ""
	}
	return "precision = bf16: this CPU has no AVX512-BF16, so the products round their operands to bfloat16 and multiply in float32 (slower than the bf16 instructions)"
}
