package train

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// auxFreeProgram trains a tiny DeepSeek-V3-style model (latent attention, sigmoid routing
// within groups on scores plus the selection bias) from scratch for 8 steps.
func auxFreeProgram() *program.Program {
	p := tinyProgram()
	m := p.Models["tiny"]
	m.Attention = program.Attention{Heads: 2, KVHeads: 2, HeadDim: 16, ShareWeights: 1, ShareKV: 1, MLA: true,
		QLoraRank: 12, KVLoraRank: 8, QKNopeHeadDim: 8, QKRopeHeadDim: 4, VHeadDim: 8}
	e := m.MoE
	e.Score, e.Normalize, e.TopK, e.Groups, e.TopKGroups, e.AuxFreeBias, e.RoutedScale = program.Sigmoid, true, 2, 2, 1, 0.01, 2.5
	tr := p.Trains["tiny"]
	tr.Stages = []*program.Stage{{Name: "moe", Experts: 4, Steps: 8}}
	return p
}

// TestAuxFreeBiasTrainsAndResumes: in a run of the hand-written engine the selection bias
// of every MoE layer moves after each step by aux_free_bias·sign(mean load − load_e) of
// that step's expert loads (the DeepSeek-V3 report's update, replayed here from the log),
// it is saved with the weights, and a run stopped at its first checkpoint and resumed ends
// with the same bias, weights and log as one that was not.
func TestAuxFreeBiasTrainsAndResumes(t *testing.T) {
	root := t.TempDir()
	ref, err := Run(context.Background(), Options{Program: auxFreeProgram(), StageName: "moe", OutDir: filepath.Join(root, "ref")})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ReadLog(ref.LogPath)
	if err != nil || len(recs) != 8 {
		t.Fatalf("log: %d records, %v", len(recs), err)
	}
	final := finalWeightsOf(t, ref.Checkpoint)
	const rate = 0.01
	moved := false
	for l := 0; l < 2; l++ {
		want := make([]float64, 4)
		for _, r := range recs {
			load := r.ExpertTokens[l]
			mean := float64(load[0]+load[1]+load[2]+load[3]) / 4
			for e, v := range load {
				switch {
				case float64(v) < mean:
					want[e] += rate
				case float64(v) > mean:
					want[e] -= rate
				}
			}
		}
		got := final[fmt.Sprintf("model.layers.%d.block_sparse_moe.gate.e_score_correction_bias", l)]
		if len(got) != 4 {
			t.Fatalf("layer %d: the checkpoint holds no selection bias (%v)", l, got)
		}
		for e := range want {
			if math.Abs(float64(got[e])-want[e]) > 1e-6 {
				t.Errorf("layer %d expert %d: bias %v, the replayed update %v", l, e, got[e], want[e])
			}
			moved = moved || got[e] != 0
		}
	}
	if !moved {
		t.Error("no selection bias moved")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := false
	opt := Options{Program: auxFreeProgram(), StageName: "moe", OutDir: filepath.Join(root, "stopped"),
		CheckpointHook: func(point string) {
			if point == "renamed" && !stopped {
				stopped = true
				cancel()
			}
		}}
	part, err := Run(ctx, opt)
	if err == nil || !part.Stopped || part.Steps >= 8 {
		t.Fatalf("stopped run: %+v, %v", part, err)
	}
	resumed, err := Run(context.Background(), Options{Resume: part.Dir})
	if err != nil {
		t.Fatal(err)
	}
	again, err := ReadLog(resumed.LogPath)
	if err != nil || len(again) != len(recs) {
		t.Fatalf("resumed log: %d records, %v", len(again), err)
	}
	for i := range recs {
		if again[i].Loss != recs[i].Loss {
			t.Errorf("step %d: loss %v after the resume, %v without", i+1, again[i].Loss, recs[i].Loss)
		}
	}
	got := finalWeightsOf(t, resumed.Checkpoint)
	for name, w := range final {
		for j := range w {
			if got[name][j] != w[j] {
				t.Fatalf("%s[%d] = %v after the resume, %v without", name, j, got[name][j], w[j])
			}
		}
	}
}
