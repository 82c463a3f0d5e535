// Package plan decides how a training stage or a serving deployment is laid out on a
// cluster: data × expert × tensor × pipeline parallel sizes, ZeRO stage, offload or the
// AngelPTM-style unified cache, micro-batch and activation recomputation. For each candidate
// it models memory per device tier (GPU, host, NVMe), communication per collective and link
// tier (alpha-beta), and step time; a search picks the best by an objective (time, GPUs or
// cost) and keeps the runners-up with why they lost.
//
// In: a checked program (compiler/program), the train block and stage (or a serve block),
// parameter and FLOP counts from compiler/analysis, device values from the cluster (which
// compiler/catalog filled in) and Options for what-if questions.
//
// Out: a *Plan, serialised as versioned deterministic JSON ("moec.plan/v1") for the runtime
// and code generators and as a Markdown report section for people; or diagnostics (E05xx)
// that say which device overflows, by how much, in which component, and the smallest
// change that would fit. SeedTable reproduces the HunYuan-1T seed's four headline figures.
//
// Entry points: ForStage (a curriculum stage on its cluster, or a what-if via Options),
// ForServe (a serve block), Local (a stage on N in-process CPU ranks, with each rank's
// expert placement and buffer sizes for the runtime), SeedTable; Plan.JSON, Plan.Markdown
// and Plan.Title render a plan.
//
// A pipeline stage's memory holds its in-flight micro-batches' activations under 1F1B
// (pp − stage of them) and, with attention-weight sharing, the attention-weight buffers
// the stages exchange as the step program's memory plan places them (sharedWeightsPP).
//
// Every number that moves a result is a named field of Assumptions, printed with the plan.
package plan
