package megatron

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/human"
)

// Arg is one Megatron-Core command-line argument. Value is "" for a switch.
type Arg struct {
	Flag  string
	Value string
	// Env, when set, makes the value the user's: the command reads it from this environment
	// variable and stops with Value as its message when the variable is unset
	// (--data-path "${DATA_PATH:?set DATA_PATH to ...}").
	Env string
}

// EnvVar is an environment variable the command sets for every rank.
type EnvVar struct {
	Name, Value string
}

// Launch is the Megatron-Core launch that realises one stage's plan.
type Launch struct {
	Train, Stage string
	// GPUs is the world size: the ranks the parallel sizes need (dp × tp × pp), which is
	// the number of processes the torchrun command starts over all nodes.
	GPUs int
	// Nodes is how many nodes run ranks; GPUsPerNode is the cluster's node size. Every node
	// runs GPUsPerNode ranks except the last, which runs LastNodeGPUs when GPUs is not a
	// whole number of nodes (0 when it is).
	Nodes, GPUsPerNode, LastNodeGPUs int
	Layout                           plan.ParallelLayout
	// Env is set on the command line: CUDA_DEVICE_MAX_CONNECTIONS=1 where Megatron requires it.
	Env  []EnvVar
	Args []Arg
	// Batch explains --global-batch-size and --train-iters: how the batch splits into
	// micro-batches and, when it differs, why it is not tokens_per_batch as written.
	Batch string
	// Unsupported lists what moec's model or training does that these arguments cannot
	// express: a Megatron run with them trains something else in those respects.
	Unsupported []string
	// Notes say what the user must still supply or what differs only in how, not what.
	Notes []string
}

type builder struct {
	l          *Launch
	stageModel *program.Model // the stage's model
	from       *program.Stage // the stage this one starts from, nil for none
	upcycle    bool           // from a dense stage into an MoE one: --moe-use-upcycling
}

func (b *builder) add(flag string, v any) {
	var s string
	switch x := v.(type) {
	case nil:
	case float64:
		s = strconv.FormatFloat(x, 'g', -1, 64)
	default:
		s = fmt.Sprint(x)
	}
	b.l.Args = append(b.l.Args, Arg{Flag: flag, Value: s})
}

func (b *builder) flag(flag string) { b.add(flag, nil) }

func (b *builder) unsupported(cond bool, format string, args ...any) {
	if cond {
		b.l.Unsupported = append(b.l.Unsupported, fmt.Sprintf(format, args...))
	}
}

func (b *builder) note(format string, args ...any) {
	b.l.Notes = append(b.l.Notes, fmt.Sprintf(format, args...))
}

// ForStage returns the Megatron-Core arguments for stage st of train t, laid out as p (the
// plan moec chose for that stage: compiler/plan.ForStage).
func ForStage(prog *program.Program, t *program.Train, st *program.Stage, p *plan.Plan) (*Launch, error) {
	base := prog.Models[t.Model]
	if base == nil {
		return nil, fmt.Errorf("megatron: train %s names model %s, which the program lacks", t.Name, t.Model)
	}
	if p == nil {
		return nil, fmt.Errorf("megatron: no plan for stage %s", st.Name)
	}
	m := program.StageModel(base, st)
	l := &Launch{Train: t.Name, Stage: st.Name, Layout: p.Layout}
	l.placeRanks(p.Layout.World(), p.Cluster.GPUsPerNode)
	b := &builder{l: l, stageModel: m}
	b.model(m, t)
	b.moe(m, t, st, prog)
	b.parallel(p, t)
	b.optimizer(t, st, p)
	b.checkpoints(t, st, p)
	b.data(m, t)
	b.batch(p, t)
	return l, nil
}

// placeRanks spreads world ranks over nodes of nodeSize GPUs: whole nodes first, then the
// rest on one more node. torchrun gives each node's ranks the global ranks after those of
// the lower node ranks (its elastic agent's rank assignment sums the nodes' process counts),
// so a last node with fewer processes still makes a job of exactly world ranks, which is
// what Megatron's world-size checks need; nodes × nodeSize processes would not be.
func (l *Launch) placeRanks(world, nodeSize int) {
	l.GPUs = world
	if nodeSize <= 0 || nodeSize > world {
		nodeSize = max(world, 1)
	}
	l.GPUsPerNode = nodeSize
	l.Nodes = (world + nodeSize - 1) / nodeSize
	l.LastNodeGPUs = world % nodeSize
}

func (b *builder) model(m *program.Model, t *program.Train) {
	a := m.Attention
	b.add("--num-layers", m.Layers)
	b.add("--hidden-size", m.DModel)
	b.add("--ffn-hidden-size", m.FFN.Hidden)
	b.add("--num-attention-heads", a.Heads)
	if a.KVHeads != a.Heads && !a.MLA {
		b.flag("--group-query-attention")
		b.add("--num-query-groups", a.KVHeads)
	}
	if !a.MLA && a.HeadDim*int64(a.Heads) != m.DModel {
		b.add("--kv-channels", a.HeadDim)
	}
	if a.MLA {
		b.flag("--multi-latent-attention")
		if a.QLoraRank > 0 {
			b.add("--q-lora-rank", a.QLoraRank)
		}
		b.add("--kv-lora-rank", a.KVLoraRank)
		b.add("--qk-head-dim", a.QKNopeHeadDim)
		b.add("--qk-pos-emb-head-dim", a.QKRopeHeadDim)
		b.add("--v-head-dim", a.VHeadDim)
	}
	seq := t.SeqLen
	if seq <= 0 {
		seq = m.SeqLen
	}
	b.add("--seq-length", seq)
	maxPos := m.SeqLen
	if m.Position == program.Learned && m.MaxPosition > 0 {
		maxPos = m.MaxPosition
	}
	b.add("--max-position-embeddings", maxPos)
	switch m.Position {
	case program.Rotary:
		b.add("--position-embedding-type", "rope")
		b.add("--rotary-base", strconv.FormatFloat(m.RopeBase, 'f', -1, 64))
	case program.Learned:
		b.add("--position-embedding-type", "learned_absolute")
	case program.NoPosition:
		b.add("--position-embedding-type", "none")
	default:
		b.unsupported(true, "position = %s (Megatron's GPT model has rope, learned_absolute or none)", m.Position)
	}
	if m.Norm == program.RMSNorm {
		b.add("--normalization", "RMSNorm")
	} else {
		b.add("--normalization", "LayerNorm")
	}
	b.add("--norm-epsilon", m.NormEps)
	switch m.FFN.Activation {
	case program.SwiGLU:
		b.flag("--swiglu")
	case program.GELU:
		// Megatron's default activation is GELU.
	default:
		b.unsupported(true, "ffn activation %s (Megatron's launch arguments give GELU or --swiglu)", m.FFN.Activation)
	}
	if m.MoE != nil && m.MoE.Activation != m.FFN.Activation {
		b.unsupported(true, "experts with activation %s while the dense FFN uses %s (one activation for both in Megatron)", m.MoE.Activation, m.FFN.Activation)
	}
	if !m.TieEmbeddings {
		b.flag("--untie-embeddings-and-output-weights")
	}
	anyBias := a.BiasQKV || a.BiasOut || m.FFN.Bias || (m.MoE != nil && (m.MoE.ExpertBias || m.MoE.RouterBias))
	switch {
	case !anyBias:
		b.flag("--disable-bias-linear")
	case a.BiasQKV && !a.BiasOut && !m.FFN.Bias && (m.MoE == nil || !m.MoE.ExpertBias):
		b.flag("--disable-bias-linear")
		b.flag("--add-qkv-bias")
	case a.BiasQKV && a.BiasOut && m.FFN.Bias && (m.MoE == nil || m.MoE.ExpertBias):
		// Megatron's default: a bias on every linear layer.
	default:
		b.unsupported(true, "biases on some linear layers but not others (Megatron biases all, none, or Q/K/V only)")
	}
	if m.MoE != nil && m.MoE.RouterBias {
		b.unsupported(true, "a router bias")
	}
	b.qkNorm(m)
	b.add("--attention-dropout", 0)
	b.add("--hidden-dropout", 0)
	pad := m.VocabPadTo
	if pad < 1 {
		pad = 1
	}
	b.add("--vocab-size", m.Vocab)
	b.add("--make-vocab-size-divisible-by", pad)
	if m.MTPDepth > 0 {
		b.add("--mtp-num-layers", m.MTPDepth)
	}
	b.unsupported(m.Encoder > 0, "an encoder-decoder stack (pretrain_gpt.py trains decoder-only models)")
	b.unsupported(m.NormPlacement == program.PostNorm || m.NormPlacement == program.SandwichNorm, "norm_placement = %s (Megatron's GPT layers are pre-norm)", m.NormPlacement)
	b.unsupported(!m.FinalNorm, "final_norm = false")
	b.unsupported(a.TalkingHeads, "talking heads (head-mixing matrices around the softmax)")
	b.unsupported(a.ShareWeights < 1, "stochastic attention-weight sharing (share_weights = %v)", a.ShareWeights)
	b.unsupported(a.ShareKV > 1, "cross-layer K/V sharing (share_kv = %d)", a.ShareKV)
	b.unsupported(a.Sinks, "learned attention sinks")
	b.unsupported(a.Window > 0, "a sliding attention window (window = %d)", a.Window)
	b.unsupported(a.ClipQKV > 0, "clipped Q/K/V projections (clip_qkv = %v)", a.ClipQKV)
	b.unsupported(m.NormNoBias && m.Norm == program.LayerNorm, "LayerNorms without biases (norm_bias = false; Megatron's LayerNorm has them)")
	b.unsupported(m.HeadBias, "an output-head bias (head_bias)")
	b.unsupported(a.FullEvery > 0 && a.Window > 0, "sliding windows in some layers only (full_every = %d)", a.FullEvery)
	b.unsupported(a.NopeEvery > 0, "layers without rotary positions (nope_every = %d)", a.NopeEvery)
	b.unsupported(a.ChunkSize > 0, "chunked attention (chunk = %d)", a.ChunkSize)
	b.unsupported(a.QKL2Norm, "unscaled q/k norms after rotary positions (qk_l2_norm)")
	b.unsupported(a.NopeTemperature > 0, "a query temperature in layers without rotary positions (nope_temperature)")
	b.unsupported(a.QKNorm && a.QKNormAfterRope, "q/k norms after rotary positions (qk_norm_after_rope; Megatron's --qk-layernorm norms before them)")
	if rs := m.RopeScaling; rs != nil && m.Position == program.Rotary {
		// Megatron's --rope-type yarn serves multi-latent attention only, and
		// --use-rope-scaling is Llama 3.1's scaling with its parameters fixed.
		b.unsupported(true, "%s rotary scaling (rope_scaling): Megatron's GPT model rotates by the plain frequencies", rs.Type)
	}
}

// qkNorm writes Megatron's --qk-layernorm where it builds the norms moec trains, and lists
// the q/k norms it cannot build. Megatron's switch means two things: in standard attention
// one norm over head_dim shared by every head, for queries and for keys (Qwen3's q_norm and
// k_norm), of the --normalization kind; in multi-latent attention the norms of the query and
// key/value latents (DeepSeek's q_a_layernorm and kv_a_layernorm), which are identities
// without it.
func (b *builder) qkNorm(m *program.Model) {
	a := m.Attention
	switch {
	case a.MLA:
		// moec's latent attention always has the latent norms (compiler/analysis counts them).
		b.flag("--qk-layernorm")
		b.unsupported(a.QKNorm, "qk_norm on latent attention (norms on each head's queries and keys; Megatron's MLA norms only the latents)")
	case !a.QKNorm:
	case a.QKNormFull:
		// Not --qk-layernorm: a per-head norm has other weights (head_dim, not heads·head_dim)
		// and normalises each head on its own, so it would train a different model.
		b.unsupported(true, "qk_norm = full (one RMSNorm over the whole query and key projections, as OLMoE; Megatron's --qk-layernorm norms each head over head_dim)")
	default:
		b.flag("--qk-layernorm")
		b.unsupported(m.Norm != program.RMSNorm, "RMSNorm q/k norms in a %s model (moec's q/k norms are RMSNorm scales; Megatron's --qk-layernorm uses the --normalization kind, here LayerNorm with a bias)", m.Norm)
	}
}

func (b *builder) moe(m *program.Model, t *program.Train, st *program.Stage, prog *program.Program) {
	// A distillation stage's student starts from its own initialisation: its teacher is no
	// checkpoint to load, and Megatron's pretraining has no teacher to run.
	b.unsupported(st.Distill != nil, "distillation from stage %s: Megatron-LM's pretraining runs no teacher, so this launch trains the student on the labels alone", st.From)
	if st.From != "" && st.Distill == nil {
		var from *program.Stage
		for _, s := range t.Stages {
			if s.Name == st.From {
				from = s
			}
		}
		b.from = from
		if from != nil {
			fm := program.StageModel(prog.Models[t.Model], from)
			switch {
			case fm.MoE == nil && m.MoE != nil:
				b.flag("--moe-use-upcycling")
				b.upcycle = true
				b.note("stage %s starts from the dense stage %s: --moe-use-upcycling loads its checkpoint (--load), copies the dense FFN into every expert and saves the result to --save before training; Megatron refuses the switch once --save holds a checkpoint, so to resume this stage after an interruption drop it and load from SAVE_DIR", st.Name, st.From)
				b.unsupported(st.Grow.Kind == "copy" && st.Grow.Noise > 0, "noise on the copied experts (grow = copy(noise = %v)): upcycling copies exactly", st.Grow.Noise)
				b.unsupported(st.Grow.Kind == "random", "random initialisation of the new experts (grow = random): upcycling copies the dense FFN")
			case fm.MoE != nil && m.MoE != nil && fm.MoE.Experts != m.MoE.Experts:
				b.unsupported(true, "growing the experts from %d (stage %s) to %d: Megatron has no expert growth between MoE checkpoints, so the --load below does not hold this stage's experts", fm.MoE.Experts, st.From, m.MoE.Experts)
			}
		}
	}
	e := m.MoE
	if e == nil {
		return
	}
	b.add("--num-experts", e.Experts)
	b.add("--moe-router-topk", e.TopK)
	b.add("--moe-ffn-hidden-size", e.ExpertHidden)
	if e.SharedExperts > 0 {
		// Megatron holds the shared experts as one FFN of their summed width, which has the
		// same parameters and computes the same sum.
		b.add("--moe-shared-expert-intermediate-size", int64(e.SharedExperts)*e.SharedHidden)
		if e.SharedGate {
			// Megatron-Core's SharedExpertMLP gate is Qwen2-MoE's: a [1, hidden] weight without
			// bias, sigmoid(x·g) scaling the summed shared output per token.
			b.flag("--moe-shared-expert-gate")
			b.note("--moe-shared-expert-gate needs a Megatron-LM whose TransformerConfig has moe_shared_expert_gate (the releases with Qwen3-Next support); older ones exit with \"unrecognized arguments\"")
		}
	}
	if freq := layerFreq(m); freq != "" {
		b.add("--moe-layer-freq", freq)
	}
	b.add("--moe-router-score-function", string(e.Score))
	// Megatron's softmax router takes the top k logits and then a softmax over them (moec's
	// normalize = true), or with --moe-router-pre-softmax a softmax over every expert and
	// then the top k as they are (normalize = false; for top-1 the Switch gate). Its sigmoid
	// router renormalises the top k when k > 1 and not when k = 1.
	switch {
	case e.Score == program.Softmax && !e.Normalize:
		b.flag("--moe-router-pre-softmax")
	case e.Score == program.Softmax && e.TopK == 1:
		// TransformerConfig refuses top-1 softmax after the top-k ("Please use
		// --moe-router-pre-softmax when topk is 1": a softmax over one logit has no
		// gradient), so the nearest launch that starts is the Switch gate.
		b.flag("--moe-router-pre-softmax")
		b.unsupported(true, "a renormalised top-1 softmax gate (always 1): Megatron refuses top-1 softmax without --moe-router-pre-softmax, written here, which scales each expert's output by its softmax probability")
	case e.Score == program.Sigmoid && !e.Normalize && e.TopK > 1:
		b.unsupported(true, "sigmoid scores without renormalising the top-k gates (Megatron renormalises sigmoid top-k scores)")
	case e.Score == program.Sigmoid && e.Normalize && e.TopK == 1:
		b.unsupported(true, "a renormalised top-1 sigmoid gate (always 1; Megatron keeps the sigmoid score)")
	}
	if e.BalanceLoss > 0 {
		// moec's balance loss is Switch's, over all tokens of a micro-batch: Megatron's
		// aux_loss. Not seq_aux_loss (DeepSeek-V2/V3's per-sequence loss), which moec does
		// not train.
		b.add("--moe-router-load-balancing-type", "aux_loss")
		b.add("--moe-aux-loss-coeff", e.BalanceLoss)
		if e.AuxFreeBias > 0 {
			b.note("balance loss: moec's balance_loss is Switch's, over all tokens of a micro-batch (Megatron's aux_loss, written here); DeepSeek-V3's complementary loss and Megatron's DeepSeek-V3 recipe are per sequence (--moe-router-load-balancing-type seq_aux_loss): use that to train the published recipe rather than this file's model")
		}
	} else {
		b.add("--moe-router-load-balancing-type", "none")
	}
	if e.ZLoss > 0 {
		b.add("--moe-z-loss-coeff", e.ZLoss)
	}
	if f := e.RoutedScaleOrOne(); f != 1 {
		b.add("--moe-router-topk-scaling-factor", f)
	} else if e.Score == program.Sigmoid && e.Normalize && e.TopK > 1 {
		b.note("gate scale: moec's renormalised sigmoid gates sum to 1 and are used as they are; DeepSeek-V3's released model multiplies them by routed_scaling_factor 2.5 (Megatron's recipe: --moe-router-topk-scaling-factor 2.5). moec's model has no such factor, so it is not written: add it to train the released architecture rather than this file's model")
	}
	if e.AuxFreeBias > 0 {
		if e.Score == program.Sigmoid {
			b.flag("--moe-router-enable-expert-bias")
			b.add("--moe-router-bias-update-rate", e.AuxFreeBias)
		} else {
			// TransformerConfig: "Expert bias for aux-loss-free routing only supports
			// 'sigmoid' ... score functions".
			b.unsupported(true, "auxiliary-loss-free expert biases with %s scores (Megatron's expert bias needs sigmoid scores)", e.Score)
		}
	}
	if e.Groups > 0 {
		b.add("--moe-router-num-groups", e.Groups)
		b.add("--moe-router-group-topk", e.TopKGroups)
	}
	if !e.Dropless() {
		b.add("--moe-expert-capacity-factor", e.CapacityFactor)
		b.note("capacity: moec admits assignments rank-major in token order; Megatron's --moe-token-drop-policy probs drops the lowest-probability ones, so which tokens drop differs")
	}
	b.flag("--moe-grouped-gemm")
	// moec routes in fp32 (the plan counts router logits and probabilities in fp32), and
	// Megatron's DeepSeek-V3 recipe does the same; without it Megatron routes in the
	// training precision.
	b.add("--moe-router-dtype", "fp32")
	b.unsupported(e.Router == program.RouteTokenEmbedding, "token-embedding routing (router = token_embedding: the router reads a per-token table, not the hidden state)")
	b.unsupported(e.ParallelDense, "a dense FFN in parallel with the experts (parallel_dense)")
	b.unsupported(e.SwigluLimit > 0, "gpt-oss's clamped SwiGLU experts (swiglu_limit = %v)", e.SwigluLimit)
	b.unsupported(e.GateInput, "gates on the experts' inputs (gate_input; Megatron scales the experts' outputs)")
	b.unsupported(e.SparsemixerEps > 0, "sparsemixer routing (sparsemixer_eps; Megatron routes by top-k)")
	b.unsupported(e.ExpertBias && !m.FFN.Bias, "biases in the experts only")
}

// layerFreq is the --moe-layer-freq pattern of m's MoE layers, "" when every layer is MoE
// (Megatron's default). Megatron's integer form puts MoE in layers 0, N, 2N..., moec's
// every = N in layers N-1, 2N-1..., so the list form is always used.
func layerFreq(m *program.Model) string {
	var runs []string
	all := true
	for i := 0; i < m.Layers; {
		v := m.IsMoELayer(i)
		j := i
		for j < m.Layers && m.IsMoELayer(j) == v {
			j++
		}
		bit := 0
		if v {
			bit = 1
		} else {
			all = false
		}
		runs = append(runs, fmt.Sprintf("[%d]*%d", bit, j-i))
		i = j
	}
	if all {
		return ""
	}
	// A repeating group (every = N from layer 0) reads better as "([0]*1+[1]*1)*16".
	if n := len(runs); n >= 4 && n%2 == 0 {
		same := true
		for i := 2; i < n; i++ {
			same = same && runs[i] == runs[i%2]
		}
		if same {
			return fmt.Sprintf("(%s+%s)*%d", runs[0], runs[1], n/2)
		}
	}
	return "(" + strings.Join(runs, "+") + ")"
}

func (b *builder) parallel(p *plan.Plan, t *program.Train) {
	ly := p.Layout
	if m := b.stageModel; m != nil {
		pad := max(m.VocabPadTo, 1)
		if rows := m.PaddedVocab(); rows%(pad*int64(ly.TP)) != 0 {
			b.note("Megatron pads the vocabulary to a multiple of make-vocab-size-divisible-by × tensor-model-parallel-size = %d: %d embedding rows instead of moec's %d",
				pad*int64(ly.TP), (rows+pad*int64(ly.TP)-1)/(pad*int64(ly.TP))*pad*int64(ly.TP), rows)
		}
	}
	b.add("--tensor-model-parallel-size", ly.TP)
	b.add("--pipeline-model-parallel-size", ly.PP)
	if m := b.stageModel; m != nil && m.MoE != nil {
		// Written at ep = 1 too: the plan's size, and the dispatcher the plan's all-to-all
		// models, not Megatron's default allgather.
		b.add("--expert-model-parallel-size", ly.EP)
		b.add("--moe-token-dispatcher-type", "alltoall")
	}
	if ly.TP > 1 {
		// Megatron requires sequence parallelism for MoE with tensor parallelism; it only
		// shards activations outside the matmuls, so the math is the same.
		b.flag("--sequence-parallel")
		// validate_args: "Using tensor model parallelism or context parallelism require
		// setting the environment variable CUDA_DEVICE_MAX_CONNECTIONS to 1" (before
		// Blackwell; harmless after).
		b.l.Env = append(b.l.Env, EnvVar{"CUDA_DEVICE_MAX_CONNECTIONS", "1"})
	}
	b.add("--micro-batch-size", ly.MicroBatch)
	b.add("--global-batch-size", ly.Batch)
	switch ly.Recompute {
	case "full":
		b.add("--recompute-granularity", "full")
		b.add("--recompute-method", "uniform")
		b.add("--recompute-num-layers", 1)
	case "selective":
		b.add("--recompute-granularity", "selective")
	}
	switch {
	case ly.Memory == "unified_cache":
		b.flag("--use-distributed-optimizer")
		b.unsupported(true, "AngelPTM's unified GPU/CPU cache (memory = unified_cache): the nearest Megatron setting, the distributed optimizer, partitions only gradients and optimizer states and keeps them on the GPU")
	case ly.ZeRO >= 1:
		b.flag("--use-distributed-optimizer")
		if ly.ZeRO == 3 {
			b.unsupported(true, "ZeRO-3 partitioning of the parameters themselves (Megatron's distributed optimizer partitions gradients and optimizer states, as ZeRO-2)")
		}
	}
	switch ly.Offload {
	case "cpu":
		b.flag("--optimizer-cpu-offload")
		// validate_args: the CPU offload "must be used in conjunction with
		// --use-precision-aware-optimizer".
		b.flag("--use-precision-aware-optimizer")
	case "nvme":
		b.unsupported(true, "offload to NVMe")
	}
	switch t.Precision {
	case program.BF16:
		b.flag("--bf16")
	case program.FP16:
		b.flag("--fp16")
	}
}

func (b *builder) optimizer(t *program.Train, st *program.Stage, p *plan.Plan) {
	o := t.Optimizer
	lr := o.LR
	if st.LR > 0 {
		lr = st.LR
	}
	switch o.Kind {
	case "adamw", "adam":
		b.add("--optimizer", "adam")
		b.add("--adam-beta1", o.Beta1)
		b.add("--adam-beta2", o.Beta2)
		b.add("--adam-eps", o.Eps)
		b.unsupported(o.Kind == "adam" && o.WeightDecay > 0, "Adam with L2 weight decay in the gradient (Megatron's adam decays decoupled, as AdamW)")
	case "sgd":
		b.add("--optimizer", "sgd")
		b.add("--sgd-momentum", o.Beta1)
	}
	b.add("--lr", lr)
	minLR := o.MinLR
	if st.LR > 0 && o.LR > 0 {
		minLR = o.MinLR * st.LR / o.LR
	}
	b.add("--min-lr", minLR)
	b.add("--weight-decay", o.WeightDecay)
	b.add("--clip-grad", o.ClipNorm)
	b.add("--lr-warmup-iters", o.Warmup)
	sched := o.Schedule
	if sched == "" {
		sched = "cosine"
	}
	b.add("--lr-decay-style", sched)
	if steps := p.Totals.Steps; steps > 0 {
		b.add("--train-iters", steps)
		b.add("--lr-decay-iters", steps)
	}
	b.add("--seed", t.Seed)
}

// userArg adds an argument whose value the user supplies through the environment variable
// env; the command stops with message when it is unset.
func (b *builder) userArg(flag, env, message string) {
	b.l.Args = append(b.l.Args, Arg{Flag: flag, Value: message, Env: env})
}

// checkpoints writes where the stage saves and what it loads. Megatron resumes from --load;
// a stage that starts from another loads that stage's weights (--finetune: weights only,
// iteration 0, a fresh optimizer, as moec starts such a stage), and a dense-to-MoE stage
// upcycles them, which validate_args refuses without --save ("When using upcycling, the
// --save option must be specified").
func (b *builder) checkpoints(t *program.Train, st *program.Stage, p *plan.Plan) {
	save := "set SAVE_DIR to the checkpoint directory of this stage"
	if b.upcycle {
		save = "set SAVE_DIR to a new checkpoint directory for this stage (upcycling refuses one that holds a checkpoint)"
	}
	b.userArg("--save", "SAVE_DIR", save)
	every := t.CheckpointEvery
	if every <= 0 {
		// checkpoint_every = 0 is the end only; Megatron also saves at the end of training,
		// and validate_args needs a positive interval with --save.
		every = max(p.Totals.Steps, 1)
	}
	b.add("--save-interval", every)
	if b.from == nil {
		// Megatron starts from scratch when the directory holds no checkpoint and resumes
		// when it does, as moec run --resume.
		b.userArg("--load", "SAVE_DIR", save)
		return
	}
	b.userArg("--load", "FROM_CHECKPOINT", fmt.Sprintf("set FROM_CHECKPOINT to the checkpoint directory (SAVE_DIR) of stage %s", b.from.Name))
	if !b.upcycle {
		b.flag("--finetune")
		b.note("stage %s starts from stage %s's weights: --load reads them with --finetune (iteration 0, no optimizer state, as moec starts the stage); to resume this stage after an interruption, load from SAVE_DIR without --finetune", st.Name, b.from.Name)
	}
}

// data writes the corpus and tokenizer as values the user supplies: moec trains on text
// files with its own tokenizer, Megatron on an indexed dataset.
func (b *builder) data(m *program.Model, t *program.Train) {
	b.userArg("--data-path", "DATA_PATH", "set DATA_PATH to the prefix tools/preprocess_data.py wrote for the corpus")
	b.add("--tokenizer-type", "HuggingFaceTokenizer")
	b.userArg("--tokenizer-model", "TOKENIZER_MODEL", "set TOKENIZER_MODEL to the Hugging Face tokenizer the data was preprocessed with")
	b.note("data: moec reads text files (%q); Megatron reads DATA_PATH, an indexed dataset that tools/preprocess_data.py builds from them with the same tokenizer. Megatron sizes the embedding from the tokenizer (--vocab-size is read only by NullTokenizer), so use one with %d entries; another --tokenizer-type takes its own files (GPT2BPETokenizer: --vocab-file and --merge-file)", t.Data, m.Vocab)
}

// batch explains the global batch in the header: how Megatron splits it into micro-batches
// (it derives the accumulation steps from global / (micro × dp)), and why it is not
// tokens_per_batch as written when it is not.
func (b *builder) batch(p *plan.Plan, t *program.Train) {
	ly := p.Layout
	w := p.Workload
	s := fmt.Sprintf("--global-batch-size %d sequences = dp %d × --micro-batch-size %d × %s per step (Megatron derives the accumulation from global / (micro × dp))",
		ly.Batch, ly.DP, ly.MicroBatch, microBatches(ly.GradAccum))
	if w.SeqLen > 0 {
		s += fmt.Sprintf(", %s tokens per step", human.Exact(int64(ly.Batch)*w.SeqLen))
	}
	if t.TokensPerBatch > 0 && w.BatchTokens > 0 && w.BatchTokens != t.TokensPerBatch {
		s += fmt.Sprintf(", not tokens_per_batch = %s as written: every data-parallel rank runs whole micro-batches of whole sequences, so the plan rounds to the nearest batch its layout runs (%+.1f%%), and --train-iters counts the steps that train the stage's tokens at this batch",
			human.Exact(t.TokensPerBatch), 100*(float64(w.BatchTokens)/float64(t.TokensPerBatch)-1))
	}
	b.l.Batch = s
}
