package cudastep

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"unsafe"

	"github.com/moec-dev/moec/runtime/llvmrt"
)

// The tensor-core products run under the CPU emulation, whose mma and ldmatrix follow
// the PTX ISA's fragment layouts lane by lane (checked on their own by
// the fragments subtest), against float64 products of the same 16-bit-rounded operands.
// Any mistake in how a kernel feeds the fragments (a transposed or swapped operand, a
// wrong lane's row address, a wrong accumulator placement) mixes unrelated elements of
// random non-symmetric matrices and misses the bound by orders of magnitude, so no
// separate "deliberately wrong layout" test is needed.

// mmaBound is the error a product over a reduction of length red may show against the
// float64 reference of the same rounded operands: 1e-5·√red·max|ref|. fp32 accumulation
// of red terms errs by about 6e-8·√red·|terms|, far inside it; an operand left unrounded
// (fp32 instead of bf16) errs by about 2^-9·√red·|terms|, far outside it.
func mmaBound(red int, ref []float64) float64 {
	var m float64
	for _, v := range ref {
		m = max(m, math.Abs(v))
	}
	return 1e-5 * math.Sqrt(float64(max(red, 1))) * m
}

// roundBF16 rounds to bfloat16, nearest even.
func roundBF16(x float32) (float32, uint16) {
	u := math.Float32bits(x)
	r := uint16((u + 0x7fff + (u>>16)&1) >> 16)
	return math.Float32frombits(uint32(r) << 16), r
}

// roundFP16 rounds to IEEE half, nearest even, by float64 arithmetic (the kernels' code
// works on the bits instead).
func roundFP16(x float32) (float32, uint16) {
	v := float64(x)
	sign := uint16(0)
	if math.Signbit(v) {
		sign, v = 0x8000, -v
	}
	if v == 0 {
		return float32(math.Copysign(0, float64(x))), sign
	}
	_, exp := math.Frexp(v) // v = f·2^exp, f in [0.5, 1)
	e := max(exp-1, -14)    // the half's exponent: subnormals share 2^-14's spacing
	ulp := math.Ldexp(1, e-10)
	r := math.RoundToEven(v/ulp) * ulp
	if r > 65504 {
		return float32(math.Copysign(math.Inf(1), float64(x))), sign | 0x7c00
	}
	var bits uint16
	if r < math.Ldexp(1, -14) {
		bits = uint16(r / math.Ldexp(1, -24))
	} else {
		f, ex := math.Frexp(r)
		bits = uint16(ex-1+15)<<10 | uint16(math.Round((f*2-1)*1024))
	}
	return float32(math.Copysign(r, float64(x))), sign | bits
}

func roundTo(p Precision, x float32) (float32, uint16) {
	if p == FP16 {
		return roundFP16(x)
	}
	return roundBF16(x)
}

func TestRoundFP16(t *testing.T) {
	for _, c := range []struct {
		x    float32
		bits uint16
	}{{1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {65520, 0x7c00}, {1.0 / (1 << 24), 0x0001},
		{1.0 / (1 << 14), 0x0400}, {0.333333343, 0x3555}, {1 + 1.0/2048, 0x3c00}, {1 + 3.0/2048, 0x3c02}} {
		if _, b := roundFP16(c.x); b != c.bits {
			t.Errorf("fp16(%v) = %#04x, want %#04x", c.x, b, c.bits)
		}
	}
}

// mmaLib is the kernels and a test driver compiled as C++ under the emulation.
type mmaLib struct {
	lib *llvmrt.Library
}

// mmaDriver writes, for every kernel of the table, launch_<name>(dims, args...): the
// grid, block and shared bytes from dims, then the kernel's parameters in the table's
// types. The function-pointer check makes the compile fail when the table and the
// kernel's signature disagree.
func mmaDriver(ks []Kernel) string {
	var w strings.Builder
	for _, k := range ks {
		var types, unpack, names []string
		for i, p := range k.Params {
			types = append(types, p.CType())
			name := fmt.Sprintf("p%d", i)
			names = append(names, name)
			if p.Pointer() {
				unpack = append(unpack, fmt.Sprintf("  %s %s = (%s)a[%d];", p.CType(), name, p.CType(), i+1))
			} else {
				unpack = append(unpack, fmt.Sprintf("  %s %s = *(%s *)a[%d];", p.CType(), name, p.CType(), i+1))
			}
		}
		fmt.Fprintf(&w, "static void (*const check_%s)(%s) = %s;\n", k.Name, strings.Join(types, ", "), k.Name)
		fmt.Fprintf(&w, "extern \"C\" void launch_%s(void **a, long long, long long) {\n  (void)check_%s;\n", k.Name, k.Name)
		w.WriteString("  const int *d = (const int *)a[0];\n")
		w.WriteString(strings.Join(unpack, "\n") + "\n")
		fmt.Fprintf(&w, "  moec_emu_launch3(dim3(d[0], d[1], d[2]), dim3(d[3], d[4], d[5]), (size_t)d[6], [=] { %s(%s); });\n}\n",
			k.Name, strings.Join(names, ", "))
	}
	return w.String()
}

// fragmentDriver exposes the emulated mma and ldmatrix to the fragments subtest: one
// warp, registers in and out by lane.
const fragmentDriver = `
__global__ void frag_mma(unsigned *a, unsigned *b, float *c, int f16) {
  unsigned l = threadIdx.x;
  unsigned ar[4] = {a[4 * l], a[4 * l + 1], a[4 * l + 2], a[4 * l + 3]};
  unsigned br[2] = {b[2 * l], b[2 * l + 1]};
  float d[4] = {c[4 * l], c[4 * l + 1], c[4 * l + 2], c[4 * l + 3]};
  if (f16) moe_mma_m16n8k16_f16(d, ar, br);
  else moe_mma_m16n8k16_bf16(d, ar, br);
  for (int i = 0; i < 4; i++) c[4 * l + i] = d[i];
}
__global__ void frag_ldmatrix(unsigned short *m, unsigned *out, int trans) {
  __shared__ unsigned short tile[4 * 8 * 16];  // four 8 × 8 matrices, rows padded to 16
  unsigned l = threadIdx.x;
  for (int i = 0; i < 8; i++) {
    int e = 8 * l + i, mat = e / 64, row = e / 8 % 8, col = e % 8;
    tile[(mat * 8 + row) * 16 + col] = m[e];
  }
  __syncwarp();
  unsigned r[4];
  const unsigned short *row = tile + (l / 8 * 8 + l % 8) * 16;  // lane l: row l%8 of matrix l/8
  if (trans) moe_ldmatrix_x4_trans(r, row);
  else moe_ldmatrix_x4(r, row);
  for (int i = 0; i < 4; i++) out[4 * l + i] = r[i];
}
extern "C" void t_frag_mma(void **a, long long, long long) {
  unsigned *x = (unsigned *)a[0], *y = (unsigned *)a[1];
  float *c = (float *)a[2];
  int f16 = *(int *)a[3];
  moec_emu_launch3(dim3(1), dim3(32), 0, [=] { frag_mma(x, y, c, f16); });
}
extern "C" void t_frag_ldmatrix(void **a, long long, long long) {
  unsigned short *m = (unsigned short *)a[0];
  unsigned *out = (unsigned *)a[1];
  int trans = *(int *)a[2];
  moec_emu_launch3(dim3(1), dim3(32), 0, [=] { frag_ldmatrix(m, out, trans); });
}
`

func openMMA(t *testing.T) *mmaLib {
	t.Helper()
	return &mmaLib{lib: emulatedLibrary(t, map[string]string{
		DeviceHeaderName: deviceHeader,
		"kernels_mma.cu": MMASource(),
		"driver.cpp":     "#include \"kernels_mma.cu\"\n" + mmaDriver(MMAKernels()) + fragmentDriver,
	}, "-O1", "-Wall", "-Werror")}
}

func (m *mmaLib) call(t *testing.T, name string, args ...any) {
	t.Helper()
	f, err := m.lib.Func(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Call(0, 0, args...); err != nil {
		t.Fatal(err)
	}
}

// run executes a Launch the way the host program will: its buffers are bufs[Buf] from
// Offset, its scalars by kind.
func (m *mmaLib) run(t *testing.T, l Launch, bufs map[int]any) {
	t.Helper()
	dims := []int32{int32(l.Grid[0]), int32(l.Grid[1]), int32(l.Grid[2]), int32(l.Block[0]), int32(l.Block[1]), int32(l.Block[2]), int32(l.Shared)}
	args := []any{dims}
	for i, a := range l.Args {
		if a.Kind.Pointer() {
			b, ok := bufs[a.Buf]
			if !ok {
				t.Fatalf("%s: argument %d names buffer %d, which the test lacks", l.Kernel, i, a.Buf)
			}
			switch v := b.(type) {
			case []float32:
				args = append(args, v[a.Offset:])
			case []uint16:
				args = append(args, v[a.Offset:])
			case []int32:
				args = append(args, v[a.Offset:])
			}
			continue
		}
		switch a.Kind {
		case I32:
			args = append(args, int32(a.Int))
		case I64:
			args = append(args, a.Int)
		case F32:
			args = append(args, a.Float)
		}
	}
	m.call(t, "launch_"+l.Kernel, args...)
}

func randomF32(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = r.Float32()*2 - 1
	}
	return x
}

// rounded is x rounded to p as float64 values, and the 16-bit storage.
func rounded(p Precision, x []float32) ([]float64, []uint16) {
	v, bits := make([]float64, len(x)), make([]uint16, len(x))
	for i, e := range x {
		r, b := roundTo(p, e)
		v[i], bits[i] = float64(r), b
	}
	return v, bits
}

func checkClose(t *testing.T, what string, got []float32, want []float64, red int) {
	t.Helper()
	bound := mmaBound(red, want)
	worst, at := 0.0, -1
	for i := range want {
		if d := math.Abs(float64(got[i]) - want[i]); d > worst || math.IsNaN(d) {
			worst, at = d, i
		}
	}
	if worst > bound || at >= 0 && math.IsNaN(float64(got[at])) {
		t.Errorf("%s: element %d is %v, want %v (error %.3g, bound %.3g)", what, at, got[at], want[at], worst, bound)
	}
}

const (
	bufX = iota
	bufW
	bufBias
	bufY
	bufCounts
	bufOffsets
)

// mmaPrecisions are the 16-bit formats the kernels multiply in.
func mmaPrecisions() []Precision { return []Precision{BF16, FP16} }

// TestMMAEmulated runs the kernels under the CPU emulation, compiled once.
func TestMMAEmulated(t *testing.T) {
	lib := openMMA(t)
	t.Run("fragments", func(t *testing.T) { testMMAFragments(t, lib) })
	t.Run("dense", func(t *testing.T) { testMMADense(t, lib) })
	t.Run("grouped", func(t *testing.T) { testMMAGrouped(t, lib) })
	t.Run("cast and bias grad", func(t *testing.T) { testMMACastAndBiasGrad(t, lib) })
}

// testMMADense runs the three dense forms with edges (no dimension a multiple of the
// 128×128×32 tile; K=35 not a multiple of 8, so the 16-bit weights take the scalar
// path; an odd offset into x misaligns the fp32 vector loads), bias and accumulation.
func testMMADense(t *testing.T, lib *mmaLib) {
	r := rand.New(rand.NewPCG(1, 2))
	shapes := []struct {
		m, n, k   int
		xOffset   int64
		bias, acc bool
	}{
		{37, 72, 40, 0, false, false},
		{130, 20, 35, 1, true, true},
		{5, 136, 33, 0, true, false},
	}
	for _, p := range mmaPrecisions() {
		for _, sh := range shapes {

			name := fmt.Sprintf("%s/M%dN%dK%d", p.suffix(), sh.m, sh.n, sh.k)
			g := MatMul{Precision: p, M: sh.m, N: sh.n, K: sh.k, Accumulate: sh.acc}
			xs := randomF32(r, sh.m*sh.k+int(sh.xOffset))
			ws := randomF32(r, sh.n*sh.k)
			dys := randomF32(r, sh.m*sh.n)
			bias := randomF32(r, sh.n)
			xr, _ := rounded(p, xs[sh.xOffset:])
			wr, wbits := rounded(p, ws)
			dyr, _ := rounded(p, dys)
			if sh.k%8 == 0 && uintptr(unsafe.Pointer(&wbits[0]))%16 != 0 {
				t.Fatal("the weights are not 16-byte aligned: their cp.async path would go untested")
			}
			start := func(n int) []float32 {
				if sh.acc {
					return randomF32(r, n)
				}
				y := make([]float32, n)
				for i := range y {
					y[i] = float32(math.NaN()) // must be overwritten
				}
				return y
			}

			// Forward.
			y := start(sh.m * sh.n)
			want := make([]float64, len(y))
			for i := 0; i < sh.m; i++ {
				for j := 0; j < sh.n; j++ {
					var s float64
					for k := 0; k < sh.k; k++ {
						s += xr[i*sh.k+k] * wr[j*sh.k+k]
					}
					if sh.bias {
						s += float64(bias[j])
					}
					if sh.acc {
						s += float64(y[i*sh.n+j])
					}
					want[i*sh.n+j] = s
				}
			}
			x := BufArg(PtrF32, bufX)
			x.Offset = sh.xOffset
			var b *Arg
			if sh.bias {
				ba := BufArg(PtrF32, bufBias)
				b = &ba
			}
			l, err := g.Forward(x, BufArg(PtrU16, bufW), BufArg(PtrF32, bufY), b)
			if err != nil {
				t.Fatal(err)
			}
			lib.run(t, l, map[int]any{bufX: xs, bufW: wbits, bufBias: bias, bufY: y})
			checkClose(t, name+"/forward", y, want, sh.k)

			// Input gradient: dx = dy·W.
			dx := start(sh.m * sh.k)
			want = make([]float64, len(dx))
			for i := 0; i < sh.m; i++ {
				for k := 0; k < sh.k; k++ {
					var s float64
					for j := 0; j < sh.n; j++ {
						s += dyr[i*sh.n+j] * wr[j*sh.k+k]
					}
					if sh.acc {
						s += float64(dx[i*sh.k+k])
					}
					want[i*sh.k+k] = s
				}
			}
			if l, err = g.InputGrad(BufArg(PtrF32, bufX), BufArg(PtrU16, bufW), BufArg(PtrF32, bufY)); err != nil {
				t.Fatal(err)
			}
			lib.run(t, l, map[int]any{bufX: dys, bufW: wbits, bufY: dx})
			checkClose(t, name+"/input grad", dx, want, sh.n)

			// Weight gradient: dW = dyᵀ·x.
			dw := start(sh.n * sh.k)
			want = make([]float64, len(dw))
			for j := 0; j < sh.n; j++ {
				for k := 0; k < sh.k; k++ {
					var s float64
					for i := 0; i < sh.m; i++ {
						s += dyr[i*sh.n+j] * xr[i*sh.k+k]
					}
					if sh.acc {
						s += float64(dw[j*sh.k+k])
					}
					want[j*sh.k+k] = s
				}
			}
			if l, err = g.WeightGrad(BufArg(PtrF32, bufY), x, BufArg(PtrF32, bufW)); err != nil {
				t.Fatal(err)
			}
			lib.run(t, l, map[int]any{bufY: dys, bufX: xs, bufW: dw})
			checkClose(t, name+"/weight grad", dw, want, sh.m)
		}
	}
}

// testMMAGrouped runs the grouped forms over both dispatch layouts, with empty experts,
// uneven counts (one expert over a row tile) and unfilled rows that must stay untouched.
func testMMAGrouped(t *testing.T, lib *mmaLib) {
	r := rand.New(rand.NewPCG(3, 4))
	layouts := []struct {
		name   string
		counts []int32
		slots  int // 0: packed
		rows   int
	}{
		{"packed", []int32{0, 37, 5, 130, 9}, 0, 190},
		{"slots", []int32{20, 0, 7}, 20, 60},
	}
	const n, k = 24, 40
	for _, p := range mmaPrecisions() {
		for _, ly := range layouts {

			name := p.suffix() + "/" + ly.name
			experts := len(ly.counts)
			offsets := make([]int32, experts)
			first := make([]int, experts)
			for e := range ly.counts {
				if ly.slots > 0 {
					first[e] = e * ly.slots
				} else if e > 0 {
					first[e] = first[e-1] + int(ly.counts[e-1])
				}
				offsets[e] = int32(first[e])
			}
			// Weights: expert e at e·wStride (a gap after each), biases every bStride.
			const wStride, bStride = n*k + 8, n + 3
			g := GroupedMatMul{Precision: p, Experts: experts, Rows: ly.rows, Slots: ly.slots, N: n, K: k,
				Counts: BufArg(PtrI32, bufCounts), Offsets: BufArg(PtrI32, bufOffsets),
				WeightStride: wStride, GradStride: wStride, BiasStride: bStride, Accumulate: true}
			xs, dys := randomF32(r, ly.rows*k), randomF32(r, ly.rows*n)
			ws, bias := randomF32(r, experts*wStride), randomF32(r, experts*bStride)
			xr, _ := rounded(p, xs)
			dyr, _ := rounded(p, dys)
			wr, wbits := rounded(p, ws)
			bufs := func(m map[int]any) map[int]any {
				m[bufCounts], m[bufOffsets] = ly.counts, offsets
				return m
			}
			// owner[i] is the expert of permuted row i, -1 for an unfilled row.
			owner := make([]int, ly.rows)
			for i := range owner {
				owner[i] = -1
			}
			for e, c := range ly.counts {
				for i := 0; i < int(c); i++ {
					owner[first[e]+i] = e
				}
			}

			// Forward, accumulating: unfilled rows keep their values.
			y := randomF32(r, ly.rows*n)
			want := make([]float64, len(y))
			for i := range ly.rows {
				for j := 0; j < n; j++ {
					s := float64(y[i*n+j])
					if e := owner[i]; e >= 0 {
						for c := 0; c < k; c++ {
							s += xr[i*k+c] * wr[e*wStride+j*k+c]
						}
						s += float64(bias[e*bStride+j])
					}
					want[i*n+j] = s
				}
			}
			ba := BufArg(PtrF32, bufBias)
			l, err := g.Forward(BufArg(PtrF32, bufX), BufArg(PtrU16, bufW), BufArg(PtrF32, bufY), &ba)
			if err != nil {
				t.Fatal(err)
			}
			lib.run(t, l, bufs(map[int]any{bufX: xs, bufW: wbits, bufBias: bias, bufY: y}))
			checkClose(t, name+"/forward", y, want, k)

			// Input gradient, overwriting: unfilled rows keep their values too.
			g.Accumulate = false
			dx := randomF32(r, ly.rows*k)
			want = make([]float64, len(dx))
			for i := range ly.rows {
				for c := 0; c < k; c++ {
					e := owner[i]
					if e < 0 {
						want[i*k+c] = float64(dx[i*k+c])
						continue
					}
					var s float64
					for j := 0; j < n; j++ {
						s += dyr[i*n+j] * wr[e*wStride+j*k+c]
					}
					want[i*k+c] = s
				}
			}
			if l, err = g.InputGrad(BufArg(PtrF32, bufY), BufArg(PtrU16, bufW), BufArg(PtrF32, bufX)); err != nil {
				t.Fatal(err)
			}
			lib.run(t, l, bufs(map[int]any{bufY: dys, bufW: wbits, bufX: dx}))
			checkClose(t, name+"/input grad", dx, want, n)

			// Weight and bias gradients, accumulating: an empty expert's stay as they were.
			g.Accumulate = true
			dw, db := randomF32(r, experts*wStride), randomF32(r, experts*bStride)
			wantW, wantB := make([]float64, len(dw)), make([]float64, len(db))
			for i := range dw {
				wantW[i] = float64(dw[i])
			}
			for i := range db {
				wantB[i] = float64(db[i])
			}
			for e, c := range ly.counts {
				for j := 0; j < n; j++ {
					for i := first[e]; i < first[e]+int(c); i++ {
						wantB[e*bStride+j] += float64(dys[i*n+j])
						for cc := 0; cc < k; cc++ {
							wantW[e*wStride+j*k+cc] += dyr[i*n+j] * xr[i*k+cc]
						}
					}
				}
			}
			if l, err = g.WeightGrad(BufArg(PtrF32, bufY), BufArg(PtrF32, bufX), BufArg(PtrF32, bufW)); err != nil {
				t.Fatal(err)
			}
			lib.run(t, l, bufs(map[int]any{bufY: dys, bufX: xs, bufW: dw}))
			checkClose(t, name+"/weight grad", dw, wantW, 130)
			if l, err = g.BiasGrad(BufArg(PtrF32, bufY), BufArg(PtrF32, bufBias)); err != nil {
				t.Fatal(err)
			}
			lib.run(t, l, bufs(map[int]any{bufY: dys, bufBias: db}))
			checkClose(t, name+"/bias grad", db, wantB, 130)

			if ly.slots == 0 {
				continue
			}
			// Overwriting weight gradient: an empty expert's becomes zero.
			g.Accumulate = false
			dw = randomF32(r, experts*wStride)
			for i := range wantW {
				wantW[i] = float64(dw[i]) // the gaps between experts keep their values
			}
			for e, c := range ly.counts {
				for j := 0; j < n; j++ {
					for cc := 0; cc < k; cc++ {
						var s float64
						for i := first[e]; i < first[e]+int(c); i++ {
							s += dyr[i*n+j] * xr[i*k+cc]
						}
						wantW[e*wStride+j*k+cc] = s
					}
				}
			}
			if l, err = g.WeightGrad(BufArg(PtrF32, bufY), BufArg(PtrF32, bufX), BufArg(PtrF32, bufW)); err != nil {
				t.Fatal(err)
			}
			lib.run(t, l, bufs(map[int]any{bufY: dys, bufX: xs, bufW: dw}))
			checkClose(t, name+"/weight grad, overwritten", dw, wantW, 130)
		}
	}
}

// testMMACastAndBiasGrad checks the 16-bit weight copies bit for bit against the Go
// rounding (ties, subnormals, overflow) and the dense bias gradient.
func testMMACastAndBiasGrad(t *testing.T, lib *mmaLib) {
	r := rand.New(rand.NewPCG(5, 6))
	src := randomF32(r, 3000)
	for i := range src {
		src[i] *= float32(math.Ldexp(1, i%40-25)) // 2^-25 .. 2^14: fp16 subnormals to large
	}
	src = append(src, 1+1.0/256, 1+3.0/256, 65504, 65519, 65520, 1e6, -1e-8, 0, float32(math.Copysign(0, -1)))
	for _, p := range mmaPrecisions() {
		dst := make([]uint16, len(src))
		l, err := CastLaunch(p, int64(len(src)), BufArg(PtrF32, bufX), BufArg(PtrU16, bufW))
		if err != nil {
			t.Fatal(err)
		}
		lib.run(t, l, map[int]any{bufX: src, bufW: dst})
		for i, x := range src {
			if _, want := roundTo(p, x); dst[i] != want {
				t.Fatalf("%s cast of %v: %#04x, want %#04x", p.suffix(), x, dst[i], want)
			}
		}
	}

	const m, n = 300, 70
	dy, db := randomF32(r, m*n), randomF32(r, n)
	want := make([]float64, n)
	for j := range n {
		want[j] = float64(db[j])
		for i := 0; i < m; i++ {
			want[j] += float64(dy[i*n+j])
		}
	}
	l, err := MatMul{M: m, N: n, K: 1, Accumulate: true}.BiasGrad(BufArg(PtrF32, bufY), BufArg(PtrF32, bufBias))
	if err != nil {
		t.Fatal(err)
	}
	lib.run(t, l, map[int]any{bufY: dy, bufBias: db})
	checkClose(t, "bias grad", db, want, m)
}

// testMMAFragments holds the emulation's mma and ldmatrix to the PTX ISA's
// fragment tables ("Matrix Fragments for mma.m16n8k16 with floating point type", and
// ldmatrix's), written here again from the ISA independently of the C++.
func testMMAFragments(t *testing.T, lib *mmaLib) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, p := range mmaPrecisions() {
		var a [16][16]float64
		var b [16][8]float64
		var abits [16][16]uint16
		var bbits [16][8]uint16
		for i := range 16 {
			for j := range 16 {
				v, bits := roundTo(p, r.Float32()*2-1)
				a[i][j], abits[i][j] = float64(v), bits
			}
			for j := range 8 {
				v, bits := roundTo(p, r.Float32()*2-1)
				b[i][j], bbits[i][j] = float64(v), bits
			}
		}
		ar, br := make([]int32, 128), make([]int32, 64)
		c := randomF32(r, 128)
		pack := func(lo, hi uint16) int32 { return int32(uint32(lo) | uint32(hi)<<16) }
		for lane := range 32 {
			g, tg := lane>>2, lane%4
			// A: row groupID for a0,a1,a4,a5, +8 for a2,a3,a6,a7; col tg·2 + (i&1), +8 for i ≥ 4.
			elem := func(i int) uint16 {
				row := g
				if i&2 != 0 {
					row += 8
				}
				col := tg*2 + i&1
				if i >= 4 {
					col += 8
				}
				return abits[row][col]
			}
			for reg := range 4 {
				ar[4*lane+reg] = pack(elem(2*reg), elem(2*reg+1))
			}
			// B: row tg·2 + (i&1), +8 for i ≥ 2; col groupID.
			for reg := range 2 {
				row := tg*2 + 8*reg
				br[2*lane+reg] = pack(bbits[row][g], bbits[row+1][g])
			}
		}
		want := make([]float64, 128)
		for lane := range 32 {
			g, tg := lane>>2, lane%4
			for i := range 4 {
				row, col := g+8*(i/2), tg*2+i%2 // C: row groupID (+8 for c2, c3), col tg·2 + (i&1)
				s := float64(c[4*lane+i])
				for kk := range 16 {
					s += a[row][kk] * b[kk][col]
				}
				want[4*lane+i] = s
			}
		}
		f16 := int32(0)
		if p == FP16 {
			f16 = 1
		}
		lib.call(t, "t_frag_mma", ar, br, c, f16)
		checkClose(t, p.suffix()+" mma fragments", c, want, 16)
	}

	m := make([]uint16, 256) // four 8 × 8 matrices, element (mat, row, col) = mat·64 + row·8 + col
	for i := range m {
		m[i] = uint16(i)
	}
	for _, trans := range []int32{0, 1} {
		out := make([]int32, 128)
		lib.call(t, "t_frag_ldmatrix", m, out, trans)
		for lane := range 32 {
			for mat := range 4 {
				row, col := lane/4, 2*(lane%4) // lane holds row lane/4, columns 2(lane%4)..+1
				lo, hi := mat*64+row*8+col, mat*64+row*8+col+1
				if trans == 1 { // of the transposed matrix
					lo, hi = mat*64+col*8+row, mat*64+(col+1)*8+row
				}
				if got := uint32(out[4*lane+mat]); got != uint32(lo)|uint32(hi)<<16 {
					t.Fatalf("ldmatrix trans=%d lane %d matrix %d: %#08x, want %#08x", trans, lane, mat, got, uint32(lo)|uint32(hi)<<16)
				}
			}
		}
	}
}

// TestMMAPTX compiles the kernels to PTX for sm_80 and sm_90 without a CUDA SDK and checks
// that they use the tensor cores (mma.sync m16n8k16 in bf16 and fp16), ldmatrix (and its
// .trans form) and cp.async, that every kernel of the table is an entry point with its
// parameter count, and that nothing spills to local memory (the accumulators stay in
// registers).
func TestMMAPTX(t *testing.T) {
	for _, arch := range []string{"sm_80", "sm_90"} {
		ptx := libraryPTX(t, "kernels_mma.cu", arch)
		for _, want := range []string{
			"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
			"mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
			"ldmatrix.sync.aligned.m8n8.x4.shared.b16",
			"ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
			"cp.async.cg.shared.global",
			"cp.async.commit_group",
			"cp.async.wait_group",
			"cvt.rn.bf16x2.f32",
			"cvt.rn.f16x2.f32",
			"ld.global.v4.f32",
		} {
			if !strings.Contains(ptx, want) {
				t.Errorf("%s: the PTX has no %s", arch, want)
			}
		}
		if strings.Contains(ptx, ".local") {
			t.Errorf("%s: the PTX uses local memory (spilled registers)", arch)
		}
		for _, k := range MMAKernels() {
			re := regexp.MustCompile(`(?s)\.entry ` + k.Name + `\((.*?)\)`)
			m := re.FindStringSubmatch(ptx)
			if m == nil {
				t.Errorf("%s: no entry point %s", arch, k.Name)
				continue
			}
			if got := strings.Count(m[1], ".param"); got != len(k.Params) {
				t.Errorf("%s: %s has %d parameters, the table %d", arch, k.Name, got, len(k.Params))
			}
		}
	}
}

// TestMMALaunchChecks: the launch builders refuse arguments of the wrong kind and sizes
// out of range, and compute the grids from the tile.
func TestMMALaunchChecks(t *testing.T) {
	x, w, y := BufArg(PtrF32, 0), BufArg(PtrU16, 1), BufArg(PtrF32, 2)
	if _, err := (MatMul{M: 4, N: 4, K: 4}).Forward(x, x, y, nil); err == nil || !strings.Contains(err.Error(), "argument 1") {
		t.Errorf("fp32 weights accepted: %v", err)
	}
	if _, err := (MatMul{M: 0, N: 4, K: 4}).Forward(x, w, y, nil); err == nil {
		t.Error("M = 0 accepted")
	}
	l, err := MatMul{Precision: FP16, M: 300, N: 129, K: 8}.Forward(x, w, y, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.Kernel != "mma_fwd_f16" || l.Grid != [3]int{2, 3, 1} || l.Block != [3]int{256, 1, 1} {
		t.Errorf("forward launch %s grid %v block %v", l.Kernel, l.Grid, l.Block)
	}
	g := GroupedMatMul{Experts: 4, Rows: 1000, N: 64, K: 32, Counts: BufArg(PtrI32, 3), Offsets: BufArg(PtrI32, 4)}
	if l, err = g.Forward(x, w, y, nil); err != nil {
		t.Fatal(err)
	}
	if l.Grid != [3]int{8 + 4, 1, 1} {
		t.Errorf("grouped forward grid %v, want 12 row tiles (ceil(1000/128) + 4 experts)", l.Grid)
	}
	if l, err = g.WeightGrad(x, x, y); err != nil || l.Grid != [3]int{1, 1, 4} {
		t.Errorf("grouped weight gradient grid %v (%v)", l.Grid, err)
	}
	g.Slots = 300
	if _, err := g.Forward(x, w, y, nil); err == nil {
		t.Error("4 × 300 slots in 1000 rows accepted")
	}
	if s, ok := EvenStride([]int64{100, 164, 228}); !ok || s != 64 {
		t.Errorf("EvenStride = %d %v", s, ok)
	}
	if _, ok := EvenStride([]int64{100, 164, 229}); ok {
		t.Error("uneven offsets reported even")
	}
}

// TestMMAKernelTable holds the table to the source: every __global__ of kernels_mma.cu is
// listed, with its parameters' C types in order (the emulated driver's function-pointer
// check holds the same under the compiler).
func TestMMAKernelTable(t *testing.T) {
	re := regexp.MustCompile(`__global__\s+void\s+(\w+)\(([^)]*)\)`)
	found := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(MMASource(), -1) {
		var types []string
		for _, p := range strings.Split(m[2], ",") {
			p = strings.TrimSpace(p)
			name := regexp.MustCompile(`\w+$`).FindString(p)
			types = append(types, strings.ReplaceAll(strings.TrimSpace(strings.TrimSuffix(p, name)), " *", "*"))
		}
		found[m[1]] = strings.Join(types, ", ")
	}
	ks := MMAKernels()
	if len(found) != len(ks) {
		t.Errorf("kernels_mma.cu has %d kernels, the table %d", len(found), len(ks))
	}
	for _, k := range ks {
		var types []string
		for _, p := range k.Params {
			types = append(types, p.CType())
		}
		if got, want := found[k.Name], strings.Join(types, ", "); got != want {
			t.Errorf("%s: the source's parameters (%s), the table's (%s)", k.Name, got, want)
		}
		if !strings.HasPrefix(k.Name, "mma_") {
			t.Errorf("%s lacks the file's prefix mma_", k.Name)
		}
	}
}
