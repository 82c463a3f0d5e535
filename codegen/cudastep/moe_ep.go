package cudastep

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/compiler/step"
)

// Expert parallelism (added for several ranks). Towards the experts an all_to_all_v turns
// a rank's [E, C, width] slots into [E/ep, ep·C, width]: each local expert's slots from
// every rank, padding included (runtime/exec's fill of an all-to-all's output is unknown,
// so its kernels compute every row, and the senders cleared their padding). The expert
// kernels read such a buffer through a constant fill record that covers every row of the
// local experts (exchangedRouting); back to the tokens, the exchanged [E, C, width] slots
// have the rank's own route's layout and fill again.

// exchangedBuffers marks the expert buffers of ops [0, upto) that hold exchanged slots: an
// all_to_all_v's output towards the experts (its input has E experts' rows), and what the
// grouped products and activations compute from them.
func exchangedBuffers(p *step.Program, upto, E int) map[int]bool {
	out := map[int]bool{}
	for j := 0; j < upto && j < len(p.Ops); j++ {
		op := &p.Ops[j]
		switch op.Kind {
		case step.OpAllToAllV:
			in := p.Buffers[op.In[0]]
			out[op.Out[0]] = len(in.Shape) == 3 && in.Shape[0] == E
		case step.OpGroupedMM, step.OpGroupedMMDX, step.OpAct:
			out[op.Out[0]] = out[op.In[0]]
		case step.OpActBwd:
			ex := out[op.In[0]] || (len(op.In) > 1 && out[op.In[1]])
			for _, o := range op.Out {
				out[o] = ex
			}
		case step.OpPermute, step.OpCombineBwd:
			out[op.Out[0]] = false
		}
	}
	return out
}

// exchangedFillPrefix names the constant fill records of exchanged slots.
const exchangedFillPrefix = "moe_fill_exchanged_"

// exchangedRouting is rt (the rank's route) for the exchanged slots of its local
// experts: E/ep experts of ep·C rows each, every row filled.
func (lw *moeLowering) exchangedRouting(rt routing) (routing, error) {
	ep := lw.p.Layout.EP
	if rt.packed || ep < 1 || rt.E%ep != 0 {
		return routing{}, fmt.Errorf("expert parallelism over %d ranks of a %s dispatch of %d experts is not lowered yet", ep, map[bool]string{true: "packed (dropless)", false: "blocked"}[rt.packed], rt.E)
	}
	local, slots := rt.E/ep, ep*rt.C
	rt.E, rt.C, rt.rows = local, slots, local*slots
	rt.maxTiles = local * ceilDiv(slots, moeTileM)
	rt.fill = WorkArg(PtrI32, fmt.Sprintf("%s%d_%d", exchangedFillPrefix, local, slots), int64(4*(4*local+1)))
	return rt, nil
}

// addExchangedFills adds the constant fill record of every exchanged-slots workspace the
// launches name to l.Consts: count, first, pad_end and the tile prefix (kernels_moe.cu's
// fill record), each int stored as the float with its bits.
func addExchangedFills(l *Lowered) error {
	for _, ol := range l.Ops {
		for _, ln := range ol.Launches {
			for _, a := range ln.Args {
				name, ok := strings.CutPrefix(a.Work, exchangedFillPrefix)
				if !ok || l.Consts[a.Work] != nil {
					continue
				}
				local, slots, ok := strings.Cut(name, "_")
				E, err1 := strconv.Atoi(local)
				C, err2 := strconv.Atoi(slots)
				if !ok || err1 != nil || err2 != nil {
					return fmt.Errorf("cudastep: fill record %s", a.Work)
				}
				rec := make([]int32, 4*E+1)
				tiles := int32(ceilDiv(C, moeTileM))
				for e := range E {
					rec[e] = int32(C)
					rec[E+e] = int32(e * C)
					rec[2*E+e] = int32((e + 1) * C)
					rec[3*E+e] = int32(e) * tiles
				}
				rec[4*E] = int32(E) * tiles
				vals := make([]float32, len(rec))
				for i, v := range rec {
					vals[i] = math.Float32frombits(uint32(v))
				}
				l.Consts[a.Work] = vals
			}
		}
	}
	return nil
}
