package cudastep

// The MoE ops of a rank's training program lowered to launches of kernels_moe.cu:
// route, route_bwd, permute, permute_bwd, grouped_matmul(_dx/_dw), combine, combine_bwd,
// and act/act_bwd on expert buffers. Semantics are runtime/exec's (kernels_moe.go,
// kernels_rows.go, kernels_act.go).
//
// Expert rows. runtime/exec carries each expert buffer's fill (which rows hold tokens)
// from op to op in Go; here a route's launches write a fill record into a workspace of
// its own (moe_fill_<kept buffer>: counts, first rows, padding ends and the prefix of row
// tiles), and lowerMoE finds, for each expert op, which route's record describes its
// buffers by following the ops as exec's kernels pass fills on (routeFills). The expert
// kernels read the record on the device: a grouped product's grid is sized for the most
// row tiles the dispatch could hold and the blocks past the filled tiles exit, so empty
// slots cost a block start and add nothing to the weight gradients. The padding of an
// output is cleared where exec clears it: when some reader of the buffer does not follow
// the fill (exec's MarkPaddingUnread).
//
// Expert weights. The memory plan places buffers largest first, ties by first use and
// then buffer order, so an MoE layer's expert matrices (one buffer each) sit among every
// other persistent buffer of the same size (the other projections', the gradients', the
// optimizer moments', other layers'). In hunyuan_tiny's programs they happen to repeat
// with an even stride (the lowering creates each expert's buffers in the same pattern),
// but nothing in the plan promises it. The grouped products take a table of the experts'
// device addresses instead (TableArg), which the host writes once: one 8-byte load per
// block.
//
// Statistics. The step's balance, z-loss and dropped-assignment totals, which exec adds
// into its Stats, are added by the route's last launch into the workspace moeStatsWork
// (float balance, float z-loss, int dropped; scaled by the step's mean as exec reports
// them); the host program clears it before a step and reads it after.
//
// Pipeline stages. Under pp an MoE layer lowers as it does on one rank: compiler/step
// gives each stage its own layers, so a stage's routes, dispatches and experts read and
// write its own buffers between the activations' receive and send (the gradients' on the
// way back; pipeline.go), and nothing of a route crosses stages. Each stage's statistics
// workspace holds its own layers' terms, which runtime/gpu's Ranks.Step sums over the
// stages as runtime/exec's Local.Step does; aux-free balancing's loads and bias updates are
// per layer, so per stage (its loads all-reduced over dp only). The token-embedding router
// table, which every stage's routers would read, is refused by compiler/step under pp
// (no lowering rule for it), as is attention-weight sharing, before this lowering sees it.

import (
	_ "embed"
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

//go:embed kernels_moe.cu
var moeSource string

// The launch geometry kernels_moe.cu is written for (its MOE_* constants).
const (
	moeRouteWarps   = 4
	moeRouteLaneMax = 64
	moeRankChunk    = 256
	moeScanThreads  = 1024
	moeTileM        = 64
	moeTileN        = 64
	moeGemmThreads  = 256
	moeRowWarps     = 4
	moeElemThreads  = 256
	// moeMaxExperts is the most experts a warp's registers hold in the top-k routing.
	moeMaxExperts = 32 * moeRouteLaneMax
	// moeMaxGroups is the most expert groups (moe.groups) moe_route_topk limits the choice
	// to (a 64-bit mask of the chosen groups).
	moeMaxGroups = 64
	// moeStatsWork is the workspace of the step's routing statistics (12 bytes: float
	// balance, float z-loss, int dropped), added to by every route that is not a
	// recomputation; the host program zeroes it before a step.
	moeStatsWork = "moe_step_stats"
)

// moeKernels is the signature table of kernels_moe.cu's kernels.
func moeKernels() []Kernel {
	return []Kernel{
		{"moe_route_topk", []ParamKind{PtrF32, PtrF32, PtrI32, PtrF32, PtrF32, PtrF32, I32, I32, I32, I32, I32, I32, I32, F32}},
		{"moe_route_rank", []ParamKind{PtrI32, I32, I32, I32, I32, PtrI32, PtrI32, I32, PtrI32, PtrI32}},
		{"moe_route_scan_adm", []ParamKind{PtrI32, I32, I32, PtrI32}},
		{"moe_route_scan_slot", []ParamKind{PtrI32, I32, I32, I32, I32, I32, PtrI32, PtrI32}},
		{"moe_route_slots", []ParamKind{PtrI32, PtrI32, PtrI32, PtrI32, I32, I32, I32, I32, PtrI32}},
		{"moe_route_balance", []ParamKind{PtrF32, PtrI32, I32, I32, I32, PtrF32}},
		{"moe_route_loss", []ParamKind{PtrF32, PtrF32, PtrI32, I32, I32, I32, F32, I32, PtrF32, PtrF32}},
		{"moe_route_bwd", []ParamKind{PtrF32, PtrF32, PtrI32, PtrF32, PtrF32, PtrF32, PtrI32, PtrF32, I32, I32, I32, I32, I32, F32, F32, F32, I32}},
		{"moe_permute", []ParamKind{PtrF32, PtrI32, PtrI32, PtrF32, I32, I32, I32, I32}},
		{"moe_permute_bwd", []ParamKind{PtrF32, PtrI32, PtrI32, PtrF32, I32, I32, I32, I32, I32}},
		{"moe_combine", []ParamKind{PtrF32, PtrI32, PtrI32, PtrF32, PtrF32, I32, I32, I32, I32}},
		{"moe_combine_bwd", []ParamKind{PtrF32, PtrF32, PtrI32, PtrI32, PtrF32, PtrF32, PtrF32, I32, I32, I32, I32, I32}},
		{"moe_clear_padding", []ParamKind{PtrF32, PtrI32, I32, I32}},
		{"moe_act", []ParamKind{PtrF32, PtrF32, PtrF32, PtrI32, I32, I32, I32}},
		{"moe_act_bwd", []ParamKind{PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, PtrI32, I32, I32, I32, I32, I32}},
		{"moe_grouped_mm", []ParamKind{PtrF32, PtrF32, PtrF32, PtrF32, PtrI32, I32, I32, I32}},
		{"moe_grouped_mm_dx", []ParamKind{PtrF32, PtrF32, PtrF32, PtrI32, I32, I32, I32, I32}},
		{"moe_grouped_mm_dw", []ParamKind{PtrF32, PtrF32, PtrF32, PtrI32, I32, I32, I32, I32}},
		{"moe_grouped_bias_dw", []ParamKind{PtrF32, PtrF32, PtrI32, I32, I32, I32}},
		{"moe_expert_load", []ParamKind{PtrI32, PtrF32, I32, I32}},
		{"moe_router_bias_update", []ParamKind{PtrF32, PtrF32, I32, I64, I64, F32}},
	}
}

// isMoEOp reports whether op i of p is lowered by lowerMoE: the routing, permutation,
// grouped-product and combination ops, and an activation (or its backward) over expert
// buffers, whose rows a route's fill describes.
func isMoEOp(p *step.Program, i int) bool {
	op := &p.Ops[i]
	switch op.Kind {
	case step.OpRouter, step.OpRouterBwd, step.OpPermute, step.OpPermuteBwd, step.OpGroupedMM, step.OpGroupedMMDX, step.OpGroupedMMDW,
		step.OpCombine, step.OpCombineBwd:
		return true
	case step.OpAct, step.OpActBwd:
		_, ok := actFill(p, routeFills(p, i), op)
		return ok
	}
	return false
}

// lowerMoE lowers op i of p, an MoE op of one rank's program of model m (one rank, or a
// rank under data, expert, tensor or pipeline parallelism), to its launches.
func lowerMoE(p *step.Program, m *program.Model, i int) ([]Launch, error) {
	if i < 0 || i >= len(p.Ops) {
		return nil, fmt.Errorf("cudastep: op %d of a program of %d ops", i, len(p.Ops))
	}
	op := &p.Ops[i]
	if m.MoE == nil {
		return nil, fmt.Errorf("cudastep: op %d (%s): model %s has no MoE block", i, op.Kind, m.Name)
	}
	d, err := m.Dims()
	if err != nil {
		return nil, fmt.Errorf("cudastep: op %d (%s): %w", i, op.Kind, err)
	}
	lw := &moeLowering{p: p, m: m, d: d, op: op, fills: routeFills(p, i), exchanged: exchangedBuffers(p, i, d.E)}
	var ls []Launch
	switch op.Kind {
	case step.OpRouter:
		ls, err = lw.route(i)
	case step.OpRouterBwd:
		ls, err = lw.routeBwd()
	case step.OpPermute:
		ls, err = lw.permute()
	case step.OpPermuteBwd:
		ls, err = lw.permuteBwd()
	case step.OpGroupedMM:
		ls, err = lw.groupedMM()
	case step.OpGroupedMMDX:
		ls, err = lw.groupedMMDX()
	case step.OpGroupedMMDW:
		ls, err = lw.groupedMMDW()
	case step.OpCombine:
		ls, err = lw.combine()
	case step.OpCombineBwd:
		ls, err = lw.combineBwd()
	case step.OpAct:
		ls, err = lw.act()
	case step.OpActBwd:
		ls, err = lw.actBwd()
	default:
		err = fmt.Errorf("not an MoE op")
	}
	if err != nil {
		return nil, fmt.Errorf("cudastep: op %d (%s, layer %d): %w", i, op.Kind, op.Layer, err)
	}
	return ls, nil
}

// moeLowering is the state of lowering one MoE op.
type moeLowering struct {
	p     *step.Program
	m     *program.Model
	d     program.Dims
	op    *step.Op
	fills map[int]int // expert buffer → the route op whose fill record describes it
	// exchanged are the expert buffers that hold the local experts' slots from every
	// expert-parallel rank (moe_ep.go).
	exchanged map[int]bool
}

// routeFills follows the expert buffers' fills through ops [0, upto) as runtime/exec's
// kernels pass them on (kernels_rows.go's setFill): a permute's output gets its route's,
// a grouped product's, activation's or combine backward's output its input's. The result
// maps each expert buffer to the op index of its route.
func routeFills(p *step.Program, upto int) map[int]int {
	fills := map[int]int{}
	routeOfIndex := map[int]int{} // a route's index buffer → the route op
	set := func(dst, route int, ok bool) {
		if ok {
			fills[dst] = route
		} else {
			delete(fills, dst)
		}
	}
	for j := 0; j < upto; j++ {
		op := &p.Ops[j]
		switch op.Kind {
		case step.OpRouter:
			routeOfIndex[op.Out[0]] = j
		case step.OpPermute:
			r, ok := routeOfIndex[op.In[1]]
			set(op.Out[0], r, ok)
		case step.OpGroupedMM, step.OpGroupedMMDX, step.OpAct:
			r, ok := fills[op.In[0]]
			set(op.Out[0], r, ok)
		case step.OpActBwd:
			r, ok := actFill(p, fills, op)
			for _, o := range op.Out {
				set(o, r, ok)
			}
		case step.OpCombineBwd:
			r, ok := fills[op.In[1]]
			set(op.Out[0], r, ok)
		case step.OpAllToAllV: // moe_ep.go: the exchanged slots keep their route
			r, ok := fills[op.In[0]]
			set(op.Out[0], r, ok)
		}
	}
	return fills
}

// actFill is the route whose fill an act or act_bwd op follows: its input's (act_bwd:
// the activation input's, else the incoming gradient's).
func actFill(p *step.Program, fills map[int]int, op *step.Op) (int, bool) {
	if op.Kind == step.OpActBwd {
		if r, ok := fills[op.In[1]]; ok {
			return r, true
		}
	}
	r, ok := fills[op.In[0]]
	return r, ok
}

// paddingRead reports whether some op of p reads buffer b's padding: it has a reader
// that does not follow the fill (or none at all), so the kernels writing it clear the
// padding, as runtime/exec's MarkPaddingUnread decides.
func paddingRead(p *step.Program, b int) bool {
	readers := 0
	for j := range p.Ops {
		for _, in := range p.Ops[j].In {
			if in != b {
				continue
			}
			readers++
			switch p.Ops[j].Kind {
			case step.OpGroupedMM, step.OpGroupedMMDX, step.OpGroupedMMDW, step.OpAct, step.OpActBwd,
				step.OpCombine, step.OpCombineBwd, step.OpPermuteBwd:
			default:
				return true
			}
		}
	}
	return readers == 0
}

// routing is what the expert kernels need of a route.
type routing struct {
	op        *step.Op
	n, E, K   int
	capacity  int  // slots per expert the admission allows
	packed    bool // packed dispatch: [rows, width]
	C         int  // blocked: rows of an expert's block; packed: 0
	rows      int  // a dispatch buffer's rows
	fill      Arg  // the route's fill record
	maxTiles  int  // the most fill tiles (MOE_TILE_M rows) the dispatch can hold
	keptBuf   int
	routedBuf int
}

// routingOf describes route op r.
func (lw *moeLowering) routingOf(r int) (routing, error) {
	op := &lw.p.Ops[r]
	if op.Kind != step.OpRouter || len(op.In) < 1 || len(op.In) > 2 || len(op.Out) != 8 {
		return routing{}, fmt.Errorf("op %d is not a route with its logits (and a selection bias) and eight outputs", r)
	}
	E, K := lw.d.E, lw.d.K
	logits := lw.p.Buffers[op.In[0]]
	if len(logits.Shape) != 2 || logits.Shape[1] != E {
		return routing{}, fmt.Errorf("router logits %s of shape %v, want [tokens, %d]", logits.Name, logits.Shape, E)
	}
	if E > moeMaxExperts {
		return routing{}, fmt.Errorf("%d experts: the warp-per-token routing holds at most %d", E, moeMaxExperts)
	}
	if K > 32 || K > E || K < 1 {
		return routing{}, fmt.Errorf("top_k %d: the routing kernels take 1 to min(32, experts %d)", K, E)
	}
	if op.Slots <= 0 {
		return routing{}, fmt.Errorf("route without a static capacity (slots %d)", op.Slots)
	}
	rt := routing{op: op, n: logits.Shape[0], E: E, K: K, capacity: op.Slots, packed: op.Packed, keptBuf: op.Out[5], routedBuf: op.Out[6]}
	if rt.packed {
		rt.rows = op.Slots
		rt.maxTiles = ceilDiv(rt.rows, moeTileM) + E
	} else {
		rt.C = op.Slots
		rt.rows = E * rt.C
		rt.maxTiles = E * ceilDiv(rt.C, moeTileM)
	}
	rt.fill = WorkArg(PtrI32, fmt.Sprintf("moe_fill_%d", rt.keptBuf), int64(4*(4*E+1)))
	return rt, nil
}

// routingFor is the route whose fill describes expert buffer b.
func (lw *moeLowering) routingFor(b int) (routing, error) {
	r, ok := lw.fills[b]
	if !ok {
		return routing{}, fmt.Errorf("expert buffer %s: no route's counts reach it (read before its permute)", lw.p.Buffers[b].Name)
	}
	rt, err := lw.routingOf(r)
	if err == nil && lw.exchanged[b] {
		return lw.exchangedRouting(rt) // moe_ep.go
	}
	return rt, err
}

// dispatchWidth checks that buffer b is an expert buffer of rt's layout and returns its
// width.
func (lw *moeLowering) dispatchWidth(rt routing, b int) (int, error) {
	buf := lw.p.Buffers[b]
	s := buf.Shape
	switch {
	case rt.packed && len(s) == 2 && s[0] == rt.rows:
		return s[1], nil
	case !rt.packed && len(s) == 3 && s[0] == rt.E && s[1] == rt.C:
		return s[2], nil
	}
	return 0, fmt.Errorf("expert buffer %s of shape %v does not match its route's dispatch (packed %v, experts %d, rows %d)", buf.Name, s, rt.packed, rt.E, rt.rows)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func f32(b int) Arg  { return BufArg(PtrF32, b) }
func i32(b int) Arg  { return BufArg(PtrI32, b) }
func ival(v int) Arg { return IntArg(I32, int64(v)) }

func moeFlag(v bool) Arg {
	if v {
		return ival(1)
	}
	return ival(0)
}

func grid(x, y, z int) [3]int { return [3]int{max(x, 1), max(y, 1), max(z, 1)} }

// lossScale is runtime/exec's: the step's mean over micro-batches and replicas.
func (lw *moeLowering) lossScale() float64 {
	return 1 / float64(max(lw.p.Batch.Micro, 1)*max(lw.p.Layout.DP, 1))
}

// route: top-k, admission and slots by two stable ranks (choice-major, then token-major)
// of chunk counts scanned over the chunks, then the loss terms.
func (lw *moeLowering) route(i int) ([]Launch, error) {
	if g := lw.d.Groups; g > 0 && (g > moeMaxGroups || lw.d.E%g != 0 || lw.d.TopKGroups < 1 || lw.d.TopKGroups > g) {
		return nil, fmt.Errorf("node-limited routing over %d groups (top %d) of %d experts: moe_route_topk takes 1 to %d groups that divide the experts", g, lw.d.TopKGroups, lw.d.E, moeMaxGroups)
	}
	rt, err := lw.routingOf(i)
	if err != nil {
		return nil, err
	}
	op := lw.op
	in, out := op.In, op.Out
	moe := lw.m.MoE
	n, E, K := rt.n, rt.E, rt.K
	assignments := n * K
	chunks := ceilDiv(assignments, moeRankChunk)
	rankAdm := WorkArg(PtrI32, "moe_route_rank_adm", int64(4*assignments))
	cntAdm := WorkArg(PtrI32, "moe_route_count_adm", int64(4*chunks*E))
	rankSlot := WorkArg(PtrI32, "moe_route_rank_slot", int64(4*assignments))
	cntSlot := WorkArg(PtrI32, "moe_route_count_slot", int64(4*chunks*E))
	terms := WorkArg(PtrF32, "moe_route_terms", int64(4*E))
	stats := WorkArg(PtrF32, moeStatsWork, 12)
	sigmoid := moe.Score == program.Sigmoid
	bias := NullArg(PtrF32) // auxiliary-loss-free balancing's selection bias
	if len(in) > 1 {
		if b := lw.p.Buffers[in[1]]; b.Elements() != int64(E) {
			return nil, fmt.Errorf("selection bias %s of %d elements for %d experts", b.Name, b.Elements(), E)
		}
		bias = f32(in[1])
	}
	rankBlock := [3]int{moeRankChunk, 1, 1}
	return []Launch{
		{Kernel: "moe_route_topk", Grid: grid(ceilDiv(n, moeRouteWarps), 1, 1), Block: [3]int{32 * moeRouteWarps, 1, 1},
			Args: []Arg{f32(in[0]), bias, i32(out[0]), f32(out[1]), f32(out[2]), f32(out[3]), ival(n), ival(E), ival(K), moeFlag(sigmoid), moeFlag(moe.Normalize),
				ival(lw.d.Groups), ival(lw.d.TopKGroups), FloatArg(float32(moe.RoutedScaleOrOne()))}},
		{Kernel: "moe_route_rank", Grid: grid(chunks, 1, 1), Block: rankBlock, Shared: 4 * E,
			Args: []Arg{i32(out[0]), ival(n), ival(K), ival(E), ival(0), rankAdm, cntAdm, ival(rt.capacity), rankAdm, cntAdm}},
		{Kernel: "moe_route_scan_adm", Grid: grid(ceilDiv(E, moeElemThreads), 1, 1), Block: [3]int{moeElemThreads, 1, 1},
			Args: []Arg{cntAdm, ival(chunks), ival(E), i32(rt.routedBuf)}},
		{Kernel: "moe_route_rank", Grid: grid(chunks, 1, 1), Block: rankBlock, Shared: 4 * E,
			Args: []Arg{i32(out[0]), ival(n), ival(K), ival(E), ival(1), rankAdm, cntAdm, ival(rt.capacity), rankSlot, cntSlot}},
		{Kernel: "moe_route_scan_slot", Grid: grid(1, 1, 1), Block: [3]int{moeScanThreads, 1, 1},
			Args: []Arg{cntSlot, ival(chunks), ival(E), moeFlag(rt.packed), ival(rt.C), ival(rt.rows), i32(rt.keptBuf), rt.fill}},
		{Kernel: "moe_route_slots", Grid: grid(ceilDiv(assignments, moeElemThreads), 1, 1), Block: [3]int{moeElemThreads, 1, 1},
			Args: []Arg{i32(out[0]), rankSlot, cntSlot, rt.fill, ival(n), ival(K), ival(E), moeFlag(rt.packed), i32(out[4])}},
		{Kernel: "moe_route_balance", Grid: grid(ceilDiv(E, 32), 1, 1), Block: [3]int{32, 8, 1},
			Args: []Arg{f32(out[2]), i32(rt.routedBuf), ival(n), ival(E), ival(K), terms}},
		{Kernel: "moe_route_loss", Grid: grid(1, 1, 1), Block: [3]int{256, 1, 1},
			Args: []Arg{terms, f32(out[3]), i32(rt.keptBuf), ival(n), ival(E), ival(K), FloatArg(float32(lw.lossScale())), moeFlag(op.Recomputed), f32(out[7]), stats}},
	}, nil
}

// routeBwd: the logits' gradient, a warp per token.
func (lw *moeLowering) routeBwd() ([]Launch, error) {
	op := lw.op
	if len(op.In) != 9 || len(op.Out) != 1 {
		return nil, fmt.Errorf("route_bwd with %d inputs and %d outputs, want 9 and 1", len(op.In), len(op.Out))
	}
	in := op.In
	moe := lw.m.MoE
	E, K := lw.d.E, lw.d.K
	n := int(lw.p.Buffers[in[1]].Elements()) / E
	scale := lw.lossScale()
	balance := moe.BalanceLoss * float64(E) / float64(n*K) / float64(n) * scale
	zcoef := moe.ZLoss * 2 / float64(n) * scale
	return []Launch{{Kernel: "moe_route_bwd", Grid: grid(ceilDiv(n, moeRouteWarps), 1, 1), Block: [3]int{32 * moeRouteWarps, 1, 1},
		Args: []Arg{f32(in[0]), f32(in[1]), i32(in[2]), f32(in[3]), f32(in[4]), f32(in[5]), i32(in[8]), f32(op.Out[0]),
			ival(n), ival(E), ival(K), moeFlag(moe.Score == program.Sigmoid), moeFlag(moe.Normalize),
			LossScaledArg(float32(balance)), LossScaledArg(float32(zcoef)), FloatArg(float32(moe.RoutedScaleOrOne())), moeFlag(op.Accumulates(0))}}}, nil
}

// clearPadding is the launch that zeros buffer b's padding rows (width wide), or none
// when no reader of b reads them.
func (lw *moeLowering) clearPadding(rt routing, b, width int) []Launch {
	if !paddingRead(lw.p, b) {
		return nil
	}
	perExpert := rt.C
	if rt.packed {
		perExpert = rt.rows
	}
	y := min(ceilDiv(perExpert*width, moeElemThreads), 64)
	return []Launch{{Kernel: "moe_clear_padding", Grid: grid(rt.E, y, 1), Block: [3]int{moeElemThreads, 1, 1},
		Args: []Arg{f32(b), rt.fill, ival(rt.E), ival(width)}}}
}

// rowLaunch is a launch of a warp-per-row kernel over rows rows.
func rowLaunch(kernel string, rows int, args ...Arg) Launch {
	return Launch{Kernel: kernel, Grid: grid(ceilDiv(rows, moeRowWarps), 1, 1), Block: [3]int{32 * moeRowWarps, 1, 1}, Args: args}
}

func (lw *moeLowering) permute() ([]Launch, error) {
	op := lw.op
	send := op.Out[0]
	// The permute starts its output's fill: its route is the one that wrote its index.
	r := -1
	for j := range lw.p.Ops {
		if o := &lw.p.Ops[j]; o == op {
			break
		} else if o.Kind == step.OpRouter && o.Out[0] == op.In[1] {
			r = j
		}
	}
	if r < 0 {
		return nil, fmt.Errorf("no route before it writes its index %s", lw.p.Buffers[op.In[1]].Name)
	}
	rt, err := lw.routingOf(r)
	if err != nil {
		return nil, err
	}
	D, err := lw.dispatchWidth(rt, send)
	if err != nil {
		return nil, err
	}
	ls := lw.clearPadding(rt, send, D)
	return append(ls, rowLaunch("moe_permute", rt.n*rt.K, f32(op.In[0]), i32(op.In[1]), i32(op.In[2]), f32(send), ival(rt.n), ival(rt.K), ival(rt.C), ival(D))), nil
}

func (lw *moeLowering) permuteBwd() ([]Launch, error) {
	op := lw.op
	rt, err := lw.routingFor(op.In[0])
	if err != nil {
		return nil, err
	}
	D, err := lw.dispatchWidth(rt, op.In[0])
	if err != nil {
		return nil, err
	}
	return []Launch{rowLaunch("moe_permute_bwd", rt.n, f32(op.In[0]), i32(op.In[1]), i32(op.In[2]), f32(op.Out[0]),
		ival(rt.n), ival(rt.K), ival(rt.C), ival(D), moeFlag(op.Accumulates(0)))}, nil
}

func (lw *moeLowering) combine() ([]Launch, error) {
	op := lw.op
	rt, err := lw.routingFor(op.In[0])
	if err != nil {
		return nil, err
	}
	D, err := lw.dispatchWidth(rt, op.In[0])
	if err != nil {
		return nil, err
	}
	return []Launch{rowLaunch("moe_combine", rt.n, f32(op.In[0]), i32(op.In[1]), i32(op.In[2]), f32(op.In[3]), f32(op.Out[0]),
		ival(rt.n), ival(rt.K), ival(rt.C), ival(D))}, nil
}

func (lw *moeLowering) combineBwd() ([]Launch, error) {
	op := lw.op
	back, dback := op.In[1], op.Out[0]
	rt, err := lw.routingFor(back)
	if err != nil {
		return nil, err
	}
	D, err := lw.dispatchWidth(rt, back)
	if err != nil {
		return nil, err
	}
	ls := lw.clearPadding(rt, dback, D)
	return append(ls, rowLaunch("moe_combine_bwd", rt.n*rt.K, f32(op.In[0]), f32(back), i32(op.In[2]), i32(op.In[3]), f32(op.In[4]),
		f32(dback), f32(op.Out[1]), ival(rt.n), ival(rt.K), ival(rt.C), ival(D), moeFlag(op.Accumulates(1)))), nil
}

// experts splits a grouped product's parameter buffers into the experts' weights and
// biases (each bias follows its weight), with the weights' [out, in] shape.
func (lw *moeLowering) experts(bufs []int) (w, b []int, out, in int, err error) {
	for _, i := range bufs {
		buf := lw.p.Buffers[i]
		if buf.Param != nil && buf.Param.Bias {
			if len(w) != len(b)+1 {
				return nil, nil, 0, 0, fmt.Errorf("bias %s follows no weight", buf.Name)
			}
			b = append(b, i)
			continue
		}
		if len(buf.Shape) != 2 {
			return nil, nil, 0, 0, fmt.Errorf("expert weight %s of shape %v, want [out, in]", buf.Name, buf.Shape)
		}
		if len(w) > 0 && (buf.Shape[0] != out || buf.Shape[1] != in) {
			return nil, nil, 0, 0, fmt.Errorf("expert weight %s of shape %v, the first's is [%d %d]", buf.Name, buf.Shape, out, in)
		}
		if len(b) != len(w) && len(b) > 0 {
			return nil, nil, 0, 0, fmt.Errorf("expert weight %s: some experts have biases and some not", buf.Name)
		}
		w = append(w, i)
		out, in = buf.Shape[0], buf.Shape[1]
	}
	if len(b) > 0 && len(b) != len(w) {
		return nil, nil, 0, 0, fmt.Errorf("%d expert biases for %d weights", len(b), len(w))
	}
	if len(w) != lw.d.E/max(lw.p.Layout.EP, 1) {
		return nil, nil, 0, 0, fmt.Errorf("%d expert weights for %d experts", len(w), lw.d.E/max(lw.p.Layout.EP, 1))
	}
	return w, b, out, in, nil
}

func (lw *moeLowering) groupedMM() ([]Launch, error) {
	op := lw.op
	x, y := op.In[0], op.Out[0]
	rt, err := lw.routingFor(x)
	if err != nil {
		return nil, err
	}
	w, b, o, k, err := lw.experts(op.In[1:])
	if err != nil {
		return nil, err
	}
	if err := lw.widths(rt, map[int]int{x: k, y: o}); err != nil {
		return nil, err
	}
	bias := NullArg(PtrF32)
	if len(b) > 0 && (lw.p.Coord.TP == 0 || !op.BiasOnTPRank0) {
		bias = TableArg(b)
	}
	ls := lw.clearPadding(rt, y, o)
	return append(ls, Launch{Kernel: "moe_grouped_mm", Grid: grid(rt.maxTiles, ceilDiv(o, moeTileN), 1), Block: [3]int{moeGemmThreads, 1, 1},
		Args: []Arg{f32(x), f32(y), TableArg(w), bias, rt.fill, ival(rt.E), ival(o), ival(k)}}), nil
}

func (lw *moeLowering) groupedMMDX() ([]Launch, error) {
	op := lw.op
	dy, dx := op.In[0], op.Out[0]
	rt, err := lw.routingFor(dy)
	if err != nil {
		return nil, err
	}
	w, _, o, k, err := lw.experts(op.In[1:])
	if err != nil {
		return nil, err
	}
	if err := lw.widths(rt, map[int]int{dy: o, dx: k}); err != nil {
		return nil, err
	}
	acc := op.Accumulates(0)
	var ls []Launch
	if !acc {
		ls = lw.clearPadding(rt, dx, k)
	}
	return append(ls, Launch{Kernel: "moe_grouped_mm_dx", Grid: grid(rt.maxTiles, ceilDiv(k, moeTileN), 1), Block: [3]int{moeGemmThreads, 1, 1},
		Args: []Arg{f32(dy), f32(dx), TableArg(w), rt.fill, ival(rt.E), ival(o), ival(k), moeFlag(acc)}}), nil
}

func (lw *moeLowering) groupedMMDW() ([]Launch, error) {
	op := lw.op
	dy, x := op.In[0], op.In[1]
	rt, err := lw.routingFor(x)
	if err != nil {
		if rt, err = lw.routingFor(dy); err != nil {
			return nil, err
		}
	}
	w, b, o, k, err := lw.experts(op.Out)
	if err != nil {
		return nil, err
	}
	if err := lw.widths(rt, map[int]int{dy: o, x: k}); err != nil {
		return nil, err
	}
	acc := moeFlag(op.Accumulates(0))
	ls := []Launch{{Kernel: "moe_grouped_mm_dw", Grid: grid(ceilDiv(k, moeTileN), ceilDiv(o, moeTileM), rt.E), Block: [3]int{moeGemmThreads, 1, 1},
		Args: []Arg{f32(dy), f32(x), TableArg(w), rt.fill, ival(rt.E), ival(o), ival(k), acc}}}
	if len(b) > 0 {
		ls = append(ls, Launch{Kernel: "moe_grouped_bias_dw", Grid: grid(ceilDiv(o, moeElemThreads), rt.E, 1), Block: [3]int{moeElemThreads, 1, 1},
			Args: []Arg{f32(dy), TableArg(b), rt.fill, ival(rt.E), ival(o), acc}})
	}
	return ls, nil
}

// widths checks each expert buffer's width.
func (lw *moeLowering) widths(rt routing, want map[int]int) error {
	for b, w := range want {
		got, err := lw.dispatchWidth(rt, b)
		if err != nil {
			return err
		}
		if got != w {
			return fmt.Errorf("expert buffer %s is %d wide, the weights want %d", lw.p.Buffers[b].Name, got, w)
		}
	}
	return nil
}

// actCode is kernels_moe.cu's number for an activation (MOE_ACT_*).
func actCode(a program.Activation) (int, error) {
	switch a {
	case program.ReLU:
		return 0, nil
	case program.GELU, program.GeGLU:
		return 1, nil
	case program.SiLU, program.SwiGLU:
		return 2, nil
	}
	return 0, fmt.Errorf("activation %q has no expert kernel", a)
}

func (lw *moeLowering) act() ([]Launch, error) {
	op := lw.op
	a, h := op.In[0], op.Out[0]
	rt, err := lw.routingFor(a)
	if err != nil {
		return nil, err
	}
	code, err := actCode(op.Activation)
	if err != nil {
		return nil, err
	}
	width, err := lw.dispatchWidth(rt, a)
	if err != nil {
		return nil, err
	}
	u := NullArg(PtrF32)
	if len(op.In) > 1 {
		u = f32(op.In[1])
	}
	ls := lw.clearPadding(rt, h, width)
	return append(ls, Launch{Kernel: "moe_act", Grid: grid(rt.maxTiles, 1, 1), Block: [3]int{moeElemThreads, 1, 1},
		Args: []Arg{f32(a), u, f32(h), rt.fill, ival(rt.E), ival(width), ival(code)}}), nil
}

func (lw *moeLowering) actBwd() ([]Launch, error) {
	op := lw.op
	r, ok := actFill(lw.p, lw.fills, op)
	if !ok {
		return nil, fmt.Errorf("activation buffer %s: no route's counts reach it", lw.p.Buffers[op.In[1]].Name)
	}
	rt, err := lw.routingOf(r)
	if err == nil && lw.exchanged[op.In[1]] {
		rt, err = lw.exchangedRouting(rt) // moe_ep.go
	}
	if err != nil {
		return nil, err
	}
	code, err := actCode(op.Activation)
	if err != nil {
		return nil, err
	}
	width, err := lw.dispatchWidth(rt, op.In[1])
	if err != nil {
		return nil, err
	}
	u, du := NullArg(PtrF32), NullArg(PtrF32)
	accA, accU := op.Accumulates(0), len(op.Out) > 1 && op.Accumulates(1)
	var ls []Launch
	if len(op.In) > 2 {
		if len(op.Out) < 2 {
			return nil, fmt.Errorf("gated act_bwd without the up projection's gradient")
		}
		u, du = f32(op.In[2]), f32(op.Out[1])
		if !accU {
			ls = append(ls, lw.clearPadding(rt, op.Out[1], width)...)
		}
	}
	if !accA {
		ls = append(ls, lw.clearPadding(rt, op.Out[0], width)...)
	}
	return append(ls, Launch{Kernel: "moe_act_bwd", Grid: grid(rt.maxTiles, 1, 1), Block: [3]int{moeElemThreads, 1, 1},
		Args: []Arg{f32(op.In[0]), f32(op.In[1]), u, f32(op.Out[0]), du, rt.fill, ival(rt.E), ival(width), ival(code), moeFlag(accA), moeFlag(accU)}}), nil
}
