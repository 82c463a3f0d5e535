package main

import (
	"fmt"
	"slices"
	"strings"
)

// strongest is the PyTorch peers' side of one workload, as moebench holds moec against
// several peers: in each repetition the highest of the peers' rates, named by the peer
// whose median rate is highest.
type strongest struct {
	key  string
	peer *torchPeer // the peer with the highest median; nil without peers
	tps  []float64  // per repetition, the highest rate of any peer
}

// strongestPeer picks the strongest of peers on the workload key. A tie in the median
// goes to the earlier peer.
func strongestPeer(peers []*torchPeer, key string) strongest {
	s := strongest{key: key}
	for _, p := range peers {
		vs := p.tps[key]
		if len(vs) == 0 {
			continue
		}
		for i, v := range vs {
			if i == len(s.tps) {
				s.tps = append(s.tps, v)
			} else if v > s.tps[i] {
				s.tps[i] = v
			}
		}
		if s.peer == nil || median(vs) > median(s.peer.tps[key]) {
			s.peer = p
		}
	}
	return s
}

// label names the strongest peer and the setting it ran the workload under.
func (s strongest) label() string {
	return fmt.Sprintf("%s (%s)", s.peer.name(), s.peer.best[s.key])
}

// writeAgainstStrongest writes the table of moec against the strongest peer of each
// workload: moec's fp32 against the peers' fp32, moec's int8 against their
// quantize_dynamic, at batch 1 and 16; with several peers, a row per peer follows each.
func writeAgainstStrongest(w *strings.Builder, peers []*torchPeer, fp32, int8 *variant) {
	multi := len(peers) > 1
	if multi {
		fmt.Fprintln(w, "\nmoec against the strongest PyTorch peer of each workload (in each repetition the fastest peer; named by the best median; a row per peer follows):")
	} else {
		fmt.Fprintln(w, "\nmoec against the PyTorch peer, per workload:")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| workload | moec tokens/s | PyTorch peer (setting) | its tokens/s | moec / peer (median, best) |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, k := range peerKeys {
		v := fp32
		if strings.HasPrefix(k, "int8") {
			v = int8
		}
		ours := v.tps1
		if strings.HasSuffix(k, "_16") {
			ours = v.tps16
		}
		s := strongestPeer(peers, k)
		if s.peer == nil {
			continue
		}
		name := s.label()
		if multi {
			name = "strongest: " + name
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", workloadName(k), cell(ours), name, cell(s.tps), ratioCell(ours, s.tps))
		if !multi {
			continue
		}
		for _, p := range peers {
			if len(p.tps[k]) == 0 {
				continue
			}
			fmt.Fprintf(w, "| ↳ against %s alone | | %s (%s) | %s | %s |\n", p.name(), p.name(), p.best[k], cell(p.tps[k]), ratioCell(ours, p.tps[k]))
		}
	}
}

// ratioCell is ours over theirs, of the medians and of the best repetitions.
func ratioCell(ours, theirs []float64) string {
	return fmt.Sprintf("%.2f×, %.2f×", median(ours)/median(theirs), slices.Max(ours)/slices.Max(theirs))
}
