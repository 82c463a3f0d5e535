package exec

// The MoE kernels: routing (scores, top-k, capacity, balance and z-loss), permutation into
// per-expert slots, the grouped expert products and the gated combination.

import (
	"math"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/blas"
)

// route scores each token's experts, chooses its top k (ties to the lower index), admits
// assignments to experts by capacity (every token's first choice before any second
// choice, in token order) and numbers each admitted assignment's slot in its expert in
// token order. Outputs: index, gates, scores, lse, slot, kept, routed, and the balance and
// z-loss terms.
func (e *Executor) route(op *step.Op) {
	z := e.f32[op.In[0]]
	idx, gates, sc, lse := e.i32[op.Out[0]], e.f32[op.Out[1]], e.f32[op.Out[2]], e.f32[op.Out[3]]
	slot, kept, routed, aux := e.i32[op.Out[4]], e.i32[op.Out[5]], e.i32[op.Out[6]], e.f32[op.Out[7]]
	cfg := e.m.MoE
	E, K := e.d.E, e.d.K
	n := len(z) / E
	clear(routed)
	clear(kept)
	var zsum float64
	order := grow(&e.scratch.order, K)
	for t := 0; t < n; t++ {
		zt, st := z[t*E:(t+1)*E], sc[t*E:(t+1)*E]
		mx := math.Inf(-1)
		for _, v := range zt {
			mx = math.Max(mx, float64(v))
		}
		var sum float64
		for _, v := range zt {
			sum += math.Exp(float64(v) - mx)
		}
		l := mx + math.Log(sum)
		lse[t] = float32(l)
		zsum += l * l
		for i, v := range zt {
			st[i] = program.RouterScore(cfg.Score, v, l)
		}
		// Top k by score, best first, ties to the lower index: k passes of a max.
		for j := 0; j < K; j++ {
			best := -1
			for ex := 0; ex < E; ex++ {
				if taken(order[:j], ex) {
					continue
				}
				if best < 0 || st[ex] > st[best] {
					best = ex
				}
			}
			order[j] = best
		}
		var gs float32
		for j := 0; j < K; j++ {
			ex := order[j]
			idx[t*K+j] = int32(ex)
			gates[t*K+j] = st[ex]
			gs += st[ex]
			routed[ex]++
		}
		if cfg.Normalize {
			for j := 0; j < K; j++ {
				gates[t*K+j] /= gs
			}
		}
	}
	capacity := op.Slots // the program's static slots per expert
	if capacity <= 0 {
		capacity = n * K
		if cfg.CapacityFactor > 0 {
			capacity = int(math.Ceil(cfg.CapacityFactor * float64(n*K) / float64(E)))
		}
	}
	dropped := 0
	for j := 0; j < K; j++ {
		for t := 0; t < n; t++ {
			ex := idx[t*K+j]
			if int(kept[ex]) < capacity {
				kept[ex]++
				slot[t*K+j] = 0
			} else {
				slot[t*K+j] = -1
				dropped++
			}
		}
	}
	next := grow(&e.scratch.next, E)
	clear(next)
	for t := 0; t < n; t++ {
		for j := 0; j < K; j++ {
			if slot[t*K+j] < 0 {
				continue
			}
			ex := idx[t*K+j]
			slot[t*K+j] = next[ex]
			next[ex]++
		}
	}
	var bal float64
	for ex := 0; ex < E; ex++ {
		var pe float64
		for t := 0; t < n; t++ {
			pe += float64(sc[t*E+ex])
		}
		bal += float64(routed[ex]) / float64(n*K) * pe / float64(n)
	}
	aux[0] = float32(float64(E) * bal)
	aux[1] = float32(zsum / float64(n))
	if op.Recomputed {
		return // the same routing again (recompute = full): already counted
	}
	// Reported as the step's mean over micro-batches (and, summed over ranks, replicas).
	e.stats.Balance += float64(E) * bal * e.lossScale()
	e.stats.ZLoss += zsum / float64(n) * e.lossScale()
	e.stats.Dropped += dropped
}

func taken(chosen []int, ex int) bool {
	for _, c := range chosen {
		if c == ex {
			return true
		}
	}
	return false
}

// routeBwd: the logits' gradient from the gates', the balance loss's and the z-loss's.
// In: dgates, logits, index, gates, scores, lse, slot, kept, routed.
func (e *Executor) routeBwd(op *step.Op) {
	dg, z := e.f32[op.In[0]], e.f32[op.In[1]]
	idx, gates, sc, lse := e.i32[op.In[2]], e.f32[op.In[3]], e.f32[op.In[4]], e.f32[op.In[5]]
	routed := e.i32[op.In[8]]
	dz := e.f32[op.Out[0]]
	cfg := e.m.MoE
	E, K := e.d.E, e.d.K
	n := len(z) / E
	scale := e.lossScale()
	fe := grow(&e.scratch.fe, E)
	for ex := range fe {
		fe[ex] = cfg.BalanceLoss * float64(E) * float64(routed[ex]) / float64(n*K) / float64(n) * scale
	}
	for t := 0; t < n; t++ {
		dst := grow(&e.scratch.dst, E)
		st, zt := sc[t*E:(t+1)*E], z[t*E:(t+1)*E]
		for ex := range dst {
			dst[ex] = float32(fe[ex])
		}
		ix, gt, dgt := idx[t*K:(t+1)*K], gates[t*K:(t+1)*K], dg[t*K:(t+1)*K]
		if cfg.Normalize {
			var sum, gdot float32
			for j, ex := range ix {
				sum += st[ex]
				gdot += dgt[j] * gt[j]
			}
			for j, ex := range ix {
				dst[ex] += (dgt[j] - gdot) / sum
			}
		} else {
			for j, ex := range ix {
				dst[ex] += dgt[j]
			}
		}
		program.RouterScoreGrad(cfg.Score, st, dst)
		if cfg.ZLoss != 0 {
			k := cfg.ZLoss * 2 * float64(lse[t]) / float64(n) * scale
			for ex, v := range zt {
				dst[ex] += float32(k * math.Exp(float64(v)-float64(lse[t])))
			}
		}
		row := dz[t*E : (t+1)*E]
		if op.Accumulates(0) {
			for ex, v := range dst {
				row[ex] += v
			}
		} else {
			copy(row, dst)
		}
	}
}

func (e *Executor) permute(op *step.Op) {
	h, idx, slot, send := e.f32[op.In[0]], e.i32[op.In[1]], e.i32[op.In[2]], e.f32[op.Out[0]]
	sh := e.p.Buffers[op.Out[0]].Shape // [E, C, D]
	C, D := sh[1], sh[2]
	K := e.d.K
	// The route numbers an expert's slots in order: those below its count are filled.
	f := e.fillRecord(op.Out[0], C)
	counts := grow(&f.counts, sh[0])
	clear(counts)
	clear(send)
	for a, ex := range idx {
		s := slot[a]
		if s < 0 {
			continue
		}
		counts[ex] = max(counts[ex], s+1)
		t := a / K
		copy(send[(int(ex)*C+int(s))*D:(int(ex)*C+int(s)+1)*D], h[t*D:(t+1)*D])
	}
}

func (e *Executor) permuteBwd(op *step.Op) {
	ds, idx, slot, dh := e.f32[op.In[0]], e.i32[op.In[1]], e.i32[op.In[2]], e.f32[op.Out[0]]
	sh := e.p.Buffers[op.In[0]].Shape
	C, D := sh[1], sh[2]
	K := e.d.K
	if !op.Accumulates(0) {
		clear(dh)
	}
	for a, ex := range idx {
		s := slot[a]
		if s < 0 {
			continue
		}
		t := a / K
		src := ds[(int(ex)*C+int(s))*D : (int(ex)*C+int(s)+1)*D]
		dst := dh[t*D : (t+1)*D]
		for i, v := range src {
			dst[i] += v
		}
	}
}

// experts splits a grouped product's parameter inputs into each expert's weight and bias.
func (e *Executor) experts(bufs []int) (w, b [][]float32, out, in int) {
	w, b = e.scratch.w[:0], e.scratch.b[:0]
	defer func() { e.scratch.w, e.scratch.b = w, b }()
	for _, i := range bufs {
		buf := e.p.Buffers[i]
		if buf.Param != nil && buf.Param.Bias {
			b[len(b)-1] = e.f32[i]
			continue
		}
		w = append(w, e.f32[i])
		b = append(b, nil)
		out, in = buf.Shape[0], buf.Shape[1]
	}
	return w, b, out, in
}

// groupedMM: each expert's filled rows times its weight (transposed), plus its bias.
func (e *Executor) groupedMM(op *step.Op) {
	x, y := e.f32[op.In[0]], e.f32[op.Out[0]]
	w, b, o, k := e.experts(op.In[1:])
	R := len(x) / (len(w) * k)
	f := ofSlots(e.filled(op.In[0], len(w)), R)
	e.setFill(op.Out[0], f)
	skipZeroRows := strings.HasSuffix(op.Attr, step.AttrSkipEmptySlots)
	for ex := range w {
		xe, ye := x[ex*R*k:(ex+1)*R*k], y[ex*R*o:(ex+1)*R*o]
		n := rowsOf(f, ex, R)
		clear(ye[n*o:])
		if n == 0 {
			continue
		}
		if f == nil && skipZeroRows {
			// No counts reach this buffer (an all-to-all's output): an inference program
			// asks for its empty slots, zero rows, to be found and skipped.
			filledRowsMM(xe, w[ex], ye, R, o, k)
		} else {
			blas.Gemm(false, true, n, o, k, 1, xe, k, w[ex], k, 0, ye, o)
		}
		if b[ex] != nil && e.addsBias(op) {
			addBias(ye, b[ex], n)
		}
	}
}

// groupedMMDW: each expert's dW (+)= dyᵀ·x and db (+)= Σ dy over its filled rows (the
// padding's dy is zero).
func (e *Executor) groupedMMDW(op *step.Op) {
	dy, x := e.f32[op.In[0]], e.f32[op.In[1]]
	w, b, o, k := e.experts(op.Out)
	R := len(x) / (len(w) * k)
	f := ofSlots(e.fillOfAny(len(w), op.In[1], op.In[0]), R)
	acc := op.Accumulates(0)
	beta := float32(0)
	if acc {
		beta = 1
	}
	for ex := range w {
		n := rowsOf(f, ex, R)
		dye, xe := dy[ex*R*o:(ex+1)*R*o], x[ex*R*k:(ex+1)*R*k]
		if n > 0 {
			blas.Gemm(true, false, o, k, n, 1, dye, o, xe, k, beta, w[ex], k)
		} else if !acc {
			clear(w[ex])
		}
		if b[ex] != nil {
			if !acc {
				clear(b[ex])
			}
			for r := 0; r < n; r++ {
				for j, g := range dye[r*o : (r+1)*o] {
					b[ex][j] += g
				}
			}
		}
	}
}

// groupedMMDX: each expert's filled rows of dx (+)= dy·W.
func (e *Executor) groupedMMDX(op *step.Op) {
	dy, dx := e.f32[op.In[0]], e.f32[op.Out[0]]
	w, _, o, k := e.experts(op.In[1:])
	R := len(dx) / (len(w) * k)
	f := ofSlots(e.filled(op.In[0], len(w)), R)
	e.setFill(op.Out[0], f)
	acc := op.Accumulates(0)
	beta := float32(0)
	if acc {
		beta = 1
	}
	for ex := range w {
		n := rowsOf(f, ex, R)
		dxe := dx[ex*R*k : (ex+1)*R*k]
		if !acc {
			clear(dxe[n*k:])
		}
		if n > 0 {
			blas.Gemm(false, false, n, k, o, 1, dy[ex*R*o:(ex+1)*R*o], o, w[ex], k, beta, dxe, k)
		}
	}
}

func (e *Executor) combine(op *step.Op) {
	back, idx, slot, gates, y := e.f32[op.In[0]], e.i32[op.In[1]], e.i32[op.In[2]], e.f32[op.In[3]], e.f32[op.Out[0]]
	sh := e.p.Buffers[op.In[0]].Shape
	C, D := sh[1], sh[2]
	K := e.d.K
	clear(y)
	for a, ex := range idx {
		s := slot[a]
		if s < 0 {
			continue
		}
		t := a / K
		g := gates[a]
		src := back[(int(ex)*C+int(s))*D : (int(ex)*C+int(s)+1)*D]
		dst := y[t*D : (t+1)*D]
		for i, v := range src {
			dst[i] += g * v
		}
	}
}

func (e *Executor) combineBwd(op *step.Op) {
	dy, back, idx, slot, gates := e.f32[op.In[0]], e.f32[op.In[1]], e.i32[op.In[2]], e.i32[op.In[3]], e.f32[op.In[4]]
	dback, dgates := e.f32[op.Out[0]], e.f32[op.Out[1]]
	sh := e.p.Buffers[op.In[1]].Shape
	C, D := sh[1], sh[2]
	K := e.d.K
	clear(dback) // the padding's gradient is zero
	e.setFill(op.Out[0], e.filled(op.In[1], sh[0]))
	for a, ex := range idx {
		s := slot[a]
		var dg float32
		if s >= 0 {
			t := a / K
			row := (int(ex)*C + int(s)) * D
			dyt := dy[t*D : (t+1)*D]
			o := back[row : row+D]
			for i, v := range dyt {
				dg += v * o[i]
				dback[row+i] = gates[a] * v
			}
		}
		if op.Accumulates(1) {
			dgates[a] += dg
		} else {
			dgates[a] = dg
		}
	}
}
