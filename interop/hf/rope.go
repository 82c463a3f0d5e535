package hf

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// ropeScalingConfig is the rope_scaling entry config.json gives m's rotary scaling (nil
// without one), in the keys transformers' ROPE_INIT_FUNCTIONS read.
func ropeScalingConfig(m *program.Model) map[string]any {
	rs := m.RopeScaling
	if rs == nil {
		return nil
	}
	out := map[string]any{"rope_type": string(rs.Type), "factor": rs.Factor}
	switch rs.Type {
	case program.RopeYarn:
		// Without it transformers takes max_position_embeddings as the pretrained context and
		// the factor as written; with it (newer versions) the factor is the ratio of the two.
		if rs.OriginalSeqLen != m.SeqLen {
			out["original_max_position_embeddings"] = rs.OriginalSeqLen
		}
		out["beta_fast"], out["beta_slow"] = rs.BetaFast, rs.BetaSlow
		if rs.Mscale != 0 {
			out["mscale"] = rs.Mscale
		}
		if rs.MscaleAllDim != 0 {
			out["mscale_all_dim"] = rs.MscaleAllDim
		}
		if rs.AttentionFactor != 0 {
			out["attention_factor"] = rs.AttentionFactor
		}
		if rs.NoTruncate {
			out["truncate"] = false
		}
	case program.RopeLlama3:
		out["original_max_position_embeddings"] = rs.OriginalSeqLen
		out["low_freq_factor"], out["high_freq_factor"] = rs.LowFreqFactor, rs.HighFreqFactor
	}
	return out
}

// ropeScalingExact reports whether transformers computes m's rotary scaling from the
// entry ropeScalingConfig writes: yarn with an original context takes its factor from
// max_position_embeddings / original_max_position_embeddings, not from "factor".
func ropeScalingExact(m *program.Model) bool {
	rs := m.RopeScaling
	if rs == nil || rs.Type != program.RopeYarn || rs.OriginalSeqLen == 0 || rs.OriginalSeqLen == m.SeqLen {
		return true
	}
	return float64(m.SeqLen)/float64(rs.OriginalSeqLen) == rs.Factor
}

// ropeSpec is a config's rotary scaling as moec's model keys.
type ropeSpec struct {
	kind                 program.RopeType
	factor               float64
	original             int64 // 0: not given
	betaFast, betaSlow   float64
	mscale, mscaleAllDim float64
	attentionFactor      float64
	noTruncate           bool
	lowFreq, highFreq    float64
	short, long          []float64 // longrope
	factorNote           string    // how the factor was derived, when not as written
}

// ropeKeysOf lists the keys transformers reads for each rotary scaling beside rope_type
// (and "type", its old name) and rope_theta (v5 keeps the base inside rope_parameters).
func ropeKeysOf(kind string) []string {
	switch kind {
	case "default":
		return nil
	case "linear", "dynamic":
		return []string{"factor", "original_max_position_embeddings"}
	case "yarn":
		return []string{"factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
			"mscale", "mscale_all_dim", "attention_factor", "truncate"}
	case "llama3":
		return []string{"factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"}
	case "longrope":
		return []string{"factor", "original_max_position_embeddings", "short_factor", "long_factor",
			"attention_factor", "short_mscale", "long_mscale"}
	}
	return nil
}

// readRope reads a rope_scaling (v4) or rope_parameters (v5) object into s. field names it
// in messages. rope_theta inside it is the base.
func (s *spec) readRope(r *reader, field string, raw json.RawMessage) {
	var rs map[string]json.RawMessage
	if err := json.Unmarshal(raw, &rs); err != nil || rs == nil {
		r.bad(field, "want an object or null, have %s", compact(raw))
		return
	}
	num := func(key string) (float64, bool) {
		v, ok := rs[key]
		if !ok || string(v) == "null" {
			return 0, false
		}
		var f float64
		if err := json.Unmarshal(v, &f); err != nil {
			r.bad(field, "%s: want a number, have %s", key, compact(v))
			return 0, false
		}
		return f, true
	}
	if base, ok := num("rope_theta"); ok {
		if base <= 0 {
			r.bad(field, "rope_theta: want a positive number, have %v", base)
		} else {
			s.ropeBase = base
		}
	}
	kind := "default"
	for _, k := range []string{"rope_type", "type"} {
		if v, ok := rs[k]; ok {
			if err := json.Unmarshal(v, &kind); err != nil {
				r.bad(field, "%s: want a string, have %s", k, compact(v))
				return
			}
			break
		}
	}
	known := []string{"default", "linear", "dynamic", "yarn", "llama3", "longrope"}
	found := false
	for _, k := range known {
		found = found || k == kind
	}
	if !found {
		msg := fmt.Sprintf("unknown rope type %q (moec computes %s)", kind, strings.Join(known, ", "))
		r.issues = append(r.issues, Issue{Field: field, Code: diag.CodeBadHFConfig, Message: msg})
		return
	}
	// Every key must be one the scaling reads: another would be a number moec ignores.
	reads := map[string]bool{"rope_type": true, "type": true, "rope_theta": true}
	for _, k := range ropeKeysOf(kind) {
		reads[k] = true
	}
	var extra []string
	for k, v := range rs {
		if !reads[k] && string(v) != "null" {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		r.refuse(field, fmt.Sprintf("%s rotary scaling with key(s) %s", kind, strings.Join(extra, ", ")),
			fmt.Sprintf("transformers' %s scaling reads %s; moec does not know what the others change", kind, strings.Join(ropeKeysOf(kind), ", ")))
		return
	}
	if kind == "default" {
		return
	}
	rp := &ropeSpec{kind: program.RopeType(kind)}
	if kind == "longrope" {
		s.readLongrope(r, field, rs, rp, num)
		return
	}
	f, ok := num("factor")
	if !ok || f < 1 {
		r.bad(field, "factor: want a number >= 1 for %s scaling, have %s", kind, compact(rs["factor"]))
		return
	}
	rp.factor = f
	if o, ok := num("original_max_position_embeddings"); ok {
		if o <= 0 || o != float64(int64(o)) {
			r.bad(field, "original_max_position_embeddings: want a positive integer, have %v", o)
			return
		}
		rp.original = int64(o)
	}
	switch rp.kind {
	case program.RopeLinear, program.RopeDynamic:
		if rp.original > 0 && rp.original != s.seqLen {
			// transformers' linear and dynamic functions read max_position_embeddings only.
			rp.original = 0
		}
	case program.RopeYarn:
		rp.betaFast, _ = num("beta_fast")
		rp.betaSlow, _ = num("beta_slow")
		rp.mscale, _ = num("mscale")
		rp.mscaleAllDim, _ = num("mscale_all_dim")
		rp.attentionFactor, _ = num("attention_factor")
		if v, ok := rs["truncate"]; ok {
			var t bool
			if json.Unmarshal(v, &t) != nil {
				r.bad(field, "truncate: want true or false, have %s", compact(v))
			}
			rp.noTruncate = !t
		}
		if rp.original > 0 && s.seqLen > 0 {
			// transformers: with original_max_position_embeddings, yarn's factor is
			// max_position_embeddings / original_max_position_embeddings.
			derived := float64(s.seqLen) / float64(rp.original)
			if derived != rp.factor {
				rp.factorNote = fmt.Sprintf("rope_factor = max_position_embeddings / original_max_position_embeddings = %v, as transformers computes it (the config's factor %v is not read)", derived, rp.factor)
				rp.factor = derived
			}
		}
	case program.RopeLlama3:
		var okL, okH bool
		rp.lowFreq, okL = num("low_freq_factor")
		rp.highFreq, okH = num("high_freq_factor")
		if !okL || !okH || rp.original == 0 {
			r.bad(field, "llama3 scaling needs low_freq_factor, high_freq_factor and original_max_position_embeddings")
			return
		}
	}
	s.ropeScale = rp
	if rp.factorNote != "" {
		r.notes = append(r.notes, rp.factorNote)
	}
}

// readLongrope reads Phi-3's longrope: per-pair short and long factors, the pretrained
// context (in the object or, as transformers v5 reads it, at the config's top level), and
// the factor on cos and sin: attention_factor, or Phi-3.5's short_mscale = long_mscale.
func (s *spec) readLongrope(r *reader, field string, rs map[string]json.RawMessage, rp *ropeSpec, num func(string) (float64, bool)) {
	list := func(key string) []float64 {
		var v []float64
		if err := json.Unmarshal(rs[key], &v); err != nil || len(v) == 0 {
			r.bad(field, "%s: want a list of numbers, have %s", key, compact(rs[key]))
		}
		return v
	}
	rp.short, rp.long = list("short_factor"), list("long_factor")
	if o, ok := num("original_max_position_embeddings"); ok {
		rp.original = int64(o)
	}
	if o := r.integer("original_max_position_embeddings", 0); o > 0 {
		if rp.original > 0 && rp.original != o {
			r.bad("original_max_position_embeddings", "%d differs from rope_scaling's %d", o, rp.original)
		}
		rp.original = o
	}
	if rp.original == 0 {
		r.bad(field, "longrope needs original_max_position_embeddings")
		return
	}
	rp.attentionFactor, _ = num("attention_factor")
	shortM, okS := num("short_mscale")
	longM, okL := num("long_mscale")
	switch {
	case okS != okL || (okS && shortM != longM):
		r.refuse(field, fmt.Sprintf("short_mscale %v and long_mscale %v", shortM, longM), "moec's longrope has one factor on cos and sin for both")
		return
	case okS && rp.attentionFactor != 0 && rp.attentionFactor != shortM:
		r.bad(field, "attention_factor %v and short_mscale %v disagree", rp.attentionFactor, shortM)
		return
	case okS:
		rp.attentionFactor = shortM
	}
	s.ropeScale = rp
}
