package blas

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/internal/pyvenv"
)

func TestRoundFP16EdgeCases(t *testing.T) {
	f := math.Float32frombits
	inf := float32(math.Inf(1))
	cases := []struct {
		name     string
		in, want float32
	}{
		{"one", 1, 1},
		{"largest half", 65504, 65504},
		{"below the tie under 65520", f(0x477fefff), 65504},
		{"65520: the tie between 65504 and 2¹⁶, to the even (Inf)", 65520, inf},
		{"past the largest half", 1e6, inf},
		{"negative overflow", -65520, -inf},
		{"the largest float32", f(0x7f7fffff), inf},
		{"-Inf", float32(math.Inf(-1)), float32(math.Inf(-1))},
		{"1 + 2⁻¹¹: a tie, to the even 1", 1 + 0x1p-11, 1},
		{"1 + 3·2⁻¹¹: a tie, to the even 1 + 2⁻⁹", 1 + 3*0x1p-11, 1 + 0x1p-9},
		{"just above the tie: up", f(0x3f801001), 1 + 0x1p-10},
		{"just below the tie: down", f(0x3f800fff), 1},
		{"smallest normal half", 0x1p-14, 0x1p-14},
		{"smallest subnormal half", 0x1p-24, 0x1p-24},
		{"3·2⁻²⁴ is a subnormal half", 3 * 0x1p-24, 3 * 0x1p-24},
		{"2⁻²⁵: a tie between 0 and 2⁻²⁴, to the even 0", 0x1p-25, 0},
		{"just above 2⁻²⁵: up to 2⁻²⁴", f(0x33000001), 0x1p-24},
		{"1.5·2⁻²⁴: a tie, to the even 2⁻²³", 1.5 * 0x1p-24, 0x1p-23},
		{"2.5·2⁻²⁴: a tie, to the even 2⁻²³", 2.5 * 0x1p-24, 0x1p-23},
		{"largest subnormal rounds up to the smallest normal", 0x1p-14 - 0x1p-26, 0x1p-14},
		{"negative subnormal", -5 * 0x1p-24, -5 * 0x1p-24},
		{"-0 stays -0", f(0x80000000), f(0x80000000)},
		{"a tiny negative rounds to -0", -0x1p-30, f(0x80000000)},
		{"the smallest float32 denormal rounds to zero", f(1), 0},
	}
	for _, c := range cases {
		got := RoundFP16(c.in)
		if math.Float32bits(got) != math.Float32bits(c.want) {
			t.Errorf("%s: RoundFP16(%#08x) = %#08x (%g), want %#08x (%g)", c.name, math.Float32bits(c.in), math.Float32bits(got), got, math.Float32bits(c.want), c.want)
		}
		var row [1]float32
		RoundFP16s(row[:], []float32{c.in})
		if math.Float32bits(row[0]) != math.Float32bits(c.want) {
			t.Errorf("%s: RoundFP16s (F16C %v) gives %#08x, want %#08x", c.name, FP16Convert(), math.Float32bits(row[0]), math.Float32bits(c.want))
		}
	}
	for _, bits := range []uint32{0x7f800001, 0x7fc00000, 0xffc00123, 0x7fbfffff} {
		if nan := RoundFP16(f(bits)); !math.IsNaN(float64(nan)) {
			t.Errorf("RoundFP16(NaN %#08x) = %v, want NaN", bits, nan)
		}
	}
}

// fp16Sweep is a spread of float32 bit patterns: every 997th one (both signs, every
// exponent, NaNs and infinities among them) and every pattern near binary16's edges.
func fp16Sweep() []float32 {
	var xs []float32
	for u := uint64(0); u < 1<<32; u += 997 {
		xs = append(xs, math.Float32frombits(uint32(u)))
	}
	for _, edge := range []float32{65504, 65520, 0x1p-14, 0x1p-24, 0x1p-25, 1} {
		e := math.Float32bits(edge)
		for d := uint32(0); d < 8192; d++ {
			xs = append(xs, math.Float32frombits(e-4096+d), math.Float32frombits((e-4096+d)|0x80000000))
		}
	}
	return xs
}

// sameRounding reports whether got is want's bits, or both are NaN.
func sameRounding(got, want float32) bool {
	return math.Float32bits(got) == math.Float32bits(want) || math.IsNaN(float64(got)) && math.IsNaN(float64(want))
}

// TestRoundFP16sMatchesGo holds the F16C rounding (where the CPU has it) to the Go
// reference bit for bit over the sweep, NaN payloads included.
func TestRoundFP16sMatchesGo(t *testing.T) {
	t.Logf("F16C on this CPU: %v", FP16Convert())
	xs := fp16Sweep()
	got := make([]float32, len(xs))
	RoundFP16s(got, xs)
	bad := 0
	for i, x := range xs {
		if want := RoundFP16(x); math.Float32bits(got[i]) != math.Float32bits(want) {
			if bad++; bad <= 10 {
				t.Errorf("RoundFP16s(%#08x) = %#08x, the Go reference %#08x", math.Float32bits(x), math.Float32bits(got[i]), math.Float32bits(want))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d values differ", bad, len(xs))
	}
}

// TestRoundFP16MatchesNumpy holds the Go reference to numpy's float32 → float16 → float32
// over the sweep (NaN as NaN).
func TestRoundFP16MatchesNumpy(t *testing.T) {
	py := pyvenv.Python(t, "../..", "numpy")
	xs := fp16Sweep()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.f32"), filepath.Join(dir, "out.f32")
	raw := make([]byte, 4*len(xs))
	for i, x := range xs {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	if err := os.WriteFile(in, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	script := `import sys, numpy as np
x = np.fromfile(sys.argv[1], dtype="<f4")
with np.errstate(all="ignore"):
    x.astype(np.float16).astype("<f4").tofile(sys.argv[2])`
	if b, err := exec.Command(py, "-c", script, in, out).CombinedOutput(); err != nil {
		t.Fatalf("numpy: %v: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != len(raw) {
		t.Fatalf("numpy wrote %d bytes, want %d", len(b), len(raw))
	}
	bad := 0
	for i, x := range xs {
		want := math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		if got := RoundFP16(x); !sameRounding(got, want) {
			if bad++; bad <= 10 {
				t.Errorf("RoundFP16(%#08x) = %#08x, numpy.float16 %#08x", math.Float32bits(x), math.Float32bits(got), math.Float32bits(want))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d values differ from numpy", bad, len(xs))
	}
}

// TestGemmFP16 holds GemmFP16 to a float64 product of the operands rounded to binary16
// over every transposition, strided operands and odd sizes, and checks that it rounds:
// an operand of 1 + 2⁻¹² multiplies as 1, and one past 65504 as Inf.
func TestGemmFP16(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, s := range [][3]int{{1, 1, 1}, {3, 5, 7}, {17, 33, 65}, {64, 48, 300}} {
		m, n, k := s[0], s[1], s[2]
		for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
			transA, transB := tr[0], tr[1]
			lda, ldb, ldc := k+3, n+2, n+1
			if transA {
				lda = m + 3
			}
			if transB {
				ldb = k + 2
			}
			rowsA, rowsB := m, k
			if transA {
				rowsA = k
			}
			if transB {
				rowsB = n
			}
			a, b, c := make([]float32, rowsA*lda), make([]float32, rowsB*ldb), make([]float32, m*ldc)
			for i := range a {
				a[i] = float32(r.NormFloat64())
			}
			for i := range b {
				b[i] = float32(r.NormFloat64())
			}
			for i := range c {
				c[i] = float32(r.NormFloat64())
			}
			c0 := append([]float32(nil), c...)
			GemmFP16(transA, transB, m, n, k, 0.5, a, lda, b, ldb, 2, c, ldc)
			for i := 0; i < m; i++ {
				for j := 0; j < n; j++ {
					var sum, abs float64
					for p := 0; p < k; p++ {
						var av, bv float32
						if transA {
							av = a[p*lda+i]
						} else {
							av = a[i*lda+p]
						}
						if transB {
							bv = b[j*ldb+p]
						} else {
							bv = b[p*ldb+j]
						}
						x := float64(RoundFP16(av)) * float64(RoundFP16(bv))
						sum, abs = sum+x, abs+math.Abs(x)
					}
					want := 0.5*sum + 2*float64(c0[i*ldc+j])
					bound := float64(k+4) * 0x1p-24 * (0.5*abs + 2*math.Abs(float64(c0[i*ldc+j])))
					if got := float64(c[i*ldc+j]); math.Abs(got-want) > bound+1e-30 {
						t.Fatalf("%v×%v %dx%dx%d: C[%d,%d] = %g, want %g ± %g", transA, transB, m, n, k, i, j, got, want, bound)
					}
				}
			}
		}
	}
	c := []float32{0}
	GemmFP16(false, false, 1, 1, 1, 1, []float32{1 + 0x1p-12}, 1, []float32{1}, 1, 0, c, 1)
	if c[0] != 1 {
		t.Errorf("1+2⁻¹² × 1 = %v, want 1 (the operand rounded to binary16)", c[0])
	}
	GemmFP16(false, false, 1, 1, 1, 1, []float32{70000}, 1, []float32{1}, 1, 0, c, 1)
	if !math.IsInf(float64(c[0]), 1) {
		t.Errorf("70000 × 1 = %v, want +Inf (past binary16's largest)", c[0])
	}
}

// TestGemmFP16IntoReusesBuffers: one FP16Buffers through products of growing, shrinking
// and strided operands gives GemmFP16's bits every time (no stale rounded values read).
func TestGemmFP16IntoReusesBuffers(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var buf FP16Buffers
	for _, s := range []struct {
		m, n, k, lda int
		transB       bool
	}{{8, 6, 5, 5, false}, {3, 4, 9, 9, true}, {12, 10, 7, 11, true}, {2, 2, 2, 2, false}} {
		a, b := randVec(r, s.m*s.lda), randVec(r, s.n*s.k)
		ldb := s.n
		if s.transB {
			ldb = s.k
		}
		want, got := make([]float32, s.m*s.n), make([]float32, s.m*s.n)
		GemmFP16(false, s.transB, s.m, s.n, s.k, 1, a, s.lda, b, ldb, 0, want, s.n)
		GemmFP16Into(&buf, false, s.transB, s.m, s.n, s.k, 1, a, s.lda, b, ldb, 0, got, s.n)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%+v: element %d is %v, GemmFP16's %v", s, i, got[i], want[i])
			}
		}
	}
}
