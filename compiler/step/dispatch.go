package step

// The dispatch layout of an MoE layer's expert buffers (the permuted input, the grouped
// products, the activation, the experts' output and their gradients).
//
// With a capacity factor, or under expert parallelism (whose all-to-all moves each
// expert's block whole), the buffers are [experts, slots, width]: expert e's block of
// slots rows holds its tokens in its first rows, the rest padding. Dropless routing sizes
// slots for the worst case, every assignment of the micro-batch (tokens × top_k), so
// such a layout would hold experts times the rows any step uses. Without expert
// parallelism a dropless layer's buffers are packed instead: [tokens × top_k, width],
// every row an assignment, expert e's rows [offset[e], offset[e]+count[e]) where offset
// is the exclusive prefix sum of the experts' counts. The route op (Op.Packed) numbers
// each assignment's row so, and the expert kernels read the counts and offsets the
// permute records (runtime/exec's RowFill).

// packs reports whether an MoE layer's dispatch is packed: dropless routing (no
// capacity factor) and no expert parallelism.
func packs(capacityFactor float64, ep int) bool { return capacityFactor <= 0 && ep == 1 }

// dispatchShape is the shape of an expert buffer of the given experts, rows per expert
// block and width: [experts, rows, width], or packed [rows, width] (rows being then
// every assignment's).
func (lw *lowerer) dispatchShape(experts, rows, width int) []int {
	if lw.packed {
		return []int{rows, width}
	}
	return []int{experts, rows, width}
}
