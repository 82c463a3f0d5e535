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

// BenchmarkLongExpression: a chain of MaxOperators operators, which the grammar parses,
// and the 1.2 MB chain of 600,000 that used to take gigabytes and is now refused (E0116)
// from its tokens.
func BenchmarkLongExpression(b *testing.B) {
	for _, tc := range []struct {
		name  string
		terms int
	}{{"accepted=10000", MaxOperators}, {"refused=600000", 600000}} {
		src := []byte("model m {\n  vocab = 1" + strings.Repeat("+1", tc.terms) + "\n}\n")
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			b.ReportAllocs()
			for b.Loop() {
				File("bench.moe", src)
			}
		})
	}
}
