package kernels

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/program"
)

// Go reference implementations of the MoE kernels, written from the math rather than
// from the IR. They are also the runtime's fallback kernels, so they are plain loops.

func (sh Shape) dims() (d, e, k, h, r int) {
	return int(sh.DModel), int(sh.Experts), int(sh.TopK), int(sh.Hidden), int(sh.RouterDim)
}

func tokens(env Env) (int, error) {
	n, err := env.Int("n")
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("negative token count %d", n)
	}
	return int(n), nil
}

// routerRow returns the router input row of token t.
func (sh Shape) routerRow(env Env, t int) []float32 {
	r := int(sh.RouterDim)
	if sh.TokenRoute {
		id := int(env.I["ids"][t])
		return env.F["router_table"][id*r : (id+1)*r]
	}
	return env.F["x"][t*r : (t+1)*r]
}

func (sh Shape) refRouterLogits(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	_, e, _, _, r := sh.dims()
	w, probs := env.F["router_w"], env.F["router_probs"]
	for t := 0; t < n; t++ {
		in := sh.routerRow(env, t)
		for x := 0; x < e; x++ {
			acc := dot32(in, w[x*r:(x+1)*r])
			if sh.RouterBias {
				acc += env.F["router_b"][x]
			}
			probs[t*e+x] = acc
		}
	}
	return nil
}

func (sh Shape) refRouterFwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	_, e, k, _, _ := sh.dims()
	probs, idx, gate := env.F["router_probs"], env.I["expert_idx"], env.F["gate"]
	for t := 0; t < n; t++ {
		p := probs[t*e : (t+1)*e]
		mx := float32(negHuge)
		for _, l := range p {
			mx = max(mx, l)
		}
		var sum float64
		for _, l := range p {
			sum += math.Exp(float64(l - mx))
		}
		lse := float64(mx) + math.Log(sum)
		for x := range p {
			p[x] = program.RouterScore(sh.Score, p[x], lse)
		}
		// Top-k by a stable sort key: higher score first, lower index on ties.
		chosen := make([]bool, e)
		var gsum float32
		for j := 0; j < k; j++ {
			bi := -1
			for x := 0; x < e; x++ {
				if !chosen[x] && (bi < 0 || p[x] > p[bi]) {
					bi = x
				}
			}
			chosen[bi] = true
			idx[t*k+j], gate[t*k+j] = int32(bi), p[bi]
			gsum += p[bi]
		}
		if sh.Normalize {
			for j := 0; j < k; j++ {
				gate[t*k+j] *= 1 / gsum
			}
		}
	}
	return nil
}

func (sh Shape) refRouteIndex(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	_, e, k, _, _ := sh.dims()
	idx := env.I["expert_idx"]
	count, offset := env.I["expert_count"], env.I["expert_offset"]
	clear(count[:e])
	for a := 0; a < n*k; a++ {
		x := idx[a]
		if x < 0 || int(x) >= e {
			return fmt.Errorf("route_index: expert %d out of range [0,%d)", x, e)
		}
		count[x]++
	}
	var off int32
	for x := 0; x < e; x++ {
		offset[x] = off
		off += count[x]
	}
	next := append([]int32(nil), offset[:e]...)
	for a := 0; a < n*k; a++ {
		x := idx[a]
		s := next[x]
		next[x]++
		env.I["slot_token"][s] = int32(a / k)
		env.I["slot_expert"][s] = x
		env.I["slot_of"][a] = s
	}
	return nil
}

func (sh Shape) refPermuteFwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	d, _, k, _, _ := sh.dims()
	x, xp := env.F["x"], env.F["xp"]
	for s := 0; s < n*k; s++ {
		t := int(env.I["slot_token"][s])
		copy(xp[s*d:(s+1)*d], x[t*d:(t+1)*d])
	}
	return nil
}

func (sh Shape) refUnpermuteFwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	d, _, k, _, _ := sh.dims()
	ey, out, gate, slotOf := env.F["ey"], env.F["moe_out"], env.F["gate"], env.I["slot_of"]
	for t := 0; t < n; t++ {
		o := out[t*d : (t+1)*d]
		clear(o)
		for j := 0; j < k; j++ {
			s, g := int(slotOf[t*k+j]), gate[t*k+j]
			for c := range o {
				o[c] += g * ey[s*d+c]
			}
		}
	}
	return nil
}

func (sh Shape) refPermuteBwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	d, _, k, _, _ := sh.dims()
	dxp, dx, slotOf := env.F["d_xp"], env.F["d_x"], env.I["slot_of"]
	for t := 0; t < n; t++ {
		o := dx[t*d : (t+1)*d]
		clear(o)
		for j := 0; j < k; j++ {
			s := int(slotOf[t*k+j])
			for c := range o {
				o[c] += dxp[s*d+c]
			}
		}
	}
	return nil
}

func (sh Shape) refUnpermuteBwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	d, _, k, _, _ := sh.dims()
	dout, ey, gate, slotOf, dey, dgate := env.F["d_moe_out"], env.F["ey"], env.F["gate"], env.I["slot_of"], env.F["d_ey"], env.F["d_gate"]
	for t := 0; t < n; t++ {
		for j := 0; j < k; j++ {
			s, g := int(slotOf[t*k+j]), gate[t*k+j]
			var dg float32
			for c := 0; c < d; c++ {
				dey[s*d+c] = g * dout[t*d+c]
				dg += dout[t*d+c] * ey[s*d+c]
			}
			dgate[t*k+j] = dg
		}
	}
	return nil
}

func dot32(a, b []float32) float32 {
	var s float32
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func (sh Shape) refExpertUpFwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	d, _, k, h, _ := sh.dims()
	xp, w1, wg := env.F["xp"], env.F["w1"], env.F["wg"]
	for s := 0; s < n*k; s++ {
		e := int(env.I["slot_expert"][s])
		row := xp[s*d : (s+1)*d]
		for j := 0; j < h; j++ {
			w := (e*h + j) * d
			a := dot32(row, w1[w:w+d])
			env.F["ea"][s*h+j] = a
			if sh.gated() {
				g := dot32(row, wg[w:w+d])
				env.F["eg"][s*h+j] = g
				env.F["eh"][s*h+j] = act32(sh.Activation, g) * a
			} else {
				env.F["eh"][s*h+j] = act32(sh.Activation, a)
			}
		}
	}
	return nil
}

func (sh Shape) refExpertDownFwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	d, _, k, h, _ := sh.dims()
	eh, w2, ey := env.F["eh"], env.F["w2"], env.F["ey"]
	for s := 0; s < n*k; s++ {
		e := int(env.I["slot_expert"][s])
		for m := 0; m < d; m++ {
			w := (e*d + m) * h
			ey[s*d+m] = dot32(eh[s*h:(s+1)*h], w2[w:w+h])
		}
	}
	return nil
}

func (sh Shape) refExpertDownBwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	d, _, k, h, _ := sh.dims()
	dey, w2, ea := env.F["d_ey"], env.F["w2"], env.F["ea"]
	for s := 0; s < n*k; s++ {
		e := int(env.I["slot_expert"][s])
		for j := 0; j < h; j++ {
			var dh float32
			for m := 0; m < d; m++ {
				dh += dey[s*d+m] * w2[(e*d+m)*h+j]
			}
			a := ea[s*h+j]
			if sh.gated() {
				g := env.F["eg"][s*h+j]
				env.F["d_ea"][s*h+j] = dh * act32(sh.Activation, g)
				env.F["d_eg"][s*h+j] = dh * a * dact32(sh.Activation, g)
			} else {
				env.F["d_ea"][s*h+j] = dh * dact32(sh.Activation, a)
			}
		}
	}
	return nil
}

func (sh Shape) refExpertUpBwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	d, _, k, h, _ := sh.dims()
	dea, w1, dxp := env.F["d_ea"], env.F["w1"], env.F["d_xp"]
	for s := 0; s < n*k; s++ {
		e := int(env.I["slot_expert"][s])
		o := dxp[s*d : (s+1)*d]
		clear(o)
		for j := 0; j < h; j++ {
			w := (e*h + j) * d
			for c := range o {
				o[c] += dea[s*h+j] * w1[w+c]
				if sh.gated() {
					o[c] += env.F["d_eg"][s*h+j] * env.F["wg"][w+c]
				}
			}
		}
	}
	return nil
}

// refWeightGrad is dW[e] = dy[slots of e]^T x[slots of e].
func (sh Shape) refWeightGrad(env Env, dwName, dyName, xName string, ra, rb int) error {
	_, e, _, _, _ := sh.dims()
	dw, dy, x := env.F[dwName], env.F[dyName], env.F[xName]
	off, cnt := env.I["expert_offset"], env.I["expert_count"]
	for ex := 0; ex < e; ex++ {
		blk := dw[ex*ra*rb : (ex+1)*ra*rb]
		clear(blk)
		for s := int(off[ex]); s < int(off[ex]+cnt[ex]); s++ {
			for a := 0; a < ra; a++ {
				for b := 0; b < rb; b++ {
					blk[a*rb+b] += dy[s*ra+a] * x[s*rb+b]
				}
			}
		}
	}
	return nil
}

func (sh Shape) refExpertW2Grad(env Env) error {
	return sh.refWeightGrad(env, "d_w2", "d_ey", "eh", int(sh.DModel), int(sh.Hidden))
}
func (sh Shape) refExpertW1Grad(env Env) error {
	return sh.refWeightGrad(env, "d_w1", "d_ea", "xp", int(sh.Hidden), int(sh.DModel))
}
func (sh Shape) refExpertWgGrad(env Env) error {
	return sh.refWeightGrad(env, "d_wg", "d_eg", "xp", int(sh.Hidden), int(sh.DModel))
}

func (sh Shape) refRouterBwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	_, e, k, _, _ := sh.dims()
	dgate, gate, idx, probs, dl := env.F["d_gate"], env.F["gate"], env.I["expert_idx"], env.F["router_probs"], env.F["d_router_logits"]
	for t := 0; t < n; t++ {
		p := probs[t*e : (t+1)*e]
		// dp: gradient with respect to the score of each expert.
		dp := make([]float32, e)
		var ssum, gd float32
		for j := 0; j < k; j++ {
			ssum += p[idx[t*k+j]]
			gd += dgate[t*k+j] * gate[t*k+j]
		}
		for j := 0; j < k; j++ {
			g := dgate[t*k+j]
			if sh.Normalize {
				g = (g - gd) / ssum
			}
			dp[idx[t*k+j]] = g
		}
		program.RouterScoreGrad(sh.Score, p, dp)
		copy(dl[t*e:(t+1)*e], dp)
	}
	return nil
}

func (sh Shape) refRouterWGrad(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	_, e, _, _, r := sh.dims()
	dl, dw := env.F["d_router_logits"], env.F["d_router_w"]
	clear(dw[:e*r])
	if sh.RouterBias {
		clear(env.F["d_router_b"][:e])
	}
	for t := 0; t < n; t++ {
		in := sh.routerRow(env, t)
		for x := 0; x < e; x++ {
			g := dl[t*e+x]
			for c := 0; c < r; c++ {
				dw[x*r+c] += g * in[c]
			}
			if sh.RouterBias {
				env.F["d_router_b"][x] += g
			}
		}
	}
	return nil
}

func (sh Shape) refRouterInGrad(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	_, e, _, _, r := sh.dims()
	dl, w, din := env.F["d_router_logits"], env.F["router_w"], env.F["d_router_in"]
	clear(din[:n*r])
	for t := 0; t < n; t++ {
		for x := 0; x < e; x++ {
			for c := 0; c < r; c++ {
				din[t*r+c] += dl[t*e+x] * w[x*r+c]
			}
		}
	}
	return nil
}
