package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// Kind says what a buffer holds, which decides how long it lives: parameters, gradients
// and optimizer states persist across steps; the rest live from the op that writes them
// to the last op that reads them.
type Kind uint8

const (
	KindInput      Kind = iota // the step's token ids and targets
	KindParam                  // a parameter (or its ZeRO shard), persistent
	KindGathered               // a ZeRO-3 parameter gathered for one use
	KindGrad                   // a parameter gradient (or its shard), persistent
	KindOptimizer              // optimizer state (AdamW moments), persistent
	KindActivation             // a forward value, kept until its backward reads it
	KindActGrad                // the gradient of an activation
	KindDispatch               // MoE routing and token-exchange buffers
	KindComm                   // a pipeline receive buffer
	KindScalar                 // losses and statistics
	KindCache                  // a decoding KV cache: persists from step to step
)

var kindNames = [...]string{"input", "param", "gathered", "grad", "optimizer", "activation", "act_grad", "dispatch", "comm", "scalar", "cache"}

func (k Kind) String() string { return kindNames[k] }

// Persistent reports whether a buffer of kind k outlives a step.
func (k Kind) Persistent() bool {
	return k == KindParam || k == KindGrad || k == KindOptimizer || k == KindCache
}

// Tier is the memory a buffer lives in.
type Tier uint8

const (
	Device Tier = iota // the rank's device (on a CPU rank: its memory)
	Host               // host memory (an offloaded optimizer)
)

func (t Tier) String() string {
	if t == Host {
		return "host"
	}
	return "device"
}

// Buffer is one named tensor of a program with a static shape.
type Buffer struct {
	Name  string
	Shape []int
	Elem  int // bytes per element
	Kind  Kind
	Tier  Tier
	// Int marks a buffer of int32 values (token ids, routing indices, counts).
	Int bool
	// Param is the parameter a KindParam, KindGathered or KindGrad buffer belongs to
	// (nil for a flat shard of several, and for every other kind).
	Param *params.ID
	// Offset is the buffer's place in its tier's arena (see Plan).
	Offset int64
	// Flat is, for a parameter's tensor and gradient, its offset in its reduction group's
	// flat vector (Program.Groups), which ZeRO partitions; -1 for other buffers.
	Flat int64
}

// Group is a set of parameters reduced and updated together, as a flat vector that ZeRO
// cuts into Size shards of Shard elements (the last padded): the dense parameters over
// the data-parallel ranks, the routed experts' over the expert-data-parallel ranks.
type Group struct {
	Name, Axis string
	Size       int   // ranks sharing the group's parameters
	Index      int   // this rank's shard
	ZeRO       int   // the ZeRO stage that applies (0 where Size is 1)
	Elements   int64 // the flat vector's length
	Shard      int64 // elements per shard
}

// Elements is the number of values the buffer holds.
func (b *Buffer) Elements() int64 {
	n := int64(1)
	for _, s := range b.Shape {
		n *= int64(s)
	}
	return n
}

// Bytes is the buffer's size.
func (b *Buffer) Bytes() int64 { return b.Elements() * int64(b.Elem) }

// Phase is the part of a step an op belongs to.
type Phase uint8

const (
	Forward Phase = iota
	Backward
	Reduce // gradient reduction over data-parallel replicas
	Update // the optimizer
)

var phaseNames = [...]string{"fwd", "bwd", "reduce", "update"}

func (p Phase) String() string { return phaseNames[p] }

// OpKind names an operation. Compute kinds are the kernels' (compiler/kernels describes
// the ones CUDA and LLVM IR are generated from); communication kinds move data between
// ranks or tiers.
type OpKind string

// Compute ops.
const (
	OpEmbed        OpKind = "embed"       // rows of a table by token id
	OpEmbedBwd     OpKind = "embed_bwd"   // scatter-add rows into the table's gradient
	OpNorm         OpKind = "norm"        // RMSNorm or LayerNorm with a learned scale
	OpNormBwd      OpKind = "norm_bwd"    // input gradient, and the scale's gradient accumulated
	OpMatMul       OpKind = "matmul"      // y = x·Wᵀ (+ b)
	OpMatMulDX     OpKind = "matmul_dx"   // dx (+)= dy·W
	OpMatMulDW     OpKind = "matmul_dw"   // dW += dyᵀ·x (db += Σ dy)
	OpRotary       OpKind = "rotary"      // rotary positions on queries and keys
	OpRotaryBwd    OpKind = "rotary_bwd"  // its inverse rotation on the gradients
	OpScores       OpKind = "attn_scores" // causal q·kᵀ/√d per head
	OpScoresBwd    OpKind = "attn_scores_bwd"
	OpHeadMix      OpKind = "head_mix" // talking heads: mix the heads' score maps
	OpHeadMixBwd   OpKind = "head_mix_bwd"
	OpSoftmax      OpKind = "softmax"     // the attention weights
	OpSoftmaxBwd   OpKind = "softmax_bwd" // dS = P ⊙ (dP − rowsum(dP ⊙ P))
	OpAttnAV       OpKind = "attn_av"     // weights · values
	OpAttnAVBwd    OpKind = "attn_av_bwd" // dP and dV
	OpAdd          OpKind = "add"         // the residual sum
	OpAct          OpKind = "act"         // the FFN activation (gated: act(gate)·up)
	OpActBwd       OpKind = "act_bwd"
	OpRouter       OpKind = "route"       // scores, top-k, gates, capacity, balance and z-loss terms
	OpRouterBwd    OpKind = "route_bwd"   // the router logits' gradient from the gates' and the losses'
	OpPermute      OpKind = "permute"     // tokens into per-expert slots
	OpPermuteBwd   OpKind = "permute_bwd" // scatter-add the slots' gradients back to the tokens
	OpCombine      OpKind = "combine"     // expert outputs times gates back to the tokens
	OpCombineBwd   OpKind = "combine_bwd" // the outputs' and the gates' gradients
	OpGroupedMM    OpKind = "grouped_matmul"
	OpGroupedMMDX  OpKind = "grouped_matmul_dx"
	OpGroupedMMDW  OpKind = "grouped_matmul_dw"
	OpCrossEntropy OpKind = "cross_entropy" // mean loss and the logits' gradient in one pass
	OpAdamW        OpKind = "adamw"
	OpRotaryAt     OpKind = "rotary_at"   // decoding: rotary positions at the step's position
	OpKVAppend     OpKind = "kv_append"   // decoding: the step's keys and values into the cache
	OpAttnDecode   OpKind = "attn_decode" // decoding: one query per sequence against its cache
	OpGradNorm     OpKind = "grad_norm"   // sum of squares of the gradients this rank counts
	OpAccumulate   OpKind = "accumulate"  // a += b: a gradient with two consumers
	OpCopy         OpKind = "copy"        // y = x (a value whose gradient is reduced on its own)
	OpSeqSlice     OpKind = "seq_slice"   // sequence parallelism: this tp rank's rows of a whole value
)

// Communication ops.
const (
	OpAllReduce     OpKind = "all_reduce"
	OpReduceScatter OpKind = "reduce_scatter"
	OpAllGather     OpKind = "all_gather"
	OpAllToAllV     OpKind = "all_to_all_v"
	OpSend          OpKind = "send"
	OpRecv          OpKind = "recv"
	OpToHost        OpKind = "to_host"
	OpToDevice      OpKind = "to_device"
	// The unified cache (cache.go): a unit's parameters into the device working set, a
	// unit out of it, and device gradients added into their host copies.
	OpCacheFetch     OpKind = "cache_fetch"
	OpCacheEvict     OpKind = "cache_evict"
	OpCacheWriteback OpKind = "cache_writeback"
)

// Collective reports whether k communicates with other ranks of a group.
func (k OpKind) Collective() bool {
	switch k {
	case OpAllReduce, OpReduceScatter, OpAllGather, OpAllToAllV:
		return true
	}
	return false
}

// PointToPoint reports whether k is a pipeline send or receive.
func (k OpKind) PointToPoint() bool { return k == OpSend || k == OpRecv }

// Op is one operation of a program.
type Op struct {
	Kind  OpKind
	Phase Phase
	Layer int // decoder layer, -1 for the embedding, head, loss and per-step ops
	Micro int // micro-batch, -1 for per-step ops (reduction, update)
	In    []int
	Out   []int
	// WhenRecompute marks an op that runs only when its layer's attention-sharing die
	// says recompute (the layer's Q/K products, scores and softmax, and their backward).
	// An op that does not run leaves zeros in the outputs it would have overwritten.
	WhenRecompute bool
	// Acc, when set, says for each output whether the op adds to it (a gradient's second
	// contribution) instead of overwriting it.
	Acc []bool
	// Attr is readable text for the listing (program.txt): what the op does beyond its
	// buffers. Kernels never read it: what they need is in the typed fields below.
	Attr string
	// Activation is an act or act_bwd op's function.
	Activation program.Activation
	// SwigluLimit > 0 makes a SwiGLU act or act_bwd op gpt-oss's clamped one, with
	// SwigluAlpha its sigmoid's slope (moe_variants.go).
	SwigluLimit, SwigluAlpha float64
	// GateInput marks the permute, combine and their backward ops of an MoE layer whose
	// gates scale the experts' inputs, not their outputs (moe.gate_input, moe_variants.go).
	GateInput bool
	// Rows says which rows an embed or embed_bwd op's table lookup reads.
	Rows EmbedRows
	// Pass is a cross_entropy or distill_loss op's pass under a vocabulary-parallel head.
	Pass LossPass
	// Distill is a distill_loss op's temperature and weights.
	Distill Distill
	// Mask is the keys a softmax or attn_decode op's queries attend to: the causal
	// prefix, a sliding window or the query's chunk (attention.go).
	Mask AttnMask
	// Temperature is a query_scale op's factor by position (attention.go).
	Temperature QueryTemperature
	// Clip is a clip or clip_bwd op's bound (attention.clip_qkv, attention_qk.go).
	Clip float64
	// BiasOnTPRank0 marks a row-parallel product whose bias only tp rank 0 adds (the
	// partial products are summed over tp).
	BiasOnTPRank0 bool
	// SkipEmptySlots marks an inference program's grouped product whose input no fill
	// counts reach: its zero rows (empty dispatch slots) are found and skipped.
	SkipEmptySlots bool
	// GatherVocab marks the all-gather of a vocabulary-parallel head's logits over tp.
	GatherVocab bool
	// AlongTokens marks sequence parallelism's ops: collectives and slices along the
	// token dimension (rows) instead of the whole buffer. WholeGradient marks such a
	// gather whose output's gradient is whole on every rank, so its backward is a slice.
	AlongTokens, WholeGradient bool
	// Group is the parallel axis a collective runs over ("dp", "edp", "ep", "tp", "pp", "embed", "route");
	// Peer the other rank of a send or receive.
	Group string
	Peer  int
	// ReduceMax makes an all-reduce take the maximum instead of the sum.
	ReduceMax bool
	// Slots is a route op's capacity per expert (the program's static dispatch size):
	// its dispatch buffers are [experts, Slots, width], expert e's tokens in the first
	// rows of its block. Under Packed (dropless routing without expert parallelism)
	// Slots is the micro-batch's tokens × top_k, every assignment, and the dispatch
	// buffers are [Slots, width]: expert e's rows follow those of the experts before it
	// (dispatch.go).
	Slots int
	// Packed marks a route op whose dispatch layout is packed (see Slots).
	Packed bool
	// CacheFill marks an all-gather that fills the unified cache's device copies of a unit
	// from the members' host shards (the cache under ZeRO 3): a fetch.
	CacheFill bool
	// BiasRate is a router_bias_update op's step (moe.aux_free_bias, routing_bias.go), and
	// BiasAt where the bias's first element lies in its output (a flat shard's offset, which
	// may lie outside it: the shard holds the elements in range).
	BiasRate float64
	BiasAt   int64
	// Recomputed marks a forward op run again in the backward (recompute = full or
	// selective): it writes the same values as the first time and reports nothing new
	// (losses, drops).
	Recomputed bool
	FLOPs      int64
	Bytes      int64 // communication: the bytes this rank sends; compute: bytes read and written
}

// Program is what one rank runs for one training step.
type Program struct {
	Model, Stage string
	Layout       Layout
	Rank         int
	Coord        Coord
	Batch        Batch
	Buffers      []*Buffer
	Ops          []Op
	Groups       []Group
	Memory       MemoryPlan
	// Layers are the decoder layers this rank's pipeline stage holds, [First, First+Count).
	FirstLayer, LayerCount int
	// CacheHits is the unified cache's requests in one step that found their unit on the
	// device (its misses are the cache_fetch ops).
	CacheHits int
}

// Batch is the work of one step on one data-parallel replica.
type Batch struct {
	MicroBatch int // sequences per micro-batch
	SeqLen     int
	Micro      int // micro-batches per step
}

// Tokens is the number of tokens in one micro-batch.
func (b Batch) Tokens() int { return b.MicroBatch * b.SeqLen }

// Layout says how a step is spread over ranks.
type Layout struct {
	DP, EP, TP, PP int
	ZeRO           int  // 0..3
	OffloadOpt     bool // the optimizer states and update live on the host
	// Recompute says which forward values the backward computes again instead of keeping:
	// full keeps only each layer's input and runs the layer's forward again just before its
	// backward; selective runs only the attention core again (scores, head mixing,
	// softmax), just before the backward of its use in AV; none ("" too) keeps everything.
	Recompute program.Recompute
	// SequenceParallel (with tp > 1) splits the regions between the tensor-parallel pairs
	// (norms, residual sums, the router's input) over the tp ranks by token: each holds
	// 1/tp of the micro-batch's tokens, the f/g all-reduces become an all-gather before the
	// column-parallel products and a reduce-scatter after the row-parallel ones (Megatron's
	// sequence parallelism; sequence.go).
	SequenceParallel bool
	// Cache runs the unified cache (cache.go); its zero value is none.
	Cache Cache
	// Distill makes the loss a distillation stage's (distill.go); its zero value is none.
	Distill Distill
	// GradBucket is the size in bytes of the buckets the data-parallel gradient
	// all-reduces run in during the last micro-batch's backward (bucket.go): 0 takes
	// DefaultGradBucket, a negative value reduces each group in one all-reduce after the
	// whole backward.
	GradBucket int64
	// RouterStages has bit s set when pipeline stage s holds a copy of the token-embedding
	// router table (router = token_embedding under pp: the stages with an MoE layer,
	// router_table.go). Lower sets it from the model; the "route" axis reads it.
	RouterStages uint64
}

// RecomputeFull reports whether each layer's whole forward runs again in the backward.
func (l Layout) RecomputeFull() bool { return l.Recompute == program.RecomputeFull }

// RecomputeSelective reports whether only the attention core runs again in the backward.
func (l Layout) RecomputeSelective() bool { return l.Recompute == program.RecomputeSelective }

// SP reports whether sequence parallelism applies (it needs more than one tp rank).
func (l Layout) SP() bool { return l.SequenceParallel && l.TP > 1 }

// World is the number of ranks.
func (l Layout) World() int { return l.DP * l.TP * l.PP }

func (l Layout) String() string {
	s := fmt.Sprintf("dp %d × ep %d × tp %d × pp %d, zero %d", l.DP, l.EP, l.TP, l.PP, l.ZeRO)
	if l.OffloadOpt {
		s += ", optimizer offloaded"
	}
	if l.SP() {
		s += ", sequence parallel"
	}
	if l.Recompute != "" && l.Recompute != program.RecomputeNone {
		s += ", recompute " + string(l.Recompute)
	}
	if l.Cache.On() {
		s += ", " + l.Cache.String()
	}
	if l.Distill.On() {
		s += ", " + l.Distill.String()
	}
	switch {
	case l.GradBucket < 0:
		s += ", gradient reduction after the backward"
	case l.GradBucket > 0:
		s += fmt.Sprintf(", gradient buckets of %d bytes", l.GradBucket)
	}
	return s
}

// Coord is a rank's place on each axis. Ranks are numbered Megatron's way: tensor-parallel
// fastest, then data-parallel (the expert-parallel group is ep consecutive data-parallel
// ranks), then pipeline stages.
type Coord struct {
	TP, DP, PP int
	EP, EDP    int // DP = EDP·ep + EP
}

// CoordOf is rank's place in l.
func (l Layout) CoordOf(rank int) Coord {
	c := Coord{TP: rank % l.TP, DP: rank / l.TP % l.DP, PP: rank / (l.TP * l.DP)}
	c.EP, c.EDP = c.DP%l.EP, c.DP/l.EP
	return c
}

// RankOf is the rank at c.
func (l Layout) RankOf(c Coord) int { return c.TP + l.TP*(c.DP+l.DP*c.PP) }

// EmbedRows says which rows of its table an embed op reads.
type EmbedRows uint8

const (
	RowsOfTokens        EmbedRows = iota // the token ids' rows of a whole table (also the router's table)
	RowsOfPositions                      // learned positions: row t for position t of each sequence
	RowsAtPosition                       // decoding: each sequence's row at its own position
	RowsOfVocabParallel                  // the token ids' rows of this tp rank's slice of the vocabulary
)

// LossPass is a cross_entropy or distill_loss op's part of the loss.
type LossPass uint8

const (
	LossWhole LossPass = iota // the mean loss and the logits' gradient (with a tp head: from the reduced maxima and sums)
	LossMax                   // vocabulary-parallel pass 1: each row's largest logit of this rank's slice
	LossSum                   // vocabulary-parallel pass 2: the slice's sum of exponentials and target logit
	LossCross                 // vocabulary-parallel distill_loss pass 3: the slice's part of the KL (distill.go)
)

// Accumulates reports whether op adds to its i-th output.
func (op *Op) Accumulates(i int) bool { return i < len(op.Acc) && op.Acc[i] }
