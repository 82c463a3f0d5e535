package exec

// The kernels of the MoE variants (compiler/step's moe_variants.go): gpt-oss's clamped
// SwiGLU experts (moe.swiglu_limit), Llama 4's gates on the experts' inputs
// (moe.gate_input: a gated permute, an unweighted combine) and Qwen2-MoE's shared-expert
// gate (moe.shared_gate: sigmoid_gate). DeepSeek-V3's routed_scale is the route kernel's.

import (
	"math"

	"github.com/moec-dev/moec/compiler/step"
)

// runMoEVariant runs op when it is one of the variants' and reports whether it was.
func (e *Executor) runMoEVariant(op *step.Op) bool {
	f, i32, in, out := e.f32, e.i32, op.In, op.Out
	shape := func(b int) []int { return e.p.Buffers[b].Shape }
	acc := op.Accumulates
	switch {
	case op.Kind == step.OpAct && op.SwigluLimit > 0:
		ActClamped(op.SwigluLimit, op.SwigluAlpha, f[in[0]], f[in[1]], f[out[0]], actExperts(shape(in[0])), e.Fill(in[0]), e.Fill(out[0]))
	case op.Kind == step.OpActBwd && op.SwigluLimit > 0:
		ActClampedBwd(op.SwigluLimit, op.SwigluAlpha, f[in[0]], f[in[1]], f[in[2]], f[out[0]], f[out[1]], acc(0), acc(1),
			actExperts(shape(in[1])), e.Fill(in[0]), e.Fill(in[1]), e.Fill(out[0]), e.Fill(out[1]))
	case op.Kind == step.OpPermute && op.GateInput:
		C, D := dispatchDims(shape(out[0]))
		e.PermuteGated(f[in[0]], i32[in[1]], i32[in[2]], f[in[3]], f[out[0]], C, D, e.Fill(out[0]))
	case op.Kind == step.OpPermuteBwd && op.GateInput:
		C, D := dispatchDims(shape(in[0]))
		e.PermuteGatedBwd(f[in[0]], i32[in[1]], i32[in[2]], f[in[3]], f[in[4]], f[out[0]], f[out[1]], C, D, acc(0), acc(1))
	case op.Kind == step.OpCombine && op.GateInput:
		C, D := dispatchDims(shape(in[0]))
		e.CombineUngated(f[in[0]], i32[in[1]], i32[in[2]], f[out[0]], C, D)
	case op.Kind == step.OpCombineBwd && op.GateInput:
		C, D := dispatchDims(shape(in[1]))
		e.CombineUngatedBwd(f[in[0]], f[in[1]], i32[in[2]], i32[in[3]], f[out[0]], C, D, e.Fill(in[1]), e.Fill(out[0]))
	case op.Kind == step.OpSigmoidGate:
		SigmoidGate(f[in[0]], f[in[1]], f[out[0]])
	case op.Kind == step.OpSigmoidGateBwd:
		SigmoidGateBwd(f[in[0]], f[in[1]], f[in[2]], f[out[0]], f[out[1]], acc(0), acc(1))
	case op.Kind == step.OpLatentNorm: // kernels_mla.go
		LatentNorm(f[in[0]], f[in[1]], f[out[0]], f[out[1]])
	case op.Kind == step.OpMLASplit:
		MLASplit(f[in[0]], f[out[0]], f[out[1]], shape(in[0])[0])
	case op.Kind == step.OpMLASplitBwd:
		MLASplitBwd(f[in[0]], f[in[1]], f[out[0]], shape(out[0])[0], acc(0))
	case op.Kind == step.OpMLAHeads:
		var pos []int32
		if len(in) > 3 {
			pos = i32[in[3]]
		}
		e.MLAHeads(f[in[0]], f[in[1]], f[in[2]], pos, f[out[0]], f[out[1]], f[out[2]])
	case op.Kind == step.OpMLAKVWrite:
		MLAKVWrite(f[in[0]], f[in[1]], f[out[0]], f[out[1]], e.p.Batch.MicroBatch, e.p.Batch.SeqLen)
	case op.Kind == step.OpMLAKVAppend:
		MLAKVAppend(f[in[0]], f[in[1]], i32[in[2]], f[out[0]], f[out[1]])
	case op.Kind == step.OpMLAAttnDecode:
		e.MLAAttnDecode(f[in[0]], f[in[1]], f[in[2]], i32[in[3]], f[out[0]], op.Mask)
	case op.Kind == step.OpMLAHeadsBwd:
		e.MLAHeadsBwd(f[in[0]], f[in[1]], f[in[2]], f[out[0]], f[out[1]], f[out[2]], acc(0), acc(1), acc(2))
	case op.Kind == step.OpMLAAttention:
		e.MLAAttention(f[in[0]], f[in[1]], f[in[2]], f[out[0]], f[out[1]], op.Mask)
	case op.Kind == step.OpMLAAttnBwd:
		e.MLAAttentionBwd(f[in[0]], f[in[1]], f[in[2]], f[in[3]], f[in[4]], f[out[0]], f[out[1]], f[out[2]], op.Mask, acc(0), acc(1), acc(2))
	case op.Kind == step.OpExpertLoad: // kernels_route_bias.go
		ExpertLoad(i32[in[0]], f[out[0]], acc(0))
	case op.Kind == step.OpRouterBiasBwd:
		RouterBiasBwd(f[out[0]], acc(0))
	case op.Kind == step.OpRouterBiasUpdate:
		RouterBiasUpdate(f[in[0]], f[out[0]], op.BiasAt, op.BiasRate)
	default:
		return false
	}
	return true
}

// ActClamped: h = (u′ + 1)·g′·σ(alpha·g′) with g′ = min(a, limit) and u′ = u clamped to
// [−limit, limit] (gpt-oss's SwiGLU), over the filled rows of a's experts blocks (aFill;
// h's padding cleared), h's fill recorded in hFill.
func ActClamped(limit, alpha float64, a, u, h []float32, experts int, aFill, hFill *RowFill) {
	f := known(aFill, len(a), experts)
	setFill(hFill, f)
	forFilled(len(a), f, padOf(hFill, h), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := min(float64(a[i]), limit)
			up := max(-limit, min(float64(u[i]), limit))
			h[i] = float32((up + 1) * g / (1 + math.Exp(-alpha*g)))
		}
	})
}

// ActClampedBwd: da and du from dh through ActClamped, each written or added to, over the
// filled rows the fill of a (else of dh) says, which it records for da and du. A clamped
// input passes no gradient: da is zero where a ≥ limit, du where |u| ≥ limit.
func ActClampedBwd(limit, alpha float64, dh, a, u, da, du []float32, accA, accU bool, experts int, dhFill, aFill, daFill, duFill *RowFill) {
	f := known(aFill, len(a), experts)
	if f == nil {
		f = known(dhFill, len(dh), experts)
	}
	setFill(daFill, f)
	setFill(duFill, f)
	if f != nil && !accU && clearsPad(duFill) {
		forFilled(len(a), f, du, func(int, int) {})
	}
	var pad []float32
	if !accA {
		pad = padOf(daFill, da)
	}
	forFilled(len(a), f, pad, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			x, ux, g := float64(a[i]), float64(u[i]), float64(dh[i])
			gc := min(x, limit)
			up := max(-limit, min(ux, limit))
			sg := 1 / (1 + math.Exp(-alpha*gc))
			var dUp, dGate float64
			if ux > -limit && ux < limit {
				dUp = g * gc * sg
			}
			if x < limit {
				dGate = g * (up + 1) * (sg + alpha*gc*sg*(1-sg))
			}
			if accU {
				du[i] += float32(dUp)
			} else {
				du[i] = float32(dUp)
			}
			if accA {
				da[i] += float32(dGate)
			} else {
				da[i] = float32(dGate)
			}
		}
	})
}

// PermuteGated is Permute with each admitted assignment's row multiplied by its gate
// (gate_input: the expert reads g·x).
func (k *Kernels) PermuteGated(h []float32, idx, slot []int32, gates, send []float32, C, D int, sendFill *RowFill) {
	k.Permute(h, idx, slot, send, C, D, sendFill)
	eachAssignment(idx, slot, k.d.K, C, D, func(a, _, row int) {
		if row < 0 {
			return
		}
		g, dst := gates[a], send[row:row+D]
		for i := range dst {
			dst[i] *= g
		}
	})
}

// PermuteGatedBwd: from the slots' gradient ds, the tokens' dh (+)= Σ g·ds and each
// assignment's gate gradient dgates = ⟨ds, h_t⟩ (0 for one dropped), each written or added
// to (C = 0: packed, each assignment's row its slot).
func (k *Kernels) PermuteGatedBwd(ds []float32, idx, slot []int32, gates, h, dh, dgates []float32, C, D int, accH, accGates bool) {
	K := k.d.K
	eachAssignment(idx, slot, K, C, D, func(a, t, row int) {
		dst := dh[t*D : (t+1)*D]
		if a%K == 0 && !accH {
			clear(dst) // the token's first assignment: its goroutine writes the row first
		}
		var dg float32
		if row >= 0 {
			g, x := gates[a], h[t*D:(t+1)*D]
			for i, v := range ds[row : row+D] {
				dg += v * x[i]
				dst[i] += g * v
			}
		}
		if accGates {
			dgates[a] += dg
		} else {
			dgates[a] = dg
		}
	})
}

// CombineUngated adds each admitted assignment's expert output to its token's row,
// unweighted (gate_input: the gates scaled the inputs).
func (k *Kernels) CombineUngated(back []float32, idx, slot []int32, y []float32, C, D int) {
	clear(y)
	eachAssignment(idx, slot, k.d.K, C, D, func(_, t, row int) {
		if row < 0 {
			return
		}
		dst := y[t*D : (t+1)*D]
		for i, v := range back[row : row+D] {
			dst[i] += v
		}
	})
}

// CombineUngatedBwd: each admitted assignment's slot of dback gets its token's gradient
// (dback's padding zero; the fill of back, backFill, recorded in dbackFill).
func (k *Kernels) CombineUngatedBwd(dy, back []float32, idx, slot []int32, dback []float32, C, D int, backFill, dbackFill *RowFill) {
	experts := 0 // packed: the fill's
	if C > 0 {
		experts = len(back) / (C * D)
	}
	f := known(backFill, len(back), experts)
	if f == nil || clearsPad(dbackFill) {
		clear(dback)
	}
	setFill(dbackFill, f)
	eachAssignment(idx, slot, k.d.K, C, D, func(_, t, row int) {
		if row >= 0 {
			copy(dback[row:row+D], dy[t*D:(t+1)*D])
		}
	})
}

// sigmoid is σ(z) in float64, rounded once.
func sigmoid(z float32) float32 { return float32(1 / (1 + math.Exp(-float64(z)))) }

// SigmoidGate: y = σ(z_t)·x_t for each row t of x, z one logit per row (the shared
// experts' output scaled by Qwen2-MoE's shared_expert_gate).
func SigmoidGate(x, z, y []float32) {
	D := len(x) / max(len(z), 1)
	parallel(len(z), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			s := sigmoid(z[t])
			for i, v := range x[t*D : (t+1)*D] {
				y[t*D+i] = s * v
			}
		}
	})
}

// SigmoidGateBwd: dx (+)= σ(z)·dy and dz (+)= σ(z)(1−σ(z))·⟨dy_t, x_t⟩ per row.
func SigmoidGateBwd(dy, x, z, dx, dz []float32, accX, accZ bool) {
	D := len(x) / max(len(z), 1)
	parallel(len(z), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			s := sigmoid(z[t])
			dyt, xt, dxt := dy[t*D:(t+1)*D], x[t*D:(t+1)*D], dx[t*D:(t+1)*D]
			var p float32
			for i, v := range dyt {
				p += v * xt[i]
				if accX {
					dxt[i] += s * v
				} else {
					dxt[i] = s * v
				}
			}
			if g := s * (1 - s) * p; accZ {
				dz[t] += g
			} else {
				dz[t] = g
			}
		}
	})
}
