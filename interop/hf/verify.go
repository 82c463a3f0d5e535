package hf

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/moec-dev/moec/lang/diag"
)

// VerifyExport reads an export folder back and checks its manifest against the files: every
// file's size and SHA-256, every tensor's shape and data hash, that each checkpoint tensor
// went to exactly one exported tensor, and that each routed expert of each MoE layer
// (0..experts-1 in every MoE layer of the model) has exactly one tensor set, of the same
// size as every other's, no tensor belonging to two.
func VerifyExport(dir string) (*ExportManifest, error) {
	fail := func(format string, args ...any) error {
		return diag.Runtimef(diag.CodeNotExportable, "export %s: %s", dir, fmt.Sprintf(format, args...))
	}
	b, err := os.ReadFile(filepath.Join(dir, ExportManifestFile))
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeNotExportable, err, "export %s", dir)
	}
	var man ExportManifest
	if err := json.Unmarshal(b, &man); err != nil {
		return nil, fail("%s: %v", ExportManifestFile, err)
	}
	if man.Format != ManifestFormat {
		return nil, fail("manifest format %q, want %q", man.Format, ManifestFormat)
	}
	if man.Model == nil {
		return nil, fail("manifest has no model")
	}
	for _, f := range man.Files {
		fb, err := os.ReadFile(filepath.Join(dir, filepath.Base(f.Name)))
		if err != nil {
			return nil, fail("%v", err)
		}
		sum := sha256.Sum256(fb)
		if int64(len(fb)) != f.Size || hex.EncodeToString(sum[:]) != f.SHA256 {
			return nil, fail("%s does not match the manifest (size or SHA-256)", f.Name)
		}
	}
	wf, err := readExportWeights(dir)
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeNotExportable, err, "export %s", dir)
	}
	if len(wf.Tensors) != len(man.Tensors) {
		return nil, fail("the weights hold %d tensors, the manifest lists %d", len(wf.Tensors), len(man.Tensors))
	}
	names, froms := map[string]bool{}, map[string]bool{}
	for _, e := range man.Tensors {
		if names[e.Name] || froms[e.From] {
			return nil, fail("tensor %s (from %s) is listed twice", e.Name, e.From)
		}
		names[e.Name], froms[e.From] = true, true
		t, ok := wf.Get(e.Name)
		if !ok {
			return nil, fail("tensor %s is in the manifest but not in the weights", e.Name)
		}
		if !slices.Equal(t.Shape, e.Shape) || tensorHash(t.Data) != e.SHA256 {
			return nil, fail("tensor %s differs from the manifest (shape or data)", e.Name)
		}
	}
	m := man.Model
	seen := map[string]bool{}
	sets := map[[2]int]bool{}
	size := -1
	for _, x := range man.Experts {
		k := [2]int{x.Layer, x.Expert}
		if sets[k] {
			return nil, fail("layer %d expert %d has two tensor sets", x.Layer, x.Expert)
		}
		sets[k] = true
		if size >= 0 && len(x.Tensors) != size {
			return nil, fail("layer %d expert %d has %d tensors, others %d", x.Layer, x.Expert, len(x.Tensors), size)
		}
		size = len(x.Tensors)
		for _, n := range x.Tensors {
			if seen[n] || !names[n] {
				return nil, fail("expert tensor %s is carried twice or not at all", n)
			}
			seen[n] = true
		}
	}
	want := 0
	if fusedAt := map[Layout]string{LayoutLlama4: "feed_forward", LayoutGptOss: "mlp"}[man.Layout]; fusedAt != "" {
		// Llama 4 and gpt-oss fuse a layer's experts: each MoE layer holds both fused
		// tensors, with a leading dimension of one row per expert.
		for l := 0; l < m.Layers; l++ {
			if !m.IsMoELayer(l) {
				continue
			}
			for _, part := range []string{"gate_up_proj", "down_proj"} {
				name := fmt.Sprintf("model.layers.%d.%s.experts.%s", l, fusedAt, part)
				t, ok := wf.Get(name)
				if !ok || len(t.Shape) != 3 || t.Shape[0] != m.MoE.Experts {
					return nil, fail("layer %d lacks its fused experts' %s of %d experts", l, part, m.MoE.Experts)
				}
			}
		}
		return &man, nil
	}
	if man.Layout == LayoutDbrx {
		// DBRX stacks a layer's experts in w1, v1 and w2, each [experts·ffn_hidden_size, d_model].
		d, err := m.Dims()
		if err != nil {
			return nil, fail("%v", err)
		}
		for l := 0; l < m.Layers; l++ {
			for _, part := range []string{"w1", "v1", "w2"} {
				t, ok := wf.Get(fmt.Sprintf("transformer.blocks.%d.ffn.experts.mlp.%s", l, part))
				if !ok || !slices.Equal(t.Shape, []int{d.E * d.EHidden, d.D}) {
					return nil, fail("layer %d lacks its fused experts' %s of %d experts", l, part, d.E)
				}
			}
		}
		return &man, nil
	}
	if m.MoE != nil && m.MoE.Experts > 0 {
		for l := 0; l < m.Layers; l++ {
			if !m.IsMoELayer(l) {
				continue
			}
			for e := 0; e < m.MoE.Experts; e++ {
				if !sets[[2]int{l, e}] {
					return nil, fail("layer %d expert %d is missing", l, e)
				}
				want++
			}
		}
	}
	if want != len(sets) {
		return nil, fail("%d expert sets, the model has %d routed experts in all", len(sets), want)
	}
	return &man, nil
}
