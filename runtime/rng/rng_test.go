package rng

import (
	"math"
	"testing"
)

func TestKeyDependsOnEveryCoordinate(t *testing.T) {
	base := Key(1, 2, 3, PurposeAttnShare)
	if base != Key(1, 2, 3, PurposeAttnShare) {
		t.Fatal("Key is not deterministic")
	}
	others := []uint64{
		Key(2, 2, 3, PurposeAttnShare),
		Key(1, 3, 3, PurposeAttnShare),
		Key(1, 2, 4, PurposeAttnShare),
		Key(1, 2, 3, PurposeDataOrder),
	}
	for i, k := range others {
		if k == base {
			t.Errorf("changing coordinate %d did not change the key", i)
		}
	}
}

func TestStreamResumesFromItsState(t *testing.T) {
	a := New(Key(7, 0, 0, PurposeSample))
	for i := 0; i < 10; i++ {
		a.Uint64()
	}
	saved := *a
	want := a.Uint64()
	b := saved
	if got := b.Uint64(); got != want {
		t.Fatalf("restored stream gave %d, want %d", got, want)
	}
}

func TestDistributions(t *testing.T) {
	s := New(Key(3, 1, 0, PurposeInit))
	const n = 200000
	var sum, sumSq float64
	hits := 0
	for i := 0; i < n; i++ {
		u := s.Float64()
		if u < 0 || u >= 1 {
			t.Fatalf("Float64 out of range: %v", u)
		}
		if s.Bernoulli(0.25) {
			hits++
		}
		z := s.Normal()
		sum += z
		sumSq += z * z
	}
	mean, variance := sum/n, sumSq/n-(sum/n)*(sum/n)
	if math.Abs(mean) > 0.01 || math.Abs(variance-1) > 0.02 {
		t.Errorf("normal: mean %.4f variance %.4f, want 0 and 1", mean, variance)
	}
	if p := float64(hits) / n; math.Abs(p-0.25) > 0.01 {
		t.Errorf("Bernoulli(0.25) hit rate %.4f", p)
	}
	counts := make([]int, 7)
	for i := 0; i < 70000; i++ {
		counts[s.Intn(7)]++
	}
	for v, c := range counts {
		if c < 9500 || c > 10500 {
			t.Errorf("Intn(7): value %d drawn %d times of 70000", v, c)
		}
	}
}
