package check

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// ropeKeys are the keys rotary scaling kind reads beside rope_scaling itself.
func ropeKeys(kind string) []string {
	switch program.RopeType(kind) {
	case program.RopeLinear, program.RopeDynamic:
		return []string{"rope_factor"}
	case program.RopeYarn:
		return []string{"rope_factor", "rope_original_seq_len", "rope_beta_fast", "rope_beta_slow",
			"rope_mscale", "rope_mscale_all_dim", "rope_attention_factor", "rope_truncate"}
	case program.RopeLlama3:
		return []string{"rope_factor", "rope_original_seq_len", "rope_low_freq_factor", "rope_high_freq_factor"}
	case program.RopeLongrope:
		return []string{"rope_original_seq_len", "rope_short_factor", "rope_long_factor", "rope_attention_factor"}
	}
	return nil
}

// allRopeKeys lists every rotary-scaling parameter key, in the schema's order.
func allRopeKeys() []string {
	return []string{"rope_factor", "rope_original_seq_len", "rope_beta_fast", "rope_beta_slow",
		"rope_mscale", "rope_mscale_all_dim", "rope_attention_factor", "rope_truncate",
		"rope_low_freq_factor", "rope_high_freq_factor", "rope_short_factor", "rope_long_factor"}
}

// validateRopeScaling checks that every rotary-scaling key the model writes is read by its
// rope_scaling (a key the scaling ignores would be a number that changes nothing), that a
// scaling sits on rotary positions, and that llama3's bands do not collapse.
func (c *checker) validateRopeScaling(s *scope, m *program.Model) {
	if !ok(s, "position") {
		return
	}
	kind := "none"
	if s.written("rope_scaling") {
		if !ok(s, "rope_scaling") {
			return
		}
		kind = s.str("rope_scaling")
	}
	reads := map[string]bool{}
	for _, k := range ropeKeys(kind) {
		reads[k] = true
	}
	for _, k := range allRopeKeys() {
		if !s.written(k) || reads[k] {
			continue
		}
		var users []string
		for _, t := range ropeScalingNames() {
			for _, uk := range ropeKeys(t) {
				if uk == k {
					users = append(users, t)
				}
			}
		}
		d := c.errorf(diag.CodeBadRopeScaling, s.rangeOf(k), "%s has no effect with rope_scaling = %s", k, kind)
		d.Suggestion = fmt.Sprintf("set rope_scaling = %s, or remove %s", strings.Join(users, " | "), k)
	}
	if kind != "none" && m.Position != program.Rotary {
		d := c.errorf(diag.CodeBadRopeScaling, s.rangeOf("rope_scaling"), "rope_scaling = %s scales rotary positions, but position = %s", kind, m.Position)
		d.Suggestion = "use position = rotary, or remove rope_scaling"
	}
	if rs := m.RopeScaling; rs != nil && rs.Type == program.RopeLongrope {
		pairs := m.Attention.HeadDim / 2
		if m.Attention.MLA {
			pairs = m.Attention.QKRopeHeadDim / 2
		}
		for _, k := range []string{"rope_short_factor", "rope_long_factor"} {
			if !s.written(k) {
				d := c.errorf(diag.CodeBadRopeScaling, s.rangeOf("rope_scaling"), "rope_scaling = longrope needs %s: one factor per rotated pair (%d)", k, pairs)
				d.Suggestion = "copy short_factor and long_factor from the model's rope_scaling"
			} else if n := len(s.floats(k)); pairs > 0 && int64(n) != pairs {
				c.errorf(diag.CodeBadRopeScaling, s.rangeOf(k), "%s has %d factors; the rotary head has %d pairs", k, n, pairs)
			}
		}
	}
	if rs := m.RopeScaling; rs != nil && rs.Type == program.RopeLlama3 && rs.HighFreqFactor < rs.LowFreqFactor {
		// Equal factors are a hard switch with no smooth band (Llama 4 Scout's 1 and 1).
		d := c.errorf(diag.CodeBadRopeScaling, s.rangeOf("rope_high_freq_factor"), "rope_high_freq_factor (%g) must be at least rope_low_freq_factor (%g): the high-frequency band would start below the low-frequency one", rs.HighFreqFactor, rs.LowFreqFactor)
		d.Suggestion = "use Llama 3.1's values, rope_low_freq_factor = 1 and rope_high_freq_factor = 4"
	}
}

// orFloat is an optional float key's value, def when it is not written (or its value has
// an error, reported already).
func orFloat(s *scope, key string, def float64) float64 {
	if _, ok := s.val(key); !ok {
		return def
	}
	return s.f64(key)
}

// ropeScaling reads the model's rotary scaling: nil without one. Each parameter the
// scaling reads takes transformers' default when not written.
func ropeScaling(s *scope) *program.RopeScaling {
	kind := s.str("rope_scaling")
	if kind == "" || kind == "none" {
		return nil
	}
	rs := &program.RopeScaling{Type: program.RopeType(kind), Factor: orFloat(s, "rope_factor", 1)}
	original := func() int64 {
		if _, ok := s.val("rope_original_seq_len"); ok {
			return s.i64("rope_original_seq_len")
		}
		return s.i64("seq_len")
	}
	switch rs.Type {
	case program.RopeYarn:
		rs.OriginalSeqLen = original()
		rs.BetaFast, rs.BetaSlow = orFloat(s, "rope_beta_fast", 32), orFloat(s, "rope_beta_slow", 1)
		rs.Mscale, rs.MscaleAllDim = orFloat(s, "rope_mscale", 0), orFloat(s, "rope_mscale_all_dim", 0)
		rs.AttentionFactor = orFloat(s, "rope_attention_factor", 0)
		if _, ok := s.val("rope_truncate"); ok {
			rs.NoTruncate = !s.boolean("rope_truncate")
		}
	case program.RopeLlama3:
		rs.OriginalSeqLen = original()
		rs.LowFreqFactor, rs.HighFreqFactor = orFloat(s, "rope_low_freq_factor", 1), orFloat(s, "rope_high_freq_factor", 4)
	case program.RopeLongrope:
		rs.OriginalSeqLen = original()
		rs.ShortFactor, rs.LongFactor = s.floats("rope_short_factor"), s.floats("rope_long_factor")
		rs.AttentionFactor = orFloat(s, "rope_attention_factor", 0)
		if rs.OriginalSeqLen > 0 {
			rs.Factor = float64(s.i64("seq_len")) / float64(rs.OriginalSeqLen)
		}
	}
	return rs
}
