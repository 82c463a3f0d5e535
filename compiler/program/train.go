package program

// Optimizer settings.
type Optimizer struct {
	Kind        string  // "adamw", "adam", "sgd"
	LR          float64 //
	MinLR       float64 // floor of the cosine schedule
	WeightDecay float64
	Beta1       float64
	Beta2       float64
	Eps         float64
	Warmup      int64   // warmup steps
	Schedule    string  // "cosine", "constant", "linear"
	ClipNorm    float64 // 0 = no clipping
}

// MemoryStrategy says how model states are partitioned and where they live.
type MemoryStrategy struct {
	Kind      MemoryKind
	ZeROStage int // 0..3 (for unified_cache: 3)
	Offload   Offload
	Recompute Recompute
	CachePage int64 // unified cache page size in bytes
	Eviction  Eviction
	// GradBucket is zero(bucket = …): the bytes of each data-parallel gradient
	// all-reduce bucket (0: not written, the step program's default).
	GradBucket int64
}

// MemoryKind is how model states are kept: ZeRO partitioning, or AngelPTM's unified cache.
type MemoryKind string

const (
	MemoryZeRO         MemoryKind = "zero"
	MemoryUnifiedCache MemoryKind = "unified_cache"
)

// Offload is where ZeRO moves optimizer states (and their gradients and weight copies).
type Offload string

const (
	OffloadNone Offload = "none"
	OffloadCPU  Offload = "cpu"
	OffloadNVMe Offload = "nvme"
)

// Recompute says which activations a step recomputes in the backward instead of keeping.
type Recompute string

const (
	RecomputeNone      Recompute = "none"
	RecomputeSelective Recompute = "selective"
	RecomputeFull      Recompute = "full"
)

// RecomputeModes are the recompute modes, from the one that keeps the most activations
// (none) to the one that keeps the fewest (full).
func RecomputeModes() []Recompute {
	return []Recompute{RecomputeNone, RecomputeSelective, RecomputeFull}
}

// Eviction is the unified cache's page eviction policy.
type Eviction string

const (
	EvictLRU  Eviction = "lru"
	EvictLFU  Eviction = "lfu"
	EvictFIFO Eviction = "fifo"
)

// Grow says how a stage's new experts are initialised from the previous stage's.
type Grow struct {
	Kind  string  // "copy" (copies of existing experts) or "random"
	Noise float64 // relative Gaussian noise added to copies
}

// Stage is one step of a curriculum.
type Stage struct {
	Name    string
	From    string // previous stage ("" for the first)
	Experts int    // routed experts in this stage (1 = dense)
	TopK    int    // experts per token in this stage (0 = model's)
	Grow    Grow
	Tokens  int64   // token budget
	Steps   int64   // explicit step count (0 = StepsFor(Tokens, the batch the stage runs))
	LR      float64 // 0 = the train block's
	// Distill, when set, makes the stage a distillation (`stage NAME distill from
	// TEACHER`): From is the teacher, whose final checkpoint runs forward beside the
	// student on the same batches, and the student starts from its own initialisation.
	Distill *Distill `json:",omitempty"`
	Decl    Source   // the `stage` declaration (set by compiler/check; zero when built in Go)
}

// Distillation defaults. The temperature is 2 (DistilBERT's, and the middle of the range
// Hinton et al. found best for small students): it softens the teacher enough that the
// classes it ranks below its first carry signal, and the loss's T² factor keeps the soft
// gradients' scale that of the hard ones. The two losses weigh alike.
const (
	DefaultDistillTemperature = 2.0
	DefaultDistillSoftWeight  = 0.5
	DefaultDistillHardWeight  = 0.5
)

// Distill is a distillation stage's loss: hard_weight·CE(labels) + soft_weight·T²·
// KL(softmax(teacher/T) ‖ softmax(student/T)), the mean over the step's tokens (Hinton,
// Vinyals and Dean 2015).
type Distill struct {
	Temperature float64
	SoftWeight  float64
	HardWeight  float64
	// Student is the model a `model = NAME` of the stage names (before the stage's experts
	// apply); nil: the train block's model, as other stages.
	Student *Model `json:",omitempty"`
	// InitFromTeacher starts the student from the teacher's tensors that have its
	// tensors' names and shapes (init = teacher; the others keep their initialisation).
	InitFromTeacher bool `json:",omitempty"`
}

// TokenizerBytes is how a train block names its default tokenizer: each byte of the text is
// a token. The resolved Train holds "" for it.
const TokenizerBytes = "bytes"

// Train is a resolved `train MODEL on CLUSTER { ... }` block.
type Train struct {
	Name           string // the model name it trains (train blocks are named by their model)
	Model          string
	Cluster        string
	TokensPerBatch int64
	MicroBatch     int   // sequences per micro-batch: per data-parallel rank in cluster plans; a local CPU run splits it over its ranks (0 = planner chooses)
	SeqLen         int64 // 0 = model's
	Precision      Precision
	Optimizer      Optimizer
	Memory         MemoryStrategy
	Data           string // glob of training text
	ValData        string // glob of validation text ("" = hold out a slice of Data)
	// ValDataDecl is where val_data is written (set by compiler/check; zero when built in Go
	// or read back from a run's run.json), so a refusal of its files can point at it.
	ValDataDecl Source `json:"-"`
	// Tokenizer turns the text into token ids: "" (tokenizer = "bytes", the default: each
	// byte is a token), or the path of a Hugging Face tokenizer.json (a file, or a folder
	// holding one), relative to the .moe file like data. TokenizerDecl is where it is
	// written (zero when it is not).
	Tokenizer       string `json:",omitempty"`
	TokenizerDecl   Source `json:"-"`
	Seed            int64
	CheckpointEvery int64 // steps between checkpoints
	Stages          []*Stage
	Decl            Source // the `train` declaration (set by compiler/check; zero when built in Go)

	// CPUProducts is the precision the CPU runtime (`moec run`) multiplies the step's
	// weight products in: BF16 or FP16 when the train block writes precision = bf16 or
	// fp16 (bfloat16 or IEEE half products with float32 sums, float32 master weights; fp16
	// with dynamic loss scaling), else "" (float32). Blocks that leave precision at its
	// default keep training in float32.
	CPUProducts Precision `json:"cpu_products,omitempty"`
}

// RunsOnCPU reports whether the CPU runtime trains this block as written: in float32,
// or with bfloat16 or half products over float32 weights (CPUProducts), whose memory is
// float32's.
func (t *Train) RunsOnCPU() bool {
	return t.Precision == FP32 || t.CPUProducts == BF16 || t.CPUProducts == FP16
}

// StepsFor is the number of optimizer steps that train a budget of tokens at batchTokens
// tokens per step: floor(tokens / batchTokens), at least 1, so a stage never trains past
// its budget (it stops less than one batch short), as Megatron-Core turns train-samples
// into iterations. Every count of steps (report, plan, exports, the runtime and the
// generated program) comes from here; batchTokens is the batch as it runs (a plan's dp ×
// micro_batch × grad_accum sequences), which may differ from tokens_per_batch as
// written. No tokens, or no batch, is no steps.
func StepsFor(tokens, batchTokens int64) int64 {
	if tokens <= 0 || batchTokens <= 0 {
		return 0
	}
	return max(tokens/batchTokens, 1)
}

// StepsAt is the stage's step count at batchTokens tokens per step: its explicit steps,
// else StepsFor(Tokens, batchTokens).
func (s *Stage) StepsAt(batchTokens int64) int64 {
	if s.Steps > 0 {
		return s.Steps
	}
	return StepsFor(s.Tokens, batchTokens)
}

// TokensAt is what the stage trains at batchTokens tokens per step: its budget, or its
// explicit steps × batchTokens when it states steps instead.
func (s *Stage) TokensAt(batchTokens int64) int64 {
	if s.Steps > 0 {
		return s.Steps * batchTokens
	}
	return s.Tokens
}

// StageModel returns the model as it is in stage s: the base model with the stage's
// expert count (experts = 1 is dense: no MoE) and top-k.
//
// A distillation stage that names its student's model starts from that model instead.
func StageModel(base *Model, s *Stage) *Model {
	if s.Distill != nil && s.Distill.Student != nil {
		base = s.Distill.Student
	}
	m := *base
	if base.MoE != nil {
		moe := *base.MoE
		if s.Experts > 0 {
			moe.Experts = s.Experts
		}
		if s.TopK > 0 {
			moe.TopK = s.TopK
		}
		if moe.TopK > moe.Experts {
			moe.TopK = moe.Experts
		}
		m.MoE = &moe
		if moe.Experts <= 1 && moe.SharedExperts == 0 {
			// One expert is an ordinary FFN of the expert's width.
			m.FFN.Hidden = moe.ExpertHidden
			m.FFN.Activation = moe.Activation
			m.MoE = nil
		}
	}
	return &m
}

// Serve is a resolved `serve MODEL on CLUSTER { ... }` block.
type Serve struct {
	Name       string
	Model      string
	Cluster    string
	Precision  Precision
	Batch      int    // concurrent sequences
	ContextLen int64  // tokens of KV cache per sequence (0 = model's SeqLen)
	Layout     string // "auto", "expert" (experts spread, dense replicated), "tensor_pipeline"
	Stage      string // which train stage's model is served ("" = the base model)
	// Compressed serves the model as its compress block leaves it (the block of the same
	// name): its quantised weight bytes and the experts it keeps.
	Compressed bool
	Decl       Source // the `serve` declaration (set by compiler/check; zero when built in Go)
}

// Compress is a resolved `compress MODEL { ... }` block.
type Compress struct {
	Name         string
	Model        string
	DistillInto  string  // student model name ("" = none)
	QuantBits    int     // 0 = none; 8 or 4
	PruneExperts float64 // fraction of experts pruned (0 = none)

	// Weight-only quantisation per kind of matrix (runtime/compress): "fp32", "int8" (one
	// scale per output channel) or "int4" (in groups of Group input columns); the
	// language's auto (the default) resolves to QuantBits' scheme.
	Experts, Dense, Embed, Head string
	Group                       int // int4 group [128]
	// KeepExperts is the experts kept per MoE layer, from keep_experts or prune_experts (0:
	// every expert); Calibration the text whose routing chooses them ("" = given to moec
	// compress), as written (relative to the .moe file).
	KeepExperts int
	PruneBy     string // "frequency" (assignments received) or "gate_mass" (combine weights summed)
	Calibration string
	// Counted: the served model's weight bytes in float32 with every expert, and compressed
	// (0 when the model's parameters cannot be listed).
	FP32Bytes, Bytes int64
	Decl             Source // the `compress` declaration (set by compiler/check; zero when built in Go)
}

// Experiment is a resolved `experiment NAME { ... }` block (see issue on experiments).
type Experiment struct {
	Name     string
	Train    string
	Stage    string
	Tokens   int64
	Seeds    []int64
	Baseline map[string]string // overrides as "path" -> canonical value text
	Variants []ExperimentVariant
	// Equal is what every arm gets as much of as the baseline: "tokens" (the token budget)
	// or "flops" (training FLOPs: an arm's token budget is scaled to match). Additive.
	Equal string
}

// ExperimentVariant is one arm of an experiment.
type ExperimentVariant struct {
	Name      string
	Overrides map[string]string
}
