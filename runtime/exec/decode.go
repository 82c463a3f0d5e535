package exec

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/blas"
)

// Decode runs a decoding step program (step.LowerDecode): tokens[i] joins sequence i at
// position pos, and the next-token logits of every sequence come back ([batch, vocab],
// reused by the next call). The KV caches are the program's persistent buffers.
func (e *Executor) Decode(tokens []int32, pos int) ([]float32, error) {
	p := e.p
	tok, at, logits := e.named("tokens@0"), e.named("pos"), e.named("logits@0")
	if tok < 0 || at < 0 || logits < 0 {
		return nil, fmt.Errorf("exec: program %s is not a decoding step", p.Model)
	}
	if len(tokens) != len(e.i32[tok]) {
		return nil, fmt.Errorf("exec: %d tokens for %d sequences", len(tokens), len(e.i32[tok]))
	}
	if maxLen := e.p.Buffers[e.named("L0.k_cache")].Shape[1]; pos < 0 || pos >= maxLen || e.d.MaxPos > 0 && pos >= e.d.MaxPos {
		return nil, fmt.Errorf("exec: position %d outside the cache of %d positions", pos, maxLen)
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= e.d.V {
			return nil, fmt.Errorf("exec: token %d of sequence %d outside the vocabulary of %d", t, i, e.d.V)
		}
	}
	copy(e.i32[tok], tokens)
	e.i32[at][0] = int32(pos)
	for i := range p.Ops {
		if err := e.run(&p.Ops[i]); err != nil {
			return nil, fmt.Errorf("exec: op %d (%s): %w", i, p.Ops[i].Kind, err)
		}
	}
	return e.f32[logits], nil
}

func (e *Executor) named(name string) int {
	for i, b := range e.p.Buffers {
		if b.Name == name {
			return i
		}
	}
	return -1
}

// rotaryAt rotates every sequence's query and key row by position pos.
func (e *Executor) rotaryAt(q, k []float32, pos int) {
	half, dh := e.d.Dh/2, e.d.Dh
	if (pos+1)*half > len(e.cos) {
		e.growRope(pos + 1)
	}
	cs, sn := e.cos[pos*half:(pos+1)*half], e.sin[pos*half:(pos+1)*half]
	for _, x := range [][]float32{q, k} {
		for h := 0; h < len(x)/dh; h++ {
			v := x[h*dh : (h+1)*dh]
			for i := 0; i < half; i++ {
				c, s := float32(cs[i]), float32(sn[i])
				a, b := v[i], v[i+half]
				v[i] = a*c - b*s
				v[i+half] = b*c + a*s
			}
		}
	}
}

// growRope extends the rotary tables to n positions.
func (e *Kernels) growRope(n int) {
	half := e.d.Dh / 2
	for p := len(e.cos) / half; p < n; p++ {
		for i := 0; i < half; i++ {
			// The frequency in float32 first, as runtime/nn and Hugging Face compute it.
			inv := float32(1 / math.Pow(e.m.RopeBase, float64(2*i)/float64(e.d.Dh)))
			ang := float64(float32(p) * inv)
			e.cos, e.sin = append(e.cos, math.Cos(ang)), append(e.sin, math.Sin(ang))
		}
	}
}

// kvAppend writes each sequence's key and value row at the step's position in the caches.
func (e *Executor) kvAppend(op *step.Op) {
	k, v, pos := e.f32[op.In[0]], e.f32[op.In[1]], int(e.i32[op.In[2]][0])
	kc, vc := e.f32[op.Out[0]], e.f32[op.Out[1]]
	sh := e.p.Buffers[op.Out[0]].Shape // [batch, maxLen, KV·Dh]
	maxLen, w := sh[1], sh[2]
	for i := 0; i < sh[0]; i++ {
		at := (i*maxLen + pos) * w
		copy(kc[at:at+w], k[i*w:(i+1)*w])
		copy(vc[at:at+w], v[i*w:(i+1)*w])
	}
}

// attnDecode: each sequence's query against its cached keys 0..pos (per head, with
// talking-heads mixing around the softmax when the op has the mixing weights), then the
// weighted sum of the cached values.
func (e *Executor) attnDecode(op *step.Op) {
	q, kc, vc, pos := e.f32[op.In[0]], e.f32[op.In[1]], e.f32[op.In[2]], int(e.i32[op.In[3]][0])
	var pre, post []float32
	if len(op.In) > 5 {
		pre, post = e.f32[op.In[4]], e.f32[op.In[5]]
	}
	out := e.f32[op.Out[0]]
	sh := e.p.Buffers[op.In[1]].Shape
	B, maxLen, kvd := sh[0], sh[1], sh[2]
	Dh := e.d.Dh
	H := len(q) / (B * Dh)
	KV := kvd / Dh
	span := pos + 1
	sc := grow(&e.scratch.dst, 2*H*span)
	scale := float32(1 / math.Sqrt(float64(Dh)))
	for i := 0; i < B; i++ {
		s, mix := sc[:H*span], sc[H*span:]
		kci, vci := kc[i*maxLen*kvd:], vc[i*maxLen*kvd:]
		for h := 0; h < H; h++ {
			g := h / (H / KV)
			blas.Gemm(false, true, 1, span, Dh, scale, q[i*H*Dh+h*Dh:], Dh, kci[g*Dh:], kvd, 0, s[h*span:], span)
		}
		probs := s
		if pre != nil {
			mixRows(mix, s, pre, H, span)
			probs = mix
		}
		for h := 0; h < H; h++ {
			softmaxInPlace(probs[h*span : (h+1)*span])
		}
		if post != nil {
			mixRows(s, probs, post, H, span)
			probs = s
		}
		o := out[i*H*Dh : (i+1)*H*Dh]
		for h := 0; h < H; h++ {
			g := h / (H / KV)
			blas.Gemm(false, false, 1, Dh, span, 1, probs[h*span:], span, vci[g*Dh:], kvd, 0, o[h*Dh:], Dh)
		}
	}
}

// mixRows sets dst[h] = Σ_g w[h,g]·src[g] for rows of length span.
func mixRows(dst, src, w []float32, heads, span int) {
	clear(dst[:heads*span])
	for h := 0; h < heads; h++ {
		for g := 0; g < heads; g++ {
			c := w[h*heads+g]
			row, in := dst[h*span:(h+1)*span], src[g*span:(g+1)*span]
			for j, v := range in {
				row[j] += c * v
			}
		}
	}
}

// softmaxInPlace replaces a row by its softmax (the sum in float64).
func softmaxInPlace(row []float32) {
	mx := row[0]
	for _, v := range row {
		mx = max(mx, v)
	}
	var sum float64
	for j, v := range row {
		ex := math.Exp(float64(v - mx))
		row[j] = float32(ex)
		sum += ex
	}
	inv := 1 / sum
	for j := range row {
		row[j] = float32(float64(row[j]) * inv)
	}
}
