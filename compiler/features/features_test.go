package features

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/features/featuretest"
)

// TestTableIsComplete holds every row to a unique key, a name, a predicate and a cell for
// every backend, and every refused or approximated cell to a reason.
func TestTableIsComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range Table() {
		if f.Key == "" || f.Name == "" || f.Uses == nil {
			t.Errorf("row %+v lacks a key, a name or a predicate", f)
		}
		if seen[f.Key] {
			t.Errorf("row %s twice", f.Key)
		}
		seen[f.Key] = true
		for _, b := range Backends() {
			if f.cells[b] == nil {
				t.Errorf("%s: no cell for %s", f.Key, b)
			}
		}
	}
}

// TestExamplesUseTheirFeature holds featuretest to the table: the base model uses nothing
// any backend refuses or approximates, and every row has an example that uses it.
func TestExamplesUseTheirFeature(t *testing.T) {
	for _, b := range Backends() {
		for _, l := range []Layout{{}, {TP: 2, PP: 2}} {
			if gaps := Check(featuretest.Base(), b, l); len(gaps) > 0 {
				t.Errorf("the base model has gaps on %s under %+v: %v", b, l, gaps)
			}
		}
	}
	keys := map[string]bool{}
	for _, k := range featuretest.Keys() {
		keys[k] = true
	}
	for _, f := range Table() {
		m, err := featuretest.Example(f.Key)
		if err != nil {
			t.Error(err)
			continue
		}
		delete(keys, f.Key)
		if !f.Uses(m) {
			t.Errorf("%s: the example does not use it", f.Key)
		}
		for _, b := range Backends() {
			for _, l := range []Layout{{}, {TP: 2, PP: 2}} {
				if v := f.On(b, m, l); (v.Status != Honoured) != (v.Reason != "") {
					t.Errorf("%s on %s: %v with reason %q", f.Key, b, v.Status, v.Reason)
				}
			}
		}
	}
	for k := range keys {
		t.Errorf("featuretest has an example for %s, which is no row of the table", k)
	}
}

// TestKernelColumnsNameGroups is the case of the issue: the generated kernels' router
// ignores node-limited routing, so the table says so for both kernel backends.
func TestKernelColumnsNameGroups(t *testing.T) {
	m, err := featuretest.Example("groups")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []Backend{CUDA, LLVM} {
		gaps := Check(m, b, Layout{})
		if len(gaps) != 1 || gaps[0].Feature.Key != "groups" || gaps[0].Verdict.Status != Refused {
			t.Fatalf("%s gaps %v, want groups refused", b, gaps)
		}
		if s := gaps[0].String(); !strings.Contains(s, "node-limited routing") || !strings.Contains(s, b.Title()) {
			t.Errorf("gap %q names neither the feature nor the backend", s)
		}
	}
}

// TestLayoutDependentCells: the step program's cells that depend on tp and pp.
func TestLayoutDependentCells(t *testing.T) {
	cases := []struct {
		key     string
		backend Backend
		refuse  Layout
	}{
		{"talking_heads", Step, Layout{TP: 2}},
		{"token_routing", Step, Layout{PP: 65}}, // every stage with an MoE layer holds the table: 64 stages at most
	}
	for _, c := range cases {
		m, err := featuretest.Example(c.key)
		if err != nil {
			t.Fatal(err)
		}
		if gaps := Check(m, c.backend, Layout{}); len(gaps) != 0 {
			t.Errorf("%s: %s gaps %v on one rank", c.key, c.backend, gaps)
		}
		if gaps := Check(m, c.backend, c.refuse); len(gaps) != 1 {
			t.Errorf("%s: %s gaps %v under %+v, want one", c.key, c.backend, gaps, c.refuse)
		}
	}
	for _, key := range []string{"share_weights", "token_routing"} {
		m, err := featuretest.Example(key)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range []Backend{Step, CUDA} {
			if gaps := Check(m, b, Layout{TP: 2, PP: 4}); len(gaps) != 0 {
				t.Errorf("%s: %s gaps %v under tp 2 × pp 4", key, b, gaps)
			}
		}
	}
}

func TestMarkdown(t *testing.T) {
	m := featuretest.Base()
	m.MoE.Groups, m.MoE.TopKGroups, m.MoE.CapacityFactor = 2, 1, 1.25
	md := Markdown(Rows(m, Layout{}))
	for _, want := range []string{
		"| Feature | CPU runtime | step program | CUDA step | CUDA kernels | LLVM kernels | Go program | Megatron-Core | Hugging Face |",
		"| node-limited routing (moe.groups, topk_groups) | yes | yes | yes | **no** [1] | **no** [1] | yes | yes | **no** [2] |",
		"| a capacity factor (moe.capacity_factor) | yes | yes | yes | **no** [3] | **no** [3] | yes | approx. [4] | approx. [5] |",
		"1. node-limited routing (moe.groups, topk_groups): router_fwd takes the top_k over all experts",
		"3. a capacity factor (moe.capacity_factor): route_index gives every assignment a slot",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if Markdown(Rows(nil, Layout{})) != "" {
		t.Error("a model without features has a table")
	}
}

// TestCUDAStepInferenceRefusals: latent attention's CUDA step cell honours it, training
// and inference alike (kernels_mla.cu's training kernels), so it is no refusal of either;
// where the step program itself refuses the model (latent attention with q/k norms),
// inference is refused too.
func TestCUDAStepInferenceRefusals(t *testing.T) {
	m, err := featuretest.Example("mla")
	if err != nil {
		t.Fatal(err)
	}
	if all := Refusals(m, CUDAStep, Layout{}); len(all) != 0 {
		t.Fatalf("latent attention's CUDA step refusals %v, want none", all)
	}
	if got := CUDAStepInferenceRefusals(m, Layout{}); len(got) != 0 {
		t.Errorf("latent attention's inference refusals %v, want none", got)
	}
	m.Attention.QKNorm = true
	got := CUDAStepInferenceRefusals(m, Layout{})
	if len(got) == 0 {
		t.Error("latent attention with q/k norms, which the step program refuses: no inference refusal")
	}
	for _, g := range got {
		if strings.HasPrefix(g.Verdict.Reason, CUDAStepTrainingOnly) {
			t.Errorf("refusal %v is training's alone, yet counted for inference", g)
		}
	}
}
