package step

import "fmt"

// Evaluation is the forward-only program of a training program: the ops that run from the
// embedding to the loss (no backward, reduction or update, and no forward op that a
// recompute runs again), over only the buffers those ops touch, with a memory plan of its
// own. Nothing is kept for a backward, so an activation's place is reused as soon as its
// last reader has run: the arena holds the parameters and a few layers' worth of values,
// not every layer's. The loss it computes equals the training step's forward loss bit for
// bit (the same ops in the same order on the same values).
//
// Its loss op writes the loss alone, not the logits' gradient.
//
// A unified-cache program is refused: its fetches and evictions are scheduled for the
// whole step, backward included.
func Evaluation(p *Program) (*Program, error) {
	if p.Layout.Cache.On() {
		return nil, fmt.Errorf("step: %s/%s rank %d: an evaluation program of a unified-cache layout is not supported; evaluate under the same layout without --cache-budget", p.Model, p.Stage, p.Rank)
	}
	ev := *p
	ev.Ops = nil
	ev.CacheHits = 0
	remap := make([]int, len(p.Buffers))
	for i := range remap {
		remap[i] = -1
	}
	ev.Buffers = nil
	use := func(bufs []int) []int {
		out := make([]int, len(bufs))
		for j, b := range bufs {
			if remap[b] < 0 {
				remap[b] = len(ev.Buffers)
				nb := *p.Buffers[b]
				nb.Offset = 0
				ev.Buffers = append(ev.Buffers, &nb)
			}
			out[j] = remap[b]
		}
		return out
	}
	for _, op := range p.Ops {
		if op.Phase != Forward || op.Recomputed {
			continue
		}
		if (op.Kind == OpCrossEntropy || op.Kind == OpDistillLoss) && len(op.Out) == 2 {
			// The loss alone: the logits' gradient, [tokens, vocabulary], is not written.
			op.Out = op.Out[:1]
			if len(op.Acc) > 1 {
				op.Acc = op.Acc[:1]
			}
		}
		op.In = use(op.In)
		op.Out = use(op.Out)
		ev.Ops = append(ev.Ops, op)
	}
	if len(ev.Ops) == 0 {
		return nil, fmt.Errorf("step: %s/%s rank %d has no forward ops to evaluate", p.Model, p.Stage, p.Rank)
	}
	ev.Memory = planMemory(&ev)
	return &ev, nil
}
