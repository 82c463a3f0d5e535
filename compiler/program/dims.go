package program

import (
	"errors"
	"fmt"
)

// DefaultNormEps is the norm epsilon a model has when it does not write one: the
// language's default (docs/language.md, norm_eps), so a model built in Go computes what
// the same model written in a .moe file computes.
const DefaultNormEps = 1e-5

// Dims are a model's sizes with every default filled in: the one resolution that the
// runtime, the parameter walker (compiler/params), the step program and the kernels read,
// so no package downstream re-derives a default of its own.
type Dims struct {
	V, D, L    int // padded vocabulary, model width, decoder layers
	H, KV, Dh  int // query heads, key/value heads, head width
	HeadsPerKV int // query heads per key/value head
	QDim       int // H·Dh, the query projection's width
	KVDim      int // KV·Dh, the key and value projections' width
	MaxPos     int // learned position rows (0 when positions are not learned)
	Window     int // sliding window (0 = full causal)
	Hidden     int // dense FFN width
	ShareKV    int // layers per cross-layer attention group (1 = none)

	E, K       int // routed experts and experts per token (0 for dense models)
	EHidden    int // routed expert width
	SHidden    int // shared expert width
	Shared     int // shared experts per MoE layer
	Groups     int // expert groups for node-limited routing (0 = none)
	TopKGroups int // groups a token may use
	RouterIn   int // width of what the router reads (d_model, or the router table's width)

	Norm             Norm // rmsnorm when unset
	NormEps          float64
	Placement        NormPlacement
	FFNActivation    Activation
	ExpertActivation Activation // the routed and shared experts' activation
}

// Dims resolves m's sizes, filling every default the language documents, and checks that
// they are consistent. Every problem is reported, joined into one error; the Dims returned
// with an error still hold every default that could be filled, so a caller that must size
// a model the runtime refuses (the counter, for MLA or encoder-decoder models) reads the
// same resolution. Two documented defaults are not filled here: ffn.hidden (4·d_model) and
// ffn.activation (gelu); compiler/check fills them for .moe files and a Go-built model
// must set them.
func (m *Model) Dims() (Dims, error) {
	a := m.Attention
	d := Dims{V: int(m.PaddedVocab()), D: int(m.DModel), L: m.Layers, H: a.Heads, KV: a.KVHeads,
		Dh: int(a.HeadDim), Window: int(a.Window), Hidden: int(m.FFN.Hidden),
		Norm: m.Norm, NormEps: m.NormEps, Placement: m.NormPlacement, FFNActivation: m.FFN.Activation}
	if d.Norm == "" {
		d.Norm = RMSNorm
	}
	if d.NormEps == 0 {
		d.NormEps = DefaultNormEps
	}
	if d.Placement == "" {
		d.Placement = PreNorm
	}
	d.ExpertActivation = d.FFNActivation
	if d.KV == 0 {
		d.KV = d.H
	}
	if d.Dh == 0 && d.H > 0 {
		d.Dh = d.D / d.H
	}
	var errs []error
	if d.V <= 0 || d.D <= 0 || d.L <= 0 || d.H <= 0 || d.Dh <= 0 {
		errs = append(errs, fmt.Errorf("vocab %d, d_model %d, layers %d, heads %d and head_dim %d must all be positive", d.V, d.D, d.L, d.H, d.Dh))
	}
	if d.KV <= 0 || d.H%max(d.KV, 1) != 0 {
		errs = append(errs, fmt.Errorf("kv_heads %d must divide heads %d", d.KV, d.H))
	}
	if m.Position == Rotary && d.Dh%2 != 0 {
		errs = append(errs, fmt.Errorf("rotary positions need an even head_dim, got %d", d.Dh))
	}
	if m.Position == Learned {
		d.MaxPos = int(m.MaxPosition)
		if d.MaxPos <= 0 {
			d.MaxPos = int(m.SeqLen)
		}
		if d.MaxPos <= 0 {
			errs = append(errs, errors.New("learned positions need max_position or seq_len"))
		}
	}
	if !d.FFNActivation.Known() {
		errs = append(errs, fmt.Errorf("unknown FFN activation %q", d.FFNActivation))
	}
	if d.Norm != RMSNorm && d.Norm != LayerNorm {
		errs = append(errs, fmt.Errorf("unknown norm %q", d.Norm))
	}
	if moe := m.MoE; moe != nil && moe.Experts > 0 {
		d.E, d.K, d.Shared = moe.Experts, moe.TopK, moe.SharedExperts
		if moe.Activation != "" {
			d.ExpertActivation = moe.Activation
		}
		d.EHidden = int(moe.ExpertHidden)
		if d.EHidden == 0 {
			d.EHidden = d.Hidden
		}
		d.SHidden = int(moe.SharedHidden)
		if d.SHidden == 0 {
			d.SHidden = d.EHidden
		}
		d.RouterIn = d.D
		if moe.Router == RouteTokenEmbedding && moe.RouterDim > 0 {
			d.RouterIn = int(moe.RouterDim)
		}
		if d.K <= 0 || d.K > d.E {
			errs = append(errs, fmt.Errorf("top_k %d must be in [1, experts %d]", d.K, d.E))
		}
		if moe.Groups > 0 {
			d.Groups, d.TopKGroups = moe.Groups, moe.TopKGroups
			if d.E%d.Groups != 0 || d.TopKGroups <= 0 || d.TopKGroups > d.Groups || d.K > d.TopKGroups*(d.E/d.Groups) {
				errs = append(errs, fmt.Errorf("groups %d must divide experts %d, and top_k_groups %d must be in [1, groups] with room for top_k %d",
					d.Groups, d.E, d.TopKGroups, d.K))
			}
		}
		if d.EHidden <= 0 {
			errs = append(errs, fmt.Errorf("expert_hidden must be positive, got %d", d.EHidden))
		}
		if !d.ExpertActivation.Known() {
			errs = append(errs, fmt.Errorf("unknown expert activation %q", d.ExpertActivation))
		}
		if !moe.Score.Known() {
			errs = append(errs, fmt.Errorf("unknown router score %q", moe.Score))
		}
		if moe.Router != RouteHidden && moe.Router != RouteTokenEmbedding && moe.Router != "" {
			errs = append(errs, fmt.Errorf("unknown router input %q", moe.Router))
		}
	}
	for i := 0; i < d.L; i++ {
		if !m.IsMoELayer(i) && d.Hidden <= 0 {
			errs = append(errs, fmt.Errorf("dense layer %d needs ffn.hidden > 0", i))
			break
		}
	}
	d.ShareKV = max(a.ShareKV, 1)
	d.HeadsPerKV = d.H / max(d.KV, 1)
	d.QDim, d.KVDim = d.H*d.Dh, d.KV*d.Dh
	if err := errors.Join(errs...); err != nil {
		return d, fmt.Errorf("model %s: %w", m.Name, err)
	}
	return d, nil
}

// Known reports whether a is an activation moec computes.
func (a Activation) Known() bool {
	switch a {
	case ReLU, GELU, SiLU, SwiGLU, GeGLU:
		return true
	}
	return false
}
