package exec

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/optim"
)

// SetOptimizer makes Run execute the program's update ops with runtime/optim's AdamW (the
// trainer's: its schedule, global-norm clipping and decay rule), over the parameter pieces
// this rank updates: every tensor it holds, or under ZeRO 1–3 its shard of each group's
// flat vector.
func (e *Executor) SetOptimizer(cfg optim.Config) error {
	// The asynchronous update is re-planned below over the new optimizer's tensors.
	overlap, delay := e.host != nil, e.host != nil && e.host.delay != nil
	if err := e.dropHostUpdate(); err != nil {
		return err
	}
	var ps []optim.Param
	var ms, vs [][]float32
	e.counted, e.pieces = e.counted[:0], e.pieces[:0]
	for _, g := range e.p.Groups {
		lo, hi := int64(g.Index)*g.Shard, int64(g.Index+1)*g.Shard
		// The group's AdamW moments in the arena: its flat vector (ZeRO 0) or shard.
		gm, gv := e.bufferNamed(step.KindOptimizer, "adam_m["+g.Name+"]"), e.bufferNamed(step.KindOptimizer, "adam_v["+g.Name+"]")
		base := lo
		if g.ZeRO == 0 {
			base = 0
		}
		var hostW, hostG []float32
		if e.p.Layout.OffloadOpt {
			// The update runs on the host: its weights (a master copy of this rank's part)
			// and gradients there, moved by the program's to_host and to_device ops.
			hostW = e.bufferNamed(step.KindOptimizer, "params["+g.Name+"]@host")
			hostG = e.bufferNamed(step.KindComm, "grads["+g.Name+"]@host")
			if hostW == nil || hostG == nil {
				return fmt.Errorf("exec: group %s is offloaded but the program has no host copies", g.Name)
			}
		}
		var shardW, shardG []float32
		if g.ZeRO == 3 {
			shardW = e.bufferNamed(step.KindParam, "params["+g.Name+"]")
		}
		if g.ZeRO >= 2 {
			shardG = e.bufferNamed(step.KindGrad, "grads["+g.Name+"]")
		}
		for i, b := range e.p.Buffers {
			if b.Param == nil || b.Flat < 0 || (b.Kind != step.KindGrad && b.Kind != step.KindActGrad) {
				continue
			}
			id := *b.Param
			tp := id.Shard
			id.Shard = params.Shard{}
			if e.groupName(id) != g.Name {
				continue
			}
			n := b.Elements()
			a, z := b.Flat, b.Flat+n
			if g.ZeRO >= 1 {
				a, z = max(lo, a), min(hi, z)
			}
			if a >= z {
				continue
			}
			var w, gr []float32
			switch g.ZeRO {
			case 3:
				w, gr = shardW[a-lo:z-lo], shardG[a-lo:z-lo]
			case 2:
				w, gr = e.Param(id)[a-b.Flat:z-b.Flat], shardG[a-lo:z-lo]
			default:
				w, gr = e.Param(id)[a-b.Flat:z-b.Flat], e.f32[i][a-b.Flat:z-b.Flat]
			}
			deviceG := gr // the reduced gradient the global norm reads
			if hostW != nil {
				w, gr = hostW[a-base:z-base], hostG[a-base:z-base]
			}
			ps = append(ps, optim.Param{Name: fmt.Sprintf("%s#%d", id, len(ps)), Shape: b.Shape, W: w, G: gr})
			if gm == nil || gv == nil || z-base > int64(len(gm)) {
				return fmt.Errorf("exec: no room for the moments of %s in the arena", id)
			}
			ms, vs = append(ms, gm[a-base:z-base]), append(vs, gv[a-base:z-base])
			e.pieces = append(e.pieces, piece{id: id, shard: tp, shape: b.Shape, lo: a - b.Flat, hi: z - b.Flat})
			// The global norm counts each value once: the part of the piece in this rank's
			// data-parallel partition (under ZeRO 0 every replica updates everything) and,
			// for a tensor every tp rank holds whole, on tp rank 0 only.
			e.counted = append(e.counted, countPiece{g: deviceG, lo: max(lo, a) - a, hi: min(hi, z) - a,
				replicatedTP: tp.Whole() && e.p.Layout.TP > 1, mirror: e.p.Mirrors(id)})
		}
	}
	// The moments live in the arena only: no second pair is allocated beside it.
	o, err := optim.NewAdamWOver(cfg, ps, ms, vs)
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	e.opt, e.optParams = o, ps
	switch {
	case delay:
		if _, err := e.SetDelayedUpdate(true); err != nil {
			return err
		}
	case overlap:
		if _, err := e.SetHostOverlap(true); err != nil {
			return err
		}
	}
	return nil
}

// piece is where an optimizer piece lies: elements [lo, hi) of the tensor-parallel slice
// shard (of shape shape) of parameter id.
type piece struct {
	id     params.ID
	shard  params.Shard
	shape  []int
	lo, hi int64
}

// countPiece says which part of an optimizer piece's reduced gradient g (on the device)
// counts toward the global norm.
type countPiece struct {
	g            []float32
	lo, hi       int64 // the part inside this rank's data-parallel partition
	replicatedTP bool  // every tp rank holds it: only tp rank 0 counts it
	mirror       bool  // a copy another stage counts: a tied embedding's or the router table's (step.Program.Mirrors)
}

func (e *Executor) bufferNamed(kind step.Kind, prefix string) []float32 {
	for i, b := range e.p.Buffers {
		if b.Kind == kind && b.Param == nil && len(b.Name) >= len(prefix) && b.Name[:len(prefix)] == prefix {
			return e.f32[i]
		}
	}
	return nil
}

func (e *Executor) groupName(id params.ID) string {
	if id.Role.Routed() && len(e.p.Groups) > 1 {
		return e.p.Groups[1].Name
	}
	return e.p.Groups[0].Name
}

// gradNorm writes the sum of squares of the gradients this rank counts toward the global
// norm: its data-parallel partition of each group, tensors every tp rank holds whole on
// tp rank 0 only. The program's all-reduces then sum it over dp, tp and pp.
func (e *Executor) gradNorm(op *step.Op) error {
	if e.opt == nil {
		return fmt.Errorf("the program has update ops but the executor has no optimizer (SetOptimizer)")
	}
	pieces := e.normPieces[:0]
	for _, c := range e.counted {
		if c.replicatedTP && e.p.Coord.TP != 0 || c.mirror || c.lo >= c.hi {
			continue
		}
		pieces = append(pieces, c.g[c.lo:c.hi])
	}
	e.normPieces = pieces
	sq := sumSquares(pieces, &e.scratch.terms)
	e.f32[op.Out[0]][0] = float32(sq)
	e.normSq = sq
	return nil
}

// update runs the optimizer once (at the step's first update op) with the global norm the
// program reduced.
func (e *Executor) update(op *step.Op) error {
	if e.opt == nil {
		return fmt.Errorf("the program has update ops but the executor has no optimizer (SetOptimizer)")
	}
	return e.AdamW(e.opt, e.f32[op.In[len(op.In)-1]], e.p.Layout.World()) // one rank: the unrounded sum
}

// hostRange is the flat range [base, base+n) a group's host copies (and shards) cover.
func (e *Executor) hostRange(g step.Group, n int) int64 {
	if g.ZeRO == 0 {
		return 0
	}
	return int64(g.Index) * g.Shard
}

// moveFlat copies between a group's flat part (part, starting at flat offset base) and
// the whole tensors bufs at their flat offsets: toPart gathers the tensors' values into the
// part, else the part's values go back into the tensors.
func (e *Executor) moveFlat(part []float32, base int64, bufs []int, toPart bool) {
	MoveFlat(part, base, e.views(bufs), e.flats(bufs), toPart)
}

// MoveFlat copies between part, a group's flat vector from offset base, and the tensors ts
// at their offsets flat in it: toPart gathers the tensors' values into the part (to_host),
// else the part's values go back into the tensors (to_device).
func MoveFlat(part []float32, base int64, ts [][]float32, flat []int64, toPart bool) {
	for i, t := range ts {
		f := flat[i]
		a, z := max(base, f), min(base+int64(len(part)), f+int64(len(t)))
		if a >= z {
			continue
		}
		if toPart {
			copy(part[a-base:z-base], t[a-f:z-f])
		} else {
			copy(t[a-f:z-f], part[a-base:z-base])
		}
	}
}

// offloadMove runs a to_host (gradients to the host copy) or to_device (updated weights
// back) op of group g.
func (e *Executor) offloadMove(op *step.Op) error {
	var g step.Group
	name := e.p.Buffers[op.Out[0]].Name
	if op.Kind == step.OpToDevice {
		name = e.p.Buffers[op.In[0]].Name
	}
	for _, gr := range e.p.Groups {
		if strings.HasPrefix(name, "params["+gr.Name+"]") || strings.HasPrefix(name, "grads["+gr.Name+"]") {
			g = gr
		}
	}
	if g.Name == "" {
		return fmt.Errorf("%s of %s names no parameter group", op.Kind, name)
	}
	if op.Kind == step.OpToHost {
		host := e.f32[op.Out[0]]
		if len(op.In) == 1 && e.p.Buffers[op.In[0]].Param == nil {
			copy(host, e.f32[op.In[0]]) // a reduce-scattered shard
			return nil
		}
		e.moveFlat(host, e.hostRange(g, len(host)), op.In, true)
		return nil
	}
	host := e.f32[op.In[0]]
	if len(op.Out) == 1 && e.p.Buffers[op.Out[0]].Param == nil {
		copy(e.f32[op.Out[0]], host) // the ZeRO-3 shard
		return nil
	}
	e.moveFlat(host, e.hostRange(g, len(host)), op.Out, false)
	return nil
}

// syncHostParams fills each offloaded group's host weights from the device's (after a
// load): the update reads them there.
func (e *Executor) syncHostParams() {
	if !e.p.Layout.OffloadOpt {
		return
	}
	for _, g := range e.p.Groups {
		host := e.bufferNamed(step.KindOptimizer, "params["+g.Name+"]@host")
		if host == nil {
			continue
		}
		if g.ZeRO == 3 {
			copy(host, e.bufferNamed(step.KindParam, "params["+g.Name+"]"))
			continue
		}
		var ps []int
		for i, b := range e.p.Buffers {
			if b.Kind == step.KindParam && b.Param != nil && e.f32[i] != nil && b.Flat >= 0 {
				id := *b.Param
				id.Shard = params.Shard{}
				if e.groupName(id) == g.Name {
					ps = append(ps, i)
				}
			}
		}
		e.moveFlat(host, e.hostRange(g, len(host)), ps, true)
	}
}
