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
	at.FullEvery = a.int("full_every")
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
				d := c.errorf(diag.CodeOutOfRange, a.rangeOf(k), "%s speaks of the layers with rotary positions, but position = %s", k, m.Position)
				d.Suggestion = "use position = rotary, or remove " + k
			}
		}
	}
	if _, set := a.val("full_every"); set && at.Window == 0 {
		d := c.errorf(diag.CodeOutOfRange, a.rangeOf("full_every"), "full_every leaves some layers to the sliding window, but window is 0")
		d.Suggestion = "set window, or remove full_every"
	}
	if _, set := a.val("nope_temperature"); set && at.NopeEvery == 0 {
		d := c.errorf(diag.CodeOutOfRange, a.rangeOf("nope_temperature"), "nope_temperature scales the queries of the layers without rotary positions, but nope_every leaves none")
		d.Suggestion = "set nope_every, or remove nope_temperature"
	}
	if _, set := a.val("nope_temperature_floor"); set && at.NopeTemperature == 0 {
		d := c.errorf(diag.CodeOutOfRange, a.rangeOf("nope_temperature_floor"), "nope_temperature_floor steps the query temperature, but nope_temperature is not set")
		d.Suggestion = "set nope_temperature, or remove nope_temperature_floor"
	}
}

// gptOssAlpha is gpt-oss's sigmoid slope in its clamped SwiGLU (GptOssExperts.alpha).
const gptOssAlpha = 1.702

// validateSwiglu refuses gpt-oss's clamp on experts that are not SwiGLU, and a slope
// without a clamp.
func (c *checker) validateSwiglu(e *scope, m *program.Model) {
	moe := m.MoE
	act := moe.Activation
	if act == "" {
		act = m.FFN.Activation
	}
	if _, set := e.val("swiglu_limit"); set && act != program.SwiGLU && ok(e, "activation") {
		d := c.errorf(diag.CodeOutOfRange, e.rangeOf("swiglu_limit"), "swiglu_limit clamps SwiGLU experts, but their activation is %s", act)
		d.Suggestion = "use activation = swiglu, or remove swiglu_limit"
	}
	if _, set := e.val("swiglu_alpha"); set && moe.SwigluLimit == 0 {
		d := c.errorf(diag.CodeOutOfRange, e.rangeOf("swiglu_alpha"), "swiglu_alpha is the slope of the clamped SwiGLU, but swiglu_limit is not set")
		d.Suggestion = "set swiglu_limit, or remove swiglu_alpha"
	}
}
