package megatron

// megatronRules mirrors the checks Megatron-LM applies to a launch before it trains, read
// from its source at tag core_v0.15.0 and on its main branch (commit d98e8a64dd, August
// 2026): validate_args (megatron/training/arguments.py), TransformerConfig.__post_init__
// and ModelParallelConfig.__post_init__ (megatron/core/transformer/transformer_config.py,
// megatron/core/model_parallel_config.py), initialize_model_parallel
// (megatron/core/parallel_state.py), the micro-batch calculator
// (megatron/core/num_microbatches_calculator.py), the MoE layer pattern
// (megatron/core/models/gpt/gpt_layer_specs.py) and build_tokenizer
// (megatron/training/tokenizer/tokenizer.py). Each check names the rule it mirrors.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// megatronRules returns what Megatron-LM refuses in j before training: the first
// assertion each rank would stop on, and the later ones, each with the rule it mirrors.
func megatronRules(j job) []string {
	var problems []string
	bad := func(rule, format string, a ...any) {
		problems = append(problems, fmt.Sprintf(format, a...)+" ["+rule+"]")
	}
	tp := j.num("--tensor-model-parallel-size", 1)
	pp := j.num("--pipeline-model-parallel-size", 1)
	cp := j.num("--context-parallel-size", 1)
	ep := j.num("--expert-model-parallel-size", 1)
	etp := j.num("--expert-tensor-parallel-size", tp) // validate_args: defaults to tp
	layers := j.num("--num-layers", 0)
	hidden := j.num("--hidden-size", 0)
	heads := j.num("--num-attention-heads", 0)
	experts := j.num("--num-experts", 0)
	topk := j.num("--moe-router-topk", 2)

	// Parallel sizes and the world size.
	if tp*pp*cp == 0 || j.world%(tp*pp*cp) != 0 {
		bad("validate_args: world size is not divisible by total_model_size; parallel_state.initialize_model_parallel",
			"world size %d is not divisible by tp %d × pp %d × cp %d", j.world, tp, pp, cp)
	}
	if etp*ep*pp == 0 || j.world%(etp*ep*pp) != 0 {
		bad("parallel_state.initialize_model_parallel: world_size is not divisible by expert_tensor_model_pipeline_parallel size",
			"world size %d is not divisible by expert tp %d × ep %d × pp %d", j.world, etp, ep, pp)
	}
	dp := 0
	if tp*pp*cp > 0 {
		dp = j.world / (tp * pp * cp)
	}
	if (tp > 1 || cp > 1) && j.env["CUDA_DEVICE_MAX_CONNECTIONS"] != "1" {
		bad("validate_args: tensor or context parallelism require CUDA_DEVICE_MAX_CONNECTIONS=1 (before Blackwell)",
			"tp %d without CUDA_DEVICE_MAX_CONNECTIONS=1 in the ranks' environment", tp)
	}
	if j.has("--sequence-parallel") && tp <= 1 {
		bad("ModelParallelConfig.__post_init__: Cannot use sequence parallelism without tensor parallelism; validate_args turns it off",
			"--sequence-parallel with tp 1")
	}
	if ep > 1 && tp > 1 && !j.has("--sequence-parallel") {
		bad("ModelParallelConfig.__post_init__: with expert and tensor parallelism, sequence parallelism must be used",
			"ep %d and tp %d without --sequence-parallel", ep, tp)
	}

	// Model shape.
	if layers <= 0 || hidden <= 0 || heads <= 0 {
		bad("validate_args: --num-layers, --hidden-size and --num-attention-heads are required", "num_layers %d, hidden %d, heads %d", layers, hidden, heads)
		return problems
	}
	if !j.has("--decoder-first-pipeline-num-layers") && !j.has("--decoder-last-pipeline-num-layers") && layers%pp != 0 {
		bad("validate_args: Number of layers should be divisible by the pipeline-model-parallel size",
			"%d layers on pp %d", layers, pp)
	}
	if heads%tp != 0 {
		bad("TransformerConfig.__post_init__: num_attention_heads must be a multiple of tensor_model_parallel_size",
			"%d heads on tp %d", heads, tp)
	}
	if groups := j.num("--num-query-groups", heads); j.has("--group-query-attention") && groups%tp != 0 {
		bad("TransformerConfig.__post_init__: num_query_groups must be a multiple of tensor_model_parallel_size",
			"%d query groups on tp %d", groups, tp)
	}
	if !j.has("--kv-channels") && hidden%heads != 0 {
		bad("validate_args: without --kv-channels, hidden_size % num_attention_heads == 0",
			"hidden %d is not divisible by %d heads", hidden, heads)
	}
	if j.num("--max-position-embeddings", 0) < j.num("--seq-length", 0) {
		bad("validate_args: max_position_embeddings >= seq_length", "--max-position-embeddings %d < --seq-length %d",
			j.num("--max-position-embeddings", 0), j.num("--seq-length", 0))
	}
	if j.has("--multi-latent-attention") && j.has("--group-query-attention") {
		bad("validate_args: Group query attention is mutually exclusive with multi latent attention", "--multi-latent-attention with --group-query-attention")
	}
	if j.has("--mtp-num-layers") && !slices.Contains([]string{"rope", "none"}, j.str("--position-embedding-type", "learned_absolute")) {
		bad("validate_args: Multi-Token Prediction is supported with rope and none position embeddings", "MTP with %s positions", j.str("--position-embedding-type", "learned_absolute"))
	}
	if j.has("--bf16") && j.has("--fp16") {
		bad("validate_args: assert not args.bf16 with --fp16", "--bf16 and --fp16")
	}

	// MoE.
	if ep > 1 && experts == 0 {
		bad("validate_args: num_experts must be non None to use expert model parallelism", "ep %d without --num-experts", ep)
	}
	if experts > 0 {
		if ep > 0 && experts%ep != 0 {
			bad("validate_args: Number of experts should be a multiple of expert model parallel_size", "%d experts on ep %d", experts, ep)
		}
		if !j.has("--moe-ffn-hidden-size") {
			// Megatron warns and uses ffn_hidden_size: a different model, silently.
			bad("validate_args: moe_ffn_hidden_size is not set, using ffn_hidden_size for MoE", "--num-experts without --moe-ffn-hidden-size")
		}
		if topk == 1 && j.str("--moe-router-score-function", "softmax") == "softmax" && !j.has("--moe-router-pre-softmax") &&
			j.str("--moe-router-load-balancing-type", "aux_loss") != "sinkhorn" {
			bad("TransformerConfig.__post_init__: Please use --moe-router-pre-softmax when topk is 1", "top-1 softmax routing without --moe-router-pre-softmax")
		}
		if j.has("--moe-router-enable-expert-bias") && j.str("--moe-router-score-function", "softmax") != "sigmoid" {
			bad("TransformerConfig.__post_init__: Expert bias for aux-loss-free routing only supports sigmoid", "--moe-router-enable-expert-bias with %s scores", j.str("--moe-router-score-function", "softmax"))
		}
		if g := j.num("--moe-router-group-topk", 0); g > 0 {
			n := j.num("--moe-router-num-groups", 0)
			if n == 0 || experts%n != 0 || g > n {
				bad("TransformerConfig.__post_init__: num_moe_experts divisible by moe_router_num_groups, moe_router_group_topk <= moe_router_num_groups",
					"%d experts, %d groups, group top-k %d", experts, n, g)
			}
		}
		if j.has("--moe-expert-capacity-factor") && !slices.Contains([]string{"aux_loss", "seq_aux_loss", "global_aux_loss", "none"}, j.str("--moe-router-load-balancing-type", "aux_loss")) {
			bad("TransformerConfig.__post_init__: moe_expert_capacity_factor only works with aux_loss, seq_aux_loss, global_aux_loss or none", "capacity with %s", j.str("--moe-router-load-balancing-type", "aux_loss"))
		}
		if f := j.str("--moe-layer-freq", ""); strings.Contains(f, "[") {
			if got, err := evalLayerPattern(f); err != nil || len(got) != layers {
				bad("gpt_layer_specs.get_gpt_decoder_block_spec: Invalid length of moe_layer_pattern", "--moe-layer-freq %s gives %d layers (%v), not %d", f, len(got), err, layers)
			}
		}
	} else if j.has("--moe-ffn-hidden-size") && !strings.Contains(j.str("--moe-layer-freq", ""), "0") {
		bad("TransformerConfig.__post_init__: moe_ffn_hidden_size is set but num_moe_experts is None", "--moe-ffn-hidden-size without --num-experts")
	}
	if j.has("--moe-use-upcycling") {
		if !j.has("--save") {
			bad("validate_args: When using upcycling, the --save option must be specified", "--moe-use-upcycling without --save")
		}
		if !j.has("--load") {
			bad("training.setup_model_and_optimizer: upcycling loads the dense checkpoint from --load", "--moe-use-upcycling without --load")
		}
	}

	// Batch, schedule, checkpoints, data.
	micro := j.num("--micro-batch-size", 0)
	global := j.num("--global-batch-size", micro*dp)
	if micro <= 0 || dp <= 0 || global%(micro*dp) != 0 {
		bad("num_microbatches_calculator: global batch size is not divisible by micro batch size times data parallel size",
			"global batch %d, micro-batch %d, dp %d", global, micro, dp)
	}
	if j.has("--lr") && j.float("--min-lr", 0) > j.float("--lr", 0) {
		bad("validate_args: min_lr <= lr", "--min-lr above --lr")
	}
	switch j.str("--recompute-granularity", "") {
	case "full":
		if !j.has("--recompute-method") || j.num("--recompute-num-layers", 0) < 1 {
			bad("TransformerConfig.__post_init__: full recompute needs recompute_method and recompute_num_layers", "full recompute without method or layers")
		}
	case "selective":
		if j.has("--recompute-method") {
			bad("validate_args: recompute method is not yet supported for selective recomputing granularity", "--recompute-method with selective")
		}
	}
	if j.has("--optimizer-cpu-offload") && !j.has("--use-precision-aware-optimizer") {
		bad("validate_args: The optimizer cpu offload must be used in conjunction with --use-precision-aware-optimizer", "--optimizer-cpu-offload alone")
	}
	if j.has("--save") && j.num("--save-interval", 0) <= 0 {
		bad("validate_args: with --save, save_interval is not None and > 0", "--save without a positive --save-interval")
	}
	if !j.has("--data-path") && !j.has("--mock-data") {
		bad("pretrain_gpt.py: training needs a data source (--data-path)", "no --data-path")
	}
	switch j.str("--tokenizer-type", "") {
	case "":
		bad("tokenizer.build_tokenizer: no --tokenizer-type", "no --tokenizer-type")
	case "HuggingFaceTokenizer", "SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer", "TikTokenizer":
		if !j.has("--tokenizer-model") {
			bad("tokenizer.build_tokenizer: assert args.tokenizer_model is not None", "%s without --tokenizer-model", j.str("--tokenizer-type", ""))
		}
	case "NullTokenizer":
		if !j.has("--vocab-size") {
			bad("tokenizer.build_tokenizer: assert args.vocab_size is not None", "NullTokenizer without --vocab-size")
		}
	}
	return problems
}

// evalLayerPattern evaluates a --moe-layer-freq list pattern the way Megatron's
// _eval_pattern does for the forms "[b]*n" joined by "+", in parentheses, optionally
// repeated "*k".
func evalLayerPattern(s string) ([]int, error) {
	rep := 1
	if i := strings.LastIndex(s, ")*"); i >= 0 {
		var err error
		if rep, err = strconv.Atoi(s[i+2:]); err != nil {
			return nil, err
		}
		s = s[:i+1]
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "("), ")")
	var one []int
	for _, run := range strings.Split(s, "+") {
		var bit, n int
		if _, err := fmt.Sscanf(run, "[%d]*%d", &bit, &n); err != nil {
			return nil, fmt.Errorf("run %q: %w", run, err)
		}
		for range n {
			one = append(one, bit)
		}
	}
	var out []int
	for range rep {
		out = append(out, one...)
	}
	return out, nil
}
