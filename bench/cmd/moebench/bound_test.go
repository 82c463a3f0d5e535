package main

import (
	"math"
	"testing"
)

// TestProductBound: each share divides useful GFLOP/s by the best sgemm of its repetition,
// whichever side ran it, against the strongest peer of that repetition.
func TestProductBound(t *testing.T) {
	const flops = 10e6 // 10 MFLOP a token: 1000 tokens/s is 10 GFLOP/s
	moec := []float64{12000, 9000}
	peers := map[string][]float64{"torch a": {8000, 3000}, "torch b": {6000, 4000}}
	sgemm := map[string][]float64{"moec": {160, 200}, "torch a": {200, 100}, "torch b": {150, 150}}
	rows := productBound("training step", "sgemm peak", flops, 2, moec, peers, sgemm)
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3", len(rows))
	}
	want := [][]float64{
		{120.0 / 200, 90.0 / 200}, // moec: 120 GFLOP/s against the best peak 200 (torch a's), then 90 against moec's 200
		{80.0 / 200, 40.0 / 200},  // the strongest peer: torch a, then torch b
		{160.0 / 200, 80.0 / 200}, // twice the strongest
	}
	for i, r := range rows {
		if !r.Single || r.Unit != "%" || r.Target != 0 {
			t.Errorf("row %q: want a single %% row without a target", r.Name)
		}
		for j, w := range want[i] {
			if math.Abs(r.Moec[j]-w) > 1e-12 {
				t.Errorf("row %q repetition %d = %v, want %v", r.Name, j, r.Moec[j], w)
			}
		}
	}
	if rows := productBound("x", "sgemm peak", flops, 2, moec, map[string][]float64{}, sgemm); rows != nil {
		t.Errorf("without a peer: %d rows, want none", len(rows))
	}
}

// TestForwardFLOPs: the forward is a third of the training count.
func TestForwardFLOPs(t *testing.T) {
	if f, tr := forwardFLOPsPerToken(benchModel()), trainFLOPsPerToken(benchModel()); f*3 != tr {
		t.Fatalf("forward %v ×3 != train %v", f, tr)
	}
}
