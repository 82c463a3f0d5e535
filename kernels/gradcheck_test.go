package kernels

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// gradCase checks backward kernels against central differences of forward kernels: the
// loss is sum over (output, upstream) pairs of <output, upstream>, and grads maps each
// perturbed input buffer to the buffer holding its analytic gradient (computed by the
// fixture, which runs every reference kernel in order).
type gradCase struct {
	fwd   []string
	loss  [][2]string // output buffer, upstream gradient buffer (or "" for weight 1)
	grads map[string]string
	// keep: inputs that must not change the discrete routing when perturbed.
	keepRouting bool
}

func TestBackwardMatchesFiniteDifferences(t *testing.T) {
	cases := map[string]gradCase{
		"rmsnorm": {fwd: []string{"rmsnorm_fwd"}, loss: [][2]string{{"norm_out", "d_norm_out"}},
			grads: map[string]string{"norm_in": "d_norm_in", "norm_w": "d_norm_w"}},
		"xent": {fwd: []string{"xent_fwd"}, loss: [][2]string{{"ce_loss", "ce_scale"}},
			grads: map[string]string{"ce_logits": "d_ce_logits"}},
		"attention": {fwd: []string{"attn_softmax_fwd"}, loss: [][2]string{{"att_probs", "d_att_probs"}},
			grads: map[string]string{"att_scores": "d_att_scores"}},
		"rotary": {fwd: []string{"rotary_fwd"}, loss: [][2]string{{"rot_out", "d_rot_out"}},
			grads: map[string]string{"rot_in": "d_rot_in"}},
		"experts": {fwd: []string{"expert_up_fwd", "expert_down_fwd"}, loss: [][2]string{{"ey", "d_ey"}},
			grads: map[string]string{"xp": "d_xp", "w1": "d_w1", "w2": "d_w2", "wg": "d_wg"}},
		"unpermute": {fwd: []string{"unpermute_fwd"}, loss: [][2]string{{"moe_out", "d_moe_out"}},
			grads: map[string]string{"ey": "d_ey", "gate": "d_gate"}},
		"permute": {fwd: []string{"permute_fwd"}, loss: [][2]string{{"xp", "d_xp"}},
			grads: map[string]string{"x": "d_x"}},
		"router": {fwd: []string{"router_logits", "router_fwd"}, loss: [][2]string{{"gate", "d_gate"}}, keepRouting: true,
			grads: map[string]string{"router_w": "d_router_w", "x": "d_router_in", "router_b": "d_router_b"}},
	}
	for shName, sh := range SmallShapes() {
		ks, err := Set(sh)
		if err != nil {
			t.Fatal(err)
		}
		env, err := Fixture(ks, sh, 7, 7, 5)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(9, 9))
		for name, c := range cases {
			loss := func(e Env) float64 {
				for _, f := range c.fwd {
					if err := Find(ks, f).Ref(e); err != nil {
						t.Fatal(err)
					}
				}
				var l float64
				for _, pair := range c.loss {
					out := e.F[pair[0]]
					for i := range out {
						w, ok := e.S[pair[1]]
						if !ok {
							w = float64(e.F[pair[1]][i])
						}
						l += w * float64(out[i])
					}
				}
				return l
			}
			for input, grad := range c.grads {
				if _, ok := env.F[grad]; !ok || (input == "x" && c.keepRouting && sh.TokenRoute) {
					continue // this variant has no such parameter
				}
				for range 6 {
					i := rng.IntN(len(env.F[input]))
					const eps = 1e-2
					plus, minus := env.Clone(), env.Clone()
					plus.F[input][i] += eps
					minus.F[input][i] -= eps
					lp, lm := loss(plus), loss(minus)
					if c.keepRouting && (!slices.Equal(plus.I["expert_idx"], env.I["expert_idx"]) ||
						!slices.Equal(minus.I["expert_idx"], env.I["expert_idx"])) {
						continue // the perturbation changed the discrete top-k choice
					}
					num := (lp - lm) / (2 * eps)
					got := float64(env.F[grad][i])
					if math.Abs(num-got) > 2e-2+0.03*math.Abs(num) {
						t.Errorf("%s/%s: d%s[%d] = %g, finite difference %g", shName, name, input, i, got, num)
					}
				}
			}
		}
	}
}
