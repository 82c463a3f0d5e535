package exec

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/blas"
)

// run executes one op on this rank's buffers.
func (e *Executor) run(op *step.Op) error {
	f, in, out := e.f32, op.In, op.Out
	shape := func(b int) []int { return e.p.Buffers[b].Shape }
	beta := func(i int) float32 {
		if op.Accumulates(i) {
			return 1
		}
		return 0
	}
	switch op.Kind {
	case step.OpEmbed:
		e.embed(op)
	case step.OpEmbedBwd:
		e.embedBwd(op)
	case step.OpNorm:
		e.norm(op)
	case step.OpNormBwd:
		e.normBwd(op)
	case step.OpMatMul:
		x, w, y := f[in[0]], f[in[1]], f[out[0]]
		o, k := shape(in[1])[0], shape(in[1])[1]
		n := len(x) / k
		blas.Gemm(false, true, n, o, k, 1, x, k, w, k, 0, y, o)
		if len(in) > 2 && e.addsBias(op) {
			addBias(y, f[in[2]], n)
		}
	case step.OpMatMulDW:
		return e.matmulDW(op)
	case step.OpMatMulDX:
		dy, w, dx := f[in[0]], f[in[1]], f[out[0]]
		o, k := shape(in[1])[0], shape(in[1])[1]
		n := len(dy) / o
		blas.Gemm(false, false, n, k, o, 1, dy, o, w, k, beta(0), dx, k)
	case step.OpAdd:
		a, b, y := f[in[0]], f[in[1]], f[out[0]]
		for i := range y {
			y[i] = a[i] + b[i]
		}
	case step.OpAccumulate:
		dy, g := f[in[0]], f[out[0]]
		switch {
		case !op.Accumulates(0):
			copy(g, dy)
		case &dy[0] != &g[0]:
			for i := range g {
				g[i] += dy[i]
			}
		}
	case step.OpCopy:
		copy(f[out[0]], f[in[0]])
	case step.OpRotary, step.OpRotaryBwd:
		e.rotary(f[out[0]], f[out[1]], op.Kind == step.OpRotaryBwd)
	case step.OpScores:
		e.scores(op)
	case step.OpScoresBwd:
		e.scoresBwd(op)
	case step.OpHeadMix:
		e.headMix(op)
	case step.OpHeadMixBwd:
		e.headMixBwd(op)
	case step.OpSoftmax:
		e.softmax(op)
	case step.OpSoftmaxBwd:
		e.softmaxBwd(op)
	case step.OpAttnAV:
		e.attnAV(op)
	case step.OpAttnAVBwd:
		e.attnAVBwd(op)
	case "share_select":
		src := f[in[1]]
		if e.recompute[op.Layer] {
			src = f[in[0]]
		}
		copy(f[out[0]], src)
	case "share_select_bwd":
		e.shareSelectBwd(op)
	case step.OpAct:
		e.act(op)
	case step.OpActBwd:
		e.actBwd(op)
	case step.OpRouter:
		e.route(op)
	case step.OpRouterBwd:
		e.routeBwd(op)
	case step.OpPermute:
		e.permute(op)
	case step.OpPermuteBwd:
		e.permuteBwd(op)
	case step.OpGroupedMM:
		e.groupedMM(op)
	case step.OpGroupedMMDW:
		e.groupedMMDW(op)
	case step.OpGroupedMMDX:
		e.groupedMMDX(op)
	case step.OpCombine:
		e.combine(op)
	case step.OpCombineBwd:
		e.combineBwd(op)
	case step.OpCrossEntropy:
		return e.crossEntropy(op)
	case step.OpAdamW:
		// One optimizer step covers every group: the clipping norm is global.
		if e.updated {
			return nil
		}
		e.updated = true
		return e.update(op)
	case step.OpGradNorm:
		return e.gradNorm(op)
	case step.OpToHost, step.OpToDevice:
		return e.offloadMove(op)
	case step.OpAllReduce, step.OpAllToAllV, step.OpReduceScatter, step.OpAllGather, step.OpSend, step.OpRecv:
		return e.communicate(op)
	default:
		return fmt.Errorf("no kernel for %s", op.Kind)
	}
	return nil
}

// parallel splits [0, n) into one band per core and runs f on each; the bands write
// disjoint outputs, so the result does not depend on the split.
func parallel(n int, f func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n/256+1)
	if workers <= 1 {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	per := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += per {
		hi := min(lo+per, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(lo, hi)
		}()
	}
	wg.Wait()
}

// addsBias reports whether this rank adds op's bias: a row-parallel product's partial
// sums are reduced over tp, so only tp rank 0 adds it.
func (e *Executor) addsBias(op *step.Op) bool {
	return e.p.Coord.TP == 0 || !strings.Contains(op.Attr, "bias on tp rank 0")
}

func addBias(y, b []float32, n int) {
	o := len(b)
	for i := 0; i < n; i++ {
		row := y[i*o : (i+1)*o]
		for j, v := range b {
			row[j] += v
		}
	}
}

// matmulDW: dW (+)= dyᵀ·x and db (+)= Σ_rows dy.
func (e *Executor) matmulDW(op *step.Op) error {
	f := e.f32
	dy, x, dw := f[op.In[0]], f[op.In[1]], f[op.Out[0]]
	o, k := e.p.Buffers[op.Out[0]].Shape[0], e.p.Buffers[op.Out[0]].Shape[1]
	n := len(dy) / o
	if len(x) != n*k {
		return fmt.Errorf("x has %d values, want %d×%d", len(x), n, k)
	}
	beta := float32(0)
	if op.Accumulates(0) {
		beta = 1
	}
	blas.Gemm(true, false, o, k, n, 1, dy, o, x, k, beta, dw, k)
	if len(op.Out) > 1 {
		db := f[op.Out[1]]
		if !op.Accumulates(1) {
			clear(db)
		}
		for i := 0; i < n; i++ {
			for j, g := range dy[i*o : (i+1)*o] {
				db[j] += g
			}
		}
	}
	return nil
}

func (e *Executor) embed(op *step.Op) {
	tok, table, x := e.i32[op.In[0]], e.f32[op.In[1]], e.f32[op.Out[0]]
	w := e.p.Buffers[op.In[1]].Shape[1]
	T := e.p.Batch.SeqLen
	positions := op.Attr == "positions"
	rowsHeld := len(table) / w
	first := 0
	if op.Attr == "vocab-parallel" {
		first = e.p.Coord.TP * rowsHeld // this rank's rows of the vocabulary
	}
	for t, id := range tok {
		row := int(id) - first
		if positions {
			row = t % T
		}
		if row < 0 || row >= rowsHeld {
			clear(x[t*w : (t+1)*w]) // another tp rank's row; the all-reduce brings it
			continue
		}
		copy(x[t*w:(t+1)*w], table[row*w:(row+1)*w])
	}
}

func (e *Executor) embedBwd(op *step.Op) {
	dx, tok, dw := e.f32[op.In[0]], e.i32[op.In[1]], e.f32[op.Out[0]]
	w := e.p.Buffers[op.Out[0]].Shape[1]
	T := e.p.Batch.SeqLen
	if !op.Accumulates(0) {
		clear(dw)
	}
	positions := op.Attr == "positions"
	rowsHeld := len(dw) / w
	first := 0
	if op.Attr == "vocab-parallel" {
		first = e.p.Coord.TP * rowsHeld
	}
	for t, id := range tok {
		row := int(id) - first
		if positions {
			row = t % T
		}
		if row < 0 || row >= rowsHeld {
			continue
		}
		g, src := dw[row*w:(row+1)*w], dx[t*w:(t+1)*w]
		for j, v := range src {
			g[j] += v
		}
	}
}

func (e *Executor) norm(op *step.Op) {
	x, w, h, rstd := e.f32[op.In[0]], e.f32[op.In[1]], e.f32[op.Out[0]], e.f32[op.Out[1]]
	var b []float32
	if len(op.In) > 2 {
		b = e.f32[op.In[2]]
	}
	layer := e.m.Norm == program.LayerNorm
	d := len(w)
	n := len(x) / d
	for i := 0; i < n; i++ {
		xi, hi := x[i*d:(i+1)*d], h[i*d:(i+1)*d]
		var mean float64
		if layer {
			for _, v := range xi {
				mean += float64(v)
			}
			mean /= float64(d)
		}
		var ss float64
		for _, v := range xi {
			c := float64(v) - mean
			ss += c * c
		}
		r := 1 / math.Sqrt(ss/float64(d)+e.d.NormEps)
		rstd[i] = float32(r)
		for j, v := range xi {
			xh := float32((float64(v) - mean) * r)
			hi[j] = xh * w[j]
			if b != nil {
				hi[j] += b[j]
			}
		}
	}
}

func (e *Executor) normBwd(op *step.Op) {
	dh, x, w, rstd := e.f32[op.In[0]], e.f32[op.In[1]], e.f32[op.In[2]], e.f32[op.In[3]]
	dx, dw := e.f32[op.Out[0]], e.f32[op.Out[1]]
	var db []float32
	if len(op.Out) > 2 {
		db = e.f32[op.Out[2]]
		if !op.Accumulates(2) {
			clear(db)
		}
	}
	if !op.Accumulates(1) {
		clear(dw)
	}
	if !op.Accumulates(0) {
		clear(dx)
	}
	layer := e.m.Norm == program.LayerNorm
	d := len(w)
	n := len(x) / d
	xhat := grow(&e.scratch.xhat, d)
	for i := 0; i < n; i++ {
		xi, dyi, dxi := x[i*d:(i+1)*d], dh[i*d:(i+1)*d], dx[i*d:(i+1)*d]
		var mean float64
		if layer {
			for _, v := range xi {
				mean += float64(v)
			}
			mean /= float64(d)
		}
		r := float64(rstd[i])
		for j, v := range xi {
			xhat[j] = float32((float64(v) - mean) * r)
		}
		var sumG, sumGX float64
		for j, g := range dyi {
			dw[j] += g * xhat[j]
			if db != nil {
				db[j] += g
			}
			gh := float64(g * w[j])
			sumG += gh
			sumGX += gh * float64(xhat[j])
		}
		meanG, meanGX := sumG/float64(d), sumGX/float64(d)
		if !layer {
			meanG = 0
		}
		for j, g := range dyi {
			gh := float64(g * w[j])
			dxi[j] += float32(r * (gh - meanG - float64(xhat[j])*meanGX))
		}
	}
}

// rotary rotates q and k of every token in place (rotate-half layout); inverse is the
// backward pass.
func (e *Executor) rotary(q, k []float32, inverse bool) {
	half, T, dh := e.d.Dh/2, e.p.Batch.SeqLen, e.d.Dh
	rot := func(x []float32) {
		n := len(x) / (e.p.Batch.MicroBatch * T)
		for t := 0; t < e.p.Batch.MicroBatch*T; t++ {
			pos := t % T
			cs, sn := e.cos[pos*half:(pos+1)*half], e.sin[pos*half:(pos+1)*half]
			row := x[t*n : (t+1)*n]
			for h := 0; h < n/dh; h++ {
				v := row[h*dh : (h+1)*dh]
				for i := 0; i < half; i++ {
					c, s := float32(cs[i]), float32(sn[i])
					if inverse {
						s = -s
					}
					a, b := v[i], v[i+half]
					v[i] = a*c - b*s
					v[i+half] = b*c + a*s
				}
			}
		}
	}
	rot(q)
	rot(k)
}

// attnDims are the local heads, key/value heads and token count of an attention op.
func (e *Executor) attnDims(q, k []float32) (B, T, H, KV, Dh int) {
	B, T, Dh = e.p.Batch.MicroBatch, e.p.Batch.SeqLen, e.d.Dh
	H = len(q) / (B * T * Dh)
	KV = len(k) / (B * T * Dh)
	return
}

func (e *Executor) scores(op *step.Op) {
	q, k, s := e.f32[op.In[0]], e.f32[op.In[1]], e.f32[op.Out[0]]
	B, T, H, KV, Dh := e.attnDims(q, k)
	scale := float32(1 / math.Sqrt(float64(Dh)))
	qd, kd, tt := H*Dh, KV*Dh, T*T
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			g := h / (H / KV)
			blas.Gemm(false, true, T, T, Dh, scale, q[b*T*qd+h*Dh:], qd, k[b*T*kd+g*Dh:], kd, 0, s[(b*H+h)*tt:], T)
		}
	}
}

func (e *Executor) scoresBwd(op *step.Op) {
	ds, q, k := e.f32[op.In[0]], e.f32[op.In[1]], e.f32[op.In[2]]
	dq, dk := e.f32[op.Out[0]], e.f32[op.Out[1]]
	B, T, H, KV, Dh := e.attnDims(q, k)
	scale := float32(1 / math.Sqrt(float64(Dh)))
	qd, kd, tt := H*Dh, KV*Dh, T*T
	if !op.Accumulates(1) {
		clear(dk)
	}
	bq := float32(0)
	if op.Accumulates(0) {
		bq = 1
	}
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			g := h / (H / KV)
			blas.Gemm(false, false, T, Dh, T, scale, ds[(b*H+h)*tt:], T, k[b*T*kd+g*Dh:], kd, bq, dq[b*T*qd+h*Dh:], qd)
			blas.Gemm(true, false, T, Dh, T, scale, ds[(b*H+h)*tt:], T, q[b*T*qd+h*Dh:], qd, 1, dk[b*T*kd+g*Dh:], kd)
		}
	}
}

// headMix mixes the heads' [T, T] maps: y[b] = W·x[b] over heads.
func (e *Executor) headMix(op *step.Op) {
	x, w, y := e.f32[op.In[0]], e.f32[op.In[1]], e.f32[op.Out[0]]
	H := e.p.Buffers[op.In[1]].Shape[0]
	B, T := e.p.Batch.MicroBatch, e.p.Batch.SeqLen
	tt := T * T
	for b := 0; b < B; b++ {
		blas.Gemm(false, false, H, tt, H, 1, w, H, x[b*H*tt:], tt, 0, y[b*H*tt:], tt)
	}
}

func (e *Executor) headMixBwd(op *step.Op) {
	dy, x, w := e.f32[op.In[0]], e.f32[op.In[1]], e.f32[op.In[2]]
	dx, dw := e.f32[op.Out[0]], e.f32[op.Out[1]]
	H := e.p.Buffers[op.In[2]].Shape[0]
	B, T := e.p.Batch.MicroBatch, e.p.Batch.SeqLen
	tt := T * T
	if !op.Accumulates(1) {
		clear(dw)
	}
	bx := float32(0)
	if op.Accumulates(0) {
		bx = 1
	}
	for b := 0; b < B; b++ {
		blas.Gemm(false, true, H, H, tt, 1, dy[b*H*tt:], tt, x[b*H*tt:], tt, 1, dw, H)
		blas.Gemm(true, false, H, tt, H, 1, w, H, dy[b*H*tt:], tt, bx, dx[b*H*tt:], tt)
	}
}

// softmax: each causal row's softmax, the rest of the row zero.
func (e *Executor) softmax(op *step.Op) {
	s, p := e.f32[op.In[0]], e.f32[op.Out[0]]
	T := e.p.Batch.SeqLen
	parallel(len(s)/T, func(r0, r1 int) { softmaxRows(s, p, T, r0, r1) })
}

// softmaxRows is the causal softmax of rows [r0, r1).
func softmaxRows(s, p []float32, T, r0, r1 int) {
	for r := r0; r < r1; r++ {
		i := r % T
		src, dst := s[r*T:(r+1)*T], p[r*T:(r+1)*T]
		mx := src[0]
		for _, v := range src[:i+1] {
			mx = max(mx, v)
		}
		var sum float64
		for j := 0; j <= i; j++ {
			ex := math.Exp(float64(src[j] - mx))
			dst[j] = float32(ex)
			sum += ex
		}
		inv := 1 / sum
		for j := 0; j <= i; j++ {
			dst[j] = float32(float64(dst[j]) * inv)
		}
		clear(dst[i+1:])
	}
}

func (e *Executor) softmaxBwd(op *step.Op) {
	dp, p, ds := e.f32[op.In[0]], e.f32[op.In[1]], e.f32[op.Out[0]]
	T := e.p.Batch.SeqLen
	acc := op.Accumulates(0)
	parallel(len(p)/T, func(r0, r1 int) { softmaxBwdRows(dp, p, ds, T, acc, r0, r1) })
}

func softmaxBwdRows(dp, p, ds []float32, T int, acc bool, r0, r1 int) {
	for r := r0; r < r1; r++ {
		i := r % T
		pr, gr, dr := p[r*T:(r+1)*T], dp[r*T:(r+1)*T], ds[r*T:(r+1)*T]
		var s float32
		for j := 0; j <= i; j++ {
			s += pr[j] * gr[j]
		}
		for j := 0; j <= i; j++ {
			v := pr[j] * (gr[j] - s)
			if acc {
				dr[j] += v
			} else {
				dr[j] = v
			}
		}
		if !acc {
			clear(dr[i+1:])
		}
	}
}

func (e *Executor) attnAV(op *step.Op) {
	p, v, o := e.f32[op.In[0]], e.f32[op.In[1]], e.f32[op.Out[0]]
	B, T, Dh := e.p.Batch.MicroBatch, e.p.Batch.SeqLen, e.d.Dh
	H := len(o) / (B * T * Dh)
	KV := len(v) / (B * T * Dh)
	qd, kd, tt := H*Dh, KV*Dh, T*T
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			g := h / (H / KV)
			blas.Gemm(false, false, T, Dh, T, 1, p[(b*H+h)*tt:], T, v[b*T*kd+g*Dh:], kd, 0, o[b*T*qd+h*Dh:], qd)
		}
	}
}

func (e *Executor) attnAVBwd(op *step.Op) {
	do, p, v := e.f32[op.In[0]], e.f32[op.In[1]], e.f32[op.In[2]]
	dp, dv := e.f32[op.Out[0]], e.f32[op.Out[1]]
	B, T, Dh := e.p.Batch.MicroBatch, e.p.Batch.SeqLen, e.d.Dh
	H := len(do) / (B * T * Dh)
	KV := len(v) / (B * T * Dh)
	qd, kd, tt := H*Dh, KV*Dh, T*T
	if !op.Accumulates(1) {
		clear(dv)
	}
	bp := float32(0)
	if op.Accumulates(0) {
		bp = 1
	}
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			g := h / (H / KV)
			blas.Gemm(false, true, T, T, Dh, 1, do[b*T*qd+h*Dh:], qd, v[b*T*kd+g*Dh:], kd, bp, dp[(b*H+h)*tt:], T)
			blas.Gemm(true, false, T, Dh, T, 1, p[(b*H+h)*tt:], T, do[b*T*qd+h*Dh:], qd, 1, dv[b*T*kd+g*Dh:], kd)
		}
	}
}

// shareSelectBwd sends the selected weights' gradient to the weights that were used.
func (e *Executor) shareSelectBwd(op *step.Op) {
	dsel := e.f32[op.In[0]]
	to, other := 0, 1
	if !e.recompute[op.Layer] {
		to, other = 1, 0
	}
	dst := e.f32[op.Out[to]]
	if op.Accumulates(to) {
		for i, v := range dsel {
			dst[i] += v
		}
	} else {
		copy(dst, dsel)
	}
	if !op.Accumulates(other) {
		clear(e.f32[op.Out[other]])
	}
}

const invSqrt2 = 0.70710678118654752440

func actValue(act program.Activation, v float32) (f, df float64) {
	x := float64(v)
	switch act {
	case program.ReLU:
		if x > 0 {
			return x, 1
		}
		return 0, 0
	case program.GELU, program.GeGLU:
		cdf := 0.5 * (1 + math.Erf(x*invSqrt2))
		return x * cdf, cdf + x*math.Exp(-0.5*x*x)/math.Sqrt(2*math.Pi)
	default: // SiLU, SwiGLU
		sg := 1 / (1 + math.Exp(-x))
		return x * sg, sg * (1 + x*(1-sg))
	}
}

// actOnly is the activation without its derivative (the forward needs no exp for GELU).
func actOnly(act program.Activation, v float32) float64 {
	x := float64(v)
	switch act {
	case program.ReLU:
		return max(x, 0)
	case program.GELU, program.GeGLU:
		return x * 0.5 * (1 + math.Erf(x*invSqrt2))
	default:
		return x / (1 + math.Exp(-x))
	}
}

func (e *Executor) act(op *step.Op) {
	act := program.Activation(op.Attr)
	a, h := e.f32[op.In[0]], e.f32[op.Out[0]]
	var u []float32
	if len(op.In) > 1 {
		u = e.f32[op.In[1]]
	}
	parallel(len(a), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			h[i] = float32(actOnly(act, a[i]))
			if u != nil {
				h[i] *= u[i]
			}
		}
	})
}

func (e *Executor) actBwd(op *step.Op) {
	act := program.Activation(op.Attr)
	dh, a := e.f32[op.In[0]], e.f32[op.In[1]]
	da := e.f32[op.Out[0]]
	var u, du []float32
	if len(op.In) > 2 {
		u, du = e.f32[op.In[2]], e.f32[op.Out[1]]
	}
	accU, accA := op.Accumulates(1), op.Accumulates(0)
	parallel(len(a), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			f, df := actValue(act, a[i])
			g := float64(dh[i])
			if u != nil {
				dv := float32(g * f)
				if accU {
					du[i] += dv
				} else {
					du[i] = dv
				}
				g *= float64(u[i])
			}
			if accA {
				da[i] += float32(g * df)
			} else {
				da[i] = float32(g * df)
			}
		}
	})
}

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
			if cfg.Score == program.Sigmoid {
				st[i] = float32(1 / (1 + math.Exp(-float64(v))))
			} else {
				st[i] = float32(math.Exp(float64(v) - l))
			}
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
	capacity := n * K
	if cfg.CapacityFactor > 0 {
		capacity = int(math.Ceil(cfg.CapacityFactor * float64(n*K) / float64(E)))
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
		if cfg.Score == program.Sigmoid {
			for ex, v := range st {
				dst[ex] *= v * (1 - v)
			}
		} else {
			var sd float32
			for ex := range dst {
				sd += dst[ex] * st[ex]
			}
			for ex, v := range st {
				dst[ex] = v * (dst[ex] - sd)
			}
		}
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

// lossScale is what the loss's gradient is multiplied by: 1 over the micro-batches and
// data-parallel replicas the step's mean spans (the cross-entropy's own mean over a
// micro-batch's tokens is in its gradient).
func (e *Executor) lossScale() float64 {
	return 1 / float64(e.p.Batch.Micro*e.p.Layout.DP)
}

func (e *Executor) permute(op *step.Op) {
	h, idx, slot, send := e.f32[op.In[0]], e.i32[op.In[1]], e.i32[op.In[2]], e.f32[op.Out[0]]
	sh := e.p.Buffers[op.Out[0]].Shape // [E, C, D]
	C, D := sh[1], sh[2]
	K := e.d.K
	clear(send)
	for a, ex := range idx {
		s := slot[a]
		if s < 0 {
			continue
		}
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

func (e *Executor) groupedMM(op *step.Op) {
	x, y := e.f32[op.In[0]], e.f32[op.Out[0]]
	w, b, o, k := e.experts(op.In[1:])
	R := len(x) / (len(w) * k)
	for ex := range w {
		xe, ye := x[ex*R*k:(ex+1)*R*k], y[ex*R*o:(ex+1)*R*o]
		blas.Gemm(false, true, R, o, k, 1, xe, k, w[ex], k, 0, ye, o)
		if b[ex] != nil && e.addsBias(op) {
			addBias(ye, b[ex], R)
		}
	}
}

func (e *Executor) groupedMMDW(op *step.Op) {
	dy, x := e.f32[op.In[0]], e.f32[op.In[1]]
	w, b, o, k := e.experts(op.Out)
	R := len(x) / (len(w) * k)
	acc := op.Accumulates(0)
	for ex := range w {
		dye, xe := dy[ex*R*o:(ex+1)*R*o], x[ex*R*k:(ex+1)*R*k]
		beta := float32(0)
		if acc {
			beta = 1
		}
		blas.Gemm(true, false, o, k, R, 1, dye, o, xe, k, beta, w[ex], k)
		if b[ex] != nil {
			if !acc {
				clear(b[ex])
			}
			for r := 0; r < R; r++ {
				for j, g := range dye[r*o : (r+1)*o] {
					b[ex][j] += g
				}
			}
		}
	}
}

func (e *Executor) groupedMMDX(op *step.Op) {
	dy, dx := e.f32[op.In[0]], e.f32[op.Out[0]]
	w, _, o, k := e.experts(op.In[1:])
	R := len(dx) / (len(w) * k)
	beta := float32(0)
	if op.Accumulates(0) {
		beta = 1
	}
	for ex := range w {
		blas.Gemm(false, false, R, k, o, 1, dy[ex*R*o:(ex+1)*R*o], o, w[ex], k, beta, dx[ex*R*k:(ex+1)*R*k], k)
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
	clear(dback)
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

// crossEntropy writes the mean loss over the micro-batch's tokens and the logits'
// gradient, (softmax − onehot) scaled by the step's mean. Under tp each rank holds a
// slice of the vocabulary and the op runs in three passes (pass=max, pass=sum, pass=loss)
// between the reductions of the row maxima and sums.
func (e *Executor) crossEntropy(op *step.Op) error {
	logits := e.f32[op.In[0]]
	Vl := e.p.Buffers[op.In[0]].Shape[1]
	n := len(logits) / Vl
	first := e.p.Coord.TP * Vl
	switch {
	case strings.HasPrefix(op.Attr, "pass=max"):
		mx := e.f32[op.Out[0]]
		for i := 0; i < n; i++ {
			m := float32(math.Inf(-1))
			for _, v := range logits[i*Vl : (i+1)*Vl] {
				m = max(m, v)
			}
			mx[i] = m
		}
		return nil
	case strings.HasPrefix(op.Attr, "pass=sum"):
		targets, mx, st := e.i32[op.In[1]], e.f32[op.In[2]], e.f32[op.Out[0]]
		for i := 0; i < n; i++ {
			var s float64
			for _, v := range logits[i*Vl : (i+1)*Vl] {
				s += math.Exp(float64(v) - float64(mx[i]))
			}
			st[2*i] = float32(s)
			st[2*i+1] = 0
			if t := int(targets[i]) - first; t >= 0 && t < Vl {
				st[2*i+1] = logits[i*Vl+t]
			}
		}
		return nil
	}
	targets := e.i32[op.In[1]]
	loss, dl := e.f32[op.Out[0]], e.f32[op.Out[1]]
	scale := e.lossScale() / float64(n)
	var ce float64
	for i := 0; i < n; i++ {
		row, drow := logits[i*Vl:(i+1)*Vl], dl[i*Vl:(i+1)*Vl]
		var lse, target float64
		if len(op.In) > 2 {
			mx, st := e.f32[op.In[2]], e.f32[op.In[3]]
			lse = float64(mx[i]) + math.Log(float64(st[2*i]))
			target = float64(st[2*i+1])
		} else {
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, float64(v))
			}
			var s float64
			for _, v := range row {
				s += math.Exp(float64(v) - mx)
			}
			lse = mx + math.Log(s)
			target = float64(row[targets[i]])
		}
		ce += lse - target
		for j, v := range row {
			drow[j] = float32(math.Exp(float64(v)-lse) * scale)
		}
		if t := int(targets[i]) - first; t >= 0 && t < Vl {
			drow[t] -= float32(scale)
		}
	}
	loss[0] = float32(ce / float64(n))
	e.stats.CE += ce / float64(n) * e.lossScale()
	e.stats.Loss = e.stats.CE
	if m := e.m.MoE; m != nil {
		e.stats.Loss += m.BalanceLoss*e.stats.Balance + m.ZLoss*e.stats.ZLoss
	}
	return nil
}
