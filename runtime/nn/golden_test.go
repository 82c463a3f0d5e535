package nn

import (
	"bytes"
	"flag"
	"fmt"
	"path/filepath"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/golden"
)

var update = flag.Bool("update", false, "rewrite testdata/params.txtar")

// TestParamsGolden pins the parameter names, shapes and order: they are the checkpoint
// contract with the trainer (and with anyone loading the safetensors files).
func TestParamsGolden(t *testing.T) {
	configs := []struct {
		name string
		mk   func() *program.Model
	}{
		{"dense", tinyDense},
		{"moe", func() *program.Model {
			m := tinyMoE()
			m.Layers, m.MoE.Every, m.MoE.SharedExperts = 2, 2, 1
			m.Attention.ShareKV = 2
			m.Attention.TalkingHeads, m.Attention.QKNorm, m.Attention.Sinks = true, true, true
			return m
		}},
		{"sandwich_norm", func() *program.Model {
			m := tinyDense()
			m.Layers, m.NormPlacement, m.Norm = 1, program.SandwichNorm, program.LayerNorm
			return m
		}},
		{"post_norm", func() *program.Model {
			m := tinyDense()
			m.Layers, m.NormPlacement, m.FinalNorm = 1, program.PostNorm, false
			return m
		}},
		{"hunyuan_style", func() *program.Model {
			m := tinyMoE()
			m.Norm, m.Position, m.MaxPosition, m.TieEmbeddings = program.LayerNorm, program.Learned, 8, true
			m.FFN.Activation, m.MoE.Activation, m.MoE.TopK = program.GELU, program.GELU, 1
			m.MoE.Router, m.MoE.RouterDim, m.MoE.RouterBias = program.RouteTokenEmbedding, 4, true
			m.Attention.BiasQKV, m.Attention.BiasOut = true, true
			return m
		}},
	}
	var got txtar.Archive
	got.Comment = []byte("Parameter names and shapes, in Params() order. Rewrite with go test ./runtime/nn -run ParamsGolden -update.\n")
	for _, c := range configs {
		m, err := New(c.mk(), 1)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		for _, p := range m.Params() {
			fmt.Fprintf(&buf, "%s %v\n", p.Name, p.Shape)
		}
		got.Files = append(got.Files, txtar.File{Name: c.name, Data: buf.Bytes()})
	}
	golden.Archive(t, filepath.Join("testdata", "params.txtar"), &got, *update)
}
