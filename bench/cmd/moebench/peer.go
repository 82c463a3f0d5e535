package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"slices"
	"strings"
)

// peerImpls are the formulations of the MoE layer bench/peer/moe_peer.py offers.
func peerImpls() []string { return []string{"stacked", "modules", "sliced", "bmm"} }

// peerModes are the workloads whose formulation tuning picks separately.
func peerModes() []string { return []string{"train", "train-bf16", "forward", "gen1", "gen16"} }

// peer is one PyTorch installation measured against moec: an interpreter, the torch it
// imports, and what tuning chose for it.
type peer struct {
	Python, Torch, Backend string
	// Setting is the thread setting tuning kept.
	Setting torchSetting
	// Impl is the formulation of the MoE layer kept per workload (peerModes).
	Impl map[string]string
}

// Name is how tables and logs name the peer.
func (p *peer) Name() string { return "torch " + p.Torch }

// newPeer asks python which torch it imports and what its products run on.
func newPeer(python, script string) (*peer, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command(python, script, "info")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s info: %w\n%s", python, script, err, lastLines(errb.String(), 3))
	}
	var r result
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &r); err != nil {
		return nil, fmt.Errorf("%s %s info printed %q: %w", python, script, out.String(), err)
	}
	return &peer{Python: python, Torch: r.Torch, Backend: r.Backend, Setting: torchSettings(runtime.GOMAXPROCS(0))[0],
		Impl: map[string]string{}}, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// implFor is the formulation p measures mode with ("" for modes without an MoE layer).
func (p *peer) implFor(mode string) string { return p.Impl[mode] }

// tune picks p's thread setting (by the training step) and then, under it, the fastest
// formulation of the MoE layer for every workload, each from one short run.
func (d *driver) tune(p *peer, coretype string, stdout io.Writer) error {
	cands := torchSettings(runtime.GOMAXPROCS(0))
	impls := strings.Split(d.o.impls, ",")
	p.Setting = cands[0]
	for _, mode := range peerModes() {
		p.Impl[mode] = impls[0]
	}
	if !d.o.tune {
		return nil
	}
	threadImpl := impls[0]
	if slices.Contains(impls, "modules") {
		threadImpl = "modules" // the independent implementation
	}
	fmt.Fprintf(stdout, "PyTorch %s thread tuning (training step, formulation %s, one run each):\n\n", p.Torch, threadImpl)
	bestTPS := 0.0
	for _, c := range cands {
		m, err := d.child(job{mode: "train", coretype: coretype, impl: threadImpl, p: p, setting: &c, seconds: d.o.seconds / 2})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "- %s: %.0f tokens/s\n", c, m.Result.TokensPerS)
		if m.Result.TokensPerS > bestTPS {
			p.Setting, bestTPS = c, m.Result.TokensPerS
		}
	}
	fmt.Fprintf(stdout, "\nchosen: %s\n\n", p.Setting)
	fmt.Fprintf(stdout, "PyTorch %s formulation tuning (tokens/s, one short run each):\n\n", p.Torch)
	fmt.Fprintf(stdout, "| formulation | %s |\n|---|%s\n", strings.Join(peerModes(), " | "), strings.Repeat("---|", len(peerModes())))
	best := map[string]float64{}
	for _, impl := range impls {
		m, err := d.child(job{mode: "tune", coretype: coretype, impl: impl, p: p, seconds: d.o.seconds})
		if err != nil {
			return err
		}
		var cells []string
		for _, mode := range peerModes() {
			v := m.Result.Rates[mode]
			cells = append(cells, fmtNum(v))
			if v > best[mode] {
				best[mode], p.Impl[mode] = v, impl
			}
		}
		fmt.Fprintf(stdout, "| %s | %s |\n", impl, strings.Join(cells, " | "))
	}
	var kept []string
	for _, mode := range peerModes() {
		kept = append(kept, mode+" "+p.Impl[mode])
	}
	fmt.Fprintf(stdout, "\nkept: %s\n\n", strings.Join(kept, ", "))
	return nil
}
