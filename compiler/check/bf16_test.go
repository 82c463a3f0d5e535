package check

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// TestCPUProducts: a train block that writes precision = bf16 (fp16) asks the CPU runtime
// for bfloat16 (half) products; one that leaves precision at its default (bf16, for the planner) or
// writes fp32 keeps float32 products.
func TestCPUProducts(t *testing.T) {
	const src = `
model m { vocab = 256; d_model = 32; layers = 1; seq_len = 16; attention { heads = 2 }; ffn { hidden = 64 } }
cluster local { gpu = cpu; ranks = 1; host_memory = 1GiB }
train m on local {
  tokens_per_batch = 4 * 16
  PRECISION
  data = "d/*.txt"
  stage s { steps = 1 }
}
`
	for _, c := range []struct {
		line      string
		precision program.Precision
		products  program.Precision
	}{
		{"precision = bf16", program.BF16, program.BF16},
		{"precision = fp16", program.FP16, program.FP16},
		{"", program.BF16, ""},
		{"precision = fp32", program.FP32, ""},
	} {
		tr := checkSource(t, strings.Replace(src, "PRECISION", c.line, 1)).Trains["m"]
		if tr.Precision != c.precision || tr.CPUProducts != c.products {
			t.Errorf("%q: precision %q, CPU products %q; want %q, %q", c.line, tr.Precision, tr.CPUProducts, c.precision, c.products)
		}
	}
}
