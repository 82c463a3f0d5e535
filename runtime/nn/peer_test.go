package nn

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/program"
)

// peerPython is the interpreter that has torch; MOEC_PEER_PYTHON overrides it.
func peerPython(t testing.TB) string {
	py := os.Getenv("MOEC_PEER_PYTHON")
	if py == "" {
		py = "python3"
		if _, err := os.Stat("/usr/bin/python3"); err == nil {
			py = "/usr/bin/python3"
		}
	}
	if err := exec.Command(py, "-c", "import torch").Run(); err != nil {
		t.Skipf("PyTorch peer skipped: %s cannot import torch (%v)", py, err)
	}
	return py
}

// peerCases cover every feature the issue lists, several per model to keep runs short.
func peerCases() map[string]func() *program.Model {
	base := func() *program.Model {
		m := tinyDense()
		m.Vocab, m.VocabPadTo, m.DModel, m.Layers = 19, 8, 16, 2
		m.Attention = program.Attention{Heads: 4, KVHeads: 2, HeadDim: 4, ShareWeights: 1}
		m.FFN.Hidden = 24
		return m
	}
	moe := func() *program.Model {
		m := base()
		m.MoE = &program.MoE{Experts: 4, TopK: 2, ExpertHidden: 10, Activation: program.SwiGLU,
			Router: program.RouteHidden, Score: program.Softmax, Normalize: true,
			BalanceLoss: 0.01, ZLoss: 0.001, Every: 1}
		return m
	}
	return map[string]func() *program.Model{
		"dense_gqa_rotary_swiglu_qk_norm_sinks": func() *program.Model {
			m := base()
			m.Attention.QKNorm, m.Attention.Sinks = true, true
			return m
		},
		"moe_softmax_top2_talking_heads_share_half_groups_share_kv": func() *program.Model {
			m := moe()
			m.Attention.ShareKV, m.Attention.QKNorm = 2, true
			m.MoE.Experts, m.MoE.Groups, m.MoE.TopKGroups = 6, 3, 1
			m.Layers = 4
			m.Attention.TalkingHeads, m.Attention.ShareWeights = true, 0.5
			return m
		},
		"moe_sigmoid_token_embedding_shared_learned_tied_layernorm": func() *program.Model {
			m := moe()
			m.Norm, m.Position, m.MaxPosition, m.TieEmbeddings = program.LayerNorm, program.Learned, 12, true
			m.Attention.BiasQKV, m.Attention.BiasOut = true, true
			m.MoE.Score, m.MoE.Router, m.MoE.RouterDim, m.MoE.RouterBias = program.Sigmoid, program.RouteTokenEmbedding, 6, true
			m.MoE.SharedExperts, m.MoE.Activation, m.MoE.ZLoss = 1, program.GeGLU, 0.01
			m.MoE.ExpertBias, m.FFN.Bias = true, true
			return m
		},
		// HunYuan's q/k norms after rotary positions with cross-layer K/V sharing (each
		// layer's own key norm of its group's rotated keys), and DBRX's clamped projections.
		"moe_qk_norm_after_rope_share_kv_clip_qkv": func() *program.Model {
			m := moe()
			m.Layers = 4
			m.Attention.QKNorm, m.Attention.QKNormAfterRope, m.Attention.ShareKV, m.Attention.ClipQKV = true, true, 2, 0.3
			return m
		},
		// OLMoE's whole-projection q/k norms and Qwen2-MoE's gated shared expert (two
		// shared experts here, so the gate is seen to scale their sum).
		"moe_qk_norm_full_shared_gate_share_kv": func() *program.Model {
			m := moe()
			m.Layers = 3
			m.Attention.QKNorm, m.Attention.QKNormFull, m.Attention.ShareKV = true, true, 2
			m.MoE.SharedExperts, m.MoE.SharedHidden, m.MoE.SharedGate = 2, 7, true
			m.MoE.CapacityFactor = 0
			return m
		},
		"moe_capacity_top1_gelu_window_dense_first": func() *program.Model {
			m := moe()
			m.Layers = 3
			m.Attention.Window = 3
			m.FFN.Activation = program.GELU
			m.MoE.TopK, m.MoE.CapacityFactor, m.MoE.Activation, m.MoE.FirstDense = 1, 0.75, program.ReLU, 1
			m.MoE.Normalize, m.MoE.ParallelDense, m.FFN.Bias = false, true, true
			m.NormPlacement = program.SandwichNorm
			return m
		},
		"dense_post_norm_layernorm_learned": func() *program.Model {
			m := base()
			m.NormPlacement, m.Norm, m.FinalNorm = program.PostNorm, program.LayerNorm, false
			m.Position, m.MaxPosition = program.Learned, 7
			return m
		},
	}
}

// peerRun is one case prepared for the peer: its directory and what Go computed.
type peerRun struct {
	name   string
	dir    string
	params int
	st     Stats
}

// TestPeerPyTorch prepares every case, runs peer.py once over all of them (importing torch
// costs seconds) and checks each case's comparison.
func TestPeerPyTorch(t *testing.T) {
	py := peerPython(t)
	cases := peerCases()
	names := make([]string, 0, len(cases))
	for n := range cases {
		names = append(names, n)
	}
	sort.Strings(names)
	var runs []peerRun
	for _, name := range names {
		cfg := cases[name]()
		m, err := New(cfg, 5)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r := rand.New(rand.NewPCG(9, 10))
		for _, p := range m.Params() {
			for i := range p.W {
				p.W[i] += float32(0.2 * r.NormFloat64())
			}
		}
		b := randBatch(r, cfg.Vocab, 3, 7)
		opts := StepOptions{Seed: 7, Step: 4, Train: true} // dice [t t f t] for four layers
		logits, err := m.Logits(b, opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		m.ZeroGrad()
		st, err := m.ForwardBackward(b, opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if cfg.Attention.ShareWeights < 1 && st.SharedLayers == 0 {
			t.Fatalf("%s: no layer reused attention weights: the sharing path is not exercised", name)
		}
		if cfg.MoE != nil && cfg.MoE.CapacityFactor > 0 && st.Dropped == 0 {
			t.Fatalf("%s: no assignment was dropped: the capacity path is not exercised", name)
		}
		dir := filepath.Join(t.TempDir(), name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		writePeerInputs(t, dir, m, b, logits, st, opts)
		runs = append(runs, peerRun{name: name, dir: dir, params: len(m.Params()), st: st})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := []string{filepath.Join("testdata", "peer.py")}
	for _, r := range runs {
		args = append(args, r.dir)
	}
	out, err := exec.CommandContext(ctx, py, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("peer.py: %v\n%s", err, out)
	}
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	if len(lines) < len(runs) {
		t.Fatalf("peer.py printed %d lines for %d cases:\n%s", len(lines), len(runs), out)
	}
	lines = lines[len(lines)-len(runs):]
	for i, run := range runs {
		t.Run(run.name, func(t *testing.T) {
			var res struct {
				OK     bool               `json:"ok"`
				Worst  string             `json:"worst"`
				MaxRel float64            `json:"max_rel"`
				Errors map[string]float64 `json:"errors"`
			}
			if err := json.Unmarshal(lines[i], &res); err != nil {
				t.Fatalf("peer.py output: %v\n%s", err, lines[i])
			}
			if len(res.Errors) < run.params+5 {
				t.Fatalf("peer compared %d quantities, want at least %d", len(res.Errors), run.params+5)
			}
			t.Logf("%d quantities compared; worst %s relative error %.2e (loss %.5f, shared layers %d, dropped %d)",
				len(res.Errors), res.Worst, res.MaxRel, run.st.Loss, run.st.SharedLayers, run.st.Dropped)
			if !res.OK {
				names := make([]string, 0, len(res.Errors))
				for n := range res.Errors {
					names = append(names, n)
				}
				sort.Slice(names, func(i, j int) bool { return res.Errors[names[i]] > res.Errors[names[j]] })
				for _, n := range names[:min(8, len(names))] {
					t.Errorf("%s: relative error %.3e", n, res.Errors[n])
				}
			}
		})
	}
}

func lastLine(b []byte) []byte {
	b = bytes.TrimRight(b, "\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return b
}

// writePeerInputs writes config.json and tensors.safetensors for peer.py.
func writePeerInputs(t *testing.T, dir string, m *Model, b Batch, logits []float32, st Stats, o StepOptions) {
	t.Helper()
	c := m.c
	cfg := c.cfg
	moeLayers := []int{} // [] rather than null in JSON
	for i := 0; i < c.d.L; i++ {
		if cfg.IsMoELayer(i) {
			moeLayers = append(moeLayers, i)
		}
	}
	conf := map[string]any{
		"B": b.B, "T": b.T, "V": c.d.V, "D": c.d.D, "H": c.d.H, "KV": c.d.KV, "Dh": c.d.Dh, "L": c.d.L,
		"norm": string(cfg.Norm), "eps": cfg.NormEps, "final_norm": cfg.FinalNorm,
		"position": string(cfg.Position), "rope_base": cfg.RopeBase, "tie": cfg.TieEmbeddings,
		"talking_heads": cfg.Attention.TalkingHeads, "window": c.d.Window,
		"bias_qkv": cfg.Attention.BiasQKV, "bias_out": cfg.Attention.BiasOut,
		"qk_norm": cfg.Attention.QKNorm, "qk_norm_full": cfg.Attention.QKNormFull,
		"qk_norm_after_rope": cfg.Attention.QKNormAfterRope, "clip_qkv": cfg.Attention.ClipQKV, "sinks": cfg.Attention.Sinks, "parallel_dense": false,
		"placement": string(placement(cfg)), "share_kv": c.d.ShareKV,
		"ffn_act": string(cfg.FFN.Activation), "moe_layers": moeLayers,
		"recompute": shareDice(cfg.Attention.RecomputeProbability(), c.d.L, o.Seed, o.Step, o.Train || o.AttnShare),
		"tolerance": 1e-4, "balance_loss": 0.0, "z_loss": 0.0,
		"go": map[string]float64{"loss": st.Loss, "ce": st.CE, "balance": st.Balance, "zloss": st.ZLoss},
	}
	if mo := cfg.MoE; mo != nil {
		conf["E"], conf["K"], conf["expert_act"], conf["shared"] = c.d.E, c.d.K, string(expertActivation(cfg)), c.d.Shared
		conf["router"], conf["score"], conf["normalize"] = string(mo.Router), string(mo.Score), mo.Normalize
		conf["router_bias"], conf["capacity_factor"] = mo.RouterBias, mo.CapacityFactor
		conf["balance_loss"], conf["z_loss"] = mo.BalanceLoss, mo.ZLoss
		conf["parallel_dense"], conf["shared_gate"] = mo.ParallelDense, mo.SharedGate
		conf["groups"], conf["topk_groups"] = mo.Groups, mo.TopKGroups
	}
	js, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	toks := make([]float32, len(b.Tokens))
	for i, v := range b.Tokens {
		toks[i] = float32(v)
	}
	ts := []namedTensor{{"go.tokens", []int{len(toks)}, toks}, {"go.logits", []int{len(logits)}, logits}}
	for _, p := range m.Params() {
		ts = append(ts, namedTensor{p.Name, p.Shape, p.W}, namedTensor{"go.grad." + p.Name, p.Shape, p.G})
	}
	if err := os.WriteFile(filepath.Join(dir, "tensors.safetensors"), encodeSafetensors(ts), 0o644); err != nil {
		t.Fatal(err)
	}
}

type namedTensor struct {
	name  string
	shape []int
	data  []float32
}

// encodeSafetensors is a minimal F32 safetensors writer, kept in the test so the peer
// check does not depend on the checkpoint package it is meant to be independent of.
func encodeSafetensors(ts []namedTensor) []byte {
	header := map[string]any{}
	off := 0
	for _, t := range ts {
		header[t.name] = map[string]any{"dtype": "F32", "shape": t.shape, "data_offsets": []int{off, off + 4*len(t.data)}}
		off += 4 * len(t.data)
	}
	js, err := json.Marshal(header)
	if err != nil {
		panic(fmt.Sprint("marshal header: ", err))
	}
	for len(js)%8 != 0 {
		js = append(js, ' ')
	}
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.LittleEndian, uint64(len(js)))
	buf.Write(js)
	for _, t := range ts {
		for _, v := range t.data {
			_ = binary.Write(&buf, binary.LittleEndian, math.Float32bits(v))
		}
	}
	return buf.Bytes()
}
