// Package params is the one walker over a model's trainable tensors.
//
// In: a *program.Model (its sizes resolved by program.Model.Dims).
// Out: Walk lists every parameter in a stable order (embedding, layers in order, the
// token-embedding router table, final norm, head) with a structured identity (ID: role,
// layer, expert, bias, shard), its Hugging Face-style name and its shape.
//
// Everything that needs to know what a model's parameters are reads this list: the
// runtime (runtime/nn builds its tensors in this order and the names must agree), growth
// between curriculum stages (which matches experts and routers by ID, never by parsing
// names), the code generators and the step program. Names exist for checkpoints and the
// Hugging Face boundary; code that reasons about a parameter reads its ID.
package params
