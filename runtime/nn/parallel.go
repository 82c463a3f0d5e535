package nn

// Snowflake Arctic's layer (moe.parallel_attention, its parallel_attn_mlp_res): in an MoE
// layer the experts read the layer's input x through the FFN norm, beside attention, and
// the dense FFN reads the post-attention stream through a norm of its own:
//
//	h = x + attn(norm1(x))
//	y = h + dense(normR(h)) + moe(norm2(x))
//
// The layer keeps norm2's statistics of x in its usual xhat2/rstd2/h2 and normR's in
// parallelWS; backward sends the experts' input gradient to the layer's input, past
// attention, through dIn.

// parallelWS holds one parallel_attention layer's extra buffers.
type parallelWS[F Float] struct {
	h, xhat []F // [N, D] normR(h), the dense FFN's input, and its normalised rows
	rstd    []F // [N]
	dIn     []F // [N, D] the experts' gradient with respect to the layer's input
}

func newParallelWS[F Float](n, d int) *parallelWS[F] {
	return &parallelWS[F]{h: make([]F, n*d), xhat: make([]F, n*d), rstd: make([]F, n), dIn: make([]F, n*d)}
}
