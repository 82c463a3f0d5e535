package cudastep

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/golden"
)

// TestGroupCommunicators: on dp 2 × tp 2 every collective runs on the communicator of its
// own group's ranks, none over all four: rank r's tp all-reduces (the products', the
// vocabulary-parallel loss's, the norm's) on its tp pair, its gradients' and the norm's dp
// sums on its dp pair, each call naming the rank's place in the group as NCCL's rank.
// testdata/collective_dp2tp2.txtar lists rank 1's communicators (the host program's lines)
// and its NCCL calls (go test -update rewrites it).
func TestGroupCommunicators(t *testing.T) {
	m := tinyStage(t, 2, 1)
	m.Attention.TalkingHeads = false // tensor parallelism splits the heads
	l := step.Layout{DP: 2, EP: 1, TP: 2, PP: 1}
	progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, l)
	if err != nil {
		t.Fatal(err)
	}
	var listing strings.Builder
	var header string
	for _, p := range progs {
		low, err := Lower(p, m)
		if err != nil {
			t.Fatalf("rank %d: %v", p.Rank, err)
		}
		groups := map[string][]int{}
		for _, axis := range []string{"dp", "tp"} {
			if groups[axis], err = members(p, axis); err != nil {
				t.Fatal(err)
			}
		}
		if len(low.Comms) != 2 {
			t.Fatalf("rank %d has %d communicators %v, want its dp and tp pairs", p.Rank, len(low.Comms), low.Comms)
		}
		for i, c := range low.Comms {
			if len(c.Ranks) != 2 || c.Ranks[c.Index] != p.Rank {
				t.Errorf("rank %d: communicator %d over ranks %v places it at %d", p.Rank, i, c.Ranks, c.Index)
			}
			if i > 0 && slices.Compare(low.Comms[i-1].Ranks, c.Ranks) >= 0 {
				t.Errorf("rank %d: communicators %v are not in the order of their ranks", p.Rank, low.Comms)
			}
		}
		seen := map[string]int{}
		for i, ol := range low.Ops {
			c := ol.Collective
			if c == nil || len(c.Calls) == 0 {
				continue
			}
			op := &p.Ops[i]
			want := groups[op.Group]
			seen[op.Group]++
			for _, call := range c.Calls {
				if call.Comm < 0 || call.Comm >= len(low.Comms) || !slices.Equal(low.Comms[call.Comm].Ranks, want) {
					t.Errorf("rank %d: op %d (%s over %s, ranks %v) calls %s on communicator %d", p.Rank, i, op.Kind, op.Group, want, call.Func, call.Comm)
				}
				if p.Rank == 1 {
					red := "sum"
					if call.Max {
						red = "max"
					}
					fmt.Fprintf(&listing, "op %d (%s %s over %s): %s on communicator %d (ranks %v), %d floats, %s: %s\n",
						i, op.Phase, op.Kind, op.Group, call.Func, call.Comm, low.Comms[call.Comm].Ranks, call.Count, red, call.Description)
				}
			}
		}
		if seen["tp"] == 0 || seen["dp"] == 0 {
			t.Errorf("rank %d: collectives by group %v, want some over tp and over dp", p.Rank, seen)
		}
		if p.Rank == 1 {
			host, err := HostProgram(low)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(host, "\n") {
				// The communicators' block, before the prologue's one-rank defaults.
				if !strings.Contains(header, "moec_comm_rank[") && (strings.HasPrefix(line, "#define MOEC_COMMS ") ||
					strings.HasPrefix(line, "// communicator ") || strings.HasPrefix(line, "[[maybe_unused]] static const int moec_comm_")) {
					header += line + "\n"
				}
				if strings.Contains(line, "ncclAllReduce(") && !strings.Contains(line, "s->comms[") {
					t.Errorf("an all_reduce on no group's communicator: %s", line)
				}
			}
		}
	}
	golden.Archive(t, "testdata/collective_dp2tp2.txtar", &txtar.Archive{
		Comment: []byte("hunyuan_tiny's dense stage cut to two layers, without talking heads, on dp 2 × tp 2: rank 1's\ncommunicators (the host program's lines) and its NCCL calls, op by op.\nRegenerate with go test ./codegen/cudastep -run TestGroupCommunicators -update.\n"),
		Files: []txtar.File{
			{Name: "communicators", Data: []byte(header)},
			{Name: "calls", Data: []byte(listing.String())},
		},
	}, *update)
}
