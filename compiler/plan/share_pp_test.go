package plan

import (
	"fmt"
	"slices"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/compiler/step"
)

// sharingModel is a four-layer HunYuan-like model (talking heads, MoE every second layer)
// whose layers reuse the layer below's attention weights with probability 1 − share.
func sharingModel(share float64, seq int) *program.Model { return attentionModel(true, share, seq) }

// attentionModel is sharingModel with talking heads or without.
func attentionModel(talking bool, share float64, seq int) *program.Model {
	return programtest.MustModel("sharing", fmt.Sprintf(`vocab = 64; vocab_pad_to = 1; d_model = 32; layers = 4; seq_len = %d
norm = rmsnorm; norm_placement = pre; final_norm = true; position = rotary
attention { heads = 4; talking_heads = %t; share_weights = %g }
ffn { hidden = 64; activation = gelu }
moe { experts = 4; top_k = 1; expert_hidden = 64; activation = gelu; every = 2; capacity_factor = 1.25 }`, seq, talking, share))
}

// TestSharedWeightsPPMemory: under pipeline parallelism with attention-weight sharing,
// each stage's memory exceeds the same layout's without sharing by exactly the pipeline's
// attention-weight buffers: one for the received gradient of the sent weights on every
// stage but the last, plus, under selective or full recompute, the received weights of
// each in-flight micro-batch (pp − stage of them; one fewer under full recompute with one
// layer per stage) on every stage but the first. Under selective or full recompute the
// activations also grow by the weights each layer keeps for the layer above's rerun
// (sharedWeightsKept): at pp 2 one per in-flight micro-batch (two on stage 0, one on
// stage 1), at pp 4 none (one layer per stage). Four layers keep the score terms equal:
// at pp 2 each stage's two layers count ⌈1 + 0.5⌉ = 2 score layers either way, at pp 4
// one.
func TestSharedWeightsPPMemory(t *testing.T) {
	c := testCluster(t, "a100_80gb", 1, 8)
	on := testEnv(t, sharingModel(0.5, 2048), c)
	off := testEnv(t, sharingModel(1, 2048), c)
	const micro = 2
	// One micro-batch's weights on a rank's heads: bf16 × b × heads/tp × s².
	for _, tc := range []struct {
		pp, tp    int
		recompute program.Recompute
		buffers   []int // by stage
		kept      []int // by stage
	}{
		{2, 1, "none", []int{1, 0}, []int{0, 0}},
		{2, 1, "selective", []int{1, 1}, []int{2, 1}},
		{2, 1, "full", []int{1, 1}, []int{2, 1}},
		{2, 2, "selective", []int{1, 1}, []int{2, 1}},
		{4, 1, "none", []int{1, 1, 1, 0}, []int{0, 0, 0, 0}},
		{4, 1, "selective", []int{1, 1 + 3, 1 + 2, 1}, []int{0, 0, 0, 0}},
		{4, 1, "full", []int{1, 1 + 2, 1 + 1, 0}, []int{0, 0, 0, 0}},
		{4, 2, "none", []int{1, 1, 1, 0}, []int{0, 0, 0, 0}},
	} {
		l := ParallelLayout{DP: 1, EP: 1, EDP: 1, TP: tc.tp, PP: tc.pp, Memory: "zero", ZeRO: 1, Offload: "none",
			MicroBatch: micro, GradAccum: 8, Batch: micro * 8, Recompute: tc.recompute}
		one := 2.0 * micro * float64(4/tc.tp) * 2048 * 2048
		name := fmt.Sprintf("pp %d tp %d %s", tc.pp, tc.tp, tc.recompute)
		withShapes, withoutShapes := on.stageShapes(tc.pp), off.stageShapes(tc.pp)
		if len(withShapes) != tc.pp || len(withoutShapes) != tc.pp {
			t.Fatalf("%s: %d and %d distinct stages, want %d", name, len(withShapes), len(withoutShapes), tc.pp)
		}
		for s, st := range withShapes {
			with, without := on.stageMemory(l, st), off.stageMemory(l, withoutShapes[s])
			want, kept := float64(tc.buffers[s])*one, float64(tc.kept[s])*one
			near(t, fmt.Sprintf("%s stage %d: GPU bytes with sharing − without", name, s), with.gpu.sum()-without.gpu.sum(), want+kept)
			near(t, fmt.Sprintf("%s stage %d: temporary buffers with sharing − without", name, s), with.gpu[compTemp]-without.gpu[compTemp], want)
			near(t, fmt.Sprintf("%s stage %d: activations with sharing − without", name, s), with.gpu[compActivations]-without.gpu[compActivations], kept)
		}
	}
	// One device, or no sharing: no such buffers.
	l := ParallelLayout{DP: 1, EP: 1, EDP: 1, TP: 1, PP: 1, MicroBatch: 1, GradAccum: 8, Batch: 8, Recompute: "selective"}
	if b := on.sharedWeightsPP(l, on.stageShapes(1)[0]); b != 0 {
		t.Errorf("pp 1: %g bytes of pipeline attention weights, want 0", b)
	}
	l.PP = 4
	for _, st := range off.stageShapes(4) {
		if b := off.sharedWeightsPP(l, st); b != 0 {
			t.Errorf("share_weights = 1, stage %d: %g bytes of pipeline attention weights, want 0", st.index, b)
		}
	}
}

// TestSharedWeightsPPMatchesStepProgram: the planner's pipeline attention-weight buffers
// are the bytes the step program's memory plan holds at each rank's device peak in the
// buffers its pipeline receives of attention weights and of their gradients fill (fp32
// programs, so 4-byte activations); without sharing the programs receive none.
func TestSharedWeightsPPMatchesStepProgram(t *testing.T) {
	const seq, micro, micros = 16, 2, 4
	on, off := sharingModel(0.5, seq), sharingModel(1, seq)
	e := testEnv(t, on, testCluster(t, "a100_80gb", 1, 8))
	e.a.ActivationBytes = 4
	for _, pp := range []int{2, 4} {
		for _, rc := range []program.Recompute{"none", "selective", "full"} {
			sl := step.Layout{DP: 1, EP: 1, TP: 1, PP: pp, Recompute: rc}
			b := step.Batch{MicroBatch: micro, SeqLen: seq, Micro: micros}
			progs, err := step.Lower(on, b, sl)
			if err != nil {
				t.Fatalf("pp %d %s: %v", pp, rc, err)
			}
			base, err := step.Lower(off, b, sl)
			if err != nil {
				t.Fatalf("pp %d %s without sharing: %v", pp, rc, err)
			}
			for r, p := range base {
				if n := sharedRecvAtPeak(p); n != 0 {
					t.Errorf("pp %d %s rank %d without sharing: %d bytes of pipeline attention weights at the peak", pp, rc, r, n)
				}
			}
			l := ParallelLayout{DP: 1, EP: 1, EDP: 1, TP: 1, PP: pp, MicroBatch: micro, GradAccum: micros, Batch: micro * micros, Recompute: rc}
			for r, p := range progs {
				s := p.Coord.PP
				st := stageShape{index: s, layers: p.LayerCount, first: s == 0, last: s == pp-1}
				got := sharedRecvAtPeak(p)
				want := e.sharedWeightsPP(l, st)
				if float64(got) != want {
					t.Errorf("pp %d %s rank %d (stage %d): the step program holds %d bytes of pipeline attention weights at its peak, the planner counts %g",
						pp, rc, r, s, got, want)
				}
			}
		}
	}
}

// sharedRecvAtPeak is the bytes of the buffers that p's pipeline receives of attention
// weights or their gradients fill and that are live at p's device peak.
func sharedRecvAtPeak(p *step.Program) int64 {
	var n int64
	seen := map[int]bool{}
	mp := p.Memory
	for _, op := range p.Ops {
		if op.Kind != step.OpRecv || (op.Attr != "attention weights" && op.Attr != "attention weights' gradients") {
			continue
		}
		for _, b := range op.Out {
			lt := mp.Lifetime[b]
			if !seen[b] && lt[0] <= mp.PeakOp && mp.PeakOp <= lt[1] {
				seen[b] = true
				n += p.Buffers[b].Bytes()
			}
		}
	}
	return n
}

// TestSharedWeightsKeptMatchesStepProgram: under selective or full recompute, the
// attention weights sharing keeps from the forward to the backward within a stage are
// what the planner counts (sharedWeightsKept × the micro-batches in flight): when a
// stage's backward begins, the step program holds that many bytes in forward buffers of
// attention-weight shape, the pipeline's receive buffers left out (sharedWeightsPP counts
// those). Without sharing it holds none. fp32 programs, so 4-byte activations.
func TestSharedWeightsKeptMatchesStepProgram(t *testing.T) {
	const seq, micro, micros = 16, 2, 4
	on, off := sharingModel(0.5, seq), sharingModel(1, seq)
	e := testEnv(t, on, testCluster(t, "a100_80gb", 1, 8))
	e.a.ActivationBytes = 4
	for _, pp := range []int{1, 2, 4} {
		for _, rc := range []program.Recompute{"selective", "full"} { // without recompute the score term counts every layer's weights
			sl := step.Layout{DP: 1, EP: 1, TP: 1, PP: pp, Recompute: rc}
			b := step.Batch{MicroBatch: micro, SeqLen: seq, Micro: micros}
			l := ParallelLayout{DP: 1, EP: 1, EDP: 1, TP: 1, PP: pp, MicroBatch: micro, GradAccum: micros, Batch: micro * micros, Recompute: rc}
			for _, model := range []*program.Model{on, off} {
				progs, err := step.Lower(model, b, sl)
				if err != nil {
					t.Fatalf("pp %d %s: %v", pp, rc, err)
				}
				for r, p := range progs {
					s := p.Coord.PP
					st := stageShape{index: s, layers: p.LayerCount, first: s == 0, last: s == pp-1}
					want := 0.0
					if model == on {
						want = e.sharedWeightsKept(l, st) * inFlightMicros(l, st)
					}
					got := weightsLiveAt(p, []int{micro, 4, seq, seq}, func(op step.Op) bool { return op.Recomputed })
					if float64(got) != want {
						t.Errorf("pp %d %s rank %d (stage %d, share_weights %g): the step program keeps %d bytes of attention weights into its first backward, the planner counts %g",
							pp, rc, r, s, model.Attention.RecomputeProbability(), got, want)
					}
				}
			}
		}
	}
}

// weightsLiveAt is the bytes of p's forward activation buffers of the given shape (a
// micro-batch's attention weights) live at p's first op that at selects: the pipeline's
// received buffers and what recompute writes again left out; -1 when no op is selected.
func weightsLiveAt(p *step.Program, shape []int, at func(step.Op) bool) int64 {
	first := slices.IndexFunc(p.Ops, at)
	if first < 0 {
		return -1
	}
	skip := map[int]bool{}
	for _, op := range p.Ops {
		if op.Kind == step.OpRecv || op.Recomputed {
			for _, b := range op.Out {
				skip[b] = true
			}
		}
	}
	var n int64
	for i, buf := range p.Buffers {
		lt := p.Memory.Lifetime[i]
		if !skip[i] && buf.Kind == step.KindActivation && lt[0] <= first && first <= lt[1] && slices.Equal(buf.Shape, shape) {
			n += buf.Bytes()
		}
	}
	return n
}

// TestScoreTensorsMatchStepProgram: without recompute, the attention weights a step
// program keeps into its backward are the planner's score term over its layers
// (scoreTensors [micro_batch, heads, seq, seq] tensors a layer, no dropout masks, fp32):
// one a layer for plain attention, two with sharing (one in the model's first layer),
// three with talking heads.
func TestScoreTensorsMatchStepProgram(t *testing.T) {
	const seq, micro = 16, 2
	for _, tc := range []struct {
		talking bool
		share   float64
		want    float64
	}{
		{false, 1, 1}, {false, 0.5, 2}, {true, 1, 3}, {true, 0.5, 3},
	} {
		m := attentionModel(tc.talking, tc.share, seq)
		e := testEnv(t, m, testCluster(t, "a100_80gb", 1, 8))
		e.a.ActivationBytes, e.a.DropoutMasks = 4, false
		name := fmt.Sprintf("talking heads %t, share_weights %g", tc.talking, tc.share)
		if got := e.scoreTensors(); got != tc.want {
			t.Errorf("%s: the planner counts %g tensors a layer, want %g", name, got, tc.want)
		}
		progs, err := step.Lower(m, step.Batch{MicroBatch: micro, SeqLen: seq, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: "none"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		l := ParallelLayout{DP: 1, EP: 1, EDP: 1, TP: 1, PP: 1, MicroBatch: micro, GradAccum: 1, Batch: micro, Recompute: "none"}
		_, score, _, _ := e.layerActivations(l)
		got := weightsLiveAt(progs[0], []int{micro, 4, seq, seq}, func(op step.Op) bool { return op.Phase == step.Backward })
		if want := e.stageScores(l, e.stageShapes(1)[0], score); float64(got) != want {
			t.Errorf("%s: the step program keeps %d bytes of attention weights into its backward, the planner counts %g", name, got, want)
		}
	}
}
