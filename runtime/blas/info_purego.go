//go:build !cgo || noopenblas

package blas

import (
	"fmt"
	"runtime"
)

// Describe says which product path this build takes: the pure-Go kernel, split over
// goroutines.
func Describe() string {
	return fmt.Sprintf("pure Go (no OpenBLAS in this build), %d goroutines per product", runtime.GOMAXPROCS(0))
}
