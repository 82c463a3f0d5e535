package megatron

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/internal/golden"
)

var update = flag.Bool("update", false, "rewrite testdata/launch.txtar")

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
		// Every flag one of Megatron-LM's arguments, none twice, and the layout is the plan's.
		table := megatronArgTable(t)
		seen := map[string]bool{}
		for _, a := range l.Args {
			if _, ok := table[a.Flag]; !ok {
				t.Errorf("%s/%s: %s is not a Megatron-LM argument", train, stage, a.Flag)
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
		{"deepseek_v3_32_nodes", load(t, filepath.Join("testdata", "deepseek_v3_32_nodes.moe")), "deepseek_v3", "main"},
		{"switch_c_2048", models, "switch_c_2048", "main"},
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
	// DeepSeek-V3: what Megatron's recipe sets that moec's model does not train is said, and
	// routing runs in fp32 as moec's does.
	if got, _ := arg(ds, "--moe-router-dtype"); got != "fp32" {
		t.Errorf("deepseek --moe-router-dtype = %q, want fp32", got)
	}
	if got, _ := arg(ds, "--moe-router-load-balancing-type"); got != "aux_loss" {
		t.Errorf("deepseek --moe-router-load-balancing-type = %q, want aux_loss (moec's balance loss is per micro-batch)", got)
	}
	notes := strings.Join(ds.Notes, "\n")
	for _, w := range []string{"seq_aux_loss", "--moe-router-topk-scaling-factor 2.5"} {
		if !strings.Contains(notes, w) {
			t.Errorf("deepseek notes lack %q:\n%s", w, notes)
		}
	}
	if strings.Contains(strings.Join(mx.Notes, "\n"), "seq_aux_loss") {
		t.Errorf("mixtral (no aux-free bias): the DeepSeek balance-loss note was written")
	}
	hy := load(t, filepath.Join("..", "..", "models", "hunyuan1t.moe"))
	// The header explains a batch that is not tokens_per_batch as written.
	dense := launch(t, hy, "hunyuan_1t", "dense")
	for _, w := range []string{"--global-batch-size 960 sequences = dp 192 × --micro-batch-size 1 × 5 micro-batches", "not tokens_per_batch = 2,097,152 as written"} {
		if !strings.Contains(dense.Batch, w) {
			t.Errorf("hunyuan dense batch text lacks %q: %s", w, dense.Batch)
		}
	}
	if strings.Contains(mx.Batch, "as written") {
		t.Errorf("mixtral runs tokens_per_batch as written, but the header says otherwise: %s", mx.Batch)
	}
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
		programtest.Model(t, "every3", "vocab = 64; d_model = 32; layers = 8; seq_len = 16\nattention { heads = 2 }\nmoe { experts = 4; every = 3 }"),
		programtest.Model(t, "firstdense", "vocab = 64; d_model = 32; layers = 7; seq_len = 16\nattention { heads = 2 }\nmoe { experts = 4; first_dense = 2; every = 2 }"),
		programtest.Model(t, "listed", "vocab = 64; d_model = 32; layers = 5; seq_len = 16\nattention { heads = 2 }\nmoe { experts = 4; layers = [0, 4] }"),
	} {
		f := layerFreq(m)
		// Evaluate Megatron's pattern the way its _eval_pattern does, for these shapes.
		got, err := evalLayerPattern(f)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < m.Layers; i++ {
			if (got[i] == 1) != m.IsMoELayer(i) {
				t.Errorf("pattern %s layer %d: %d, model says MoE=%v", f, i, got[i], m.IsMoELayer(i))
			}
		}
	}
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

// TestPlaceRanks holds how a world size sits on nodes: whole nodes, then one with the rest,
// never nodes × (world / nodes) ranks.
func TestPlaceRanks(t *testing.T) {
	for _, c := range []struct {
		world, nodeSize          int
		nodes, perNode, lastNode int
	}{
		{world: 244, nodeSize: 8, nodes: 31, perNode: 8, lastNode: 4},
		{world: 128, nodeSize: 8, nodes: 16, perNode: 8, lastNode: 0},
		{world: 4, nodeSize: 8, nodes: 1, perNode: 4, lastNode: 0},
		{world: 9, nodeSize: 8, nodes: 2, perNode: 8, lastNode: 1},
		{world: 1, nodeSize: 0, nodes: 1, perNode: 1, lastNode: 0},
		{world: 0, nodeSize: 8, nodes: 0, perNode: 1, lastNode: 0},
	} {
		var l Launch
		l.placeRanks(c.world, c.nodeSize)
		if l.GPUs != c.world || l.Nodes != c.nodes || l.GPUsPerNode != c.perNode || l.LastNodeGPUs != c.lastNode {
			t.Errorf("world %d on %d-GPU nodes: %d nodes × %d, last %d; want %d × %d, last %d",
				c.world, c.nodeSize, l.Nodes, l.GPUsPerNode, l.LastNodeGPUs, c.nodes, c.perNode, c.lastNode)
		}
		ranks := l.Nodes * l.GPUsPerNode
		if l.LastNodeGPUs > 0 {
			ranks = (l.Nodes-1)*l.GPUsPerNode + l.LastNodeGPUs
		}
		if ranks != c.world {
			t.Errorf("world %d: the nodes run %d ranks", c.world, ranks)
		}
	}
}

// TestUserValueQuoting holds that a message cannot end or break the "${VAR:?message}" word:
// bash pairs a ' inside it, and $, `, \, " and } would expand or end it.
func TestUserValueQuoting(t *testing.T) {
	got := userValue("SAVE_DIR", `set SAVE_DIR to this stage's "dir" ($HOME, `+"`x`"+`, \n})`)
	if want := `"${SAVE_DIR:?set SAVE_DIR to this stages dir (HOME, x, n)}"`; got != want {
		t.Errorf("userValue = %s, want %s", got, want)
	}
}
