package nn

// Llama 4's routing (moe.gate_input): each chosen expert reads its token scaled by the
// gate, f(g·x), and its output joins the token unweighted. The rows of xs are scaled after
// sortRows; backward turns the experts' input gradients into the gates' (dg = ⟨dxs, x⟩)
// and the tokens' (g·dxs).

// gateInputs scales each kept assignment's row of xs by its gate.
func (c *core[F]) gateInputs(w *moeWS[F], n int) {
	d := c.d
	parallel(n, func(_, lo, hi int) {
		for t := lo; t < hi; t++ {
			for j := 0; j < d.K; j++ {
				if row := int(w.rowOf[t*d.K+j]); row >= 0 {
					scal(w.xs[row*d.D:(row+1)*d.D], w.gate[t*d.K+j])
				}
			}
		}
	})
}

// combineUngated adds each token's expert outputs to y, unweighted.
func (c *core[F]) combineUngated(w *moeWS[F], y []F, n int) {
	d := c.d
	parallel(n, func(_, lo, hi int) {
		for t := lo; t < hi; t++ {
			yt := y[t*d.D : (t+1)*d.D]
			for j := 0; j < d.K; j++ {
				if row := w.rowOf[t*d.K+j]; row >= 0 {
					axpy(yt, 1, w.out[int(row)*d.D:(int(row)+1)*d.D])
				}
			}
		}
	})
}

// ungatedGrads makes each kept assignment's out row the gradient of its expert's output:
// dy itself.
func (c *core[F]) ungatedGrads(w *moeWS[F], dy []F, n int) {
	d := c.d
	parallel(n, func(_, lo, hi int) {
		for t := lo; t < hi; t++ {
			for j := 0; j < d.K; j++ {
				w.dg[t*d.K+j] = 0
				if row := int(w.rowOf[t*d.K+j]); row >= 0 {
					copy(w.out[row*d.D:(row+1)*d.D], dy[t*d.D:(t+1)*d.D])
				}
			}
		}
	})
}

// gateInputGrads reads the experts' input gradients in xs: the gate's gradient is their
// product with the token, and the token's share is the gate times them.
func (c *core[F]) gateInputGrads(w *moeWS[F], x []F, n int) {
	d := c.d
	parallel(n, func(_, lo, hi int) {
		for t := lo; t < hi; t++ {
			for j := 0; j < d.K; j++ {
				row := int(w.rowOf[t*d.K+j])
				if row < 0 {
					continue
				}
				dxs := w.xs[row*d.D : (row+1)*d.D]
				w.dg[t*d.K+j] = dot(dxs, x[t*d.D:(t+1)*d.D])
				scal(dxs, w.gate[t*d.K+j])
			}
		}
	})
}

// scal multiplies x by alpha in place.
func scal[F Float](x []F, alpha F) {
	for i := range x {
		x[i] *= alpha
	}
}
