package nn

import (
	"errors"
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/quant"
)

// Serving a compressed checkpoint (runtime/compress): a tensor with a quantised matrix
// (tensor.q) multiplies through runtime/quant's integer kernels, and its float32 weights
// and gradient are released. Such a model evaluates, decodes and serves; it does not
// train.

// ErrQuantized refuses what a model with quantised weights cannot do: train, or hand its
// weights out as float32.
var ErrQuantized = errors.New("nn: the model holds quantised weights (a compressed checkpoint): it evaluates and generates, it does not train")

// SetQuantized replaces the float32 weights of the matrices named in qs (Hugging Face
// names, as Params lists them) by their quantised forms and releases the float32 weights
// and gradients. A matrix must be a linear layer's [out, in] weight or the embedding
// (gathered by row, or the tied head's product); the router, norms and biases stay
// float32. The other parameters keep the float32 values they hold.
func (m *Model) SetQuantized(qs map[string]*quant.Matrix) error {
	c := m.c
	if c.shard != nil {
		return fmt.Errorf("nn: quantised weights on a sharded model")
	}
	byName := make(map[string]*tensor[float32], len(c.params))
	for _, t := range c.params {
		byName[t.name] = t
	}
	for name, q := range qs {
		t, ok := byName[name]
		if !ok {
			return fmt.Errorf("nn: no parameter %s to quantise", name)
		}
		if len(t.shape) != 2 || q.Out != t.shape[0] || q.In != t.shape[1] {
			return fmt.Errorf("nn: quantised %s is [%d, %d], the parameter is %v", name, q.Out, q.In, t.shape)
		}
		if err := q.Check(); err != nil {
			return fmt.Errorf("nn: %s: %w", name, err)
		}
		if t == c.routerEmbed || isRouter(c, t) {
			return fmt.Errorf("nn: %s is a router; routers stay float32", name)
		}
		t.q = q
	}
	m.releaseQuantized()
	return nil
}

// NewQuantized builds model m with the matrices of qs quantised from the start: they get
// no float32 buffers and no initial values (nor does an MoE layer's contiguous expert
// buffer whose every expert is in qs), so loading a compressed checkpoint never holds its
// float32 weights. Every other parameter starts as New initialises it, for the caller to
// load.
func NewQuantized(m *program.Model, seed int64, qs map[string]*quant.Matrix) (*Model, error) {
	bare := func(name string) bool {
		if qs[name] != nil {
			return true
		}
		for _, w := range []string{"w1", "w2", "w3"} {
			prefix, ok := strings.CutSuffix(name, "experts."+w)
			if !ok || m.MoE == nil || m.MoE.Experts < 1 {
				continue
			}
			for e := 0; e < m.MoE.Experts; e++ {
				if qs[fmt.Sprintf("%sexperts.%d.%s.weight", prefix, e, w)] == nil {
					return false
				}
			}
			return true
		}
		return false
	}
	c, err := newCoreBare[float32](m, seed, 0, 0, bare)
	if err != nil {
		return nil, err
	}
	out, err := listParams(m, c)
	if err != nil {
		return nil, err
	}
	if err := out.SetQuantized(qs); err != nil {
		return nil, err
	}
	return out, nil
}

// isRouter says whether t is an MoE layer's router matrix.
func isRouter(c *core[float32], t *tensor[float32]) bool {
	for _, l := range c.layers {
		if l.moe != nil && l.moe.gate == t {
			return true
		}
	}
	return false
}

// releaseQuantized drops the float32 buffers of quantised tensors, and of contiguous
// expert storage once every view of it is quantised.
func (m *Model) releaseQuantized() {
	c := m.c
	whole := map[*tensor[float32]]bool{}
	for _, t := range c.params {
		if t.base != nil {
			if _, seen := whole[t.base]; !seen {
				whole[t.base] = true
			}
			whole[t.base] = whole[t.base] && t.q != nil
		}
	}
	for _, t := range c.params {
		if t.q != nil {
			t.w, t.g = nil, nil
		}
	}
	for base, all := range whole {
		if all {
			base.w, base.g = nil, nil
		}
	}
	for _, p := range m.params {
		for _, t := range c.params {
			if t.name == p.Name && t.q != nil {
				p.W, p.G = nil, nil
			}
		}
	}
	m.leaveArena()
	c.quantized = true
}

// Quantized reports whether the model holds quantised weights.
func (m *Model) Quantized() bool { return m.c.quantized }

// WeightBytes is the memory the model's weights take: 4 bytes a float32 value, and the
// values and scales of each quantised matrix (gradient buffers not counted).
func (m *Model) WeightBytes() int64 {
	var n int64
	for _, t := range m.c.params {
		if t.q != nil {
			n += t.q.Bytes()
		} else {
			n += 4 * int64(len(t.w))
		}
	}
	return n
}

// linearQuant is linear's product for a quantised weight (F is float32: only float32
// models are quantised).
func linearQuant[F Float](y, x []F, n int, w *tensor[F], accumulate bool) {
	w.q.MulT(any(y).([]float32), any(x).([]float32), n, accumulate)
}

// embedRow copies the embedding row of token id into dst, dequantising one row when the
// embedding is quantised.
func (c *core[F]) embedRow(dst []F, id int) {
	d := c.d.D
	q := c.embed.q
	if q == nil {
		copy(dst, c.embed.w[id*d:(id+1)*d])
		return
	}
	if q.Bits == 8 { // the row's bytes and scales directly: the values Scale·Q gives
		row, g := q.Data[id*d:(id+1)*d], q.Group
		scales := q.Scales[id*(d/g) : (id+1)*(d/g)]
		for k, v := range row {
			dst[k] = F(scales[k/g] * float32(int8(v)))
		}
		return
	}
	for k := range dst[:d] {
		dst[k] = F(q.Scale(id, k) * float32(q.Q(id, k)))
	}
}

// linearShared computes ys[j] = x·Wⱼᵀ (+ bias) for two or three quantised weights that
// read the same rows x (a layer's queries, keys and values; an FFN's gate and up), the
// rows quantised once and the products run in one call (quant.MulTShared): each output
// is what linear gives it. It reports false, and computes nothing, unless every weight is
// quantised (ws[2], bs[j] may be nil).
func linearShared[F Float](x []F, n int, ws [3]*tensor[F], bs [3]*tensor[F], ys [3][]F) bool {
	var ms [3]*quant.Matrix
	var out [3][]float32
	k := 0
	for j, w := range ws {
		if w == nil {
			continue
		}
		if w.q == nil {
			return false
		}
		ms[j], out[j] = w.q, any(ys[j]).([]float32)
		k = j + 1
	}
	if k < 2 || quant.MulTShared(any(x).([]float32), n, ms[:k], out[:k], false) != nil {
		return false
	}
	for j, b := range bs[:k] {
		if b == nil {
			continue
		}
		o := ws[j].shape[0]
		for i := 0; i < n; i++ {
			row := ys[j][i*o : (i+1)*o]
			for c, v := range b.w {
				row[c] += v
			}
		}
	}
	return true
}
