package exec

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// run executes one op on this rank's buffers: it reads the op's buffers and sizes and
// calls the op's kernel (kernels_api.go), as a step program written out as Go does.
func (e *Executor) run(op *step.Op) error {
	f, i32, in, out := e.f32, e.i32, op.In, op.Out
	shape := func(b int) []int { return e.p.Buffers[b].Shape }
	acc := op.Accumulates
	opt := func(bufs []int, i int) []float32 { // the i-th buffer when the op has one
		if i < len(bufs) {
			return f[bufs[i]]
		}
		return nil
	}
	if e.runMoEVariant(op) { // kernels_moe_variants.go
		return nil
	}
	switch op.Kind {
	case step.OpEmbed:
		if op.Rows == step.RowsAtPosition { // decoding: each sequence at its position
			e.embedAt(i32[in[0]], f[in[1]], f[out[0]], shape(in[1])[1])
			return nil
		}
		e.Embed(i32[in[0]], f[in[1]], f[out[0]], shape(in[1])[1], e.firstRow(op, len(f[in[1]])/shape(in[1])[1]), op.Rows == step.RowsOfPositions)
	case step.OpEmbedBwd:
		w := shape(out[0])[1]
		e.EmbedBwd(f[in[0]], i32[in[1]], f[out[0]], w, e.firstRow(op, len(f[out[0]])/w), op.Rows == step.RowsOfPositions, acc(0))
	case step.OpNorm:
		e.Norm(f[in[0]], f[in[1]], opt(in, 2), f[out[0]], f[out[1]])
	case step.OpNormBwd:
		e.NormBwd(f[in[0]], f[in[1]], f[in[2]], f[in[3]], f[out[0]], f[out[1]], opt(out, 2), acc(0), acc(1), acc(2))
	case step.OpMatMul:
		var bias []float32
		if len(in) > 2 && e.addsBias(op) {
			bias = f[in[2]]
		}
		e.MatMul(f[in[0]], f[in[1]], bias, f[out[0]], shape(in[1])[0], shape(in[1])[1])
	case step.OpMatMulDW:
		o, k := shape(out[0])[0], shape(out[0])[1]
		if n := len(f[in[0]]) / o; len(f[in[1]]) != n*k {
			return fmt.Errorf("x has %d values, want %d×%d", len(f[in[1]]), n, k)
		}
		e.MatMulDW(f[in[0]], f[in[1]], f[out[0]], opt(out, 1), o, k, acc(0), acc(1))
	case step.OpMatMulDX:
		e.MatMulDX(f[in[0]], f[in[1]], f[out[0]], shape(in[1])[0], shape(in[1])[1], acc(0))
	case step.OpAdd:
		Add(f[in[0]], f[in[1]], f[out[0]])
	case step.OpAccumulate:
		Accumulate(f[in[0]], f[out[0]], acc(0))
	case step.OpCopy:
		copy(f[out[0]], f[in[0]])
	case step.OpSeqSlice:
		SeqSlice(f[in[0]], f[out[0]], e.p.Coord.TP, acc(0))
	case step.OpRotaryAt: // the keys absent where the layer reads its group owner's (share_kv)
		e.rotaryAt(f[out[0]], opt(out, 1), i32[in[len(in)-1]])
	case step.OpKVWrite:
		e.kvWrite(op)
	case step.OpLastRows:
		e.lastRows(op)
	case step.OpKVAppend:
		e.kvAppend(op)
	case step.OpAttnDecode:
		e.attnDecode(op)
	case step.OpKVAppendRows, step.OpAttnRows, step.OpPickRows, step.OpMLAAttnRows: // kernels_feed.go
		e.feedOp(op)
	case step.OpRotary, step.OpRotaryBwd:
		e.Rotary(f[out[0]], opt(out, 1), op.Kind == step.OpRotaryBwd)
	case step.OpClip:
		Clip(f[in[0]], f[out[0]], float32(op.Clip))
	case step.OpClipBwd:
		ClipBwd(f[in[0]], f[in[1]], f[out[0]], float32(op.Clip), acc(0))
	case step.OpQKNorm:
		if len(in) == 3 { // the rows span the tp ranks (kernels_qknorm_tp.go)
			e.QKNormSpan(f[in[0]], f[in[1]], f[in[2]], f[out[0]], f[out[1]], len(f[in[1]])*e.p.Layout.TP)
			break
		}
		e.QKNorm(f[in[0]], f[in[1]], f[out[0]], f[out[1]])
	case step.OpQKNormBwd:
		if len(in) == 5 {
			e.QKNormSpanBwd(f[in[0]], f[in[1]], f[in[2]], f[in[3]], f[in[4]], f[out[0]], f[out[1]], len(f[in[2]])*e.p.Layout.TP, acc(0), acc(1))
			break
		}
		e.QKNormBwd(f[in[0]], f[in[1]], f[in[2]], f[in[3]], f[out[0]], f[out[1]], acc(0), acc(1))
	case step.OpQKNormSumSq:
		e.QKNormSumSq(f[in[0]], f[out[0]])
	case step.OpQKNormBwdDot:
		e.QKNormBwdDot(f[in[0]], f[in[1]], f[in[2]], f[in[3]], f[out[0]])
	case step.OpScores:
		e.Scores(f[in[0]], f[in[1]], f[out[0]])
	case step.OpScoresBwd:
		e.ScoresBwd(f[in[0]], f[in[1]], f[in[2]], f[out[0]], f[out[1]], acc(0), acc(1))
	case step.OpHeadMix:
		e.HeadMix(f[in[0]], f[in[1]], f[out[0]], shape(in[1])[0])
	case step.OpHeadMixBwd:
		e.HeadMixBwd(f[in[0]], f[in[1]], f[in[2]], f[out[0]], f[out[1]], shape(in[2])[0], acc(0), acc(1))
	case step.OpSoftmax:
		e.SoftmaxMasked(f[in[0]], opt(in, 1), f[out[0]], op.Mask)
	case step.OpSoftmaxBwd:
		e.SoftmaxBwdSinks(f[in[0]], f[in[1]], f[out[0]], opt(out, 1), acc(0), acc(1))
	case step.OpQKL2Norm:
		e.QKL2Norm(f[in[0]], f[out[0]], f[out[1]], e.d.Dh)
	case step.OpQKL2NormBwd:
		QKL2NormBwd(f[in[0]], f[in[1]], f[in[2]], f[out[0]], e.d.Dh, acc(0))
	case step.OpQueryScale, step.OpQueryScaleBwd:
		var pos []int32
		if len(in) > 1 {
			pos = i32[in[1]]
		}
		e.QueryScale(f[out[0]], pos, op.Temperature)
	case step.OpAttnAV:
		e.AttnAV(f[in[0]], f[in[1]], f[out[0]])
	case step.OpAttnAVBwd:
		e.AttnAVBwd(f[in[0]], f[in[1]], f[in[2]], f[out[0]], f[out[1]], acc(0), acc(1))
	case opShareSelect:
		ShareSelect(f[in[0]], f[in[1]], f[out[0]], e.recompute[op.Layer])
	case opShareSelectBwd:
		ShareSelectBwd(f[in[0]], f[out[0]], f[out[1]], e.recompute[op.Layer], acc(0), acc(1))
	case step.OpAct:
		Act(op.Activation, f[in[0]], opt(in, 1), f[out[0]], actExperts(shape(in[0])), e.Fill(in[0]), e.Fill(out[0]))
	case step.OpActBwd:
		ActBwd(op.Activation, f[in[0]], f[in[1]], opt(in, 2), f[out[0]], opt(out, 1), acc(0), len(out) > 1 && acc(1),
			actExperts(shape(in[1])), e.Fill(in[0]), e.Fill(in[1]), e.Fill(out[0]), e.fillOr(out, 1))
	case step.OpRouter:
		if len(in) > 1 { // a selection bias (kernels_route_bias.go)
			e.RouteBiased(f[in[1]], f[in[0]], i32[out[0]], f[out[1]], f[out[2]], f[out[3]], i32[out[4]], i32[out[5]], i32[out[6]], f[out[7]], op.Slots, op.Packed, op.Recomputed)
			return nil
		}
		e.Route(f[in[0]], i32[out[0]], f[out[1]], f[out[2]], f[out[3]], i32[out[4]], i32[out[5]], i32[out[6]], f[out[7]], op.Slots, op.Packed, op.Recomputed)
	case step.OpRouterBwd:
		e.RouteBwd(f[in[0]], f[in[1]], i32[in[2]], f[in[3]], f[in[4]], f[in[5]], i32[in[8]], f[out[0]], acc(0))
	case step.OpPermute:
		C, D := dispatchDims(shape(out[0]))
		e.Permute(f[in[0]], i32[in[1]], i32[in[2]], f[out[0]], C, D, e.Fill(out[0]))
	case step.OpPermuteBwd:
		C, D := dispatchDims(shape(in[0]))
		e.PermuteBwd(f[in[0]], i32[in[1]], i32[in[2]], f[out[0]], C, D, acc(0))
	case step.OpGroupedMM:
		if err := e.packedFillKnown(in[0]); err != nil {
			return err
		}
		w, b, o, k := e.experts(in[1:])
		if !e.addsBias(op) {
			b = nil
		}
		groupedMM(e.product(), &e.scratch.order, f[in[0]], f[out[0]], w, b, o, k, e.Fill(in[0]), e.Fill(out[0]), op.SkipEmptySlots)
	case step.OpGroupedMMDW:
		if err := e.packedFillKnown(in[0], in[1]); err != nil {
			return err
		}
		w, b, o, k := e.experts(out)
		groupedMMDW(e.product(), &e.scratch.order, f[in[0]], f[in[1]], w, b, o, k, acc(0), e.Fill(in[0]), e.Fill(in[1]))
	case step.OpGroupedMMDX:
		if err := e.packedFillKnown(in[0]); err != nil {
			return err
		}
		w, _, o, k := e.experts(in[1:])
		groupedMMDX(e.product(), &e.scratch.order, f[in[0]], f[out[0]], w, o, k, acc(0), e.Fill(in[0]), e.Fill(out[0]))
	case step.OpCombine:
		C, D := dispatchDims(shape(in[0]))
		e.Combine(f[in[0]], i32[in[1]], i32[in[2]], f[in[3]], f[out[0]], C, D)
	case step.OpCombineBwd:
		C, D := dispatchDims(shape(in[1]))
		e.CombineBwd(f[in[0]], f[in[1]], i32[in[2]], i32[in[3]], f[in[4]], f[out[0]], f[out[1]], C, D, acc(1), e.Fill(in[1]), e.Fill(out[0]))
	case step.OpCrossEntropy:
		return e.crossEntropy(op)
	case step.OpDistillLoss:
		return e.distillLoss(op)
	case step.OpAdamW:
		// One optimizer step covers every group: the clipping norm is global.
		if e.updated {
			return nil
		}
		e.updated = true
		if e.host != nil {
			return e.updateAsync(op)
		}
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

// fillOr is the fill of the i-th of bufs, or nil when the op has fewer.
func (e *Executor) fillOr(bufs []int, i int) *RowFill {
	if i < len(bufs) {
		return e.Fill(bufs[i])
	}
	return nil
}

// firstRow is the first vocabulary row an embedding op's table holds of rows: this tp
// rank's under a vocabulary-parallel embedding, else 0.
func (e *Executor) firstRow(op *step.Op, rows int) int {
	if op.Rows == step.RowsOfVocabParallel {
		return e.p.Coord.TP * rows
	}
	return 0
}

// oversubscribe is parallel's bands per core. Measured on a quiet 2-core AMD EPYC
// (moebench's training step, interleaved against one band a core): 4 bands a core trained
// 1.07–1.13× faster, 2 a core 1.05×: a band the neighbour's work or the runtime delays
// holds back the whole op when each core has one, and the small bands' rows stay in L2.
const oversubscribe = 4

// parallel splits [0, n) into bands, oversubscribe a core, and runs f on each; the bands
// write disjoint outputs, so the result does not depend on the split.
func parallel(n int, f func(lo, hi int)) {
	workers := min(oversubscribe*runtime.GOMAXPROCS(0), n/256+1)
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

// columnBands runs f over bands [j0, j1) of d columns, one per worker, when the work
// (elements in all) is large enough to share: bands of whole cache lines (16 float32s).
func columnBands(d, work int, f func(j0, j1 int)) {
	workers := min(runtime.GOMAXPROCS(0), d/16, work/(64<<10)+1)
	if workers <= 1 {
		f(0, d)
		return
	}
	per := (d/workers + 15) &^ 15
	var wg sync.WaitGroup
	for j0 := 0; j0 < d; j0 += per {
		j1 := min(j0+per, d)
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(j0, j1)
		}()
	}
	wg.Wait()
}

// addsBias reports whether this rank adds op's bias: a row-parallel product's partial
// sums are reduced over tp, so only tp rank 0 adds it.
func (e *Executor) addsBias(op *step.Op) bool {
	return e.p.Coord.TP == 0 || !op.BiasOnTPRank0
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

// The share_select ops of attention-weight sharing (compiler/step names them by string).
const (
	opShareSelect    step.OpKind = "share_select"
	opShareSelectBwd step.OpKind = "share_select_bwd"
)

// MatMul: y = x·wᵀ (+ bias), w [o, k], x n rows of k.
func (k *Kernels) MatMul(x, w, bias, y []float32, o, kk int) {
	n := len(x) / kk
	k.product()(false, true, n, o, kk, 1, x, kk, w, kk, 0, y, o)
	if bias != nil {
		addBias(y, bias, n)
	}
}

// MatMulDX: dx (+)= dy·w, w [o, k].
func (k *Kernels) MatMulDX(dy, w, dx []float32, o, kk int, acc bool) {
	n := len(dy) / o
	k.product()(false, false, n, kk, o, 1, dy, o, w, kk, beta(acc), dx, kk)
}

// MatMulDW: dw (+)= dyᵀ·x, dw [o, k], and db (+)= Σ_rows dy when db is not nil.
func (k *Kernels) MatMulDW(dy, x, dw, db []float32, o, kk int, accW, accB bool) {
	n := len(dy) / o
	k.product()(true, false, o, kk, n, 1, dy, o, x, kk, beta(accW), dw, kk)
	if db != nil {
		if !accB {
			clear(db)
		}
		for i := 0; i < n; i++ {
			for j, g := range dy[i*o : (i+1)*o] {
				db[j] += g
			}
		}
	}
}

// beta is a product's coefficient on its output: 1 when it adds to it.
func beta(acc bool) float32 {
	if acc {
		return 1
	}
	return 0
}

// Add: y = a + b (the residual sum).
func Add(a, b, y []float32) {
	units := len(y) / addGrain
	parallel(units, func(lo, hi int) {
		end := hi * addGrain
		if hi == units {
			end = len(y) // the last band takes the remainder
		}
		for i := lo * addGrain; i < end; i++ {
			y[i] = a[i] + b[i]
		}
	})
}

// addGrain is the values per unit of work Add splits over the cores.
const addGrain = 1024

// Accumulate: g += dy, or g = dy when the op writes g first.
func Accumulate(dy, g []float32, acc bool) {
	switch {
	case !acc:
		copy(g, dy)
	case &dy[0] != &g[0]:
		for i := range g {
			g[i] += dy[i]
		}
	}
}

// embedAt (decoding) writes, for each sequence, the row of its position tok[t].
func (k *Kernels) embedAt(tok []int32, table, x []float32, w int) {
	for t, row := range tok {
		copy(x[t*w:(t+1)*w], table[int(row)*w:(int(row)+1)*w])
	}
}

// Embed writes each token's row of table (width w) into x: the row of its id, less first
// (a vocabulary-parallel rank's first row; ids it does not hold get zeros, which the
// all-reduce fills), or with positions the row of the token's position.
func (k *Kernels) Embed(tok []int32, table, x []float32, w, first int, positions bool) {
	T := k.batch.SeqLen
	rowsHeld := len(table) / w
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

// EmbedBwd scatter-adds dx's rows into the rows of dw the tokens read.
func (k *Kernels) EmbedBwd(dx []float32, tok []int32, dw []float32, w, first int, positions, acc bool) {
	T := k.batch.SeqLen
	if !acc {
		clear(dw)
	}
	rowsHeld := len(dw) / w
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

// Norm normalises each row of x (RMSNorm, or LayerNorm when the model says so) and scales
// it by w (plus b): h, and each row's reciprocal deviation rstd.
func (k *Kernels) Norm(x, w, b, h, rstd []float32) {
	layer := k.m.Norm == program.LayerNorm
	eps := k.d.NormEps
	parallel(len(x)/len(w), func(lo, hi int) {
		if !normFwdVec(x, w, b, h, rstd, lo, hi, eps, layer) {
			normFwdRows(x, w, b, h, rstd, lo, hi, eps, layer)
		}
	})
}

// normFwdRows is Norm's rows [r0, r1) in Go (normFwdVec on vector lanes).
func normFwdRows(x, w, b, h, rstd []float32, r0, r1 int, eps float64, layer bool) {
	d := len(w)
	for i := r0; i < r1; i++ {
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

// NormBwd: dx, and the scale's (and bias's) gradient, each written or added to.
func (k *Kernels) NormBwd(dh, x, w, rstd, dx, dw, db []float32, accX, accW, accB bool) {
	if db != nil && !accB {
		clear(db)
	}
	if !accW {
		clear(dw)
	}
	if !accX {
		clear(dx)
	}
	layer := k.m.Norm == program.LayerNorm
	d := len(w)
	n := len(x) / d
	// The parameters' gradients sum over rows, in row order, each worker a band of
	// columns (the same sums as one serial pass, bit for bit); the rows' gradients in
	// parallel.
	var means []float64
	if layer {
		means = grow(&k.scratch.means, n)
		parallel(n, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				means[i] = rowMean(x[i*d:(i+1)*d], true)
			}
		})
	}
	columnBands(d, n*d, func(j0, j1 int) {
		if !normBwdDwVec(dh, x, rstd, means, dw, db, n, j0, j1) {
			normBwdDwCols(dh, x, rstd, means, dw, db, n, j0, j1)
		}
	})
	parallel(n, func(lo, hi int) {
		if !normBwdDxVec(dh, x, w, rstd, dx, lo, hi, layer, true) {
			normBwdDxRows(dh, x, w, rstd, dx, lo, hi, layer)
		}
	})
}

// normBwdDwCols is NormBwd's parameter gradients over the columns [j0, j1), every row in
// order, in Go (normBwdDwVec on vector lanes); means is nil for RMSNorm.
func normBwdDwCols(dh, x, rstd []float32, means []float64, dw, db []float32, n, j0, j1 int) {
	d := len(dw)
	for i := 0; i < n; i++ {
		xi, dyi := x[i*d+j0:i*d+j1], dh[i*d+j0:i*d+j1]
		mean, r := 0.0, float64(rstd[i])
		if means != nil {
			mean = means[i]
		}
		dwb := dw[j0:j1]
		for j, g := range dyi {
			dwb[j] += g * float32((float64(xi[j])-mean)*r)
		}
		if db != nil {
			dbb := db[j0:j1]
			for j, g := range dyi {
				dbb[j] += g
			}
		}
	}
}

// normBwdDxRows adds NormBwd's input gradient of rows [r0, r1) to dx, in Go
// (normBwdDxVec on vector lanes).
func normBwdDxRows(dh, x, w, rstd, dx []float32, r0, r1 int, layer bool) {
	d := len(w)
	for i := r0; i < r1; i++ {
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
}
