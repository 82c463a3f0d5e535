package nn

import (
	"math"

	"github.com/moec-dev/moec/compiler/program"
)

// Llama 4's attention, per layer (program.Attention's NopeEvery, ChunkSize, QKL2Norm,
// NopeTemperature): the rotary layers rotate, attend within their chunk and RMS-normalise
// each head's rotated queries and keys without a scale; the others neither rotate nor
// chunk, and scale their queries at position p by 1 + τ·log(1 + floor((p+1)/floor)).

// llamaLayer is what a layer takes of Llama 4's attention.
type llamaLayer struct {
	rotary      bool    // the layer rotates its queries and keys (a rotary model but for nope_every)
	chunk       int     // the rotary layers' chunk (attention.chunk); 0: none
	l2          bool    // unscaled q/k norms after rotation (attention.qk_l2_norm)
	temperature float64 // nope_temperature in a layer without rotary positions; 0: none
	floor       float64
}

func newLlamaLayer(m *program.Model, i int) llamaLayer {
	a := m.Attention
	l := llamaLayer{rotary: m.Position == program.Rotary && a.Rotary(i)}
	if l.rotary {
		l.chunk, l.l2 = int(a.ChunkSize), a.QKL2Norm
	} else if a.NopeEvery > 0 && !a.Rotary(i) && a.NopeTemperature > 0 {
		l.temperature, l.floor = a.NopeTemperature, float64(a.NopeTemperatureFloor)
	}
	return l
}

// keyRange is the span of keys query i attends to in layer l: its chunk, or the causal
// prefix under the layer's window.
func (l *layer[F]) keyRange(i int) (int, int) {
	if l.llama.chunk > 0 {
		return i - i%l.llama.chunk, i + 1
	}
	return validRange(i, l.window)
}

// queryScale is the factor on the queries at position pos (1 without a temperature).
func (ll llamaLayer) queryScale(pos int) float64 {
	if ll.temperature == 0 {
		return 1
	}
	return 1 + ll.temperature*math.Log(1+math.Floor(float64(pos+1)/ll.floor))
}

// softmaxChunked is softmaxCausal over each query's chunk.
func softmaxChunked[F Float](p []F, T, chunk int, hasSink bool, sink F) {
	for i := 0; i < T; i++ {
		softmaxRowSink(p[i*T:(i+1)*T], i-i%chunk, i+1, hasSink, sink)
	}
}

// l2NormRows RMS-normalises each of the heads dh-wide pieces of n rows in place, keeping
// each piece's 1/rms in rstd ([n·heads]).
func l2NormRows[F Float](x, rstd []F, n, heads, dh int, eps float64) {
	for r := 0; r < n*heads; r++ {
		v := x[r*dh : (r+1)*dh]
		var ss float64
		for _, e := range v {
			ss += float64(e) * float64(e)
		}
		s := 1 / math.Sqrt(ss/float64(dh)+eps)
		rstd[r] = F(s)
		for j := range v {
			v[j] = F(float64(v[j]) * s)
		}
	}
}

// l2NormRowsBack turns dy, the gradient of the normalised pieces y, into the gradient of
// their inputs, in place: rstd·(dy − y·mean(dy⊙y)).
func l2NormRowsBack[F Float](dy, y, rstd []F, n, heads, dh int) {
	for r := 0; r < n*heads; r++ {
		g, v := dy[r*dh:(r+1)*dh], y[r*dh:(r+1)*dh]
		var m float64
		for j := range g {
			m += float64(g[j]) * float64(v[j])
		}
		m /= float64(dh)
		s := float64(rstd[r])
		for j := range g {
			g[j] = F(s * (float64(g[j]) - float64(v[j])*m))
		}
	}
}

// scaleQueries multiplies each of the n rows (width w, positions t % T) by the layer's
// query scale.
func scaleQueries[F Float](ll llamaLayer, q []F, n, w, T int) {
	if ll.temperature == 0 {
		return
	}
	for t := 0; t < n; t++ {
		scal(q[t*w:(t+1)*w], F(ll.queryScale(t%T)))
	}
}
