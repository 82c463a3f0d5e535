// Package check is the semantic half of the .moe front end: it turns parsed files into a
// typed, fully resolved program.Program.
//
// In: *ast.File values from lang/parse (Check), or a path and a read function (Load,
// which also follows imports).
// Out: a program.Program with every key resolved (defaults, inheritance and expressions
// applied), Program.Explain saying where each value came from, and a diag.List with every
// problem found in one run (codes E02xx-E04xx, warnings W92xx; see lang/diag).
//
// The design is schema driven. Each block kind (model, attention, ffn, moe, cluster,
// train, stage, serve, compress, experiment) and each constructor (adamw, adam, sgd,
// zero, unified_cache, copy, random) has one table in schema.go listing its keys with
// type, default and range. Defaults are expressions over other keys ("d_model / heads")
// evaluated by the same evaluator as user values, on demand and memoised, so keys may
// refer to each other in any order and a reference cycle is a diagnostic.
//
// Numbers are exact rationals: an int key demands an exact value (128 / 3 is an error,
// not 42), counts such as 1.6T are exact, and units (bytes, rates, FLOP/s) are checked
// dimensionally, bit rates being stored as bytes per second.
//
// Inheritance (`model tiny extends big`) merges entries key by key and section by
// section before anything is evaluated, and keeps expressions, not values: an inherited
// `hidden = 4 * d_model` is evaluated with the child's d_model.
//
// Choices the language reference leaves open, made here:
//   - a train, serve or compress block is named by its model, so one model has at most
//     one of each;
//   - a stage without `experts` keeps the experts of the stage it starts from (a first
//     stage: the model's moe.experts, 1 for a dense model); any count >= 1 is allowed,
//     counts may not shrink along `from`, growing needs `grow`, and a last stage that
//     differs from the model's moe.experts is a warning (W9201);
//   - stages come out parents first (declaration order otherwise);
//   - unified_cache is stored as ZeRO stage 3 with CPU offload (AngelPTM pages every
//     model state between GPU and host memory);
//   - for gpu = cpu, gpu_memory defaults to host_memory; a written peak_flops replaces
//     the catalog figure for every precision;
//   - experiment overrides are values (checked against the overridden key's type) and are
//     stored as canonical text keyed by path ("attention.share_weights").
package check
