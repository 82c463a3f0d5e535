package compress

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/atomicfile"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/quant"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/weights"
)

// FormatVersion is the compression manifest format this package writes and reads.
const FormatVersion = 1

// Scheme is how one kind of matrix is stored.
type Scheme string

// The schemes.
const (
	FP32 Scheme = "fp32"
	Int8 Scheme = "int8" // one scale per output channel
	Int4 Scheme = "int4" // one scale per group of Options.Group input columns
)

// Bits is the scheme's bits per value (0 for fp32).
func (s Scheme) Bits() int {
	switch s {
	case Int8:
		return 8
	case Int4:
		return 4
	}
	return 0
}

// ParseScheme reads a scheme as a flag spells it.
func ParseScheme(s string) (Scheme, error) {
	switch Scheme(s) {
	case FP32, Int8, Int4:
		return Scheme(s), nil
	case "":
		return FP32, nil
	}
	return "", fmt.Errorf("%q: want fp32, int8 or int4", s)
}

// Options say what Compress does. The zero value copies the checkpoint unchanged.
type Options struct {
	Experts, Dense, Embed, Head Scheme
	Group                       int // int4's group of input columns: 32, 64 or 128 [128]

	// KeepExperts, when above 0, prunes every MoE layer to that many experts;
	// KeepFraction, when above 0, to that fraction of them (rounded, at least top_k).
	KeepExperts  int
	KeepFraction float64
	// PruneBy ranks the experts: PruneByFrequency (the default: assignments received) or
	// PruneByGateMass (the sum of their combine weights).
	PruneBy string
	// Calibration is the text routing is counted over (bytes are tokens); CalibrationName
	// names it in the manifest. CalibrationWindows bounds the windows of seq_len read [32].
	Calibration        []byte
	CalibrationName    string
	CalibrationWindows int
	// Force replaces a non-empty output directory.
	Force bool
}

// OptionsOf are the options a checked `compress` block gives (its calibration path as
// written: the caller reads the file).
func OptionsOf(c *program.Compress) Options {
	return Options{Experts: Scheme(c.Experts), Dense: Scheme(c.Dense), Embed: Scheme(c.Embed), Head: Scheme(c.Head),
		Group: c.Group, KeepExperts: c.KeepExperts, PruneBy: c.PruneBy, CalibrationName: c.Calibration}
}

// The ways pruning ranks experts over the calibration text.
const (
	PruneByFrequency = "frequency"
	PruneByGateMass  = "gate_mass"
)

// Manifest is compression.json: what was done, and to which checkpoint.
type Manifest struct {
	Format             int              `json:"format"`
	Source             string           `json:"source"`               // the checkpoint directory as given
	SourceModelSHA256  string           `json:"source_model_sha256"`  // of its model.safetensors
	SourceConfigHash   string           `json:"source_config_hash"`   // of its model config
	Schemes            map[string]Kind  `json:"schemes"`              // experts, dense, embed, head
	TiedHead           bool             `json:"tied_head,omitempty"`  // the head is the embedding (quantised as it)
	Quantized          []TensorRecord   `json:"quantized"`            // every quantised matrix
	Pruning            *Pruning         `json:"pruning,omitempty"`    // nil: every expert kept
	WeightBytes        int64            `json:"weight_bytes"`         // the compressed model's weights in memory
	SourceWeightBytes  int64            `json:"source_weight_bytes"`  // the source's, float32
	FileBytes          map[string]int64 `json:"file_bytes,omitempty"` // model.safetensors before and after
	KernelAtCompressed string           `json:"kernel"`               // the integer kernel of the machine that compressed
}

// Kind is one kind of matrix's scheme.
type Kind struct {
	Scheme Scheme `json:"scheme"`
	Group  int    `json:"group,omitempty"` // int4: input columns per scale
}

// TensorRecord is one quantised matrix.
type TensorRecord struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"` // experts, dense, embed or head
	Bits  int    `json:"bits"`
	Group int    `json:"group"` // input columns per scale (the width: per output channel)
	Shape []int  `json:"shape"`
}

// Pruning records the experts kept.
type Pruning struct {
	From              int          `json:"from"` // experts per MoE layer before
	Keep              int          `json:"keep"`
	By                string       `json:"by"` // frequency or gate_mass
	Calibration       string       `json:"calibration"`
	CalibrationSHA256 string       `json:"calibration_sha256"`
	CalibrationTokens int          `json:"calibration_tokens"`
	Layers            []LayerPrune `json:"layers"`
}

// LayerPrune is one MoE layer's choice.
type LayerPrune struct {
	Layer    int       `json:"layer"`
	Kept     []int     `json:"kept"`      // old indices of the kept experts, in their new order
	Counts   []int     `json:"counts"`    // assignments each old expert received over the calibration text
	GateMass []float64 `json:"gate_mass"` // the sum of its combine weights over them
}

// IsCompressed reports whether the checkpoint manifest m is a compressed checkpoint's.
func IsCompressed(m *checkpoint.Manifest) bool {
	for _, f := range m.Files {
		if f.Name == checkpoint.CompressionFile {
			return true
		}
	}
	return false
}

// Compress reads the checkpoint src names (a checkpoint, or a run directory: its newest),
// compresses it as opt says and writes the result to out. It returns the compression
// manifest.
func Compress(src, out string, opt Options) (*Manifest, error) {
	dir, err := weights.ResolveCheckpoint(src)
	if err != nil {
		return nil, err
	}
	sm, err := checkpoint.LoadManifest(dir)
	if err != nil {
		return nil, err
	}
	if IsCompressed(sm) {
		return nil, diag.Runtimef(diag.CodeAlreadyCompressed, "checkpoint %s is already compressed (it has %s); compress the trained checkpoint it came from", dir, checkpoint.CompressionFile)
	}
	if opt.Group == 0 {
		opt.Group = 128
	}
	schemes := map[string]Scheme{"experts": opt.Experts, "dense": opt.Dense, "embed": opt.Embed, "head": opt.Head}
	for k, s := range schemes {
		if s == "" {
			schemes[k] = FP32
		} else if _, err := ParseScheme(string(s)); err != nil {
			return nil, diag.Runtimef(diag.CodeBadRunOption, "--%s %v", k, err)
		}
	}
	c, err := checkpoint.Load(dir, false)
	if err != nil {
		return nil, err
	}
	cfg := c.Manifest.Model
	man := &Manifest{Format: FormatVersion, Source: src, SourceConfigHash: c.Manifest.ConfigHash, Schemes: map[string]Kind{},
		TiedHead: cfg.TieEmbeddings, KernelAtCompressed: quant.ISA()}
	for _, f := range c.Manifest.Files {
		if f.Name == checkpoint.ModelFile {
			man.SourceModelSHA256 = f.SHA256
			man.FileBytes = map[string]int64{"source": f.Size}
		}
	}
	for k, s := range schemes {
		kd := Kind{Scheme: s}
		if s == Int4 {
			kd.Group = opt.Group
		}
		man.Schemes[k] = kd
	}
	tensors := c.Model
	for _, t := range tensors {
		man.SourceWeightBytes += 4 * int64(len(t.Data))
	}
	if opt.KeepExperts > 0 || opt.KeepFraction > 0 {
		if cfg, tensors, man.Pruning, err = prune(cfg, c.Manifest.Seed, tensors, opt); err != nil {
			return nil, err
		}
	}
	layout, err := params.Walk(cfg)
	if err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	byName := make(map[string]safetensors.Tensor, len(tensors))
	for _, t := range tensors {
		byName[t.Name] = t
	}
	var raw []safetensors.RawTensor
	for _, p := range layout {
		t, ok := byName[p.Name]
		if !ok {
			return nil, diag.Runtimef(diag.CodeCheckpointMismatch, "checkpoint %s has no tensor %s that its model needs", dir, p.Name)
		}
		kind := params.QuantKind(p.ID)
		s := schemes[kind]
		if kind == "" || s == FP32 || len(p.Shape) != 2 {
			raw = append(raw, safetensors.RawTensor{Name: p.Name, DType: "F32", Shape: p.Shape, Bytes: f32Bytes(t.Data)})
			man.WeightBytes += 4 * int64(len(t.Data))
			continue
		}
		group := 0
		if s == Int4 {
			group = opt.Group
		}
		if err := quant.CheckScheme(s.Bits(), group, p.Shape[1]); err != nil {
			return nil, diag.RuntimeWrap(diag.CodeBadQuantGroup, err, "cannot quantise %s [%d, %d] (--%s %s --group %d)", p.Name, p.Shape[0], p.Shape[1], kind, s, opt.Group)
		}
		q, err := quant.Quantize(t.Data, p.Shape[0], p.Shape[1], s.Bits(), group)
		if err != nil {
			return nil, fmt.Errorf("compress: %s: %w", p.Name, err)
		}
		packed := []int{q.Out, q.In}
		dtype := "I8"
		if q.Bits == 4 {
			packed, dtype = []int{q.Out, q.In / 2}, "U8"
		}
		raw = append(raw,
			safetensors.RawTensor{Name: p.Name, DType: dtype, Shape: packed, Bytes: q.Data},
			safetensors.RawTensor{Name: p.Name + ScaleSuffix, DType: "F32", Shape: []int{q.Out, q.In / q.Group}, Bytes: f32Bytes(q.Scales)})
		man.Quantized = append(man.Quantized, TensorRecord{Name: p.Name, Kind: kind, Bits: q.Bits, Group: q.Group, Shape: p.Shape})
		man.WeightBytes += q.Bytes()
	}
	model, err := safetensors.EncodeRaw(raw, map[string]string{"format": "moec-compressed"})
	if err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	if man.FileBytes != nil {
		man.FileBytes["compressed"] = int64(len(model))
	}
	if err := write(out, dir, &c.Manifest, cfg, man, model, opt.Force); err != nil {
		return nil, err
	}
	return man, nil
}

// ScaleSuffix names a quantised matrix's scales: NAME + ScaleSuffix.
const ScaleSuffix = "_scale"

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// nonFinite is the index of the first NaN or infinity in v, else -1.
func nonFinite(v []float32) int {
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return i
		}
	}
	return -1
}

func bytesF32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// write puts the compressed checkpoint in out: files in a temporary sibling directory,
// renamed into place once all are written.
func write(out, srcDir string, src *checkpoint.Manifest, cfg *program.Model, man *Manifest, model []byte, force bool) error {
	if ents, err := os.ReadDir(out); err == nil && len(ents) > 0 && !force {
		return diag.Runtimef(diag.CodeOutputExists, "%s already holds files; choose another --out or pass --force", out)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("compress: %w", err)
	}
	parent := filepath.Dir(filepath.Clean(out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, ".tmp-"+filepath.Base(out)+"-")
	if err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	defer os.RemoveAll(tmp)
	mj, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	files := []struct {
		name string
		data []byte
	}{{checkpoint.ModelFile, model}, {checkpoint.CompressionFile, append(mj, '\n')}}
	// The source run's spec, two levels above a run's checkpoint, tells eval where the
	// validation data is.
	if spec, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(srcDir)), "run.json")); err == nil {
		files = append(files, struct {
			name string
			data []byte
		}{"run.json", spec})
	}
	cm := *src
	cm.Model = cfg
	if cm.ConfigHash, err = checkpoint.ConfigHash(cfg); err != nil {
		return err
	}
	cm.Optimizer = checkpoint.OptimizerState{}
	cm.Files = nil
	for _, f := range files {
		if err := atomicfile.WriteFile(filepath.Join(tmp, f.name), f.data, 0o644); err != nil {
			return fmt.Errorf("compress: %w", err)
		}
		sum := sha256.Sum256(f.data)
		cm.Files = append(cm.Files, checkpoint.FileEntry{Name: f.name, Size: int64(len(f.data)), SHA256: hex.EncodeToString(sum[:])})
	}
	b, err := json.MarshalIndent(cm, "", "  ")
	if err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(tmp, checkpoint.ManifestFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	if force {
		if err := os.RemoveAll(out); err != nil {
			return fmt.Errorf("compress: %w", err)
		}
	} else {
		_ = os.Remove(out) // an empty directory
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	return nil
}

// Load builds the model of the compressed checkpoint in dir: float32 tensors loaded,
// quantised matrices attached as they are stored. It returns the model with the checkpoint
// and compression manifests.
func Load(dir string) (*nn.Model, *checkpoint.Manifest, *Manifest, error) {
	cm, err := checkpoint.LoadManifest(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	read := func(name string) ([]byte, error) {
		for _, f := range cm.Files {
			if f.Name != name {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return nil, diag.RuntimeWrap(diag.CodeCorruptCheckpoint, err, "checkpoint %s: reading %s", dir, name)
			}
			sum := sha256.Sum256(b)
			if int64(len(b)) != f.Size || hex.EncodeToString(sum[:]) != f.SHA256 {
				return nil, diag.Runtimef(diag.CodeCorruptCheckpoint, "checkpoint %s: %s does not match its size and SHA-256 in %s (truncated or corrupt)", dir, name, checkpoint.ManifestFile)
			}
			return b, nil
		}
		return nil, diag.Runtimef(diag.CodeCorruptCheckpoint, "checkpoint %s: %s does not list %s", dir, checkpoint.ManifestFile, name)
	}
	mb, err := read(checkpoint.CompressionFile)
	if err != nil {
		return nil, nil, nil, err
	}
	var man Manifest
	if err := json.Unmarshal(mb, &man); err != nil || man.Format != FormatVersion {
		if err == nil {
			err = fmt.Errorf("format %d, this moec reads %d", man.Format, FormatVersion)
		}
		return nil, nil, nil, diag.RuntimeWrap(diag.CodeCorruptCheckpoint, err, "checkpoint %s: %s", dir, checkpoint.CompressionFile)
	}
	b, err := read(checkpoint.ModelFile)
	if err != nil {
		return nil, nil, nil, err
	}
	ts, _, err := safetensors.DecodeRaw(b)
	if err != nil {
		return nil, nil, nil, diag.RuntimeWrap(diag.CodeCorruptCheckpoint, err, "checkpoint %s: %s", dir, checkpoint.ModelFile)
	}
	byName := make(map[string]safetensors.RawTensor, len(ts))
	for _, t := range ts {
		byName[t.Name] = t
	}
	mismatch := func(format string, args ...any) error {
		return diag.Runtimef(diag.CodeCheckpointMismatch, "checkpoint %s: %s", dir, fmt.Sprintf(format, args...))
	}
	// The quantised matrices first, as stored: the model is built around them and never
	// holds their float32 weights.
	qs := map[string]*quant.Matrix{}
	for _, r := range man.Quantized {
		t, ok := byName[r.Name]
		s, sok := byName[r.Name+ScaleSuffix]
		if !ok || !sok || s.DType != "F32" || len(r.Shape) != 2 {
			return nil, nil, nil, mismatch("quantised tensor %s lacks its values or its F32 %s%s", r.Name, r.Name, ScaleSuffix)
		}
		scales := bytesF32(s.Bytes)
		if i := nonFinite(scales); i >= 0 {
			return nil, nil, nil, diag.Runtimef(diag.CodeCorruptCheckpoint, "checkpoint %s: scale %d of %s is %v", dir, i, r.Name, scales[i])
		}
		q := &quant.Matrix{Bits: r.Bits, Out: r.Shape[0], In: r.Shape[1], Group: r.Group, Data: t.Bytes, Scales: scales}
		if err := q.Check(); err != nil {
			return nil, nil, nil, mismatch("tensor %s: %v", r.Name, err)
		}
		qs[r.Name] = q
	}
	m, err := nn.NewQuantized(cm.Model, cm.Seed, qs)
	if err != nil {
		var ue *nn.UnsupportedError
		if errors.As(err, &ue) {
			return nil, nil, nil, diag.RuntimeWrap(diag.CodeUnsupportedFeature, err, "cannot load checkpoint %s", dir)
		}
		return nil, nil, nil, diag.RuntimeWrap(diag.CodeCheckpointMismatch, err, "checkpoint %s", dir)
	}
	for _, p := range m.Params() {
		if qs[p.Name] != nil {
			continue
		}
		t, ok := byName[p.Name]
		if !ok {
			return nil, nil, nil, mismatch("no tensor %s (shape %v) that the model needs", p.Name, p.Shape)
		}
		if t.DType != "F32" || !slices.Equal(t.Shape, p.Shape) {
			return nil, nil, nil, mismatch("tensor %s is %s %v, the model expects F32 %v", p.Name, t.DType, t.Shape, p.Shape)
		}
		v := bytesF32(t.Bytes)
		if i := nonFinite(v); i >= 0 {
			return nil, nil, nil, diag.Runtimef(diag.CodeCorruptCheckpoint, "checkpoint %s: tensor %s holds %v at index %d", dir, p.Name, v[i], i)
		}
		copy(p.W, v)
	}
	return m, cm, &man, nil
}

// prune keeps opt's number of experts in every MoE layer of cfg, chosen by routing
// frequency over the calibration text, and returns the pruned config and tensors.
func prune(cfg *program.Model, seed int64, ts []safetensors.Tensor, opt Options) (*program.Model, []safetensors.Tensor, *Pruning, error) {
	moe := cfg.MoE
	if moe == nil || moe.Experts <= 1 {
		return nil, nil, nil, diag.Runtimef(diag.CodeBadPrune, "model %s has no routed experts to prune", cfg.Name)
	}
	keep := opt.KeepExperts
	if opt.KeepFraction > 0 {
		if opt.KeepFraction >= 1 {
			return nil, nil, nil, diag.Runtimef(diag.CodeBadPrune, "--keep-experts %g: a fraction below 1 keeps fewer experts; give a count for more", opt.KeepFraction)
		}
		keep = int(math.Round(opt.KeepFraction * float64(moe.Experts)))
	}
	switch {
	case keep > moe.Experts:
		return nil, nil, nil, diag.Runtimef(diag.CodeBadPrune, "--keep-experts %d: model %s has %d experts per MoE layer; keep at most %d", keep, cfg.Name, moe.Experts, moe.Experts)
	case keep < moe.TopK:
		return nil, nil, nil, diag.Runtimef(diag.CodeBadPrune, "--keep-experts keeps %d experts, fewer than top_k = %d of model %s", keep, moe.TopK, cfg.Name)
	case moe.Groups > 0:
		return nil, nil, nil, diag.Runtimef(diag.CodeBadPrune, "model %s routes within %d expert groups; pruning would break the groups", cfg.Name, moe.Groups)
	}
	by := opt.PruneBy
	switch by {
	case "", PruneByFrequency:
		by = PruneByFrequency
	case PruneByGateMass:
	default:
		return nil, nil, nil, diag.Runtimef(diag.CodeBadRunOption, "--prune-by %q: want %s or %s", by, PruneByFrequency, PruneByGateMass)
	}
	counts, tokens, err := calibrate(cfg, seed, ts, opt)
	if err != nil {
		return nil, nil, nil, err
	}
	pr := &Pruning{From: moe.Experts, Keep: keep, By: by, Calibration: opt.CalibrationName, CalibrationTokens: tokens}
	sum := sha256.Sum256(opt.Calibration)
	pr.CalibrationSHA256 = hex.EncodeToString(sum[:])
	kept := map[int][]int{}
	for _, lc := range counts {
		order := make([]int, len(lc.counts))
		for e := range order {
			order[e] = e
		}
		score := func(e int) float64 { return float64(lc.counts[e]) }
		if by == PruneByGateMass {
			score = func(e int) float64 { return lc.mass[e] }
		}
		sort.SliceStable(order, func(a, b int) bool { return score(order[a]) > score(order[b]) })
		k := slices.Clone(order[:keep])
		slices.Sort(k)
		kept[lc.layer] = k
		pr.Layers = append(pr.Layers, LayerPrune{Layer: lc.layer, Kept: k, Counts: lc.counts, GateMass: lc.mass})
	}
	out, err := PruneTensors(cfg, ts, kept)
	if err != nil {
		return nil, nil, nil, err
	}
	pcfg := *cfg
	pm := *cfg.MoE
	pm.Experts = keep
	pcfg.MoE = &pm
	return &pcfg, out, pr, nil
}

type layerCounts struct {
	layer  int
	counts []int
	mass   []float64
}

// calibrate counts, per MoE layer, the assignments each expert receives (top_k choices,
// before capacity) and sums their combine weights over windows of the calibration text.
func calibrate(cfg *program.Model, seed int64, ts []safetensors.Tensor, opt Options) ([]layerCounts, int, error) {
	T := int(cfg.SeqLen)
	if len(opt.Calibration) < T+1 {
		return nil, 0, diag.Runtimef(diag.CodeBadRunOption, "--calibration %s holds %d bytes; pruning needs at least one window of seq_len+1 = %d", opt.CalibrationName, len(opt.Calibration), T+1)
	}
	m, err := nn.New(cfg, seed)
	if err != nil {
		return nil, 0, fmt.Errorf("compress: %w", err)
	}
	byName := make(map[string]safetensors.Tensor, len(ts))
	for _, t := range ts {
		byName[t.Name] = t
	}
	for _, p := range m.Params() {
		t, ok := byName[p.Name]
		if !ok || len(t.Data) != len(p.W) {
			return nil, 0, diag.Runtimef(diag.CodeCheckpointMismatch, "checkpoint has no tensor %s of shape %v", p.Name, p.Shape)
		}
		copy(p.W, t.Data)
	}
	var layers []int
	for l := 0; l < int(cfg.Layers); l++ {
		if cfg.MoE.IsMoELayer(l) {
			layers = append(layers, l)
		}
	}
	out := make([]layerCounts, len(layers))
	for i, l := range layers {
		out[i] = layerCounts{layer: l, counts: make([]int, cfg.MoE.Experts), mass: make([]float64, cfg.MoE.Experts)}
	}
	windows := opt.CalibrationWindows
	if windows <= 0 {
		windows = 32
	}
	tokens := 0
	for w := 0; w < windows && (w+1)*T+1 <= len(opt.Calibration); w++ {
		toks := make([]int32, T+1)
		for i, b := range opt.Calibration[w*T : (w+1)*T+1] {
			toks[i] = int32(b)
		}
		st, err := m.Forward(nn.Batch{B: 1, T: T, Tokens: toks}, nn.StepOptions{Seed: seed, Assignments: true})
		if err != nil {
			return nil, 0, fmt.Errorf("compress: calibration: %w", err)
		}
		if len(st.Assignments) != len(layers) {
			return nil, 0, fmt.Errorf("compress: calibration saw %d MoE layers, the config has %d", len(st.Assignments), len(layers))
		}
		for i, as := range st.Assignments {
			for j, e := range as {
				out[i].counts[e]++
				out[i].mass[e] += float64(st.Gates[i][j])
			}
		}
		tokens += T
	}
	return out, tokens, nil
}

// PruneTensors keeps, in each MoE layer l, the experts kept[l] (old indices, in their new
// order): their tensors renumbered, the router's rows and bias entries of the others
// removed. cfg is the unpruned config the tensors belong to.
func PruneTensors(cfg *program.Model, ts []safetensors.Tensor, kept map[int][]int) ([]safetensors.Tensor, error) {
	layout, err := params.Walk(cfg)
	if err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	idOf := make(map[string]params.ID, len(layout))
	for _, p := range layout {
		idOf[p.Name] = p.ID
	}
	nameOf := make(map[params.ID]string, len(layout))
	for _, p := range layout {
		nameOf[p.ID] = p.Name
	}
	var out []safetensors.Tensor
	for _, t := range ts {
		id, ok := idOf[t.Name]
		if !ok {
			return nil, diag.Runtimef(diag.CodeCheckpointMismatch, "tensor %s is not a parameter of model %s", t.Name, cfg.Name)
		}
		k, pruned := kept[id.Layer]
		switch {
		case !pruned:
			out = append(out, t)
		case id.Role.Routed():
			at := slices.Index(k, id.Expert)
			if at < 0 {
				continue // a pruned expert
			}
			nid := id
			nid.Expert = at
			name, ok := nameOf[nid]
			if !ok {
				return nil, fmt.Errorf("compress: no name for %v", nid)
			}
			out = append(out, safetensors.Tensor{Name: name, Shape: t.Shape, Data: t.Data})
		case id.Role == params.RoleRouter:
			width := len(t.Data) / t.Shape[0]
			rows := make([]float32, 0, len(k)*width)
			for _, e := range k {
				rows = append(rows, t.Data[e*width:(e+1)*width]...)
			}
			shape := slices.Clone(t.Shape)
			shape[0] = len(k)
			out = append(out, safetensors.Tensor{Name: t.Name, Shape: shape, Data: rows})
		default:
			out = append(out, t)
		}
	}
	return out, nil
}
