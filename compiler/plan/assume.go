package plan

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/human"
)

// Assumptions are every number the planner uses that is not a property of the model or
// written in the cluster: bytes per parameter, buffer sizes, efficiencies, overlap. Each
// has a default with its source; values the language can set (host_usable, gpu_reserve,
// net_latency, dropless_skew, ...) are taken from the program. The report prints them all,
// so a reader can see what moves a figure.
type Assumptions struct {
	// Bytes per parameter of the model states (mixed-precision Adam, ZeRO paper §3.1:
	// 2Ψ weights + 2Ψ gradients + KΨ optimizer states with K = 12).
	WeightBytes float64 // working weights at the train precision (2 for bf16/fp16, 4 for fp32)
	GradBytes   float64 // gradients at the train precision
	MasterBytes float64 // fp32 master weights (0 when training in fp32: the weights are the master)
	MomentBytes float64 // bytes per optimizer moment (fp32)
	Moments     int     // optimizer moments per parameter (Adam/AdamW: 2; SGD with momentum: 1)

	// Offload (ZeRO-Offload / ZeRO-Infinity) and the unified cache keep an fp32 copy of the
	// gradients on the host for the CPU optimizer (DeepSpeed CPU-Adam reads fp32 gradients),
	// next to the 16-bit gradient partition copied from the GPU: 2+2+4+12 = 20 bytes per
	// parameter of offloaded states in mixed precision.
	HostGradBytes float64
	// OffloadFragmentation multiplies host bytes of static ZeRO offload: pinned staging
	// buffers, per-tensor allocation and fragmentation. Calibrated so one 8×A100-40GB node
	// with 1 TB of host memory trains ~30B parameters, as the HunYuan/AngelPTM seed reports
	// for ZeRO-Infinity (1.4 gives 28.6B at 20 bytes per parameter). The unified cache pages
	// memory and has no such factor.
	OffloadFragmentation float64
	// HostUsable is the fraction of host memory for model states (cluster host_usable).
	HostUsable float64
	// NVMeUsable is the fraction of NVMe capacity usable for offloaded states.
	NVMeUsable float64

	// GPU working buffers.
	Reserve         int64   // bytes per device kept by the CUDA context and allocator (gpu_reserve)
	LiveLayers      float64 // ZeRO-3: layers whose gathered full weights are resident at once (current + prefetch)
	GradBucketBytes int64   // gradient reduce bucket (DeepSpeed reduce_bucket_size 5e8 elements ≈ 1 GB in fp16; we use 500 MB)
	LogitsBytes     float64 // bytes per logit kept for the loss (fp32 logits and their gradient: 4+4)

	// Activations (Korthikanti et al., "Reducing Activation Recomputation in Large
	// Transformer Models", 2022): per layer sbh(34 + 5as/h) bytes with 16-bit activations.
	ActivationBytes  float64 // bytes per activation element (2 for bf16/fp16)
	DropoutMasks     bool    // count 1-byte dropout masks as the paper does (3 per layer, plus as²b)
	SequenceParallel bool    // with TP, norms and dropout activations are split across TP ranks too
	DroplessSkew     float64 // worst expert load / mean for dropless MoE (model's dropless_skew)

	// Time.
	MatmulEfficiency    float64 // achieved / peak for large dense GEMMs
	ExpertEfficiency    float64 // achieved / peak for expert GEMMs with enough tokens per expert
	ExpertSaturation    float64 // tokens per expert GEMM at which ExpertEfficiency is reached (fewer: linear drop)
	AttentionEfficiency float64 // achieved / peak for QK^T and AV (flash-attention class kernels)
	OverlapDP           float64 // fraction of the backward pass that hides data-parallel / ZeRO traffic
	OverlapOffload      float64 // fraction of compute that hides PCIe offload traffic
	HostUpdateOverlap   bool    // the unified cache updates a unit on the CPU while the GPU computes the next (HostUpdatePipelined)
	IntraLatency        float64 // seconds per message on the intra-node link
	NetLatency          float64 // seconds per message across nodes (cluster net_latency)
	CPUAdamRate         float64 // parameters per second one node's CPUs update with CPU-Adam
	TPMax               int     // largest tensor-parallel size: TP stays inside a node
	BatchTolerance      float64 // how far dp × micro_batch × grad_accum may round tokens_per_batch (relative)

	// Serving.
	ServeWorkspace int64 // bytes per device for activations and kernel workspace during decoding
}

// DefaultAssumptions returns the defaults for a training precision.
func DefaultAssumptions(prec program.Precision) Assumptions {
	a := Assumptions{
		WeightBytes: 2, GradBytes: 2, MasterBytes: 4, MomentBytes: 4, Moments: 2,
		HostGradBytes:        4,
		OffloadFragmentation: 1.4,
		HostUsable:           0.8,
		NVMeUsable:           0.9,
		Reserve:              2 << 30,
		LiveLayers:           2,
		GradBucketBytes:      500e6,
		LogitsBytes:          8,
		ActivationBytes:      2,
		DropoutMasks:         true,
		SequenceParallel:     true,
		DroplessSkew:         2,
		MatmulEfficiency:     0.55,
		ExpertEfficiency:     0.45,
		ExpertSaturation:     1024,
		AttentionEfficiency:  0.4,
		OverlapDP:            0.8,
		OverlapOffload:       0.5,
		HostUpdateOverlap:    true,
		IntraLatency:         3e-6,
		NetLatency:           5e-6,
		CPUAdamRate:          2e9,
		TPMax:                8,
		BatchTolerance:       0.1,
		ServeWorkspace:       1 << 30,
	}
	if prec == program.FP32 || prec == program.TF32 {
		a.WeightBytes, a.GradBytes, a.MasterBytes, a.ActivationBytes = 4, 4, 0, 4
	}
	return a
}

// assumptionsFor fills the defaults from the program: the cluster's overrides, the
// model's dropless skew and the optimizer's moment count.
func assumptionsFor(prec program.Precision, c *program.Cluster, m *program.Model, opt *program.Optimizer) Assumptions {
	a := DefaultAssumptions(prec)
	if c != nil {
		if c.HostUsable > 0 {
			a.HostUsable = c.HostUsable
		}
		if c.NetLatency > 0 {
			a.NetLatency = c.NetLatency
		}
		a.Reserve = c.Device.Reserve
		if c.GPUsPerNode > 0 && c.GPUsPerNode < a.TPMax {
			a.TPMax = c.GPUsPerNode
		}
	}
	if m != nil && m.MoE != nil && m.MoE.DroplessSkew > 0 {
		a.DroplessSkew = m.MoE.DroplessSkew
	}
	if opt != nil && opt.Kind == "sgd" {
		a.Moments = 1
	}
	return a
}

// trainAssumptions is assumptionsFor a train block: also the memory strategy's gradient
// bucket (zero(bucket = …)), which replaces the grad_bucket assumption.
func trainAssumptions(train *program.Train, c *program.Cluster, m *program.Model) Assumptions {
	a := assumptionsFor(train.Precision, c, m, &train.Optimizer)
	if b := train.Memory.GradBucket; b > 0 {
		a.GradBucketBytes = b
	}
	return a
}

// OptimizerBytes is K in the ZeRO paper: optimizer-state bytes per parameter.
func (a *Assumptions) OptimizerBytes() float64 {
	return a.MasterBytes + float64(a.Moments)*a.MomentBytes
}

// Assumption is one named value as the plan prints it.
type Assumption struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Why   string `json:"why"`
}

// ServeList returns the assumptions a serving plan reads (weights, decode workspace,
// efficiency and latency), in List's order: a decoding step has no gradients, optimizer
// or backward pass for the training assumptions to describe.
func (a *Assumptions) ServeList() []Assumption {
	used := map[string]bool{"weight_bytes": true, "activation_bytes": true, "gpu_reserve": true,
		"serve_workspace": true, "matmul_efficiency": true, "intra_latency": true, "net_latency": true, "tp_max": true}
	var out []Assumption
	for _, x := range a.List() {
		if used[x.Name] {
			out = append(out, x)
		}
	}
	return out
}

// List returns the assumptions in a fixed order for the plan and the report.
func (a *Assumptions) List() []Assumption {
	f := func(v float64) string { return fmt.Sprintf("%g", v) }
	b := func(v bool) string { return fmt.Sprintf("%t", v) }
	return []Assumption{
		{"weight_bytes", f(a.WeightBytes), "bytes per working weight at the train precision"},
		{"grad_bytes", f(a.GradBytes), "bytes per gradient at the train precision"},
		{"master_bytes", f(a.MasterBytes), "fp32 master copy (mixed precision)"},
		{"moment_bytes", f(a.MomentBytes), "bytes per optimizer moment"},
		{"moments", fmt.Sprint(a.Moments), "optimizer moments per parameter (Adam: 2)"},
		{"host_grad_bytes", f(a.HostGradBytes), "fp32 gradient copy on the host for CPU-Adam (offload, unified cache)"},
		{"offload_fragmentation", f(a.OffloadFragmentation), "host overhead of static ZeRO offload (pinned staging, fragmentation); calibrated to the seed's 30B per node"},
		{"host_usable", f(a.HostUsable), "fraction of host memory for model states"},
		{"nvme_usable", f(a.NVMeUsable), "fraction of NVMe for offloaded states"},
		{"gpu_reserve", human.Bytes(a.Reserve), "per device: CUDA context, allocator slack"},
		{"zero3_live_layers", f(a.LiveLayers), "ZeRO-3 layers gathered at once (current + prefetch)"},
		{"grad_bucket", human.Bytes(a.GradBucketBytes), "gradient reduce bucket"},
		{"logits_bytes", f(a.LogitsBytes), "bytes per output logit kept for the loss"},
		{"activation_bytes", f(a.ActivationBytes), "bytes per activation element"},
		{"dropout_masks", b(a.DropoutMasks), "count dropout masks as Korthikanti et al. do"},
		{"sequence_parallel", b(a.SequenceParallel), "activations split across TP ranks"},
		{"dropless_skew", f(a.DroplessSkew), "worst expert load / mean, sizing dropless buffers"},
		{"matmul_efficiency", f(a.MatmulEfficiency), "achieved/peak, dense GEMMs: assumed (what cuBLAS-class bf16 kernels reach; moec's own CUDA kernels are not yet measured on a GPU: make gpu-check measures them)"},
		{"expert_efficiency", f(a.ExpertEfficiency), "achieved/peak, expert GEMMs at saturation: assumed (grouped-GEMM class kernels, as MegaBlocks reports; not yet measured for moec's)"},
		{"expert_saturation", f(a.ExpertSaturation), "tokens per expert GEMM to reach expert_efficiency"},
		{"attention_efficiency", f(a.AttentionEfficiency), "achieved/peak, QK^T and AV: assumed (FlashAttention-2 class kernels; not yet measured for moec's)"},
		{"overlap_dp", f(a.OverlapDP), "fraction of backward time hiding DP/ZeRO traffic"},
		{"overlap_offload", f(a.OverlapOffload), "fraction of compute hiding PCIe offload traffic"},
		{"host_update_overlap", b(a.HostUpdateOverlap), "unified cache: the CPU updates one layer while the GPU computes the next layer's backward (static offload updates after the backward)"},
		{"intra_latency", f(a.IntraLatency), "seconds per message, intra-node"},
		{"net_latency", f(a.NetLatency), "seconds per message, inter-node"},
		{"cpu_adam_rate", f(a.CPUAdamRate), "parameters/s one node updates with CPU-Adam"},
		{"tp_max", fmt.Sprint(a.TPMax), "tensor parallelism stays inside a node"},
		{"batch_tolerance", f(a.BatchTolerance), "relative rounding of tokens_per_batch to dp × micro_batch × grad_accum sequences"},
		{"serve_workspace", human.Bytes(a.ServeWorkspace), "per device decoding workspace"},
	}
}
