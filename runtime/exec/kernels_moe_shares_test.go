package exec

import (
	"sync"
	"testing"
)

// TestEachExpertShareCoversEveryUnitOnce: every unit of every expert is in exactly one
// band, an expert's first band starts at 0, an empty expert gets one [0, 0) band, and the
// shares' costs are equal to within one unit's.
func TestEachExpertShareCoversEveryUnitOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sizes []int
		cost  func(ex int) int
	}{
		{"even", []int{512, 512, 512, 512, 512, 512, 512, 512}, func(int) int { return 1 << 12 }},
		{"skewed", []int{2000, 0, 7, 0, 900, 1, 0, 1188}, func(int) int { return 1 << 12 }},
		{"one expert", []int{4096}, func(int) int { return 1 << 10 }},
		{"weight rows by tokens", []int{256, 256, 0, 256}, func(ex int) int { return []int{10, 3000, 0, 77}[ex] * 256 }},
		{"too small to share", []int{3, 0, 2}, func(int) int { return 8 }},
		{"all empty", []int{0, 0, 0}, func(int) int { return 64 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			seen := make([][]int, len(tc.sizes))
			firsts, empties := make([]int, len(tc.sizes)), make([]int, len(tc.sizes))
			for ex, n := range tc.sizes {
				seen[ex] = make([]int, n)
			}
			eachExpertShare(len(tc.sizes), func(ex int) int { return tc.sizes[ex] }, tc.cost, func(ex, lo, hi int) {
				mu.Lock()
				defer mu.Unlock()
				if lo == 0 {
					firsts[ex]++
				}
				if lo == hi {
					empties[ex]++
				}
				for u := lo; u < hi; u++ {
					seen[ex][u]++
				}
			})
			for ex, n := range tc.sizes {
				for u, c := range seen[ex] {
					if c != 1 {
						t.Fatalf("expert %d unit %d computed %d times", ex, u, c)
					}
				}
				if firsts[ex] != 1 {
					t.Errorf("expert %d (size %d): %d bands start at 0, want 1", ex, n, firsts[ex])
				}
				if want := map[bool]int{true: 1, false: 0}[n == 0 || tc.cost(ex) == 0]; empties[ex] != want {
					t.Errorf("expert %d (size %d): %d empty bands, want %d", ex, n, empties[ex], want)
				}
			}
		})
	}
}
