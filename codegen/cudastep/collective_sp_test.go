package cudastep

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/golden"
)

// TestSequenceParallelCollectives: under tp 2 with sequence parallelism (dense layers: the
// MoE kernels do not lower tp yet), every all_gather along the tokens is one ncclAllGather of the rank's rows
// (its elements) into the whole value on the tp pair's communicator, every reduce_scatter
// one ncclReduceScatter of the whole partial sums into the rank's rows, every seq_slice a
// copy (or sum) from the rank's rows at tp·n, and the host program names them.
// testdata/collective_tp2sp.txtar lists rank 1's sequence-parallel NCCL calls and the
// norms' tp sum (go test -update rewrites it).
func TestSequenceParallelCollectives(t *testing.T) {
	var listing strings.Builder
	m := tinyStage(t, 2, 1)
	m.Attention.TalkingHeads = false // tensor parallelism splits the heads
	l := step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true}
	progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, l)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range progs {
		low, err := Lower(p, m)
		if err != nil {
			t.Fatalf("rank %d: %v", p.Rank, err)
		}
		if len(low.Comms) != 1 || len(low.Comms[0].Ranks) != 2 || low.Comms[0].Index != p.Coord.TP {
			t.Fatalf("rank %d: communicators %v, want the tp pair with the rank at its tp place", p.Rank, low.Comms)
		}
		host, err := HostProgram(low)
		if err != nil {
			t.Fatal(err)
		}
		counts := map[string]int{}
		for i, ol := range low.Ops {
			op := &p.Ops[i]
			if op.Kind == step.OpSeqSlice {
				counts["seq_slice"]++
				if len(ol.Launches) != 1 || ol.Launches[0].Args[1].Offset != int64(p.Coord.TP)*p.Buffers[op.Out[0]].Elements() {
					t.Errorf("rank %d: seq_slice op %d lowers to %+v", p.Rank, i, ol.Launches)
				}
				continue
			}
			if !op.Sequence() && !(op.Kind == step.OpAllReduce && op.Phase == step.Reduce) {
				continue
			}
			c := ol.Collective
			if c == nil || len(c.Calls) == 0 {
				t.Fatalf("rank %d: op %d (%s %s) has no NCCL calls", p.Rank, i, op.Kind, op.Attr)
			}
			in, out := p.Buffers[op.In[0]], p.Buffers[op.Out[0]]
			for _, call := range c.Calls {
				counts[call.Func]++
				switch {
				case op.Kind == step.OpAllGather && (call.Func != "ncclAllGather" || call.Count != in.Elements() || call.Send != in.Offset || call.Recv != out.Offset):
					t.Errorf("rank %d: all_gather op %d of %s into %s lowers to %+v", p.Rank, i, in.Name, out.Name, call)
				case op.Kind == step.OpReduceScatter && (call.Func != "ncclReduceScatter" || call.Count != out.Elements() || call.Send != in.Offset || call.Recv != out.Offset):
					t.Errorf("rank %d: reduce_scatter op %d of %s into %s lowers to %+v", p.Rank, i, in.Name, out.Name, call)
				}
				if p.Rank == 1 {
					fmt.Fprintf(&listing, "op %d (%s %s over %s): %s, %d floats: %s\n",
						i, op.Phase, op.Kind, op.Group, call.Func, call.Count, call.Description)
				}
			}
		}
		for _, f := range []string{"ncclAllGather", "ncclReduceScatter", "ncclAllReduce"} {
			if counts[f] == 0 {
				t.Errorf("rank %d: no %s among the sequence-parallel calls %v", p.Rank, f, counts)
			}
			if strings.Count(host, f+"(") < counts[f] {
				t.Errorf("rank %d: the host program calls %s %d times, the lowering %d", p.Rank, f, strings.Count(host, f+"("), counts[f])
			}
		}
	}
	golden.Archive(t, "testdata/collective_tp2sp.txtar", &txtar.Archive{
		Comment: []byte("hunyuan_tiny's dense stage cut to two layers, without talking heads, on\ntp 2 with sequence parallelism: rank 1's sequence-parallel NCCL calls and the tp sums of the\nreduce phase, op by op.\nRegenerate with go test ./codegen/cudastep -run TestSequenceParallelCollectives -update.\n"),
		Files:   []txtar.File{{Name: "calls", Data: []byte(listing.String())}},
	}, *update)
}

// TestSequenceParallelSliceLatentAttention: deepseek_tiny's first (dense, latent-attention)
// layer under tp 2 with sequence parallelism gathers the normalised stream whole before
// its projections; that gather's backward is a seq_slice, which lowers on each rank to one
// dense_copy (or dense_accumulate) from the rank's rows of the whole gradient, at
// tp · its elements.
func TestSequenceParallelSliceLatentAttention(t *testing.T) {
	src, err := os.ReadFile("../../examples/deepseek_tiny.moe")
	if err != nil {
		t.Fatal(err)
	}
	prog, _, ds := check.Load("deepseek_tiny.moe", func(string) ([]byte, error) { return src, nil })
	if ds.HasErrors() {
		t.Fatalf("%v", ds)
	}
	m := program.StageModel(prog.Models["deepseek_tiny"], &program.Stage{Experts: 8})
	m.Layers = 1 // first_dense = 1: the dense latent-attention layer
	progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range progs {
		low, err := Lower(p, m)
		if err != nil {
			t.Fatalf("rank %d: %v", p.Rank, err)
		}
		slices := 0
		for i, ol := range low.Ops {
			op := &p.Ops[i]
			if op.Kind != step.OpSeqSlice {
				continue
			}
			slices++
			n := p.Buffers[op.Out[0]].Elements()
			want := "dense_copy"
			if op.Accumulates(0) {
				want = "dense_accumulate"
			}
			if len(ol.Launches) != 1 || ol.Launches[0].Kernel != want {
				t.Fatalf("rank %d: seq_slice op %d lowers to %+v, want one %s", p.Rank, i, ol.Launches, want)
			}
			args := ol.Launches[0].Args
			if args[0].Buf != op.Out[0] || args[1].Buf != op.In[0] || args[1].Offset != int64(p.Coord.TP)*n || args[2].Int != n {
				t.Errorf("rank %d: seq_slice op %d of %d values copies %+v", p.Rank, i, n, args)
			}
		}
		if slices == 0 {
			t.Errorf("rank %d: no seq_slice in the program", p.Rank)
		}
	}
}
