package compress_test

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/compress"
	"github.com/moec-dev/moec/runtime/generate"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/quant"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/serve"
	"github.com/moec-dev/moec/runtime/train"
)

func tinyProgram(t *testing.T) *program.Program {
	t.Helper()
	prog, _, diags := check.Load("testdata/tiny.moe", os.ReadFile)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return prog
}

func tinyModel(t *testing.T) *program.Model { return tinyProgram(t).Models["tiny"] }

// TestCountedMatchesWritten: the weight bytes the checker counts for a compress block are
// those of the checkpoint moec compress writes from it, and of the model loaded from that.
func TestCountedMatchesWritten(t *testing.T) {
	prog := tinyProgram(t)
	block := prog.Compresses["tiny"]
	src, _ := trained(t, prog.Models["tiny"])
	opt := compress.OptionsOf(block)
	opt.Calibration = []byte("abababab cdcdcdcd ")
	out := filepath.Join(t.TempDir(), "c")
	man, err := compress.Compress(src, out, opt)
	if err != nil {
		t.Fatal(err)
	}
	m, _, _, err := compress.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if block.Bytes == 0 || block.Bytes != man.WeightBytes || block.Bytes != m.WeightBytes() || block.FP32Bytes != man.SourceWeightBytes {
		t.Errorf("counted %d of %d bytes; written %d of %d, loaded %d", block.Bytes, block.FP32Bytes, man.WeightBytes, man.SourceWeightBytes, m.WeightBytes())
	}
	if man.Pruning == nil || man.Pruning.Keep != 8 || man.Schemes["experts"] != (compress.Kind{Scheme: compress.Int4, Group: 32}) {
		t.Errorf("compressed as %+v, %+v", man.Schemes, man.Pruning)
	}
}

// trained saves a randomly initialised model of cfg (weights scaled up so routing is
// decisive) as a checkpoint and returns its directory and the model.
func trained(t *testing.T, cfg *program.Model) (string, *nn.Model) {
	t.Helper()
	m, err := nn.New(cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, p := range m.Params() {
		ts = append(ts, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: p.W})
	}
	c := &checkpoint.Checkpoint{Manifest: checkpoint.Manifest{Train: "tiny", Stage: "only", Step: 1, TotalSteps: 1, Final: true, Model: cfg, Seed: 7}, Model: ts}
	dir, err := (checkpoint.Writer{}).Save(t.TempDir(), c)
	if err != nil {
		t.Fatal(err)
	}
	return dir, m
}

func decode(t *testing.T, m *nn.Model, toks []int32) [][]float32 {
	t.Helper()
	dec := m.NewDecoder(1, len(toks))
	var out [][]float32
	for _, tok := range toks {
		l, err := dec.Step([]int32{tok})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, slices.Clone(l))
	}
	return out
}

// TestRoundTrip compresses (int8 dense, int4 experts in groups of 32, int8 embedding and
// head), loads the result with the quantised matrices as stored, decodes close to the
// float32 model, generates through runtime/generate, and records what was done.
func TestRoundTrip(t *testing.T) {
	cfg := tinyModel(t)
	src, full := trained(t, cfg)
	out := filepath.Join(t.TempDir(), "int4")
	man, err := compress.Compress(src, out, compress.Options{Experts: compress.Int4, Dense: compress.Int8, Embed: compress.Int8, Head: compress.Int8, Group: 32})
	if err != nil {
		t.Fatal(err)
	}
	m, cm, got, err := compress.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Quantized() || cm.Model.MoE.Experts != 16 || got.Source != src || got.SourceModelSHA256 == "" || len(got.Quantized) != len(man.Quantized) {
		t.Fatalf("loaded %v / %+v", m.Quantized(), got)
	}
	for _, r := range got.Quantized {
		want := map[string]int{"experts": 4, "dense": 8, "embed": 8, "head": 8}[r.Kind]
		if r.Bits != want {
			t.Errorf("%s (%s) stored as int%d, want int%d", r.Name, r.Kind, r.Bits, want)
		}
	}
	// The float32 weights of quantised matrices are gone: the model holds about a
	// quarter of the bytes.
	if w, f := m.WeightBytes(), full.WeightBytes(); w*10 > f*3 {
		t.Errorf("compressed model holds %d weight bytes, float32 %d", w, f)
	}
	toks := []int32{10, 200, 33, 7, 99, 5}
	ref, q := decode(t, full, toks), decode(t, m, toks)
	for i := range ref {
		var diff, mag float64
		for j := range ref[i] {
			diff = math.Max(diff, math.Abs(float64(ref[i][j]-q[i][j])))
			mag = math.Max(mag, math.Abs(float64(ref[i][j])))
		}
		if diff > 0.1*mag || diff == 0 {
			t.Errorf("position %d: logits off by %g (largest %g)", i, diff, mag)
		}
	}
	// The layout on disk: I8/U8 values with F32 scales.
	b, err := os.ReadFile(filepath.Join(out, checkpoint.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := safetensors.DecodeRaw(b)
	if err != nil {
		t.Fatal(err)
	}
	dtypes := map[string]string{}
	for _, r := range raw {
		dtypes[r.Name] = r.DType
	}
	name := "model.layers.0.block_sparse_moe.experts.3.w2.weight"
	if dtypes[name] != "U8" || dtypes[name+compress.ScaleSuffix] != "F32" || dtypes["model.layers.0.self_attn.q_proj.weight"] != "I8" || dtypes["model.layers.0.block_sparse_moe.gate.weight"] != "F32" {
		t.Errorf("dtypes: %v", dtypes)
	}
	var text bytes.Buffer
	if err := generate.Run(context.Background(), generate.Options{Checkpoint: out, Prompt: "ab", MaxTokens: 5, Seed: 1}, &text); err != nil {
		t.Fatal(err)
	}
	if text.Len() != 5 {
		t.Errorf("generated %q", text.String())
	}
	if _, _, err := train.LoadNet(out, nil); err != nil {
		t.Fatal(err)
	}
	if sm, name, err := serve.Load(out); err != nil || !sm.Quantized() || name != "tiny/only" {
		t.Fatalf("serve.Load: %v, %q, %v", sm != nil && sm.Quantized(), name, err)
	}
	// A compressed checkpoint does not train or grow.
	if _, err := checkpoint.Load(out, false); diag.CodeOf(err) != diag.CodeCheckpointMismatch {
		t.Errorf("checkpoint.Load of a compressed checkpoint: %v", err)
	}
	if err := generate.Run(context.Background(), generate.Options{Checkpoint: out, MaxTokens: 1, StepPrograms: true}, &text); diag.CodeOf(err) != diag.CodeUnsupportedFeature {
		t.Errorf("step programs on a compressed checkpoint: %v", err)
	}
}

// TestRefusals: each bad request is a coded error, and nothing is written.
func TestRefusals(t *testing.T) {
	cfg := tinyModel(t)
	src, _ := trained(t, cfg)
	done := filepath.Join(t.TempDir(), "done")
	if _, err := compress.Compress(src, done, compress.Options{Experts: compress.Int8}); err != nil {
		t.Fatal(err)
	}
	calib := bytes.Repeat([]byte("the quick brown fox "), 4)
	for _, c := range []struct {
		name string
		src  string
		opt  compress.Options
		code diag.Code
	}{
		{"already compressed", done, compress.Options{Experts: compress.Int4}, diag.CodeAlreadyCompressed},
		{"group does not divide", src, compress.Options{Experts: compress.Int4, Group: 96}, diag.CodeBadQuantGroup},
		{"group not a multiple of 32", src, compress.Options{Dense: compress.Int4, Group: 48}, diag.CodeBadQuantGroup},
		{"more experts than exist", src, compress.Options{KeepExperts: 17, Calibration: calib}, diag.CodeBadPrune},
		{"fewer than top_k", src, compress.Options{KeepExperts: 1, Calibration: calib}, diag.CodeBadPrune},
		{"unknown scheme", src, compress.Options{Head: "int3"}, diag.CodeBadRunOption},
		{"unknown ranking", src, compress.Options{KeepExperts: 4, PruneBy: "luck", Calibration: calib}, diag.CodeBadRunOption},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			_, err := compress.Compress(c.src, out, c.opt)
			if diag.CodeOf(err) != c.code {
				t.Fatalf("got %v, want %s", err, c.code)
			}
			if _, statErr := os.Stat(out); statErr == nil {
				t.Errorf("%s written despite the refusal", out)
			}
		})
	}
	if _, err := compress.Compress(src, done, compress.Options{}); diag.CodeOf(err) != diag.CodeOutputExists {
		t.Errorf("compressing into a full folder: %v", err)
	}
	// A flipped byte in the weights fails the manifest's hash.
	path := filepath.Join(done, checkpoint.ModelFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := compress.Load(done); diag.CodeOf(err) != diag.CodeCorruptCheckpoint {
		t.Errorf("loading a corrupt compressed checkpoint: %v", err)
	}
}

// TestPrunedEqualsFull: experts chosen over a calibration text that uses at most half of
// them; the pruned model's logits on that text equal the full model's, its router has
// lost the pruned rows.
func TestPrunedEqualsFull(t *testing.T) {
	for _, by := range []string{compress.PruneByFrequency, compress.PruneByGateMass} {
		t.Run(by, func(t *testing.T) { testPrunedEqualsFull(t, by) })
	}
}

func testPrunedEqualsFull(t *testing.T, by string) {
	cfg := tinyModel(t)
	src, full := trained(t, cfg)
	calib := []byte("abababab ") // seq_len + 1 tokens: one window, few distinct states
	out := filepath.Join(t.TempDir(), "pruned")
	man, err := compress.Compress(src, out, compress.Options{KeepExperts: 8, PruneBy: by, Calibration: calib, CalibrationName: "ab"})
	if err != nil {
		t.Fatal(err)
	}
	p := man.Pruning
	if p == nil || p.Keep != 8 || len(p.Layers) != 2 || p.CalibrationTokens != 8 || p.By != by {
		t.Fatalf("pruning record %+v", p)
	}
	for _, l := range p.Layers {
		for e, n := range l.Counts {
			if (n > 0) != (l.GateMass[e] > 0) {
				t.Fatalf("layer %d expert %d: %d assignments but gate mass %g", l.Layer, e, n, l.GateMass[e])
			}
		}
	}
	for _, l := range p.Layers {
		used := 0
		for _, n := range l.Counts {
			if n > 0 {
				used++
			}
		}
		if used > 8 || used < 3 {
			t.Fatalf("layer %d routes the text to %d experts; the test needs 3 to 8", l.Layer, used)
		}
		for e, n := range l.Counts {
			if n > 0 && !slices.Contains(l.Kept, e) {
				t.Fatalf("layer %d: expert %d routed %d times but pruned", l.Layer, e, n)
			}
		}
	}
	m, cm, _, err := compress.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Model.MoE.Experts != 8 {
		t.Fatalf("pruned config has %d experts", cm.Model.MoE.Experts)
	}
	for _, prm := range m.Params() {
		if prm.Name == "model.layers.0.block_sparse_moe.gate.weight" && prm.Shape[0] != 8 {
			t.Errorf("router shape %v", prm.Shape)
		}
	}
	toks := make([]int32, 8)
	for i, b := range calib[:8] {
		toks[i] = int32(b)
	}
	ref, got := decode(t, full, toks), decode(t, m, toks)
	for i := range ref {
		for j := range ref[i] {
			if d := math.Abs(float64(ref[i][j] - got[i][j])); d > 1e-5*(1+math.Abs(float64(ref[i][j]))) {
				t.Fatalf("position %d logit %d: pruned %g, full %g", i, j, got[i][j], ref[i][j])
			}
		}
	}
}

// TestQuantizedNoFloatWeights: a loaded compressed model hands out no float32 weights for
// its quantised matrices and refuses to train.
func TestQuantizedNoFloatWeights(t *testing.T) {
	cfg := tinyModel(t)
	src, _ := trained(t, cfg)
	out := filepath.Join(t.TempDir(), "q")
	if _, err := compress.Compress(src, out, compress.Options{Experts: compress.Int8, Dense: compress.Int8}); err != nil {
		t.Fatal(err)
	}
	m, _, man, err := compress.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	quantized := map[string]bool{}
	for _, r := range man.Quantized {
		quantized[r.Name] = true
	}
	for _, p := range m.Params() {
		if quantized[p.Name] != (p.W == nil) {
			t.Errorf("%s: quantised %v, float32 weights held %v", p.Name, quantized[p.Name], p.W != nil)
		}
	}
	toks := make([]int32, 9)
	if _, err := m.ForwardBackward(nn.Batch{B: 1, T: 8, Tokens: toks}, nn.StepOptions{}); err != nn.ErrQuantized {
		t.Errorf("ForwardBackward: %v", err)
	}
	_ = quant.ISA()
}
