package check

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// resolveQuantization fills a compress block's weight formats and experts kept, checks
// them against its model (E0430: an int4 group that does not divide a width it quantises;
// E0431: keeping more experts than the model has, fewer than top_k, or pruning a model
// without routed experts; moec compress refuses, at run time, to prune a model that routes
// within expert groups) and counts the served weights before and after.
func (c *checker) resolveQuantization(cp *program.Compress, s *scope) {
	def := "fp32"
	switch cp.QuantBits {
	case 8:
		def = "int8"
	case 4:
		def = "int4"
	}
	scheme := func(key string) string {
		if v := s.str(key); v != "auto" {
			return v
		}
		return def
	}
	cp.Experts, cp.Dense, cp.Embed, cp.Head = scheme("experts"), scheme("dense"), scheme("embed"), scheme("head")
	cp.Group, cp.KeepExperts, cp.PruneBy, cp.Calibration = s.int("group"), s.int("keep_experts"), s.str("prune_by"), s.str("calibration")
	m := c.prog.Models[cp.Model]
	if m == nil {
		return // E0401 already
	}
	moe := m.MoE
	experts := 0
	if moe != nil {
		experts = moe.Experts
	}
	keepKey := "keep_experts"
	if cp.KeepExperts == 0 && cp.PruneExperts > 0 {
		keepKey = "prune_experts"
		cp.KeepExperts = experts - int(math.Round(cp.PruneExperts*float64(experts)))
	}
	pruning := s.entries["keep_experts"] != nil && cp.KeepExperts > 0 || cp.PruneExperts > 0
	switch {
	case s.entries["keep_experts"] != nil && cp.KeepExperts > 0 && cp.PruneExperts > 0:
		c.errorf(diag.CodeCompressKeepExperts, s.rangeOf("keep_experts"), "compress %s gives both keep_experts and prune_experts; write one", cp.Name)
	case pruning && experts <= 1:
		c.errorf(diag.CodeCompressKeepExperts, s.rangeOf(keepKey), "compress %s prunes experts, but model %s has no routed experts", cp.Name, cp.Model)
	case pruning && cp.KeepExperts > experts:
		dg := c.errorf(diag.CodeCompressKeepExperts, s.rangeOf(keepKey), "compress %s keeps %s per MoE layer, but model %s has %d", cp.Name, plural(cp.KeepExperts, "expert"), cp.Model, experts)
		dg.Suggestion = fmt.Sprintf("keep at most %d", experts)
	case pruning && cp.KeepExperts < moe.TopK:
		dg := c.errorf(diag.CodeCompressKeepExperts, s.rangeOf(keepKey), "compress %s keeps %s per MoE layer, fewer than model %s's top_k = %d", cp.Name, plural(cp.KeepExperts, "expert"), cp.Model, moe.TopK)
		dg.Suggestion = fmt.Sprintf("keep at least %d", moe.TopK)
	}
	served := m
	if pruning && cp.KeepExperts > 0 && cp.KeepExperts <= experts {
		pm := *m
		pmoe := *moe
		pmoe.Experts = cp.KeepExperts
		pm.MoE = &pmoe
		served = &pm
	} else {
		cp.KeepExperts = 0
	}
	full, err := params.Walk(m)
	if err != nil {
		return // a model the runtime cannot list is not served compressed
	}
	layout, err := params.Walk(served)
	if err != nil {
		return
	}
	schemes := params.Schemes(cp)
	// One diagnostic per key it points at: the first matrix whose width the scheme does
	// not fit.
	reported := map[string]bool{}
	for _, p := range layout {
		kind := params.QuantKind(p.ID)
		sc, ok := schemes[kind]
		if !ok || len(p.Shape) != 2 {
			continue
		}
		at := "group"
		if s.entries["group"] == nil {
			at = kind
			if s.entries[kind] == nil {
				at = "quantize"
			}
		}
		if err := sc.Fits(p.Shape[1]); err != nil && !reported[at] {
			reported[at] = true
			dg := c.errorf(diag.CodeQuantGroup, s.rangeOf(at), "compress %s: int4 %s cannot quantise %s [%d, %d]: %v", cp.Name, kind, p.Name, p.Shape[0], p.Shape[1], err)
			dg.Suggestion = "choose a group of 32, 64 or 128 that divides every width, or int8 for these matrices"
		}
	}
	cp.FP32Bytes = params.WeightBytes(full, nil)
	cp.Bytes = params.WeightBytes(layout, schemes)
}

// plural is "1 expert" or "n experts".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
