package cuda

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/kernels"
)

// Tile sizes of the grouped GEMM: a block of BlockSize threads computes a TileM x TileN
// output tile, each thread a 4x4 micro-tile, stepping through the depth TileK at a time.
const (
	TileM = 64
	TileN = 64
	TileK = 16
)

// tiledKernel lowers a kernel with a Contraction as a tiled grouped GEMM. Blocks loop
// over output tiles (grid-stride, so any block count is correct); a tile's rows may
// belong to several experts (slots are in expert order, so usually one or two), and the
// tile is accumulated once per expert present with the other experts' rows masked to
// zero in shared memory. The epilogue is the described one, run per output element.
func tiledKernel(w *strings.Builder, k *kernels.Kernel) error {
	c := k.Contraction
	fmt.Fprintf(w, "// %s: %s\n// Tiled grouped GEMM: %dx%d output tiles, depth steps of %d, shared-memory staging.\n",
		k.Name, k.Doc, TileM, TileN, TileK)
	var params []string
	for _, p := range k.Params {
		params = append(params, paramDecl(p))
	}
	params = append(params, "long long total_")
	fmt.Fprintf(w, "extern \"C\" __global__ void __launch_bounds__(%d)\nmoe_%s(%s) {\n", BlockSize, k.Name, strings.Join(params, ", "))
	lw := &lowerer{w: w, depth: 1}
	for _, sc := range k.Consts {
		if sc.T == kernels.F32 {
			lw.line("const float %s = %s;", cname(sc.Name), cfloat(sc.F))
		} else {
			lw.line("const long long %s = %d;", cname(sc.Name), sc.I)
		}
	}
	for _, p := range k.Params {
		if p.Buffer {
			lw.line("%s = (%s*)__builtin_assume_aligned(%s, 16);", cname(p.Name), constPrefix(p)+ctype(p.Elem), cname(p.Name))
		}
	}
	ex := func(e kernels.Expr) (string, error) { return lw.expr(e) }
	rows, err := ex(c.Rows)
	if err != nil {
		return err
	}
	cols, err := ex(c.Cols)
	if err != nil {
		return err
	}
	batched := c.Batch != ""
	row, col, dep := cname(c.Row), cname(c.Col), cname(c.Depth)
	lw.line("(void)total_;")
	lw.line("const long long rows_ = %s, cols_ = %s;", rows, cols)
	lw.line("const long long tiles_n_ = (cols_ + %d) / %d;", TileN-1, TileN)
	lw.line("const long long tiles_mn_ = (rows_ + %d) / %d * tiles_n_;", TileM-1, TileM)
	if batched {
		batches, err := ex(c.Batches)
		if err != nil {
			return err
		}
		lw.line("const long long tiles_ = (%s) * tiles_mn_;", batches)
	} else {
		lw.line("const long long tiles_ = tiles_mn_;")
	}
	lw.line("__shared__ float as_[%d][%d] __attribute__((aligned(16)));", TileK, TileM+4)
	lw.line("__shared__ float bs_[%d][%d] __attribute__((aligned(16)));", TileK, TileN+4)
	lw.line("const int tx_ = threadIdx.x %% %d, ty_ = threadIdx.x / %d;", TileN/4, TileN/4)
	lw.line("for (long long tile_ = blockIdx.x; tile_ < tiles_; tile_ += gridDim.x) {")
	lw.depth++
	lw.line("const long long tile_mn_ = tile_ %% tiles_mn_;")
	lw.line("const long long row0_ = tile_mn_ / tiles_n_ * %d, col0_ = tile_mn_ %% tiles_n_ * %d;", TileM, TileN)
	// Depth range and the groups present in the tile. Batched: the batch index is fixed
	// per tile and bounds the depth. Grouped: rows of several groups may share the tile.
	var group, grp string
	if batched {
		lo, err := ex(c.DepthLo)
		if err != nil {
			return err
		}
		hi, err := ex(c.DepthHi)
		if err != nil {
			return err
		}
		lw.line("const long long %s = tile_ / tiles_mn_;", cname(c.Batch))
		lw.line("const long long lo_ = %s, hi_ = %s;", lo, hi)
		lw.line("const long long group_first_ = 0, group_last_ = 0;")
	} else {
		depth, err := ex(c.DepthN)
		if err != nil {
			return err
		}
		if group, err = ex(c.GroupOf); err != nil {
			return err
		}
		grp = cname(c.Group)
		lw.line("const long long lo_ = 0, hi_ = %s;", depth)
		lw.line("const long long row_last_ = (row0_ + %d < rows_ ? row0_ + %d : rows_) - 1;", TileM, TileM)
		lw.line("long long group_first_, group_last_;")
		lw.line("{ const long long %s = row0_; group_first_ = %s; }", row, group)
		lw.line("{ const long long %s = row_last_; group_last_ = %s; }", row, group)
	}
	for _, acc := range c.Accs {
		lw.line("moe_f4_ %s_t_[4] = {};", cname(acc))
	}
	lw.line("for (long long group_ = group_first_; group_ <= group_last_; ++group_) {")
	lw.depth++
	lw.line("for (long long k0_ = lo_; k0_ < hi_; k0_ += %d) {", TileK)
	lw.depth++
	for _, t := range c.Terms {
		a, err := ex(t.A)
		if err != nil {
			return err
		}
		b, err := ex(t.B)
		if err != nil {
			return err
		}
		// Depth is the fastest-varying index of both loads: row-major activations and
		// [expert][col][depth] weights are then read along contiguous memory.
		lw.line("for (int l_ = threadIdx.x; l_ < %d; l_ += %d) {", TileM*TileK, BlockSize)
		lw.line("  const long long %s = row0_ + l_ / %d, %s = k0_ + l_ %% %d;", row, TileK, dep, TileK)
		lw.line("  float v_ = 0.0f;")
		mask := fmt.Sprintf("%s < rows_ && %s < hi_", row, dep)
		if !batched {
			mask += fmt.Sprintf(" && (long long)(%s) == group_", group)
		}
		lw.line("  if (%s) v_ = %s;", mask, a)
		lw.line("  as_[l_ %% %d][l_ / %d] = v_;", TileK, TileK)
		lw.line("}")
		lw.line("for (int l_ = threadIdx.x; l_ < %d; l_ += %d) {", TileN*TileK, BlockSize)
		if batched {
			lw.line("  const long long %s = col0_ + l_ / %d, %s = k0_ + l_ %% %d;", col, TileK, dep, TileK)
		} else {
			lw.line("  const long long %s = group_, %s = col0_ + l_ / %d, %s = k0_ + l_ %% %d;", grp, col, TileK, dep, TileK)
		}
		lw.line("  bs_[l_ %% %d][l_ / %d] = (%s < cols_ && %s < hi_) ? %s : 0.0f;", TileK, TileK, col, dep, b)
		lw.line("}")
		lw.line("__syncthreads();")
		lw.line("#pragma unroll")
		lw.line("for (int kk_ = 0; kk_ < %d; ++kk_) {", TileK)
		// 128-bit shared loads: both rows are 16-byte aligned and ty_*4, tx_*4 are too.
		// The B quad stays a vector (row i of the micro-tile += a_i * B quad), which keeps
		// the load a ld.shared.v4 instead of four scalar loads.
		lw.line("  const moe_f4_ av_ = *reinterpret_cast<const moe_f4_ *>(__builtin_assume_aligned(&as_[kk_][ty_ * 4], 16));")
		lw.line("  const moe_f4_ bv_ = *reinterpret_cast<const moe_f4_ *>(__builtin_assume_aligned(&bs_[kk_][tx_ * 4], 16));")
		lw.line("  #pragma unroll")
		lw.line("  for (int i_ = 0; i_ < 4; ++i_) moe_fma4_(%s_t_[i_], moe_f4_get_(av_, i_), bv_);", cname(t.Acc))
		lw.line("}")
		lw.line("__syncthreads();")
	}
	lw.depth--
	lw.line("}")
	lw.depth--
	lw.line("}")
	lw.line("#pragma unroll")
	lw.line("for (int i_ = 0; i_ < 4; ++i_) {")
	lw.line("  #pragma unroll")
	lw.line("  for (int j_ = 0; j_ < 4; ++j_) {")
	lw.depth += 2
	lw.line("const long long %s = row0_ + ty_ * 4 + i_, %s = col0_ + tx_ * 4 + j_;", row, col)
	lw.line("if (%s < rows_ && %s < cols_) {", row, col)
	lw.depth++
	if !batched {
		lw.line("const long long %s = %s;", grp, group)
	}
	for _, acc := range c.Accs {
		lw.line("float %s = moe_f4_get_(%s_t_[i_], j_);", cname(acc), cname(acc))
	}
	if err := lw.stmts(c.Epilogue); err != nil {
		return fmt.Errorf("cuda: kernel %s epilogue: %w", k.Name, err)
	}
	lw.depth--
	lw.line("}")
	lw.depth -= 2
	lw.line("  }")
	lw.line("}")
	lw.depth--
	lw.line("}")
	w.WriteString("}\n")
	return nil
}

// tiles is the C expression of the number of output tiles of a contraction kernel (the
// launcher's block count), given the C spellings of its grid extents: rows and columns,
// preceded by the batch count for the batched form.
func tiles(ext []string) string {
	n := len(ext)
	t := fmt.Sprintf("((%s) + %d) / %d * (((%s) + %d) / %d)", ext[n-2], TileM-1, TileM, ext[n-1], TileN-1, TileN)
	if n == 3 {
		t = fmt.Sprintf("(%s) * %s", ext[0], t)
	}
	return t
}
