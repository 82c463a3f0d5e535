package codegen_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen"
	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/features/featuretest"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/kernels"
)

// TestEmitReportsGroups is the case: the generated router takes the top_k over all
// experts, so Emit must say that neither the CUDA nor the LLVM kernels honour node-limited
// routing, rather than write a router that ignores it in silence.
func TestEmitReportsGroups(t *testing.T) {
	m, err := featuretest.Example("groups")
	if err != nil {
		t.Fatal(err)
	}
	res, err := codegen.Emit(t.TempDir(), "featuretest", "main", m, codegen.Options{NoCompile: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range res.Gaps {
		got = append(got, string(g.Backend)+":"+g.Feature.Key)
	}
	if want := []string{"cuda:groups", "llvm:groups"}; !slices.Equal(got, want) {
		t.Fatalf("gaps %v, want %v", got, want)
	}
	msgs := features.Messages(res.Gaps)
	if len(msgs) != 1 || !strings.Contains(msgs[0], "node-limited routing") ||
		!strings.Contains(msgs[0], "CUDA kernels") || !strings.Contains(msgs[0], "LLVM kernels") {
		t.Errorf("messages %q", msgs)
	}
	base, err := codegen.Emit(t.TempDir(), "featuretest", "main", featuretest.Base(), codegen.Options{NoCompile: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(base.Gaps) != 0 {
		t.Errorf("the base model has kernel gaps %v", base.Gaps)
	}
}

// generated is the text of every generated file for m.
func generated(t *testing.T, m *program.Model) string {
	t.Helper()
	sh, err := kernels.ShapeOf(m)
	if err != nil {
		t.Fatal(err)
	}
	files, err := codegen.Generate("featuretest", sh)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range files {
		b.WriteString(f.Path + "\n" + f.Text)
	}
	return b.String()
}

// TestKernelColumnIsTrue checks the kernel column against what the code generator
// writes: a feature the column refuses or leaves outside the kernels, where the feature
// changes the computation, leaves every generated file exactly as for the base model (the
// kernels ignore it, so refusing is the truth), and a feature the column honours and that
// changes a kernel's arithmetic changes the generated text.
func TestKernelColumnIsTrue(t *testing.T) {
	base := generated(t, featuretest.Base())
	// Rows whose feature the kernels compute, so that honouring them shows in the text.
	changesKernels := map[string]bool{"token_routing": true, "sigmoid": true, "unnormalized": true,
		"router_bias": true, "relu": true, "gelu": true, "silu": true, "geglu": true, "expert_activation": true}
	// Examples that need another feature beside their own compare with that feature's
	// example: sparsemixer gates without renormalising (Phi-3.5-MoE's).
	alongside := map[string]string{"sparsemixer": "unnormalized"}
	for _, f := range features.Table() {
		m, err := featuretest.Example(f.Key)
		if err != nil {
			t.Fatal(err)
		}
		v := f.On(features.CUDA, m, features.Layout{})
		ref := base
		if other, ok := alongside[f.Key]; ok {
			om, err := featuretest.Example(other)
			if err != nil {
				t.Fatal(err)
			}
			ref = generated(t, om)
		}
		same := generated(t, m) == ref
		switch {
		case (v.Status == features.Refused || v.Status == features.Outside) && !same:
			t.Errorf("%s: the kernels column says %v, but the generated kernels change with it", f.Key, v.Status)
		case changesKernels[f.Key] && same:
			t.Errorf("%s: the kernels column says %v, but the generated kernels do not change with it", f.Key, v.Status)
		}
	}
}
