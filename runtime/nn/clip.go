package nn

// Clipped Q/K/V projections (attention.clip_qkv, as DBRX and the OLMo family clamp them):
// the queries and keys after their q/k norms, and the values, are clamped to [−c, c]
// before rotary positions; where the clamp cut, the gradient is zero.

// clipFwd clamps x to [−c, c] in place, keeping the values before the clamp in raw
// (nil where no backward follows).
func clipFwd[F Float](x, raw []F, c float64) {
	if raw != nil {
		copy(raw, x)
	}
	lim := F(c)
	for i, v := range x {
		x[i] = min(max(v, -lim), lim)
	}
}

// clipBack zeroes dy where clipFwd cut the values raw.
func clipBack[F Float](dy, raw []F, c float64) {
	lim := F(c)
	for i, v := range raw {
		if v < -lim || v > lim {
			dy[i] = 0
		}
	}
}
