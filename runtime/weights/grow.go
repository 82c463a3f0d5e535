package weights

import (
	"fmt"
	"math"
	"slices"

	mparams "github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/rng"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// GrowReport says what Grow did.
type GrowReport struct {
	Copied int  // tensors copied unchanged
	Grown  int  // expert and router tensors built from the previous stage's
	Fresh  int  // tensors left at their fresh initialisation (no counterpart to grow from)
	Exact  bool // with zero noise the grown model computes the same function (see Grow)
	Why    string
}

// Grow initialises to, the new stage's model (already freshly initialised, in
// params.Walk's order), from the tensors of the previous stage's final checkpoint.
//
// Tensors whose name and shape are unchanged are copied. With grow = copy, routed expert e
// of an MoE layer is a copy of old expert e mod E_old (from a dense layer: of its FFN,
// mlp.gate_proj→w1, up_proj→w3, down_proj→w2; non-gated up_proj→w1), with Gaussian noise
// of standard deviation noise·rms(tensor) added to every copy but the first. Router rows
// are copied the same way; from a dense layer they start at zero, so every expert scores
// the same. The down projections are then scaled so that, with zero noise, each token's
// output is unchanged:
//
//   - softmax scores, gates not renormalised, from E_old experts: each of the m = E/E_old
//     copies of an expert gets gate p/m, so w2 is scaled by m (exact for top-1 when E_old
//     divides E);
//   - from dense with zero router rows: every gate is 1/E (softmax) or 1/2 (sigmoid) and k
//     experts, all copies of the FFN, are chosen, so w2 is scaled by 1/(k·gate) (exact for
//     every top_k);
//   - renormalised gates or sigmoid scores from an MoE: no scaling (exact for top-1; from
//     dense exact for every top_k, since the k chosen experts are copies of one FFN).
//
// Exactness also needs the capacity not to drop tokens: with equal router rows every token
// ties and goes to the same experts, so exactness holds for dropless routing (or a capacity
// the batch does not reach). Top-k > 1 from an MoE is not exact: copies tie and the top-k
// set changes. With noise > 0 the router rows get noise too, which breaks the ties.
// grow = random keeps the fresh initialisation of experts and router rows that have no
// counterpart; old experts keep their weights.
func Grow(from []safetensors.Tensor, fromCfg, toCfg *program.Model, to []Tensor, g program.Grow, seed int64) (GrowReport, error) {
	gr := &grower{rep: GrowReport{Exact: true}, src: make(map[string]safetensors.Tensor, len(from)), fromCfg: fromCfg, g: g, oldE: 1, oldK: 1}
	for _, t := range from {
		gr.src[t.Name] = t
	}
	// The previous stage's tensors by identity: growth matches experts, routers and their
	// biases by what they are, never by parsing names.
	oldLayout, err := mparams.Walk(fromCfg)
	if err != nil {
		return gr.rep, diag.Runtimef(diag.CodeBadGrowth, "cannot list the previous stage's parameters: %v", err)
	}
	gr.oldName = make(map[mparams.ID]string, len(oldLayout))
	for _, p := range oldLayout {
		gr.oldName[p.ID] = p.Name
	}
	if g.Noise != 0 {
		gr.notExact(fmt.Sprintf("noise %g", g.Noise))
	}
	if fromCfg.MoE != nil {
		gr.oldE, gr.oldK = fromCfg.MoE.Experts, fromCfg.MoE.TopK
	}
	if toCfg.MoE != nil {
		gr.moe = *toCfg.MoE
		if !gr.moe.Dropless() {
			gr.notExact("capacity_factor can drop tokens; growth is exact only when no token is dropped")
		}
	}
	for idx := range to {
		p := &to[idx]
		noise := rng.New(rng.Key(seed, 0, idx, rng.PurposeGrowNoise))
		var err error
		switch {
		case p.ID.Role.Routed():
			err = gr.expert(p, noise)
		case p.ID.Role == mparams.RoleRouter:
			err = gr.router(p, noise)
		default:
			err = gr.other(p)
		}
		if err != nil {
			return gr.rep, err
		}
	}
	return gr.rep, nil
}

// grower is one Grow: the previous stage's tensors (by name, and their names by identity)
// and the report it fills.
type grower struct {
	rep        GrowReport
	src        map[string]safetensors.Tensor
	oldName    map[mparams.ID]string
	fromCfg    *program.Model
	moe        program.MoE // the new stage's (zero for a dense one)
	g          program.Grow
	oldE, oldK int // the previous stage's experts and top_k (1 and 1 when dense)
}

// notExact records the first reason the growth does not preserve the function.
func (gr *grower) notExact(why string) {
	if gr.rep.Exact {
		gr.rep.Exact, gr.rep.Why = false, why
	}
}

// expert builds a routed expert's tensor from its source: the same expert modulo the old
// count, or the dense FFN; copies after the first get noise, and the down projection
// carries the gate's scale. Experts are rebuilt even where a tensor of the same name and
// shape exists: the old experts' down projections (and their biases) are rescaled too.
func (gr *grower) expert(p *Tensor, noise *rng.Stream) error {
	id, moe := p.ID, gr.moe
	var srcID mparams.ID
	var copyIdx int // 0 for the first copy of a source expert
	scale := 1.0
	if gr.fromCfg.IsMoELayer(id.Layer) {
		if gr.g.Kind == "random" && id.Expert >= gr.oldE {
			gr.rep.Fresh++
			return nil
		}
		srcID = id
		srcID.Expert = id.Expert % gr.oldE
		copyIdx = id.Expert / gr.oldE
		if !moe.Normalize {
			if scale = moe.Score.CopyScale(gr.oldE, moe.Experts); scale != 1 && moe.Experts%gr.oldE != 0 {
				gr.notExact(fmt.Sprintf("%d experts is not a multiple of %d", moe.Experts, gr.oldE))
			}
		}
		if moe.TopK > 1 || gr.oldK > 1 {
			gr.notExact("top_k > 1 when growing from an MoE: copies tie and change the top-k set")
		}
	} else {
		if gr.g.Kind == "random" {
			gr.rep.Fresh++
			return nil
		}
		role, _ := id.Role.DenseCounterpart()
		srcID = mparams.ID{Role: role, Layer: id.Layer, Expert: -1, Bias: id.Bias}
		copyIdx = id.Expert
		if !moe.Normalize {
			scale = 1 / (float64(moe.TopK) * moe.Score.UniformGate(moe.Experts))
		}
	}
	name, ok := gr.oldName[srcID]
	t, have := gr.src[name]
	if !ok || !have {
		return diag.Runtimef(diag.CodeBadGrowth, "cannot grow %s (%s): the previous stage has no %s", p.Name, id, srcID)
	}
	if !slices.Equal(t.Shape, p.Shape) {
		return diag.Runtimef(diag.CodeBadGrowth, "cannot grow %s (shape %v) from %s (shape %v)", p.Name, p.Shape, name, t.Shape)
	}
	// Only the down projection's output is gated: its weight and bias carry the scale.
	if id.Role != mparams.RoleExpertDown {
		scale = 1
	}
	sigma := 0.0
	if copyIdx > 0 {
		sigma = gr.g.Noise * rms(t.Data)
	}
	for i, v := range t.Data {
		w := float64(v) * scale
		if sigma != 0 {
			w += sigma * scale * noise.Normal()
		}
		p.W[i] = float32(w)
	}
	gr.rep.Grown++
	return nil
}

// router builds a router: the old rows copied (with noise for the new copies), or, from a
// dense layer, zero rows.
func (gr *grower) router(p *Tensor, noise *rng.Stream) error {
	rows, cols := p.Shape[0], 1
	if len(p.Shape) == 2 {
		cols = p.Shape[1]
	}
	if !gr.fromCfg.IsMoELayer(p.ID.Layer) {
		if gr.g.Kind == "random" {
			gr.rep.Fresh++
			return nil
		}
		// Zero rows make every expert score the same; noise, when asked for, is sized
		// like the fresh initialisation so that ties break.
		sigma := gr.g.Noise * rms(p.W)
		for i := range p.W {
			p.W[i] = float32(sigma * noise.Normal())
		}
		gr.rep.Grown++
		return nil
	}
	oldE := gr.oldE
	t, ok := gr.src[gr.oldName[p.ID]]
	if !ok || len(t.Shape) != len(p.Shape) || t.Shape[0] != oldE || (len(p.Shape) == 2 && t.Shape[1] != cols) {
		return diag.Runtimef(diag.CodeBadGrowth, "cannot grow router %s (shape %v) from the previous stage's (shape %v)", p.Name, p.Shape, shapeOf(t, ok))
	}
	sigma := gr.g.Noise * rms(t.Data)
	for e := 0; e < rows; e++ {
		if gr.g.Kind == "random" && e >= oldE {
			continue
		}
		row := t.Data[(e%oldE)*cols : (e%oldE+1)*cols]
		for j, v := range row {
			w := float64(v)
			if e >= oldE && sigma != 0 {
				w += sigma * noise.Normal()
			}
			p.W[e*cols+j] = float32(w)
		}
	}
	gr.rep.Grown++
	return nil
}

// other copies a tensor that is neither an expert nor a router from the previous stage's
// tensor of the same name, or leaves its fresh initialisation where there is none.
func (gr *grower) other(p *Tensor) error {
	if t, ok := gr.src[p.Name]; ok {
		if !slices.Equal(t.Shape, p.Shape) {
			return diag.Runtimef(diag.CodeBadGrowth, "cannot grow %s: shape %v, previous stage has %v", p.Name, p.Shape, t.Shape)
		}
		copy(p.W, t.Data)
		gr.rep.Copied++
		return nil
	}
	// A tensor with no counterpart (a token-embedding router table, a shared expert) keeps
	// its fresh initialisation. A fresh router table is harmless (the router rows are
	// zero); a fresh shared expert adds its output, so the function changes.
	switch p.ID.Role {
	case mparams.RoleSharedIn, mparams.RoleSharedUp, mparams.RoleSharedDown, mparams.RoleSharedGate:
		gr.notExact("shared experts have no counterpart in a dense stage")
	}
	gr.rep.Fresh++
	return nil
}

func shapeOf(t safetensors.Tensor, ok bool) any {
	if !ok {
		return "none"
	}
	return t.Shape
}

func rms(x []float32) float64 {
	if len(x) == 0 {
		return 0
	}
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s / float64(len(x)))
}
