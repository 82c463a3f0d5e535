package plan

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/params"
)

// compressedServeText is an 8-expert model served on one A100 in fp16, compressed (int4
// experts in groups of 64, int8 attention and dense, the embedding and head left at fp16,
// half the experts kept) or not.
const compressedServeText = `
model m {
  vocab = 32000; d_model = 1024; layers = 4; seq_len = 512
  attention { heads = 16 }
  ffn { hidden = 4096 }
  moe { experts = 8; top_k = 2; expert_hidden = 2048 }
}
cluster c { nodes = 1; gpus_per_node = 1; gpu = a100_40gb; host_memory = 64GiB }
serve m on c { layout = tensor_pipeline; compressed = COMPRESSED }
compress m { experts = int4; group = 64; dense = int8; keep_experts = 4 }
`

// TestCompressedServeWeighsTheCompressedBytes: a compressed serve's weights on one device are
// exactly the compressed checkpoint's bytes (quantised matrices with their float32 scales,
// the rest at fp16, the pruned experts gone), counted here from the parameter walker; the
// uncompressed serve weighs every parameter at 2 bytes; and the plan says what was done.
func TestCompressedServeWeighsTheCompressedBytes(t *testing.T) {
	weights := func(compressed string) (float64, *Plan) {
		t.Helper()
		prog, _, ds := check.Load("x.moe", func(string) ([]byte, error) {
			return []byte(strings.Replace(compressedServeText, "COMPRESSED", compressed, 1)), nil
		})
		if ds.HasErrors() {
			t.Fatal(ds.Err())
		}
		p, ds := ForServe(prog, prog.Serves["m"], Options{})
		if p == nil {
			t.Fatal(ds.Err())
		}
		if p.GPUs != 1 {
			t.Fatalf("%d GPUs, want 1", p.GPUs)
		}
		for _, c := range p.Memory[0].Components {
			if c.Name == "weights" {
				return float64(c.Bytes), p
			}
		}
		t.Fatal("no weights component")
		return 0, nil
	}
	prog, _, _ := check.Load("x.moe", func(string) ([]byte, error) {
		return []byte(strings.Replace(compressedServeText, "COMPRESSED", "true", 1)), nil
	})
	m := *prog.Models["m"]
	moe := *m.MoE
	moe.Experts = 4
	m.MoE = &moe
	layout, err := params.Walk(&m)
	if err != nil {
		t.Fatal(err)
	}
	var want, fp16 float64
	for _, p := range layout {
		n := float64(p.Elements())
		b := 2 * n
		switch params.QuantKind(p.ID) {
		case params.QuantExperts:
			b = float64(params.QuantScheme{Bits: 4, Group: 64}.Bytes(p.Shape[0], p.Shape[1]))
		case params.QuantDense:
			b = float64(params.QuantScheme{Bits: 8}.Bytes(p.Shape[0], p.Shape[1]))
		}
		want += b
	}
	got, p := weights("true")
	if d := got - want; d < -1 || d > 1 {
		t.Errorf("compressed weights %.0f bytes, the walker's compressed checkpoint %.0f", got, want)
	}
	full, _, _ := check.Load("x.moe", func(string) ([]byte, error) {
		return []byte(strings.Replace(compressedServeText, "COMPRESSED", "false", 1)), nil
	})
	all, err := params.Walk(full.Models["m"])
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range all {
		fp16 += 2 * float64(p.Elements())
	}
	if got, _ := weights("false"); got != fp16 {
		t.Errorf("uncompressed weights %.0f bytes, want %.0f (2 a parameter)", got, fp16)
	}
	for _, s := range []string{"int4 g64 experts", "int8 dense", "at the serving precision: embed, head", "4 experts kept"} {
		if !strings.Contains(p.Workload.Compression, s) || !strings.Contains(p.Markdown(), s) {
			t.Errorf("the plan's compression %q lacks %q", p.Workload.Compression, s)
		}
	}
	if p.Workload.Experts != 4 {
		t.Errorf("plan serves %d experts, the compress block keeps 4", p.Workload.Experts)
	}
}
