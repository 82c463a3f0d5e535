package nn

import "github.com/moec-dev/moec/compiler/program"

// Norm placement. A sublayer (attention or FFN) reads h and produces y:
//
//	pre:      h = norm(x);  x ← x + y
//	sandwich: h = norm(x);  x ← x + norm'(y)
//	post:     h = x;        x ← norm'(x + y)
//
// norm is the layer's norm1/norm2 (nil under post), norm' its postA/postF (nil under pre).

// sublayerIn writes the sublayer input h for the residual stream x.
func sublayerIn[F Float](h, xhat, rstd, x []F, n, d int, w, b *tensor[F], ln bool, eps float64) {
	if w == nil {
		copy(h[:n*d], x[:n*d])
		return
	}
	normFwd(h, xhat, rstd, x, n, d, w, b, ln, eps)
}

// sublayerTarget is the buffer a sublayer adds its output to: tmp (cleared) when the
// output is normalised on its own (sandwich), else the residual stream itself.
func sublayerTarget[F Float](sandwich bool, post *tensor[F], x, tmp []F) []F {
	if post != nil && sandwich {
		clear(tmp)
		return tmp
	}
	return x
}

// sublayerOut applies the post norm once the sublayer has added its output to target.
func sublayerOut[F Float](sandwich bool, x, tmp, xhat, rstd []F, n, d int, w, b *tensor[F], ln bool, eps float64) {
	switch {
	case w == nil:
	case sandwich:
		normFwd(tmp, xhat, rstd, tmp, n, d, w, b, ln, eps)
		axpy(x[:n*d], 1, tmp[:n*d])
	default:
		normFwd(x, xhat, rstd, x, n, d, w, b, ln, eps)
	}
}

// sublayerGradOut returns the gradient of the sublayer's output y given dx, the gradient of
// the block output. Under post placement it also rewrites dx into the gradient that flows
// through the residual connection (the gradient of x + y).
func sublayerGradOut[F Float](sandwich bool, dx, tmp, xhat, rstd []F, n, d int, w, b *tensor[F], ln bool) []F {
	if w == nil {
		return dx
	}
	clear(tmp[:n*d])
	normBack(tmp, dx, xhat, rstd, n, d, w, b, ln)
	if !sandwich {
		copy(dx[:n*d], tmp[:n*d])
	}
	return tmp
}

// sublayerGradIn adds to dx the gradient dh of the sublayer input.
func sublayerGradIn[F Float](dx, dh, xhat, rstd []F, n, d int, w, b *tensor[F], ln bool) {
	if w == nil {
		axpy(dx[:n*d], 1, dh[:n*d])
		return
	}
	normBack(dx, dh, xhat, rstd, n, d, w, b, ln)
}

func isSandwich(m *program.Model) bool { return placement(m) == program.SandwichNorm }
