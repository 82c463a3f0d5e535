package nn

// ffnWS holds one feed-forward network's activations for up to n rows.
type ffnWS[F Float] struct {
	a, u, h []F // pre-activation, gated branch (nil when not gated), activated
	// inference marks a decoder's workspace, whose forward is never differentiated: its
	// activation may take the float32 approximation (gelu_fast.go).
	inference bool
}

func newFFNWS[F Float](f *ffnParams[F], n int) *ffnWS[F] {
	w := &ffnWS[F]{a: make([]F, n*f.hidden), h: make([]F, n*f.hidden)}
	if f.up != nil {
		w.u = make([]F, n*f.hidden)
	}
	return w
}

// ffnForward adds second(act(first·x) [· up·x]) to y for n rows of x.
func ffnForward[F Float](f *ffnParams[F], w *ffnWS[F], x, y []F, n int) {
	m := n * f.hidden
	var u []F
	if f.up != nil {
		u = w.u[:m]
	}
	// A gated FFN's quantised gate and up quantise x once (quantized.go).
	if f.up == nil || !linearShared(x, n, [3]*tensor[F]{f.first, f.up}, [3]*tensor[F]{f.firstB, f.upB}, [3][]F{w.a[:m], u}) {
		linear(w.a[:m], x, n, f.first, f.firstB, false)
		if f.up != nil {
			linear(u, x, n, f.up, f.upB, false)
		}
	}
	if f.clamp.on() {
		clampForward(f.clamp, w.h[:m], w.a[:m], u)
	} else if w.inference {
		activateInference(f.act, w.h[:m], w.a[:m], u)
	} else {
		activate(f.act, w.h[:m], w.a[:m], u)
	}
	linear(y, w.h[:m], n, f.second, f.secondB, true)
}

// ffnBackward accumulates the weight gradients and adds the gradient of x to dx (or
// overwrites dx when accumulate is false). It consumes w: the activations are overwritten
// by their gradients, since each forward is followed by at most one backward.
func ffnBackward[F Float](f *ffnParams[F], w *ffnWS[F], x, dy, dx []F, n int, accumulate bool) {
	m := n * f.hidden
	h := w.h[:m]
	// linearBack forms dW from h before it overwrites h with dh.
	linearBack(h, dy, h, n, f.second, f.secondB, false)
	var u []F
	if f.up != nil {
		u = w.u[:m]
	}
	a := w.a[:m]
	if f.clamp.on() {
		clampBackward(f.clamp, a, u, h, a, u)
	} else {
		activateBack(f.act, a, u, h, a, u)
	}
	linearBack(dx, a, x, n, f.first, f.firstB, accumulate)
	if f.up != nil {
		linearBack(dx, u, x, n, f.up, f.upB, true)
	}
}
