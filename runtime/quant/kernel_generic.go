//go:build !cgo || !amd64 || noopenblas

package quant

// This build has no C kernels: the Go loop computes every product.

const (
	isaGo   = 0
	bestISA = isaGo
)

// ISA names the kernel MulT uses: "go" in this build.
func ISA() string { return "go" }

// isas lists the kernels this build and CPU can run (tests compare each with Go).
func isas() []int { return []int{isaGo} }

func (m *Matrix) kernel(isa int, a *Activations, y []float32, n, o0, o1 int, accumulate bool) {
	m.mulGo(a, y, n, o0, o1, accumulate)
}

func isaName(int) string { return "go" }

// mulOne is MulT on one core: the Go loop.
func (m *Matrix) mulOne(_ int, a *Activations, y, x []float32, n int, accumulate bool) {
	QuantizeRows(a, x, n, m.In)
	m.mulGo(a, y, n, 0, m.Out, accumulate)
}

func quantizeRows(isa int, a *Activations, x []float32, n, in int) { QuantizeRows(a, x, n, in) }

// mulShared is MulTShared on one core: the Go loop, x quantised once.
func mulShared(_ int, a *Activations, x []float32, n int, ms [3]*Matrix, ys [3][]float32, accumulate bool) {
	QuantizeRows(a, x, n, ms[0].In)
	for j, m := range ms {
		if m != nil {
			m.mulGo(a, ys[j], n, 0, m.Out, accumulate)
		}
	}
}
