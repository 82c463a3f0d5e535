package checkpoint

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/safetensors"
)

func sample(step int64) *Checkpoint {
	return &Checkpoint{
		Manifest: Manifest{
			Train: "tiny", Stage: "dense", Step: step, TotalSteps: 10, TokensSeen: step * 100,
			Model: programtest.MustModel("tiny", `vocab = 256; d_model = 8; layers = 1; seq_len = 8
attention { heads = 2 }
moe { experts = 4; top_k = 1 }`),
			ConfigHash: "abc", Seed: 7, DataCursor: step, DataFingerprint: "fp",
			Optimizer: OptimizerState{Kind: "adamw", Step: step},
		},
		Model: []safetensors.Tensor{
			{Name: "model.embed_tokens.weight", Shape: []int{2, 2}, Data: []float32{1, 2, 3, 4}},
			{Name: "lm_head.weight", Shape: []int{2, 2}, Data: []float32{5, 6, 7, 8}},
		},
		Optimizer: []safetensors.Tensor{
			{Name: "lm_head.weight.exp_avg", Shape: []int{2, 2}, Data: []float32{0.1, 0.2, 0.3, 0.4}},
		},
	}
}

func TestSaveLoad(t *testing.T) {
	parent := t.TempDir()
	var points []string
	w := Writer{Hook: func(p string) { points = append(points, p) }}
	dir, err := w.Save(parent, sample(3))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(dir) != "step-00000003" {
		t.Errorf("dir = %s", dir)
	}
	want := []string{"file-written:model.safetensors", "file-written:optimizer.safetensors", "before-rename", "renamed"}
	if diff := cmp.Diff(want, points); diff != "" {
		t.Errorf("hook points (-want +got):\n%s", diff)
	}
	c, err := Load(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	in := sample(3)
	if diff := cmp.Diff(in.Model, c.Model); diff != "" {
		t.Errorf("model tensors (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(in.Optimizer, c.Optimizer); diff != "" {
		t.Errorf("optimizer tensors (-want +got):\n%s", diff)
	}
	if c.Manifest.Model.MoE.Experts != 4 || c.Manifest.DataCursor != 3 || c.Manifest.Format != FormatVersion || len(c.Manifest.Files) != 2 {
		t.Errorf("manifest = %+v", c.Manifest)
	}
	// Only weights.
	c, err = Load(dir, false)
	if err != nil || c.Optimizer != nil {
		t.Errorf("Load(weights only) = %v, %v", c.Optimizer, err)
	}
}

func TestCorruption(t *testing.T) {
	cases := []struct {
		name   string
		damage func(dir string)
		want   string
	}{
		{"flipped byte", func(dir string) {
			p := filepath.Join(dir, ModelFile)
			b, _ := os.ReadFile(p)
			b[len(b)-1] ^= 1
			os.WriteFile(p, b, 0o644)
		}, "model.safetensors has SHA-256"},
		{"truncated", func(dir string) {
			p := filepath.Join(dir, OptimizerFile)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-4], 0o644)
		}, "optimizer.safetensors is"},
		{"missing file", func(dir string) { os.Remove(filepath.Join(dir, ModelFile)) }, "reading model.safetensors"},
		{"no manifest", func(dir string) { os.Remove(filepath.Join(dir, ManifestFile)) }, "no manifest.json"},
		{"bad manifest", func(dir string) { os.WriteFile(filepath.Join(dir, ManifestFile), []byte("{"), 0o644) }, "not valid JSON"},
		{"future format", func(dir string) {
			os.WriteFile(filepath.Join(dir, ManifestFile), []byte(`{"format": 99, "model": {}}`), 0o644)
		}, "format version 99"},
		{"path in manifest", func(dir string) {
			p := filepath.Join(dir, ManifestFile)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `"name": "model.safetensors"`, `"name": "../x"`, 1)), 0o644)
		}, "invalid file name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, err := Writer{}.Save(t.TempDir(), sample(1))
			if err != nil {
				t.Fatal(err)
			}
			c.damage(dir)
			_, err = Load(dir, true)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load error = %v, want %q", err, c.want)
			}
			if diag.CodeOf(err) != diag.CodeCorruptCheckpoint {
				t.Errorf("code = %q, want %s", diag.CodeOf(err), diag.CodeCorruptCheckpoint)
			}
		})
	}
}

// TestInterruptedSave checks that a save that fails before its rename leaves the previous
// checkpoint as the latest and that the leftovers are cleaned.
func TestInterruptedSave(t *testing.T) {
	parent := t.TempDir()
	if _, err := (Writer{}).Save(parent, sample(1)); err != nil {
		t.Fatal(err)
	}
	// Simulate a crash: the hook stops the save by panicking before the rename, which skips
	// the cleanup a normal error return does (as kill -9 would).
	func() {
		defer func() { recover() }()
		Writer{Hook: func(p string) {
			if p == "before-rename" {
				panic("killed")
			}
		}}.Save(parent, sample(2))
	}()
	latest, err := Latest(parent)
	if err != nil || filepath.Base(latest) != "step-00000001" {
		t.Fatalf("Latest = %q, %v; want step-00000001", latest, err)
	}
	if err := CleanTemp(parent); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(parent)
	if len(ents) != 1 {
		t.Errorf("after CleanTemp: %d entries, want 1", len(ents))
	}
	// Re-saving the same step replaces it.
	c := sample(1)
	c.Manifest.Final = true
	if _, err := (Writer{}).Save(parent, c); err != nil {
		t.Fatal(err)
	}
	m, err := LoadManifest(filepath.Join(parent, DirName(1)))
	if err != nil || !m.Final {
		t.Errorf("re-saved manifest Final = %v, %v", m, err)
	}
	for s := int64(2); s <= 5; s++ {
		if _, err := (Writer{}).Save(parent, sample(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := Prune(parent, 2); err != nil {
		t.Fatal(err)
	}
	all, _ := Complete(parent)
	if len(all) != 2 || filepath.Base(all[1]) != "step-00000005" {
		t.Errorf("after Prune: %v", all)
	}
}

func TestConfigHash(t *testing.T) {
	a, _ := ConfigHash(sample(1).Manifest.Model)
	m := *sample(1).Manifest.Model
	m.DModel = 9
	b, _ := ConfigHash(&m)
	a2, _ := ConfigHash(sample(2).Manifest.Model)
	if a == b || a != a2 || len(a) != 64 {
		t.Errorf("hashes %s %s %s", a, b, a2)
	}
}

// TestManifestSteps checks that a manifest with a step no run writes is refused as corrupt
// before any reader acts on it (a resume would save checkpoints/step-4611686018427387904).
func TestManifestSteps(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(m *Manifest)
		want string // "" = loads
	}{
		{"as written", func(*Manifest) {}, ""},
		{"step 2^62", func(m *Manifest) { m.Step = 1 << 62 }, "records step 4611686018427387904 of a stage of 10 steps"},
		{"step 2^62 of 2^62", func(m *Manifest) { m.Step, m.TotalSteps = 1<<62, 1<<62 }, "records step 4611686018427387904, but the directory is the checkpoint of step 3"},
		{"negative step", func(m *Manifest) { m.Step = -1 }, "negative step"},
		{"negative optimizer step", func(m *Manifest) { m.Optimizer.Step = -5 }, "negative step"},
		{"final step", func(m *Manifest) { m.Step, m.TotalSteps = 3, 3 }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := Writer{}.Save(t.TempDir(), sample(3))
			if err != nil {
				t.Fatal(err)
			}
			m, err := LoadManifest(dir)
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(m)
			b, _ := json.MarshalIndent(m, "", "  ")
			if err := os.WriteFile(filepath.Join(dir, ManifestFile), b, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = Load(dir, true)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Load: %v", err)
			case tc.want != "" && (diag.CodeOf(err) != diag.CodeCorruptCheckpoint || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Load: %v, want %s with %q", err, diag.CodeCorruptCheckpoint, tc.want)
			}
		})
	}
}
