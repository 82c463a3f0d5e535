package step

import "fmt"

// Attention-weight sharing (share_weights < 1, HunYuan) under pipeline parallelism: a
// layer whose die says reuse takes the selected attention weights of the layer below, and
// a stage's first layer's layer below is the previous stage's last. So each stage sends,
// after each micro-batch's activations, its last layer's selected weights
// ([micro_batch, heads on this tp rank, seq_len, seq_len]) to the next stage, which
// receives them after the activations and feeds them to its first layer's share_select,
// as one device would; in the backward the gradient of those weights goes back after the
// activations' gradient (share_select_bwd writes it whichever way the die fell: zeros
// where the layer recomputed its own) and the previous stage seeds its last layer's
// weights' gradient with it, its own use in attn_av adding to it. The dice are drawn per
// layer from the step's seed on every rank (runtime/exec), so every stage throws the
// same ones one device throws, and the model computes exactly what one device computes.

// sharesAcrossStages reports whether this rank's stage exchanges attention weights with
// its neighbours: attention-weight sharing under pp (latent attention keeps no weights to
// share).
func (lw *lowerer) sharesAcrossStages() bool {
	a := lw.m.Attention
	return lw.l.PP > 1 && a.SharesWeights() && !a.LatentAttention()
}

// probsShape is one micro-batch's attention weights on this rank.
func (lw *lowerer) probsShape() []int {
	T := lw.b.SeqLen
	return []int{lw.b.MicroBatch, lw.hLocal, T, T}
}

// recvProbs emits, on a stage after the first, the receive of the previous stage's last
// layer's attention weights (after the activations); -1 when the stages share none.
func (lw *lowerer) recvProbs() int {
	if !lw.sharesAcrossStages() {
		return -1
	}
	b := lw.act("probs_in", KindComm, lw.probsShape()...)
	lw.emit(Op{Kind: OpRecv, Phase: Forward, Layer: lw.p.FirstLayer, Out: []int{b}, Peer: lw.peer(lw.c.PP - 1), Group: "pp",
		Attr: "attention weights", Bytes: lw.p.Buffers[b].Bytes()})
	return b
}

// sendProbs emits, on a stage before the last, the send of its last layer's attention
// weights probs (after the activations), and returns the buffer sent (-1: none).
func (lw *lowerer) sendProbs(probs int) int {
	if !lw.sharesAcrossStages() {
		return -1
	}
	if probs < 0 {
		panic(fmt.Sprintf("step: internal error: stage %d's last layer left no attention weights to share", lw.c.PP))
	}
	lw.emit(Op{Kind: OpSend, Phase: Forward, Layer: lw.p.FirstLayer + lw.p.LayerCount - 1, In: []int{probs}, Peer: lw.peer(lw.c.PP + 1), Group: "pp",
		Attr: "attention weights", Bytes: lw.p.Buffers[probs].Bytes()})
	return probs
}

// recvProbsGrad emits, on a stage before the last, the receive of the gradient of the
// attention weights it sent (after the activations' gradient) and seeds their gradient
// with it.
func (lw *lowerer) recvProbsGrad(probsOut int) {
	if probsOut < 0 {
		return
	}
	d := lw.act("dprobs_out", KindComm, lw.p.Buffers[probsOut].Shape...)
	lw.emit(Op{Kind: OpRecv, Phase: Backward, Layer: lw.p.FirstLayer + lw.p.LayerCount - 1, Out: []int{d}, Peer: lw.peer(lw.c.PP + 1), Group: "pp",
		Attr: "attention weights' gradients", Bytes: lw.p.Buffers[d].Bytes()})
	lw.gradOf[probsOut] = d
	lw.written[d] = true
}

// sendProbsGrad emits, on a stage after the first, the send of the gradient of the
// attention weights it received (after the activations' gradient).
func (lw *lowerer) sendProbsGrad(probsIn int) {
	if probsIn < 0 {
		return
	}
	g, ok := lw.gradOf[probsIn]
	if !ok {
		panic("step: internal error: the received attention weights have no gradient")
	}
	lw.emit(Op{Kind: OpSend, Phase: Backward, Layer: lw.p.FirstLayer, In: []int{g}, Peer: lw.peer(lw.c.PP - 1), Group: "pp",
		Attr: "attention weights' gradients", Bytes: lw.p.Buffers[g].Bytes()})
}
