package main

import (
	"slices"
	"strings"
	"testing"
)

// testPeers are two peers as compressbench holds them after measuring: Debian's torch 1.13
// faster in float32, PyPI's 2.x faster in int8 at batch 1, the two trading places between
// repetitions.
func testPeers() []*torchPeer {
	old := &torchPeer{python: "/usr/bin/python3", torch: "1.13.0a0", tps: map[string][]float64{
		"fp32_1": {800, 900, 700}, "fp32_16": {3000, 3500, 3600},
		"int8_1": {400, 600, 300}, "int8_16": {2000, 2100, 2200},
	}, best: map[string]peerSetting{
		"fp32_1": {Threads: 1, Grad: "no_grad"}, "fp32_16": {Threads: 2, Grad: "inference_mode"},
		"int8_1": {Threads: 1, Grad: "inference_mode", QEngine: "qnnpack"}, "int8_16": {Threads: 1, Grad: "no_grad", QEngine: "qnnpack"},
	}}
	cur := &torchPeer{python: ".venv-bench/bin/python", torch: "2.15.0", tps: map[string][]float64{
		"fp32_1": {700, 750, 720}, "fp32_16": {3000, 3500, 3600},
		"int8_1": {500, 550, 520}, "int8_16": {4000, 4100, 4300},
	}, best: map[string]peerSetting{
		"fp32_1": {Threads: 1, Grad: "no_grad"}, "fp32_16": {Threads: 1, Grad: "no_grad"},
		"int8_1": {Threads: 1, Grad: "inference_mode", QEngine: "x86"}, "int8_16": {Threads: 2, Grad: "no_grad", QEngine: "fbgemm"},
	}}
	return []*torchPeer{old, cur}
}

func TestStrongestPeer(t *testing.T) {
	peers := testPeers()
	for _, c := range []struct {
		key   string
		torch string
		tps   []float64
	}{
		{"fp32_1", "1.13.0a0", []float64{800, 900, 720}},     // median 800 against 720
		{"int8_1", "2.15.0", []float64{500, 600, 520}},       // median 520 against 400; 1.13 wins one repetition
		{"int8_16", "2.15.0", []float64{4000, 4100, 4300}},   // 2.x's x86/fbgemm engines
		{"fp32_16", "1.13.0a0", []float64{3000, 3500, 3600}}, // a tie goes to the earlier peer
	} {
		s := strongestPeer(peers, c.key)
		if s.peer == nil || s.peer.torch != c.torch || !slices.Equal(s.tps, c.tps) {
			t.Errorf("%s: strongest %+v, want torch %s with %v", c.key, s, c.torch, c.tps)
		}
	}
	if s := strongestPeer(peers, "int4_1"); s.peer != nil || s.tps != nil {
		t.Errorf("a workload no peer measured: %+v", s)
	}
	if s := strongestPeer(nil, "int8_1"); s.peer != nil {
		t.Errorf("no peers: %+v", s)
	}
	if got, want := strongestPeer(peers, "int8_16").label(), "torch 2.15.0 (2 thread(s), no_grad, fbgemm)"; got != want {
		t.Errorf("label %q, want %q", got, want)
	}
}

func TestAgainstStrongestTable(t *testing.T) {
	fp32 := &variant{name: "fp32", tps1: []float64{12000, 12500, 11000}, tps16: []float64{10000, 11000, 9000}}
	int8 := &variant{name: "int8", tps1: []float64{18000, 19000, 17000}, tps16: []float64{13000, 14000, 12000}}
	var w strings.Builder
	writeAgainstStrongest(&w, testPeers(), fp32, int8)
	got := w.String()
	for _, want := range []string{
		// moec int8 at batch 1, median 18000, against the fastest peer per repetition (median 520).
		"| int8, batch 1 | 18000 (17000-19000) | strongest: torch 2.15.0 (1 thread(s), inference_mode, x86) | 520 (500-600) | 34.62×, 31.67× |",
		"| ↳ against torch 1.13.0a0 alone | | torch 1.13.0a0 (1 thread(s), inference_mode, qnnpack) | 400 (300-600) | 45.00×, 31.67× |",
		"| fp32, batch 1 | 12000 (11000-12500) | strongest: torch 1.13.0a0 (1 thread(s), no_grad) | 800 (720-900) |",
		"| int8, batch 16 | 13000 (12000-14000) | strongest: torch 2.15.0 (2 thread(s), no_grad, fbgemm) |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the table lacks\n%s\ngot\n%s", want, got)
		}
	}
	w.Reset()
	writeAgainstStrongest(&w, testPeers()[:1], fp32, int8)
	if got := w.String(); strings.Contains(got, "↳") || strings.Contains(got, "strongest") ||
		!strings.Contains(got, "| int8, batch 1 | 18000 (17000-19000) | torch 1.13.0a0 (1 thread(s), inference_mode, qnnpack) | 400 (300-600) | 45.00×, 31.67× |") {
		t.Errorf("one peer:\n%s", got)
	}
}
