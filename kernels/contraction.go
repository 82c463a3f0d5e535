package kernels

// Contraction describes a grouped matrix product, the shape of the expert FFN kernels:
//
//	for Row in [0, Rows), Col in [0, Cols):
//	    Group = GroupOf(Row)                       // the row's expert
//	    for each accumulator: acc = sum over Depth in [0, DepthN) of sum of its terms A*B
//	    Epilogue                                   // reads Row, Col, Group and the accumulators
//
// A term's A may use Row and Depth; B may use Group, Depth and Col. A kernel with a
// Contraction gets its Grid and Body from it (so every backend can run it as any other
// kernel), and a backend may instead lower it as a tiled GEMM: codegen/cuda stages A and B
// tiles in shared memory, masking the rows of other experts.
type Contraction struct {
	Row, Col, Depth, Group string
	Rows, Cols, DepthN     Expr
	GroupOf                Expr
	Accs                   []string // accumulator names, in order
	Terms                  []Term
	Epilogue               []Stmt

	// The batched form (Batch != ""): one product per Batch in [0, Batches) whose depth
	// runs over [DepthLo, DepthHi), expressions of Batch; Group, GroupOf and DepthN are
	// unused. The expert weight gradients are this form: per expert, a sum over its slots.
	Batch            string
	Batches          Expr
	DepthLo, DepthHi Expr
}

// Term adds A*B to the accumulator Acc.
type Term struct {
	Acc  string
	A, B Expr
}

// contract fills k's Grid and Body from c and attaches c.
func contract(k *Kernel, c *Contraction) *Kernel {
	k.Contraction = c
	k.Grid = []Dim{dim(c.Row, c.Rows), dim(c.Col, c.Cols)}
	var body []Stmt
	lo, hi := ic(0), c.DepthN
	if c.Batch != "" {
		k.Grid = append([]Dim{dim(c.Batch, c.Batches)}, k.Grid...)
		lo, hi = c.DepthLo, c.DepthHi
	} else {
		body = append(body, local(c.Group, c.GroupOf))
	}
	for _, acc := range c.Accs {
		body = append(body, local(acc, fc(0)))
	}
	var sums []Stmt
	for _, t := range c.Terms {
		sums = append(sums, set(t.Acc, add(v(t.Acc), mul(t.A, t.B))))
	}
	body = append(body, vloop(c.Depth, lo, hi, sums...))
	k.Body = append(body, c.Epilogue...)
	return k
}
