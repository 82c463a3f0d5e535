package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// FormatVersion is the manifest format this package writes and reads.
const FormatVersion = 1

// File names inside a checkpoint directory.
const (
	ManifestFile  = "manifest.json"
	ModelFile     = "model.safetensors"
	OptimizerFile = "optimizer.safetensors"
	// CompressionFile marks a compressed checkpoint (runtime/compress): it serves, it does
	// not train, and Load refuses it.
	CompressionFile = "compression.json"
)

// Manifest describes one checkpoint. Everything needed to resume bit-identically or to
// generate from the checkpoint alone is here or in the files it lists.
type Manifest struct {
	Format     int            `json:"format"`
	Train      string         `json:"train"`
	Stage      string         `json:"stage"`
	Step       int64          `json:"step"`        // optimizer steps completed
	TotalSteps int64          `json:"total_steps"` // steps the stage runs in all
	TokensSeen int64          `json:"tokens_seen"`
	Final      bool           `json:"final"` // written at the end of the stage
	Model      *program.Model `json:"model"` // the stage's model config
	ConfigHash string         `json:"config_hash"`

	// RNG state. Every random stream is keyed by (seed, step, layer, purpose), so the seed
	// and the step fully determine the state; it is spelled out so a reader need not know.
	Seed int64 `json:"seed"`
	// Data cursor: the next batch index and a fingerprint of the corpus it indexes.
	DataCursor      int64  `json:"data_cursor"`
	DataFingerprint string `json:"data_fingerprint"`

	Optimizer OptimizerState `json:"optimizer"`
	Files     []FileEntry    `json:"files"`

	// SpecialTokens are the special token ids of the Hugging Face config an imported
	// checkpoint came from (absent otherwise), which `moec export hf` writes back where
	// no tokenizer files say them.
	SpecialTokens *SpecialTokens `json:"special_tokens,omitempty"`
}

// SpecialTokens are a model's beginning-of-sequence, end-of-sequence and padding ids, as
// a Hugging Face config.json lists them (one id or several; none when absent).
type SpecialTokens struct {
	BOS []int `json:"bos,omitempty"`
	EOS []int `json:"eos,omitempty"`
	PAD []int `json:"pad,omitempty"`
}

// OptimizerState is the optimizer's scalar state; its moments are in OptimizerFile.
type OptimizerState struct {
	Kind string `json:"kind"`
	Step int64  `json:"step"` // bias-correction step count
	File string `json:"file"` // the moments file, "" when there are none
	// LossScale is fp16 training's dynamic loss scaler (absent for bf16 and fp32), so
	// that a resumed run scales, skips and grows exactly as the uninterrupted one.
	LossScale *LossScaleState `json:"loss_scale,omitempty"`
}

// LossScaleState is a dynamic loss scaler's state between steps (fp16 training's).
type LossScaleState = optim.LossScale

// FileEntry is one file of a checkpoint with its size and SHA-256.
type FileEntry struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Checkpoint is a manifest with its tensors.
type Checkpoint struct {
	Manifest  Manifest
	Model     []safetensors.Tensor
	Optimizer []safetensors.Tensor // nil: no optimizer state (an inference-only checkpoint)
}

// Writer saves checkpoints. Hook, when set, is called at named points of a save
// ("file-written:NAME", "before-rename", "renamed"); fault-injection tests use it to kill
// a process mid-write.
type Writer struct {
	Hook func(point string)
}

func (w Writer) hook(point string) {
	if w.Hook != nil {
		w.Hook(point)
	}
}

// DirName is the directory name of the checkpoint at step.
func DirName(step int64) string { return fmt.Sprintf("step-%08d", step) }

const tmpPrefix = ".tmp-"

// Save writes c under parent as DirName(step) and returns its path. If that directory
// already exists (a resumed run re-saving the same step) it is replaced only after the new
// one is complete.
func (w Writer) Save(parent string, c *Checkpoint) (string, error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	name := DirName(c.Manifest.Step)
	tmp, err := os.MkdirTemp(parent, tmpPrefix+name+"-")
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	// MkdirTemp makes the directory private; a checkpoint is as readable as any output.
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	m := c.Manifest
	m.Format = FormatVersion
	m.Files = nil
	meta := map[string]string{"format": "pt", "train": m.Train, "stage": m.Stage, "step": strconv.FormatInt(m.Step, 10)}
	write := func(file string, ts []safetensors.Tensor) error {
		b, err := safetensors.Encode(ts, meta)
		if err != nil {
			return fmt.Errorf("checkpoint: %s: %w", file, err)
		}
		if err := writeSynced(filepath.Join(tmp, file), b); err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		m.Files = append(m.Files, FileEntry{Name: file, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
		w.hook("file-written:" + file)
		return nil
	}
	if err := write(ModelFile, c.Model); err != nil {
		return "", err
	}
	m.Optimizer.File = ""
	if c.Optimizer != nil {
		if err := write(OptimizerFile, c.Optimizer); err != nil {
			return "", err
		}
		m.Optimizer.File = OptimizerFile
	}
	mj, err := json.MarshalIndent(&m, "", "  ")
	if err != nil {
		return "", fmt.Errorf("checkpoint: encoding manifest: %w", err)
	}
	if err := writeSynced(filepath.Join(tmp, ManifestFile), append(mj, '\n')); err != nil {
		return "", err
	}
	if err := syncDir(tmp); err != nil {
		return "", err
	}
	w.hook("before-rename")
	final := filepath.Join(parent, name)
	if _, err := os.Stat(final); err == nil {
		// Move the old one aside first: rename cannot replace a non-empty directory.
		old := filepath.Join(parent, tmpPrefix+"old-"+name)
		os.RemoveAll(old)
		if err := os.Rename(final, old); err != nil {
			return "", fmt.Errorf("checkpoint: %w", err)
		}
		defer os.RemoveAll(old)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	done = true
	if err := syncDir(parent); err != nil {
		return "", err
	}
	w.hook("renamed")
	return final, nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("checkpoint: writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("checkpoint: syncing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("checkpoint: syncing directory %s: %w", dir, err)
	}
	return nil
}

func corrupt(dir, format string, args ...any) error {
	return &diag.Diagnostic{Code: diag.CodeCorruptCheckpoint, Summary: fmt.Sprintf("checkpoint %s: ", dir) + fmt.Sprintf(format, args...)}
}

// LoadManifest reads and checks dir's manifest without reading the tensor files.
func LoadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, corrupt(dir, "no %s (not a checkpoint directory, or an incomplete one)", ManifestFile)
		}
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, corrupt(dir, "%s is not valid JSON: %v", ManifestFile, err)
	}
	if m.Format != FormatVersion {
		return nil, corrupt(dir, "%s has format version %d, this moec reads version %d", ManifestFile, m.Format, FormatVersion)
	}
	if m.Model == nil {
		return nil, corrupt(dir, "%s has no model config", ManifestFile)
	}
	if err := checkSteps(dir, &m); err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		if f.Name != filepath.Base(f.Name) || f.Name == ManifestFile || strings.HasPrefix(f.Name, ".") {
			return nil, corrupt(dir, "%s lists an invalid file name %q", ManifestFile, f.Name)
		}
	}
	return &m, nil
}

// checkSteps refuses step counts no run writes: a negative step, a step past the stage's
// total, or a step other than the one the directory is named for. A resumed run saves under
// the step it loaded, so such a step would become checkpoints/step-4611686018427387904.
func checkSteps(dir string, m *Manifest) error {
	switch {
	case m.Step < 0 || m.TotalSteps < 0 || m.Optimizer.Step < 0 || m.TokensSeen < 0:
		return corrupt(dir, "%s has a negative step or token count (step %d, total_steps %d, optimizer step %d, tokens_seen %d)",
			ManifestFile, m.Step, m.TotalSteps, m.Optimizer.Step, m.TokensSeen)
	case m.TotalSteps > 0 && m.Step > m.TotalSteps:
		return corrupt(dir, "%s records step %d of a stage of %d steps", ManifestFile, m.Step, m.TotalSteps)
	}
	if name := filepath.Base(dir); strings.HasPrefix(name, "step-") {
		if n, err := strconv.ParseInt(strings.TrimPrefix(name, "step-"), 10, 64); err == nil && n != m.Step {
			return corrupt(dir, "%s records step %d, but the directory is the checkpoint of step %d", ManifestFile, m.Step, n)
		}
	}
	return nil
}

// readVerified reads file name of dir and checks it against the manifest entry.
func readVerified(dir string, m *Manifest, name string) ([]byte, error) {
	var entry *FileEntry
	for i := range m.Files {
		if m.Files[i].Name == name {
			entry = &m.Files[i]
		}
	}
	if entry == nil {
		return nil, corrupt(dir, "%s does not list %s", ManifestFile, name)
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, &diag.Diagnostic{Code: diag.CodeCorruptCheckpoint, Summary: fmt.Sprintf("checkpoint %s: reading %s", dir, name), Err: err}
	}
	if int64(len(b)) != entry.Size {
		return nil, corrupt(dir, "%s is %d bytes, manifest says %d (truncated or replaced)", name, len(b), entry.Size)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != entry.SHA256 {
		return nil, corrupt(dir, "%s has SHA-256 %s, manifest says %s (corrupt)", name, got, entry.SHA256)
	}
	return b, nil
}

// Load reads the checkpoint in dir, verifying every file's size and SHA-256. withOptimizer
// false skips the optimizer moments (generation needs only the weights).
func Load(dir string, withOptimizer bool) (*Checkpoint, error) {
	m, err := LoadManifest(dir)
	if err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		if f.Name == CompressionFile {
			return nil, diag.Runtimef(diag.CodeCheckpointMismatch, "checkpoint %s is compressed for serving (moec compress): eval, generate and serve run it; train or grow from the checkpoint it was compressed from", dir)
		}
	}
	c := &Checkpoint{Manifest: *m}
	decode := func(name string) ([]safetensors.Tensor, error) {
		b, err := readVerified(dir, m, name)
		if err != nil {
			return nil, err
		}
		f, err := safetensors.Decode(b)
		if err != nil {
			return nil, &diag.Diagnostic{Code: diag.CodeCorruptCheckpoint, Summary: fmt.Sprintf("checkpoint %s: %s", dir, name), Err: err}
		}
		return f.Tensors, nil
	}
	if c.Model, err = decode(ModelFile); err != nil {
		return nil, err
	}
	if withOptimizer && m.Optimizer.File != "" {
		if c.Optimizer, err = decode(m.Optimizer.File); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Complete lists the complete checkpoints under parent (directories named DirName(step)
// with a manifest), oldest first. Temporary directories of interrupted saves are ignored.
func Complete(parent string) ([]string, error) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	type cp struct {
		dir  string
		step int64
	}
	var cps []cp
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, "step-") {
			continue
		}
		step, err := strconv.ParseInt(strings.TrimPrefix(name, "step-"), 10, 64)
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(parent, name, ManifestFile)); err != nil {
			continue
		}
		cps = append(cps, cp{filepath.Join(parent, name), step})
	}
	sort.Slice(cps, func(i, j int) bool { return cps[i].step < cps[j].step })
	out := make([]string, len(cps))
	for i, c := range cps {
		out[i] = c.dir
	}
	return out, nil
}

// Latest returns the newest complete checkpoint under parent, or "" when there is none.
func Latest(parent string) (string, error) {
	all, err := Complete(parent)
	if err != nil || len(all) == 0 {
		return "", err
	}
	return all[len(all)-1], nil
}

// Prune removes all but the newest keep complete checkpoints under parent, and leftovers of
// interrupted saves. Call it only after a new checkpoint is in place.
func Prune(parent string, keep int) error {
	all, err := Complete(parent)
	if err != nil {
		return err
	}
	for i := 0; i < len(all)-keep; i++ {
		if err := os.RemoveAll(all[i]); err != nil {
			return fmt.Errorf("checkpoint: pruning: %w", err)
		}
	}
	return CleanTemp(parent)
}

// CleanTemp removes temporary directories left by interrupted saves under parent.
func CleanTemp(parent string) error {
	ents, err := os.ReadDir(parent)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("checkpoint: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.RemoveAll(filepath.Join(parent, e.Name())); err != nil {
				return fmt.Errorf("checkpoint: %w", err)
			}
		}
	}
	return nil
}

// ConfigHash returns a stable SHA-256 of v's JSON encoding (struct fields in declaration
// order, map keys sorted), used to tell whether a checkpoint was made for this config.
func ConfigHash(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("checkpoint: hashing config: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
