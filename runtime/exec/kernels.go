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
	case step.OpSeqSlice:
		e.seqSlice(op)
	case step.OpRotaryAt:
		e.rotaryAt(f[out[0]], f[out[1]], e.i32[in[2]])
	case step.OpKVWrite:
		e.kvWrite(op)
	case step.OpLastRows:
		e.lastRows(op)
	case step.OpKVAppend:
		e.kvAppend(op)
	case step.OpAttnDecode:
		e.attnDecode(op)
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
	case step.OpCacheFetch, step.OpCacheEvict, step.OpCacheWriteback:
		return e.cacheMove(op)
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
	if op.Attr == "position_at" { // decoding: each sequence at its position
		for t, row := range tok {
			copy(x[t*w:(t+1)*w], table[int(row)*w:(int(row)+1)*w])
		}
		return
	}
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
	eps := e.d.NormEps
	parallel(len(x)/d, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xi, hi := x[i*d:(i+1)*d], h[i*d:(i+1)*d]
			mean := rowMean(xi, layer)
			var ss float64
			for _, v := range xi {
				c := float64(v) - mean
				ss += c * c
			}
			r := 1 / math.Sqrt(ss/float64(d)+eps)
			rstd[i] = float32(r)
			for j, v := range xi {
				xh := float32((float64(v) - mean) * r)
				hi[j] = xh * w[j]
				if b != nil {
					hi[j] += b[j]
				}
			}
		}
	})
}

// rowMean is a LayerNorm row's mean (0 for RMSNorm).
func rowMean(x []float32, layer bool) float64 {
	if !layer {
		return 0
	}
	var mean float64
	for _, v := range x {
		mean += float64(v)
	}
	return mean / float64(len(x))
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
	// The parameters' gradients sum over rows, serially; the rows' gradients in parallel.
	for i := 0; i < n; i++ {
		xi, dyi := x[i*d:(i+1)*d], dh[i*d:(i+1)*d]
		mean, r := rowMean(xi, layer), float64(rstd[i])
		for j, g := range dyi {
			dw[j] += g * float32((float64(xi[j])-mean)*r)
			if db != nil {
				db[j] += g
			}
		}
	}
	parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xi, dyi, dxi := x[i*d:(i+1)*d], dh[i*d:(i+1)*d], dx[i*d:(i+1)*d]
			mean, r := rowMean(xi, layer), float64(rstd[i])
			var sumG, sumGX float64
			for j, g := range dyi {
				gh := float64(g * w[j])
				sumG += gh
				sumGX += gh * float64(float32((float64(xi[j])-mean)*r))
			}
			meanG, meanGX := sumG/float64(d), sumGX/float64(d)
			if !layer {
				meanG = 0
			}
			for j, g := range dyi {
				gh := float64(g * w[j])
				xh := float64(float32((float64(xi[j]) - mean) * r))
				dxi[j] += float32(r * (gh - meanG - xh*meanGX))
			}
		}
	})
}
