package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
)

// An Axis is one way of splitting a step over ranks. The table (Axes) is read by layout
// validation (what must divide what), by lowering (which collectives an axis inserts and
// which ranks form its groups) and by the listing; a new axis is one entry here and its
// lowering rules.
type Axis struct {
	Name string
	// Size is the axis' extent in a layout.
	Size func(Layout) int
	// Divides lists what the axis splits: each must be a multiple of Size.
	Divides []Split
	// Splits says, for the listing and the docs, how the axis divides buffers.
	Splits string
	// Inserts names the communication the axis adds to a step.
	Inserts string
	// Members lists the coordinates of c's group along the axis, in rank order.
	Members func(l Layout, c Coord) []Coord
}

// Split is one quantity an axis divides.
type Split struct {
	What  string // as the user wrote it: "heads", "layers"
	Value func(d program.Dims, b Batch) int
	// Key is the model entry the diagnostic points at ("attention.heads").
	Key string
}

// Axes is the table of parallel axes (a function, so no caller can change the table).
func Axes() []Axis {
	return []Axis{
		{
			Name: "tp", Size: func(l Layout) int { return l.TP },
			Divides: []Split{
				{"heads", func(d program.Dims, _ Batch) int { return d.H }, "attention.heads"},
				{"kv_heads", func(d program.Dims, _ Batch) int {
					if d.KV == d.H {
						return 0 // the heads' rule says it
					}
					return d.KV
				}, "attention.kv_heads"},
				{"ffn.hidden", func(d program.Dims, _ Batch) int { return d.Hidden }, "ffn.hidden"},
				{"moe.expert_hidden", func(d program.Dims, _ Batch) int { return d.EHidden }, "moe.expert_hidden"},
				{"moe.shared_hidden", func(d program.Dims, _ Batch) int { return d.SHidden }, "moe.shared_hidden"},
				{"vocab (padded)", func(d program.Dims, _ Batch) int { return d.V }, "vocab"},
			},
			Splits:  "Megatron column/row pairs: Q/K/V and FFN-in columns, output and FFN-out rows, expert widths, the head's vocabulary rows",
			Inserts: "all-reduce of each row-parallel output (forward) and of each column-parallel input gradient (backward); all-reduce of the vocabulary-parallel softmax's max and sum",
			Members: func(l Layout, c Coord) []Coord {
				return along(l.TP, func(i int) Coord { c.TP = i; return c })
			},
		},
		{
			// Sequence parallelism is not a new set of ranks: it is the tp group splitting
			// what tp alone replicates, by token (sequence.go).
			Name: "sp", Size: func(l Layout) int {
				if l.SP() {
					return l.TP
				}
				return 1
			},
			Divides: []Split{
				{"the micro-batch's tokens (micro_batch × seq_len)", func(_ program.Dims, b Batch) int { return b.Tokens() }, ""},
			},
			Splits:  "with sequence parallelism, the tp ranks' copies of the norms, residual sums and router input: each holds 1/tp of the micro-batch's tokens",
			Inserts: "all-gather over tp before each column-parallel product and reduce-scatter after each row-parallel one (their conjugates in the backward) in place of tp's all-reduces; an all-reduce over tp of the norms' and router's gradients",
			Members: func(l Layout, c Coord) []Coord {
				return along(l.TP, func(i int) Coord { c.TP = i; return c })
			},
		},
		{
			Name: "ep", Size: func(l Layout) int { return l.EP },
			Divides: []Split{
				{"experts", func(d program.Dims, _ Batch) int { return max(d.E, 1) }, "moe.experts"},
			},
			Splits:  "routed experts: each rank of the group holds experts/ep of every MoE layer",
			Inserts: "all-to-all-v of the routed tokens before the experts and of their outputs after (and both again in the backward)",
			Members: func(l Layout, c Coord) []Coord {
				return along(l.EP, func(i int) Coord { c.EP = i; c.DP = c.EDP*l.EP + i; return c })
			},
		},
		{
			Name: "dp", Size: func(l Layout) int { return l.DP },
			Divides: []Split{},
			Splits:  "the batch's sequences; with ZeRO, the optimizer states (1), gradients (2) and parameters (3) of the dense parameters",
			Inserts: "all-reduce (ZeRO 0–1) or reduce-scatter (ZeRO 2–3) of the dense gradients; all-gather of updated shards (ZeRO 1–2) or of each layer's parameters before use (ZeRO 3)",
			Members: func(l Layout, c Coord) []Coord {
				return along(l.DP, func(i int) Coord { c.DP = i; c.EP, c.EDP = i%l.EP, i/l.EP; return c })
			},
		},
		{
			Name: "edp", Size: func(l Layout) int { return l.DP / max(l.EP, 1) },
			Divides: []Split{},
			Splits:  "the ZeRO partition of the expert parameters' states: the data-parallel ranks holding the same experts",
			Inserts: "the dp axis' gradient reduction and gathers, for the routed experts' parameters",
			Members: func(l Layout, c Coord) []Coord {
				return along(l.DP/l.EP, func(i int) Coord { c.EDP = i; c.DP = i*l.EP + c.EP; return c })
			},
		},
		{
			Name: "pp", Size: func(l Layout) int { return l.PP },
			Divides: []Split{
				{"layers", func(d program.Dims, _ Batch) int { return d.L }, "layers"},
			},
			Splits:  "the decoder layers into contiguous stages (the first holds the embedding, the last the head)",
			Inserts: "send/recv of activations (forward) and their gradients (backward) between neighbouring stages, under a 1F1B schedule of the micro-batches",
			Members: func(l Layout, c Coord) []Coord {
				return along(l.PP, func(i int) Coord { c.PP = i; return c })
			},
		},
		{
			// Not a split: the ranks that hold a copy of the tied embedding (tied.go).
			Name: "embed", Size: func(l Layout) int { return min(l.PP, 2) },
			Divides: []Split{},
			Splits:  "nothing: with tie_embeddings under pp, the first stage (the embedding) and the last (the head) each hold the shared table",
			Inserts: "all-reduce of the shared table's gradient between the first and the last stage before the update (Megatron's embedding group)",
			Members: embeddingGroup,
		},
		{
			// Not a split: the ranks that hold a copy of the token-embedding router table
			// (router_table.go).
			Name: "route", Size: routerGroupSize,
			Divides: []Split{},
			Splits:  "nothing: with router = token_embedding under pp, every stage with an MoE layer holds the router table",
			Inserts: "all-reduce of the router table's gradient over the stages that hold it before the update",
			Members: routerGroup,
		},
	}
}

func along(n int, at func(i int) Coord) []Coord {
	out := make([]Coord, n)
	for i := range out {
		out[i] = at(i)
	}
	return out
}

// AxisByName returns the table's entry for name.
func AxisByName(name string) (Axis, bool) {
	for _, a := range Axes() {
		if a.Name == name {
			return a, true
		}
	}
	return Axis{}, false
}

// Problem is one way a layout fails to divide a model: the axis, its size, and the value
// it must divide.
type Problem struct {
	Axis  string
	Size  int
	What  string
	Value int
	Key   string
}

func (p Problem) String() string {
	if p.Value < p.Size {
		return fmt.Sprintf("%s %d is more than the model's %s (%d): some ranks would hold nothing", p.Axis, p.Size, p.What, p.Value)
	}
	return fmt.Sprintf("%s %d does not divide %s %d", p.Axis, p.Size, p.What, p.Value)
}

// Check lists every way l fails to divide the model of d and the batch b, reading the
// axes table, plus the rules that tie axes together (ep inside dp, the micro-batches a
// pipeline needs).
func Check(l Layout, d program.Dims, b Batch) []Problem {
	var out []Problem
	for _, a := range Axes() {
		n := a.Size(l)
		if n < 1 {
			out = append(out, Problem{Axis: a.Name, Size: n, What: "a positive size", Value: 1})
			continue
		}
		for _, s := range a.Divides {
			v := s.Value(d, b)
			if s.What == "experts" && d.E == 0 {
				continue // a dense model: the rule below says so
			}
			if v == 0 {
				continue // the model has none of what this axis would split
			}
			if v%n != 0 {
				out = append(out, Problem{Axis: a.Name, Size: n, What: s.What, Value: v, Key: s.Key})
			}
		}
	}
	if l.EP >= 1 && l.DP >= 1 && l.DP%l.EP != 0 {
		out = append(out, Problem{Axis: "ep", Size: l.EP, What: "dp", Value: l.DP, Key: ""})
	}
	if d.E == 0 && l.EP > 1 {
		out = append(out, Problem{Axis: "ep", Size: l.EP, What: "routed experts (a dense stage has none)", Value: 0, Key: "moe.experts"})
	}
	if l.ZeRO < 0 || l.ZeRO > 3 {
		out = append(out, Problem{Axis: "zero", Size: l.ZeRO, What: "stages 0..3", Value: 3})
	}
	return out
}
