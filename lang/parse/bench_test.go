package parse

import (
	"strings"
	"testing"
)

// BenchmarkFile measures a large valid file (the fast path) and the same file with an
// error in every block (the recovery path).
func BenchmarkFile(b *testing.B) {
	var good, bad strings.Builder
	for i := 0; i < 200; i++ {
		good.WriteString("model m {\n  vocab = 150k\n  ffn { hidden = 4 * d_model; activation = gelu }\n  l = [1, 2, zero(3, offload = cpu)]\n}\n")
		bad.WriteString("model m {\n  vocab 150k\n  ffn { hidden = 4 * d_model; activation = gelu }\n  l = [1, 2, zero(3, offload = cpu)]\n}\n")
	}
	for name, src := range map[string][]byte{"valid": []byte(good.String()), "errors": []byte(bad.String())} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				File("bench.moe", src)
			}
		})
	}
}
