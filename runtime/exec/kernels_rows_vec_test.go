package exec

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestRowKernelsVecAgreeWithGo: the combine, its backward, the permutation's backward and
// the causal softmax's backward on vector lanes against the Go loops' arithmetic: the
// combine and the permutation's backward bit for bit (the same products and sums in the
// same order), the dot products (a gate's gradient, Σ p·dp) within float rounding of a
// double sum, for blocked and packed slots, dropped assignments and widths with a tail.
func TestRowKernelsVecAgreeWithGo(t *testing.T) {
	if !rowsVec(8) {
		t.Skip("no vector row kernels on this build or CPU (they need cgo, amd64 and AVX2)")
	}
	r := rand.New(rand.NewPCG(5, 6))
	fill := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(r.NormFloat64())
		}
		return s
	}
	for _, tc := range []struct {
		name         string
		tokens, K, E int
		slots, D     int // slots per expert block (0: packed)
		dropEvery    int
		acc          bool
	}{
		{"blocked", 40, 2, 4, 30, 64, 7, false},
		{"packed", 33, 3, 5, 0, 21, 0, true},
		{"one slot each", 16, 1, 2, 16, 8, 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.tokens * tc.K
			idx, slot := make([]int32, n), make([]int32, n)
			next := make([]int32, tc.E)
			rows := 0
			for a := range idx {
				ex := int32(r.IntN(tc.E))
				idx[a] = ex
				switch {
				case tc.dropEvery > 0 && a%tc.dropEvery == 3:
					slot[a] = -1
				case tc.slots == 0:
					slot[a] = int32(rows) // packed: the slot is the row
					rows++
				default:
					slot[a] = next[ex]
					next[ex]++
				}
			}
			bufRows := rows
			if tc.slots > 0 {
				bufRows = tc.E * tc.slots
			}
			rowOf := func(a int) int {
				if slot[a] < 0 {
					return -1
				}
				return (int(idx[a])*tc.slots + int(slot[a])) * tc.D
			}
			D, K := tc.D, tc.K
			back, gates, dy := fill(bufRows*D), fill(n), fill(tc.tokens*D)

			// Combine: y[t] = Σ_j g·back[row], in order, from zero.
			y := fill(tc.tokens * D)
			combineVec(back, idx, slot, gates, y, 0, tc.tokens, K, tc.slots, D)
			for tk := 0; tk < tc.tokens; tk++ {
				for i := 0; i < D; i++ {
					var want float32
					for j := 0; j < K; j++ {
						if row := rowOf(tk*K + j); row >= 0 {
							p := gates[tk*K+j] * back[row+i]
							want += p
						}
					}
					if y[tk*D+i] != want {
						t.Fatalf("combine y[%d][%d] = %v, want %v", tk, i, y[tk*D+i], want)
					}
				}
			}

			// CombineBwd: dback = g·dy at every admitted slot; dgates (+)= dy·back.
			dback, dgates := fill(bufRows*D), fill(n)
			before := append([]float32(nil), dgates...)
			combineBwdVec(dy, back, idx, slot, gates, dback, dgates, 0, tc.tokens, K, tc.slots, D, tc.acc)
			for a := 0; a < n; a++ {
				tk, row := a/K, rowOf(a)
				var dot float64
				if row >= 0 {
					for i := 0; i < D; i++ {
						dot += float64(dy[tk*D+i] * back[row+i])
						if got, want := dback[row+i], gates[a]*dy[tk*D+i]; got != want {
							t.Fatalf("combine_bwd dback of assignment %d [%d] = %v, want %v", a, i, got, want)
						}
					}
				}
				want := float32(dot)
				if tc.acc {
					want = before[a] + float32(dot)
				}
				if math.Abs(float64(dgates[a]-want)) > 1e-6*(1+math.Abs(float64(want))) {
					t.Fatalf("combine_bwd dgates[%d] = %v, want %v", a, dgates[a], want)
				}
			}

			// PermuteBwd: dh[t] += Σ_j ds[row], in order.
			ds, dh := fill(bufRows*D), fill(tc.tokens*D)
			want := append([]float32(nil), dh...)
			for a := 0; a < n; a++ {
				if row := rowOf(a); row >= 0 {
					for i := 0; i < D; i++ {
						want[(a/K)*D+i] += ds[row+i]
					}
				}
			}
			permuteBwdVec(ds, idx, slot, dh, 0, tc.tokens, K, tc.slots, D)
			for i := range dh {
				if dh[i] != want[i] {
					t.Fatalf("permute_bwd dh[%d] = %v, want %v", i, dh[i], want[i])
				}
			}
		})
	}
	// The causal softmax's backward, written and added to, at a width with a tail.
	for _, acc := range []bool{false, true} {
		const T, rows = 37, 2 * 37
		p, dp := fill(rows*T), fill(rows*T)
		got, want := fill(rows*T), make([]float32, rows*T)
		copy(want, got)
		softmaxBwdRows(dp, p, want, T, acc, 0, rows)
		softmaxBwdVec(dp, p, got, T, acc, 0, rows)
		for i := range got {
			if math.Abs(float64(got[i]-want[i])) > 1e-5*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("softmax_bwd acc=%v [%d] = %v, Go %v", acc, i, got[i], want[i])
			}
		}
	}
}
