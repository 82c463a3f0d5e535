package check

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/parse"
)

const overrideSrc = `
model m {
  vocab = 256; d_model = 64; layers = 2; seq_len = 32
  attention { heads = 2; share_weights = 0.5 }
  ffn { hidden = 4 * d_model }
  moe { experts = 4; router = token_embedding }
}
cluster c { gpu = cpu; host_memory = 4GiB }
train m on c {
  tokens_per_batch = 256
  optimizer = adamw { lr = 1e-3 }
  memory = zero(1)
  data = "x"
  stage s { tokens = 1M }
}
`

func parseOne(t *testing.T, src string) []*ast.File {
	t.Helper()
	f, diags := parse.File("t.moe", []byte(src))
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	return []*ast.File{f}
}

// TestApplyOverrides: each kind of override path lands where checking it gives the value,
// derived keys follow, and the input files are left as they were.
func TestApplyOverrides(t *testing.T) {
	files := parseOne(t, overrideSrc)
	out, err := ApplyOverrides(files, "m", map[string]string{
		"attention.share_weights": "1", "moe.router": "hidden", "moe.experts": "8", "d_model": "128",
		"tokens_per_batch": "512", "optimizer.lr": "0.003", "memory.stage": "2", ArmStage: "s",
	})
	if err != nil {
		t.Fatal(err)
	}
	prog, diags := Check(out...)
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	m, tr := prog.Models["m"], prog.Trains["m"]
	if m.Attention.ShareWeights != 1 || m.MoE.Router != "hidden" || m.MoE.Experts != 8 || m.DModel != 128 || m.FFN.Hidden != 512 {
		t.Errorf("model after overrides: share %v router %v experts %v d_model %v hidden %v", m.Attention.ShareWeights, m.MoE.Router, m.MoE.Experts, m.DModel, m.FFN.Hidden)
	}
	if tr.TokensPerBatch != 512 || tr.Optimizer.LR != 0.003 || tr.Memory.ZeROStage != 2 {
		t.Errorf("train after overrides: %d %v %d", tr.TokensPerBatch, tr.Optimizer.LR, tr.Memory.ZeROStage)
	}
	orig, _ := Check(files...)
	if orig.Models["m"].Attention.ShareWeights != 0.5 || orig.Trains["m"].Optimizer.LR != 1e-3 {
		t.Error("ApplyOverrides changed its input")
	}
}

func TestApplyOverridesErrors(t *testing.T) {
	files := parseOne(t, strings.Replace(overrideSrc, "optimizer = adamw { lr = 1e-3 }", "", 1))
	for _, c := range []struct {
		ov   map[string]string
		want string
	}{
		{map[string]string{"colour": "3"}, "no model or train key"},
		{map[string]string{"optimizer.lr": "0.1"}, "does not write optimizer"},
		{map[string]string{"memory.lr": "0.1"}, "zero takes no argument lr"},
		{map[string]string{"d_model": "("}, "cannot parse"},
	} {
		if _, err := ApplyOverrides(files, "m", c.ov); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.ov, err, c.want)
		}
	}
	if _, err := ApplyOverrides(files, "nope", nil); err == nil {
		t.Error("unknown train accepted")
	}
}
