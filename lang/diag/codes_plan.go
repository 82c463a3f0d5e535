package diag

// planCodes are the planner's codes (compiler/plan).
var planCodes = []Info{
	{"E0501", "no layout fits the devices' memory; the message names the device tier, the overflow in bytes, the largest component and the smallest change that fits"},
	{"E0502", "the global batch is smaller than one sequence"},
	{"E0503", "the train or serve block names a model or cluster that is not declared"},
	{"E0504", "a planning option (--gpus, --nodes, --memory, --objective) is invalid"},
	{"E0505", "no parallel layout divides the model on the devices available"},
	{"E0506", "the served model does not fit the cluster in any layout"},
	{"E0507", "local CPU ranks cannot be laid out for this stage"},
	{"E0508", "the cluster's device lacks a value the planner needs (peak FLOP/s at the precision, memory bandwidth)"},
	{"E0509", "a parallel layout does not divide what it splits (tp and heads, pp and layers, ep and experts, ranks and the batch); the message names the axis, the size and what it must divide"},
	{"E0510", "the step program cannot lower a model feature for this backend; the message names the feature and the backend"},
	{"E0511", "the unified cache's device budget cannot hold one unit (the embedding, a layer, the head) beside the step's other device buffers; the message names the unit, its pages and the smallest budget"},
	{"E0599", "internal planner error (a bug in moec: please report it)"},
	{BackendGap, "a backend moec generates code or exports for does not honour (or only approximates) a model feature; the message names the feature, the backend and why (see the features table in report.md)"},
}

// BackendGap is the warning `moec build` gives for a model feature a generated backend
// (the CUDA or LLVM kernels) ignores or approximates: the output is written, without it.
const BackendGap Code = "W9501"
