package kernels

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// shapeModel is a small routed model with every size the kernels read left to its default.
func shapeModel() *program.Model {
	// A literal on purpose: the test is of the defaults left unset, which the checker fills.
	return &program.Model{
		Name: "shape", Vocab: 64, DModel: 32, Layers: 2, SeqLen: 16,
		Position:  program.Rotary,
		Attention: program.Attention{Heads: 4},
		FFN:       program.FFN{Hidden: 48, Activation: program.SwiGLU},
		MoE: &program.MoE{Experts: 4, TopK: 2, Score: program.Softmax, Router: program.RouteHidden,
			Normalize: true},
	}
}

func TestShapeOfReadsDims(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(*program.Model)
		wantErr string // "" = accepted
		check   func(*testing.T, Shape)
	}{
		{name: "defaults", check: func(t *testing.T, sh Shape) {
			if sh.HeadDim != 8 || sh.Hidden != 48 || sh.Activation != program.SwiGLU || sh.RouterDim != 32 || sh.NormEps != float32(program.DefaultNormEps) {
				t.Errorf("defaults not filled as Dims fills them: %+v", sh)
			}
		}},
		{name: "token router table", change: func(m *program.Model) {
			m.MoE.Router, m.MoE.RouterDim, m.MoE.ExpertHidden, m.MoE.Activation = program.RouteTokenEmbedding, 16, 24, program.GELU
		}, check: func(t *testing.T, sh Shape) {
			if !sh.TokenRoute || sh.RouterDim != 16 || sh.Hidden != 24 || sh.Activation != program.GELU {
				t.Errorf("router table or expert sizes lost: %+v", sh)
			}
		}},
		{name: "dense stage", change: func(m *program.Model) { m.MoE = nil }, check: func(t *testing.T, sh Shape) {
			if sh.Experts != 1 || sh.TopK != 1 || sh.Hidden != 48 || !sh.Normalize {
				t.Errorf("dense stage is not one expert of the FFN's width: %+v", sh)
			}
		}},
		// What the runtime refuses, the kernels refuse: there is one resolution.
		{name: "kv heads do not divide heads", change: func(m *program.Model) { m.Attention.KVHeads = 3 }, wantErr: "kv_heads 3 must divide heads 4"},
		{name: "groups do not divide experts", change: func(m *program.Model) { m.MoE.Groups, m.MoE.TopKGroups = 3, 1 }, wantErr: "groups 3 must divide experts 4"},
		// Validate's own messages stay first.
		{name: "odd head dim", change: func(m *program.Model) { m.Attention.HeadDim = 7 }, wantErr: "rotary needs an even head_dim"},
		{name: "top_k above experts", change: func(m *program.Model) { m.MoE.TopK = 5 }, wantErr: "top_k 5 > experts 4"},
		{name: "sigmoid router", change: func(m *program.Model) { m.MoE.Score = program.Sigmoid }, check: func(t *testing.T, sh Shape) {
			if sh.Score != program.Sigmoid {
				t.Errorf("score %q, want sigmoid", sh.Score)
			}
		}},
		{name: "unknown router score", change: func(m *program.Model) { m.MoE.Score = "sparsemax" }, wantErr: "unknown router score"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := shapeModel()
			if tc.change != nil {
				tc.change(m)
			}
			sh, err := ShapeOf(m)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, sh)
			}
		})
	}
}
