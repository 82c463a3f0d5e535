package main

import (
	"math"
	"strings"
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

// TestBandwidthBound: the shares divide bytes/s by the best weight streaming of the
// repetition, and the heads say what the bound is.
func TestBandwidthBound(t *testing.T) {
	const bytes = 250e6 // 250 MB a token: 100 tokens/s is 25 GB/s
	moec := []float64{90, 80}
	peers := map[string][]float64{"torch a": {45, 50}}
	stream := map[string][]float64{"moec": {30, 25}, "torch a": {28, 40}}
	rows := bandwidthBound("generation, batch 1", bytes, 3, moec, peers, stream)
	want := [][]float64{{22.5 / 30, 20.0 / 40}, {11.25 / 30, 12.5 / 40}, {33.75 / 30, 37.5 / 40}}
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3", len(rows))
	}
	for i, r := range rows {
		for j, w := range want[i] {
			if math.Abs(r.Moec[j]-w) > 1e-12 {
				t.Errorf("row %q repetition %d = %v, want %v", r.Name, j, r.Moec[j], w)
			}
		}
	}
	if !strings.Contains(rows[0].Name, "250.0 MB of weights/token") || !strings.Contains(rows[2].Name, "beyond the memory bandwidth") {
		t.Errorf("heads %q, %q do not name the bytes and the bound", rows[0].Name, rows[2].Name)
	}
}

// TestDecodeBytes: a decoded token of the large model reads, per layer, Q/K/V/O (4·1024²),
// the router (8·1024), two SwiGLU experts (2·3·1024·2048) and two norms, then the final
// norm and the head (256·1024), in float32; not the embedding or the positions.
func TestDecodeBytes(t *testing.T) {
	perLayer := 4*1024*1024 + 8*1024 + 2*3*1024*2048 + 2*1024
	want := 4 * float64(4*perLayer+1024+256*1024)
	if got := decodeBytesPerToken(modelFor(sizeLarge)); got != want {
		t.Fatalf("decodeBytesPerToken(large) = %v, want %v", got, want)
	}
}
