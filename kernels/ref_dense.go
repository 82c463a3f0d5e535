package kernels

import (
	"fmt"
	"math"
)

func (sh Shape) refRMSNormFwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	d := int(sh.DModel)
	x, w, y, rstd := env.F["norm_in"], env.F["norm_w"], env.F["norm_out"], env.F["norm_rstd"]
	for t := 0; t < n; t++ {
		row := x[t*d : (t+1)*d]
		r := float32(1 / math.Sqrt(float64(dot32(row, row)/float32(d)+sh.NormEps)))
		rstd[t] = r
		for c := range row {
			y[t*d+c] = row[c] * r * w[c]
		}
	}
	return nil
}

func (sh Shape) refRMSNormBwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	d := int(sh.DModel)
	dy, x, w, rstd, dx := env.F["d_norm_out"], env.F["norm_in"], env.F["norm_w"], env.F["norm_rstd"], env.F["d_norm_in"]
	for t := 0; t < n; t++ {
		r := rstd[t]
		var dot float32
		for c := 0; c < d; c++ {
			dot += dy[t*d+c] * w[c] * x[t*d+c]
		}
		coef := r * r * r * dot / float32(d)
		for c := 0; c < d; c++ {
			dx[t*d+c] = r*dy[t*d+c]*w[c] - x[t*d+c]*coef
		}
	}
	return nil
}

func (sh Shape) refRMSNormWGrad(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	d := int(sh.DModel)
	dy, x, rstd, dw := env.F["d_norm_out"], env.F["norm_in"], env.F["norm_rstd"], env.F["d_norm_w"]
	clear(dw[:d])
	for t := 0; t < n; t++ {
		for c := 0; c < d; c++ {
			dw[c] += dy[t*d+c] * x[t*d+c] * rstd[t]
		}
	}
	return nil
}

func (sh Shape) refRotary(env Env, sign float32, src, dst string) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	seq, err := env.Int("seq")
	if err != nil {
		return err
	}
	nh, hd := int(sh.Heads), int(sh.HeadDim)
	half := hd / 2
	x, y, pos := env.F[src], env.F[dst], env.I["pos"]
	for t := 0; t < n; t++ {
		p := int(pos[t])
		if p < 0 || int64(p) >= seq {
			return fmt.Errorf("rotary: position %d outside [0,%d)", p, seq)
		}
		for h := 0; h < nh; h++ {
			b := (t*nh + h) * hd
			for i := 0; i < half; i++ {
				co, si := env.F["rope_cos"][p*half+i], sign*env.F["rope_sin"][p*half+i]
				a, c := x[b+i], x[b+i+half]
				y[b+i] = a*co - c*si
				y[b+i+half] = c*co + a*si
			}
		}
	}
	return nil
}

func (sh Shape) refRotaryFwd(env Env) error { return sh.refRotary(env, 1, "rot_in", "rot_out") }
func (sh Shape) refRotaryBwd(env Env) error { return sh.refRotary(env, -1, "d_rot_out", "d_rot_in") }

func attnDims(env Env) (rows, seq int, reuse bool, err error) {
	r, err := env.Int("rows")
	if err != nil {
		return 0, 0, false, err
	}
	s, err := env.Int("seq")
	if err != nil {
		return 0, 0, false, err
	}
	u, err := env.Int("reuse")
	return int(r), int(s), u != 0, err
}

func (sh Shape) refAttnSoftmaxFwd(env Env) error {
	rows, seq, reuse, err := attnDims(env)
	if err != nil {
		return err
	}
	scale := float32(1 / math.Sqrt(float64(sh.HeadDim)))
	sc, prev, p := env.F["att_scores"], env.F["att_prev"], env.F["att_probs"]
	for r := 0; r < rows; r++ {
		out := p[r*seq : (r+1)*seq]
		if reuse {
			copy(out, prev[r*seq:(r+1)*seq])
			continue
		}
		q := r%seq + 1
		mx := float32(negHuge)
		for j := 0; j < q; j++ {
			mx = max(mx, sc[r*seq+j]*scale)
		}
		var sum float32
		for j := 0; j < q; j++ {
			out[j] = float32(math.Exp(float64(sc[r*seq+j]*scale - mx)))
			sum += out[j]
		}
		for j := range out {
			if j < q {
				out[j] *= 1 / sum
			} else {
				out[j] = 0
			}
		}
	}
	return nil
}

func (sh Shape) refAttnSoftmaxBwd(env Env) error {
	rows, seq, reuse, err := attnDims(env)
	if err != nil {
		return err
	}
	scale := float32(1 / math.Sqrt(float64(sh.HeadDim)))
	dp, p, ds, dprev := env.F["d_att_probs"], env.F["att_probs"], env.F["d_att_scores"], env.F["d_att_prev"]
	for r := 0; r < rows; r++ {
		b := r * seq
		if reuse {
			clear(ds[b : b+seq])
			copy(dprev[b:b+seq], dp[b:b+seq])
			continue
		}
		dot := dot32(dp[b:b+seq], p[b:b+seq])
		for j := 0; j < seq; j++ {
			ds[b+j] = scale * p[b+j] * (dp[b+j] - dot)
			dprev[b+j] = 0
		}
	}
	return nil
}

func (sh Shape) refXentFwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	v := int(sh.Vocab)
	l := env.F["ce_logits"]
	for t := 0; t < n; t++ {
		row := l[t*v : (t+1)*v]
		tg := int(env.I["targets"][t])
		if tg < 0 || tg >= v {
			return fmt.Errorf("xent: target %d outside [0,%d)", tg, v)
		}
		mx := float32(negHuge)
		for _, x := range row {
			mx = max(mx, x)
		}
		var sum float32
		for _, x := range row {
			sum += float32(math.Exp(float64(x - mx)))
		}
		lse := mx + float32(math.Log(float64(sum)))
		env.F["ce_lse"][t] = lse
		env.F["ce_loss"][t] = lse - row[tg]
	}
	return nil
}

func (sh Shape) refXentBwd(env Env) error {
	n, err := tokens(env)
	if err != nil {
		return err
	}
	v := int(sh.Vocab)
	scale := float32(env.S["ce_scale"])
	l, dl := env.F["ce_logits"], env.F["d_ce_logits"]
	for t := 0; t < n; t++ {
		lse, tg := env.F["ce_lse"][t], int(env.I["targets"][t])
		for j := 0; j < v; j++ {
			p := float32(math.Exp(float64(l[t*v+j] - lse)))
			if j == tg {
				p--
			}
			dl[t*v+j] = scale * p
		}
	}
	return nil
}

func refAdamW(env Env) error {
	numel, err := env.Int("numel")
	if err != nil {
		return err
	}
	s := func(name string) float32 { return float32(env.S[name]) }
	lr, b1, b2, eps, wd, bc1, bc2 := s("lr"), s("beta1"), s("beta2"), s("eps"), s("wd"), s("bc1"), s("bc2")
	p, g, m, v := env.F["param"], env.F["grad"], env.F["adam_m"], env.F["adam_v"]
	for i := 0; i < int(numel); i++ {
		m[i] = b1*m[i] + (1-b1)*g[i]
		v[i] = b2*v[i] + (1-b2)*g[i]*g[i]
		p[i] -= lr * (m[i]/bc1/(float32(math.Sqrt(float64(v[i]/bc2)))+eps) + wd*p[i])
	}
	return nil
}
