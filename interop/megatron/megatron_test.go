package megatron

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/golden"
)

var update = flag.Bool("update", false, "rewrite testdata/launch.txtar")

// documented is every Megatron-LM argument this package may write, each checked against
// megatron/training/arguments.py (NVIDIA/Megatron-LM, core_r0.12+ with MoE, MLA and MTP
// argument groups). A flag outside this list fails the test: a misspelt flag would make
// torchrun exit with "unrecognized arguments" on the user's cluster, not here.
var documented = map[string]bool{
	// network size
	"--num-layers": true, "--hidden-size": true, "--ffn-hidden-size": true,
	"--num-attention-heads": true, "--kv-channels": true, "--group-query-attention": true,
	"--num-query-groups": true, "--max-position-embeddings": true, "--seq-length": true,
	"--position-embedding-type": true, "--rotary-base": true, "--normalization": true,
	"--norm-epsilon": true, "--swiglu": true, "--untie-embeddings-and-output-weights": true,
	"--disable-bias-linear": true, "--add-qkv-bias": true, "--qk-layernorm": true,
	"--make-vocab-size-divisible-by": true, "--vocab-size": true,
	// regularisation and optimizer
	"--attention-dropout": true, "--hidden-dropout": true, "--weight-decay": true,
	"--clip-grad": true, "--adam-beta1": true, "--adam-beta2": true, "--adam-eps": true,
	"--sgd-momentum": true, "--optimizer": true,
	// learning rate and training
	"--lr": true, "--min-lr": true, "--lr-decay-style": true, "--lr-warmup-iters": true,
	"--lr-decay-iters": true, "--train-iters": true, "--micro-batch-size": true,
	"--global-batch-size": true, "--seed": true, "--bf16": true, "--fp16": true,
	"--recompute-granularity": true, "--recompute-method": true, "--recompute-num-layers": true,
	// distributed
	"--tensor-model-parallel-size": true, "--pipeline-model-parallel-size": true,
	"--sequence-parallel": true, "--use-distributed-optimizer": true,
	"--optimizer-cpu-offload": true,
	// MoE
	"--num-experts": true, "--expert-model-parallel-size": true, "--moe-router-topk": true,
	"--moe-ffn-hidden-size": true, "--moe-shared-expert-intermediate-size": true,
	"--moe-layer-freq": true, "--moe-router-score-function": true, "--moe-router-pre-softmax": true,
	"--moe-router-load-balancing-type": true, "--moe-aux-loss-coeff": true,
	"--moe-z-loss-coeff": true, "--moe-router-enable-expert-bias": true,
	"--moe-router-bias-update-rate": true, "--moe-router-num-groups": true,
	"--moe-router-group-topk": true, "--moe-expert-capacity-factor": true,
	"--moe-grouped-gemm": true, "--moe-token-dispatcher-type": true, "--moe-use-upcycling": true,
	// TransformerConfig.moe_shared_expert_gate, a command-line argument in the releases that
	// build MoE arguments from TransformerConfig (Qwen3-Next support); core_r0.12 lacks it.
	"--moe-shared-expert-gate": true,
	// MLA and MTP
	"--multi-latent-attention": true, "--q-lora-rank": true, "--kv-lora-rank": true,
	"--qk-head-dim": true, "--qk-pos-emb-head-dim": true, "--v-head-dim": true,
	"--mtp-num-layers": true,
}

func load(t *testing.T, path string) *program.Program {
	t.Helper()
	prog, _, ds := check.Load(path, os.ReadFile)
	if ds.HasErrors() {
		t.Fatal(ds.Err())
	}
	return prog
}

func launch(t *testing.T, prog *program.Program, train, stage string) *Launch {
	t.Helper()
	tr := prog.Trains[train]
	for _, st := range tr.Stages {
		if st.Name != stage {
			continue
		}
		p, ds := plan.ForStage(prog, tr, st, plan.Options{})
		if ds.HasErrors() {
			t.Fatal(ds.Err())
		}
		l, err := ForStage(prog, tr, st, p)
		if err != nil {
			t.Fatal(err)
		}
		// Every flag documented, none twice, and the layout is the plan's.
		seen := map[string]bool{}
		for _, a := range l.Args {
			if !documented[a.Flag] {
				t.Errorf("%s/%s: %s is not a documented Megatron-LM argument", train, stage, a.Flag)
			}
			if seen[a.Flag] {
				t.Errorf("%s/%s: %s written twice", train, stage, a.Flag)
			}
			seen[a.Flag] = true
		}
		if ly := l.Layout; ly != p.Layout || l.GPUs != ly.World() {
			t.Errorf("launch layout %+v on %d GPUs, plan %+v", ly, l.GPUs, p.Layout)
		}
		return l
	}
	t.Fatalf("no stage %s", stage)
	return nil
}

func arg(l *Launch, flag string) (string, bool) {
	for _, a := range l.Args {
		if a.Flag == flag {
			return a.Value, true
		}
	}
	return "", false
}

func TestLaunchGolden(t *testing.T) {
	models := load(t, filepath.Join("testdata", "models.moe"))
	hunyuan := load(t, filepath.Join("..", "..", "models", "hunyuan1t.moe"))
	cases := []struct {
		name         string
		prog         *program.Program
		train, stage string
	}{
		{"mixtral", models, "mixtral_8x7b", "main"},
		{"deepseek_v3", models, "deepseek_v3", "main"},
		{"hunyuan_dense", hunyuan, "hunyuan_1t", "dense"},
		{"hunyuan_hundred_billion", hunyuan, "hunyuan_1t", "hundred_billion"},
		{"hunyuan_trillion", hunyuan, "hunyuan_1t", "trillion"},
	}
	got := &txtar.Archive{Comment: []byte("Golden launches (go test ./interop/megatron -update).\n")}
	for _, c := range cases {
		l := launch(t, c.prog, c.train, c.stage)
		var b bytes.Buffer
		if err := l.Write(&b); err != nil {
			t.Fatal(err)
		}
		got.Files = append(got.Files, txtar.File{Name: c.name + ".sh", Data: b.Bytes()})
	}
	golden.Archive(t, filepath.Join("testdata", "launch.txtar"), got, *update)
}

// TestLaunchValues checks the arguments that carry moec's numbers.
func TestLaunchValues(t *testing.T) {
	models := load(t, filepath.Join("testdata", "models.moe"))
	mx := launch(t, models, "mixtral_8x7b", "main")
	for flag, want := range map[string]string{
		"--num-layers": "32", "--hidden-size": "4096", "--num-attention-heads": "32",
		"--num-query-groups": "8", "--num-experts": "8", "--moe-router-topk": "2",
		"--moe-ffn-hidden-size": "14336", "--moe-aux-loss-coeff": "0.02", "--seq-length": "4096",
		"--rotary-base": "1000000", "--lr": "0.0003", "--min-lr": "3e-05", "--global-batch-size": "1024",
		"--normalization": "RMSNorm", "--recompute-granularity": "selective",
	} {
		if got, ok := arg(mx, flag); !ok || got != want {
			t.Errorf("mixtral %s = %q (present %v), want %q", flag, got, ok, want)
		}
	}
	if _, ok := arg(mx, "--moe-layer-freq"); ok {
		t.Errorf("mixtral: --moe-layer-freq written although every layer is MoE")
	}
	if len(mx.Unsupported) != 0 {
		t.Errorf("mixtral: unsupported %v, want none", mx.Unsupported)
	}
	ds := launch(t, models, "deepseek_v3", "main")
	for flag, want := range map[string]string{
		"--moe-layer-freq": "([0]*3+[1]*58)", "--moe-router-score-function": "sigmoid",
		"--moe-router-num-groups": "8", "--moe-router-group-topk": "4",
		"--moe-shared-expert-intermediate-size": "2048", "--kv-lora-rank": "512",
		"--q-lora-rank": "1536", "--qk-pos-emb-head-dim": "64", "--mtp-num-layers": "1",
		"--moe-router-bias-update-rate": "0.001", "--recompute-granularity": "full",
	} {
		if got, ok := arg(ds, flag); !ok || got != want {
			t.Errorf("deepseek %s = %q (present %v), want %q", flag, got, ok, want)
		}
	}
	hy := load(t, filepath.Join("..", "..", "models", "hunyuan1t.moe"))
	tr := launch(t, hy, "hunyuan_1t", "trillion")
	all := strings.Join(tr.Unsupported, "\n")
	for _, w := range []string{"token-embedding routing", "talking heads", "attention-weight sharing", "unified GPU/CPU cache", "growing the experts from 144"} {
		if !strings.Contains(all, w) {
			t.Errorf("hunyuan trillion: unsupported list lacks %q:\n%s", w, all)
		}
	}
	// 26 layers, MoE in every second one: 1, 3, ..., 25.
	if got, _ := arg(tr, "--moe-layer-freq"); got != "([0]*1+[1]*1)*13" {
		t.Errorf("hunyuan --moe-layer-freq = %q, want ([0]*1+[1]*1)*13 (MoE in every second layer)", got)
	}
	// Top-1 softmax without renormalising is the Switch gate: the softmax comes first.
	if _, ok := arg(tr, "--moe-router-pre-softmax"); !ok {
		t.Errorf("hunyuan (top-1, normalize = false): want --moe-router-pre-softmax")
	}
	if _, ok := arg(mx, "--moe-router-pre-softmax"); ok {
		t.Errorf("mixtral (renormalised top-2): --moe-router-pre-softmax written")
	}
	hb := launch(t, hy, "hunyuan_1t", "hundred_billion")
	if _, ok := arg(hb, "--moe-use-upcycling"); !ok {
		t.Errorf("hundred_billion grows from the dense stage: want --moe-use-upcycling")
	}
}

func TestLayerFreqMatchesModel(t *testing.T) {
	for _, m := range []*program.Model{
		{Layers: 8, MoE: &program.MoE{Experts: 4, Every: 3}},
		{Layers: 7, MoE: &program.MoE{Experts: 4, FirstDense: 2, Every: 2}},
		{Layers: 5, MoE: &program.MoE{Experts: 4, Layers: []int{0, 4}}},
	} {
		f := layerFreq(m)
		// Evaluate Megatron's pattern the way its _eval_pattern does, for these shapes.
		got := evalPattern(t, f)
		for i := 0; i < m.Layers; i++ {
			if (got[i] == 1) != m.IsMoELayer(i) {
				t.Errorf("pattern %s layer %d: %d, model says MoE=%v", f, i, got[i], m.IsMoELayer(i))
			}
		}
	}
}

// evalPattern evaluates "(a+b+...)" or "(a+b)*n" with a = "[bit]*count".
func evalPattern(t *testing.T, s string) []int {
	t.Helper()
	rep := 1
	if i := strings.LastIndex(s, ")*"); i >= 0 {
		var err error
		if rep, err = strconv.Atoi(s[i+2:]); err != nil {
			t.Fatal(err)
		}
		s = s[:i+1]
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "("), ")")
	var one []int
	for _, run := range strings.Split(s, "+") {
		var bit, n int
		if _, err := fmt.Sscanf(run, "[%d]*%d", &bit, &n); err != nil {
			t.Fatalf("run %q: %v", run, err)
		}
		for j := 0; j < n; j++ {
			one = append(one, bit)
		}
	}
	var out []int
	for i := 0; i < rep; i++ {
		out = append(out, one...)
	}
	return out
}

// TestUnsupportedListed checks that each feature Megatron's arguments cannot express is
// listed, not dropped.
func TestUnsupportedListed(t *testing.T) {
	const src = `
model odd {
  vocab = 1000; d_model = 256; layers = 4; seq_len = 512
  norm_placement = sandwich; position = relative
  attention { heads = 4; window = 128; sinks = true; share_kv = 2; qkv_bias = true }
  ffn { hidden = 512; activation = geglu; bias = true }
  moe { experts = 8; top_k = 2; score = sigmoid; normalize = false; parallel_dense = true; router_bias = true }
}
cluster c { nodes = 2; gpus_per_node = 8; gpu = a100_80gb; host_memory = 1TB; network = 200Gbps; nvme = 4TB; nvme_bandwidth = 5GB/s }
train odd on c {
  tokens_per_batch = 64 * 512
  optimizer = adam { lr = 1e-3; weight_decay = 0.01 }
  memory = zero(3, offload = nvme)
  data = "x/*.txt"
  stage a { experts = 8; tokens = 1B }
}
`
	dir := t.TempDir()
	path := filepath.Join(dir, "odd.moe")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	l := launch(t, load(t, path), "odd", "a")
	all := strings.Join(l.Unsupported, "\n")
	for _, w := range []string{
		"norm_placement = sandwich", "position = relative", "sliding attention window",
		"attention sinks", "cross-layer K/V sharing", "ffn activation geglu",
		"sigmoid scores without renormalising", "parallel_dense", "a router bias",
		"biases on some linear layers", "ZeRO-3", "offload to NVMe", "Adam with L2 weight decay",
	} {
		if !strings.Contains(all, w) {
			t.Errorf("unsupported list lacks %q:\n%s", w, all)
		}
	}
}

// TestQKNormAndSharedGate holds how the q/k norms and the shared-expert gate translate:
// to Megatron's argument where it builds the same weights and computes the same function,
// and to the unsupported list otherwise, never silently.
func TestQKNormAndSharedGate(t *testing.T) {
	const head = `
cluster c { nodes = 1; gpus_per_node = 8; gpu = h100_80gb; host_memory = 1TB; network = 400Gbps }
train m on c {
  tokens_per_batch = 64 * 512
  optimizer = adamw { lr = 1e-3 }
  data = "x/*.txt"
  stage a { tokens = 1B }
}
model m {
  vocab = 1000; d_model = 256; layers = 4; seq_len = 512
`
	const moeShared = `moe { experts = 8; top_k = 2; shared_experts = 2; expert_hidden = 128 }`
	cases := []struct {
		name  string
		model string // the model body after its sizes
		flags []string
		no    []string
		unsup string // a fragment of the unsupported list, "" for none about these features
		note  string // a fragment of the notes, "" for none needed
	}{
		{name: "no qk norm", model: `norm = rmsnorm; attention { heads = 4 }`,
			no: []string{"--qk-layernorm"}},
		{name: "qk norm per head", model: `norm = rmsnorm; attention { heads = 4; qk_norm = true }`,
			flags: []string{"--qk-layernorm"}},
		{name: "qk norm per_head", model: `norm = rmsnorm; attention { heads = 4; qk_norm = per_head }`,
			flags: []string{"--qk-layernorm"}},
		{name: "qk norm full", model: `norm = rmsnorm; attention { heads = 4; kv_heads = 2; qk_norm = full }`,
			no: []string{"--qk-layernorm"}, unsup: "qk_norm = full"},
		{name: "qk norm in a layernorm model", model: `norm = layernorm; attention { heads = 4; qk_norm = true }`,
			flags: []string{"--qk-layernorm"}, unsup: "RMSNorm q/k norms in a layernorm model"},
		{name: "latent attention has latent norms", model: `norm = rmsnorm; attention { heads = 4; q_lora_rank = 64; kv_lora_rank = 32; qk_nope_head_dim = 32; qk_rope_head_dim = 16; v_head_dim = 32 }`,
			flags: []string{"--multi-latent-attention", "--qk-layernorm"}},
		{name: "qk norm on latent attention", model: `norm = rmsnorm; attention { heads = 4; kv_lora_rank = 32; qk_nope_head_dim = 32; qk_rope_head_dim = 16; v_head_dim = 32; qk_norm = true }`,
			flags: []string{"--qk-layernorm"}, unsup: "qk_norm on latent attention"},
		{name: "shared experts without gate", model: `norm = rmsnorm; attention { heads = 4 }; ` + moeShared,
			flags: []string{"--moe-shared-expert-intermediate-size"}, no: []string{"--moe-shared-expert-gate"}},
		{name: "shared experts with gate", model: `norm = rmsnorm; attention { heads = 4 }; moe { experts = 8; top_k = 2; shared_experts = 2; expert_hidden = 128; shared_gate = true }`,
			flags: []string{"--moe-shared-expert-intermediate-size", "--moe-shared-expert-gate"}, note: "moe_shared_expert_gate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := launch(t, load(t, writeModel(t, head+"  "+c.model+"\n}\n")), "m", "a")
			for _, f := range c.flags {
				if _, ok := arg(l, f); !ok {
					t.Errorf("%s missing", f)
				}
			}
			for _, f := range c.no {
				if _, ok := arg(l, f); ok {
					t.Errorf("%s written", f)
				}
			}
			all := strings.Join(l.Unsupported, "\n")
			about := strings.Contains(all, "qk_norm") || strings.Contains(all, "q/k norm") || strings.Contains(all, "shared")
			switch {
			case c.unsup == "" && about:
				t.Errorf("unsupported list names these features although Megatron expresses them:\n%s", all)
			case c.unsup != "" && !strings.Contains(all, c.unsup):
				t.Errorf("unsupported list lacks %q:\n%s", c.unsup, all)
			}
			if notes := strings.Join(l.Notes, "\n"); c.note != "" && !strings.Contains(notes, c.note) {
				t.Errorf("notes lack %q:\n%s", c.note, notes)
			}
		})
	}
	if v, _ := arg(launch(t, load(t, writeModel(t, head+"  norm = rmsnorm; attention { heads = 4 }; "+moeShared+"\n}\n")), "m", "a"), "--moe-shared-expert-intermediate-size"); v != "256" {
		t.Errorf("--moe-shared-expert-intermediate-size = %q, want 256 (2 shared experts of 128)", v)
	}
}

func writeModel(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.moe")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
