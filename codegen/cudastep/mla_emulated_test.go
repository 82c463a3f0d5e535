package cudastep

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/runtime/llvmrt"
)

// TestMLAKernelsEmulated runs kernels_mla.cu under the emulation against float64
// references of runtime/exec's kernels: mla_attention_rows over per-head caches whose keys
// and values are wider than a warp's lanes and differ in width, rows of other sequences,
// a padding row, causal, a sliding window and chunks, and a prefill's rows over their
// prompts' own keys and values (no positions); mla_heads with the rope tables at
// each row's position and without them (no rotary positions); mla_split.
func TestMLAKernelsEmulated(t *testing.T) {
	lib := openMLAEmulation(t, MLAKernels())
	defer lib.Close()
	r := rand.New(rand.NewPCG(5, 6))
	fill := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	grid := func(blocks, threads int) []any {
		return []any{int32(blocks), int32(1), int32(1), int32(threads), int32(1), int32(1), int64(0)}
	}

	t.Run("attention_rows", func(t *testing.T) {
		f, err := lib.Func("emu_mla_attention_rows")
		if err != nil {
			t.Fatal(err)
		}
		const rows, seqs, H, qk, vd, maxLen = 4, 2, 2, 40, 36, 10
		q, kc, vc := fill(rows*H*qk), fill(seqs*maxLen*H*qk), fill(seqs*maxLen*H*vd)
		seq, pos := []int32{1, 0, -1, 1}, []int32{9, 3, 0, 5}
		const scale = 0.3
		for _, c := range []struct {
			name          string
			window, chunk int
		}{{"causal", 0, 0}, {"window 3", 3, 0}, {"chunk 4", 0, 4}} {
			out := fill(rows * H * vd) // overwritten, the padding row's with zeros
			args := append(grid(rows*H, 32*mlaWarps), q, kc, vc, pos, seq, out, int32(rows), int32(H), int32(qk), int32(vd), int32(maxLen),
				float32(scale), int32(c.window), int32(c.chunk))
			if err := f.Call(0, 0, args...); err != nil {
				t.Fatal(err)
			}
			var worst float64
			for row := 0; row < rows; row++ {
				s, i := int(seq[row]), int(pos[row])
				for h := 0; h < H; h++ {
					o := out[(row*H+h)*vd : (row*H+h+1)*vd]
					if s < 0 {
						for _, v := range o {
							worst = math.Max(worst, math.Abs(float64(v)))
						}
						continue
					}
					lo := 0
					switch {
					case c.chunk > 0:
						lo = i - i%c.chunk
					case c.window > 0:
						lo = max(0, i-c.window+1)
					}
					w := make([]float64, 0, i+1-lo)
					mx := math.Inf(-1)
					for j := lo; j <= i; j++ {
						var dot float64
						for e := 0; e < qk; e++ {
							dot += float64(q[(row*H+h)*qk+e]) * float64(kc[((s*maxLen+j)*H+h)*qk+e])
						}
						w = append(w, dot*scale)
						mx = math.Max(mx, dot*scale)
					}
					var sum float64
					for j := range w {
						w[j] = math.Exp(w[j] - mx)
						sum += w[j]
					}
					for e := 0; e < vd; e++ {
						var want float64
						for j := range w {
							want += w[j] / sum * float64(vc[((s*maxLen+lo+j)*H+h)*vd+e])
						}
						worst = math.Max(worst, math.Abs(float64(o[e])-want))
					}
				}
			}
			if worst > 1e-5 {
				t.Errorf("%s: the output is %.3g from the reference", c.name, worst)
			}
		}
	})

	t.Run("attention_rows prefill", func(t *testing.T) {
		// No positions: row r is position r % T of sequence r / T, over the prompts' own
		// keys and values ([sequences, T, ·]).
		f, err := lib.Func("emu_mla_attention_rows")
		if err != nil {
			t.Fatal(err)
		}
		const seqs, T, H, qk, vd = 2, 5, 2, 40, 36
		const rows = seqs * T
		q, kh, vh := fill(rows*H*qk), fill(rows*H*qk), fill(rows*H*vd)
		const scale = 0.3
		for _, window := range []int{0, 2} {
			out := fill(rows * H * vd)
			args := append(grid(rows*H, 32*mlaWarps), q, kh, vh, []int32(nil), []int32(nil), out, int32(rows), int32(H), int32(qk), int32(vd), int32(T),
				float32(scale), int32(window), int32(0))
			if err := f.Call(0, 0, args...); err != nil {
				t.Fatal(err)
			}
			var worst float64
			for r := 0; r < rows; r++ {
				s, i := r/T, r%T
				lo := 0
				if window > 0 {
					lo = max(0, i-window+1)
				}
				for h := 0; h < H; h++ {
					w := make([]float64, 0, i+1-lo)
					mx := math.Inf(-1)
					for j := lo; j <= i; j++ {
						var dot float64
						for e := 0; e < qk; e++ {
							dot += float64(q[(r*H+h)*qk+e]) * float64(kh[((s*T+j)*H+h)*qk+e])
						}
						w = append(w, dot*scale)
						mx = math.Max(mx, dot*scale)
					}
					var sum float64
					for j := range w {
						w[j] = math.Exp(w[j] - mx)
						sum += w[j]
					}
					for e := 0; e < vd; e++ {
						var want float64
						for j := range w {
							want += w[j] / sum * float64(vh[((s*T+lo+j)*H+h)*vd+e])
						}
						worst = math.Max(worst, math.Abs(float64(out[(r*H+h)*vd+e])-want))
					}
				}
			}
			if worst > 1e-5 {
				t.Errorf("window %d: the output is %.3g from the reference", window, worst)
			}
		}
	})

	t.Run("heads", func(t *testing.T) {
		f, err := lib.Func("emu_mla_heads")
		if err != nil {
			t.Fatal(err)
		}
		const rows, H, nope, rope, vd, positions = 3, 2, 3, 4, 5, 8
		const half, qk, kvw = rope / 2, nope + rope, nope + vd
		q, kvb, kpe, tab := fill(rows*H*qk), fill(rows*H*kvw), fill(rows*rope), fill(2*positions*half)
		pos := []int32{2, 7, 0}
		for _, rotary := range []bool{true, false} {
			qh, kh, vh := make([]float32, rows*H*qk), make([]float32, rows*H*qk), make([]float32, rows*H*vd)
			var tb []float32 // none: a null address
			if rotary {
				tb = tab
			}
			args := append(grid(1, 64), q, kvb, kpe, pos, tb, qh, kh, vh, int32(rows), int32(H), int32(nope), int32(rope), int32(vd), int32(1), int32(positions))
			if err := f.Call(0, 0, args...); err != nil {
				t.Fatal(err)
			}
			var worst float64
			near := func(got float32, want float64) { worst = math.Max(worst, math.Abs(float64(got)-want)) }
			for row := 0; row < rows; row++ {
				p := int(pos[row])
				for h := 0; h < H; h++ {
					base := (row*H + h) * qk
					for c := 0; c < nope; c++ {
						near(qh[base+c], float64(q[base+c]))
						near(kh[base+c], float64(kvb[(row*H+h)*kvw+c]))
					}
					for c := 0; c < vd; c++ {
						near(vh[(row*H+h)*vd+c], float64(kvb[(row*H+h)*kvw+nope+c]))
					}
					for c := 0; c < half; c++ {
						cs, sn := 1.0, 0.0
						if rotary {
							cs, sn = float64(tab[p*half+c]), float64(tab[positions*half+p*half+c])
						}
						qa, qb := float64(q[base+nope+c]), float64(q[base+nope+c+half])
						ka, kb := float64(kpe[row*rope+c]), float64(kpe[row*rope+c+half])
						near(qh[base+nope+c], qa*cs-qb*sn)
						near(qh[base+nope+c+half], qb*cs+qa*sn)
						near(kh[base+nope+c], ka*cs-kb*sn)
						near(kh[base+nope+c+half], kb*cs+ka*sn)
					}
				}
			}
			if worst > 1e-6 {
				t.Errorf("rotary %v: the heads are %.3g from the reference", rotary, worst)
			}
		}
	})

	t.Run("split", func(t *testing.T) {
		f, err := lib.Func("emu_mla_split")
		if err != nil {
			t.Fatal(err)
		}
		const rows, rank, rope = 3, 5, 4
		kva := fill(rows * (rank + rope))
		lat, kpe := make([]float32, rows*rank), make([]float32, rows*rope)
		if err := f.Call(0, 0, append(grid(1, 32), kva, lat, kpe, int32(rows), int32(rank), int32(rope))...); err != nil {
			t.Fatal(err)
		}
		for row := 0; row < rows; row++ {
			for c := 0; c < rank+rope; c++ {
				got := lat
				at := row*rank + c
				if c >= rank {
					got, at = kpe, row*rope+c-rank
				}
				if got[at] != kva[row*(rank+rope)+c] {
					t.Fatalf("row %d, column %d: %g, want %g", row, c, got[at], kva[row*(rank+rope)+c])
				}
			}
		}
	})
}

// openMLAEmulation compiles kernels_mla.cu under the CPU emulation with trampolines for ks
// and loads it; it skips the test where clang++ or the library is missing.
func openMLAEmulation(t *testing.T, ks []Kernel) *llvmrt.Library {
	t.Helper()
	return emulatedLibrary(t, map[string]string{
		"kernels_mla.cu":    mlaSource,
		DeviceHeaderName:    deviceHeader,
		"mla_trampolines.h": flashTrampolines(ks),
		"driver.cpp":        "#include \"kernels_mla.cu\"\n#include \"mla_trampolines.h\"\n",
	}, "-O1")
}
