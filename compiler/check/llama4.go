package check

import (
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// llamaTemperatureFloor is transformers' Llama4TextConfig default floor_scale: the
// positions per step of the query temperature when nope_temperature_floor is not written.
const llamaTemperatureFloor = 8192

// llama4Attention reads Llama 4's attention keys: layers without rotary positions,
// chunked attention, unscaled q/k norms and the query temperature of position-free layers.
func llama4Attention(a *scope, at *program.Attention) {
	at.NopeEvery = a.int("nope_every")
	at.ChunkSize = a.i64("chunk")
	if _, set := a.val("qk_l2_norm"); set {
		at.QKL2Norm = a.boolean("qk_l2_norm")
	}
	at.NopeTemperature = orFloat(a, "nope_temperature", 0)
	if at.NopeTemperature > 0 {
		at.NopeTemperatureFloor = llamaTemperatureFloor
		if f := a.i64("nope_temperature_floor"); f > 0 {
			at.NopeTemperatureFloor = f
		}
	}
}

// validateLlama4Attention refuses Llama 4's keys where they would change nothing: each
// speaks of rotary layers or of the layers without rotary positions.
func (c *checker) validateLlama4Attention(s, a *scope, m *program.Model) {
	at := m.Attention
	if m.Position != program.Rotary && ok(s, "position") {
		for _, k := range []string{"nope_every", "chunk", "qk_l2_norm"} {
			if _, set := a.val(k); set && (k != "qk_l2_norm" || at.QKL2Norm) {
				d := c.errorf(diag.OutOfRange, a.rangeOf(k), "%s speaks of the layers with rotary positions, but position = %s", k, m.Position)
				d.Suggestion = "use position = rotary, or remove " + k
			}
		}
	}
	if _, set := a.val("nope_temperature"); set && at.NopeEvery == 0 {
		d := c.errorf(diag.OutOfRange, a.rangeOf("nope_temperature"), "nope_temperature scales the queries of the layers without rotary positions, but nope_every leaves none")
		d.Suggestion = "set nope_every, or remove nope_temperature"
	}
	if _, set := a.val("nope_temperature_floor"); set && at.NopeTemperature == 0 {
		d := c.errorf(diag.OutOfRange, a.rangeOf("nope_temperature_floor"), "nope_temperature_floor steps the query temperature, but nope_temperature is not set")
		d.Suggestion = "set nope_temperature, or remove nope_temperature_floor"
	}
}
