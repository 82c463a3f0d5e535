package kernels

import "fmt"

// Set returns every kernel specialised to sh, checked, in a fixed order (forward MoE,
// backward MoE, then the dense kernels): the order of generated files and functions.
func Set(sh Shape) ([]*Kernel, error) {
	if err := sh.Validate(); err != nil {
		return nil, err
	}
	ks := []*Kernel{
		sh.routerLogits(), sh.routerFwd(), sh.routeIndex(), sh.permuteFwd(), sh.expertUpFwd(), sh.expertDownFwd(), sh.unpermuteFwd(),
		sh.unpermuteBwd(), sh.expertDownBwd(),
		sh.expertWeightGrad("expert_w2_grad", "d_w2", "d_ey", "eh", cD(), cH(), sh.refExpertW2Grad),
		sh.expertUpBwd(),
		sh.expertWeightGrad("expert_w1_grad", "d_w1", "d_ea", "xp", cH(), cD(), sh.refExpertW1Grad),
	}
	if sh.gated() {
		ks = append(ks, sh.expertWeightGrad("expert_wg_grad", "d_wg", "d_eg", "xp", cH(), cD(), sh.refExpertWgGrad))
	}
	ks = append(ks, sh.permuteBwd(), sh.routerBwd(), sh.routerWGrad(), sh.routerInGrad(),
		sh.rmsnormFwd(), sh.rmsnormBwd(), sh.rmsnormWGrad(),
		sh.rotary("rotary_fwd", 1, "rot_in", "rot_out", sh.refRotaryFwd),
		sh.rotary("rotary_bwd", -1, "d_rot_out", "d_rot_in", sh.refRotaryBwd),
		sh.attnSoftmaxFwd(), sh.attnSoftmaxBwd(), sh.xentFwd(), sh.xentBwd(), sh.adamw())
	for _, k := range ks {
		if err := k.check(); err != nil {
			return nil, fmt.Errorf("kernel description: %w", err)
		}
	}
	return ks, nil
}

// Find returns the kernel with the given name.
func Find(ks []*Kernel, name string) *Kernel {
	for _, k := range ks {
		if k.Name == name {
			return k
		}
	}
	return nil
}
