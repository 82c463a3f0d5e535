// Package blas is the runtime's matrix product: C = alpha·op(A)·op(B) + beta·C on row-major
// float32 or float64 slices.
//
// In: row-major operands with leading dimensions, as in CBLAS.
// Out: C updated in place. With cgo the product goes to OpenBLAS (cblas_sgemm/cblas_dgemm),
// pinned to one thread because Gemm itself splits large products over GOMAXPROCS goroutines
// (so OpenBLAS and our own goroutines never oversubscribe the cores). The exception: a
// product of at least libraryThreadedMinWork multiply-adds that runs while no other product
// does is one call over OpenBLAS's own threads (which share the packed operand), and those
// threads are stopped right after (gemmLibraryThreaded), so they never spin against the
// goroutines. Built with
// `-tags noopenblas` or without cgo, a pure-Go kernel gives the same numbers within rounding.
// One shape skips OpenBLAS: float32 C = alpha·A·Bᵀ + beta·C with at most smallRows rows (a
// linear layer at generation time, batch 16) runs as an AVX2 kernel that reads B once
// instead of copying it into sgemm's packed layout first, which cost sgemm twice its
// multiply time there.
package blas
