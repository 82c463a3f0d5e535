package diag

// Planning and lowering codes (compiler/plan, compiler/step): E05xx, and W95xx for a
// model feature a generated backend does not honour.
//
// Append only: a published code keeps its number and meaning. A code is one constant
// and one entry in planCodes, each on its own line, in code order.

const CodeNoFit Code = "E0501"
const CodeBatchTooSmall Code = "E0502"
const CodeUnresolved Code = "E0503"
const CodePlanOptions Code = "E0504"
const CodeNoLayout Code = "E0505"
const CodeServeNoFit Code = "E0506"
const CodeLocalLayout Code = "E0507"
const CodeDeviceIncomplete Code = "E0508"
const CodeLayoutDivides Code = "E0509"
const CodeNotLowered Code = "E0510"
const CodeCacheBudget Code = "E0511"
const CodeInternalPlanError Code = "E0599"
const CodeBackendGap Code = "W9501"

var planCodes = []Info{
	{CodeNoFit, "no layout fits the devices' memory; the message names the device tier, the overflow in bytes, the largest component and the smallest change that fits"},
	{CodeBatchTooSmall, "the global batch is smaller than one sequence"},
	{CodeUnresolved, "the train or serve block names a model or cluster that is not declared"},
	{CodePlanOptions, "a planning option (--gpus, --nodes, --memory, --objective) is invalid"},
	{CodeNoLayout, "no parallel layout divides the model on the devices available"},
	{CodeServeNoFit, "the served model does not fit the cluster in any layout"},
	{CodeLocalLayout, "local CPU ranks cannot be laid out for this stage"},
	{CodeDeviceIncomplete, "the cluster's device lacks a value the planner needs (peak FLOP/s at the precision, memory bandwidth)"},
	{CodeLayoutDivides, "a parallel layout does not divide what it splits (tp and heads, pp and layers, ep and experts, ranks and the batch); the message names the axis, the size and what it must divide"},
	{CodeNotLowered, "the step program cannot lower a model feature for this backend; the message names the feature and the backend"},
	{CodeCacheBudget, "the unified cache's device budget cannot hold one unit (the embedding, a layer, the head) beside the step's other device buffers; the message names the unit, its pages and the smallest budget"},
	{CodeInternalPlanError, "internal planner error (a bug in moec: please report it)"},
	{CodeBackendGap, "a backend moec generates code or exports for does not honour (or only approximates) a model feature; the message names the feature, the backend and why (see the features table in report.md)"},
}
