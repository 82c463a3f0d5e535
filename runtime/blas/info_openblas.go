//go:build cgo && !noopenblas

package blas

/*
#include <cblas.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"strings"
)

// Describe says which product path this build takes: the library, the kernels it chose
// for this CPU (OpenBLAS's core type), its build configuration and how large products are
// threaded.
func Describe() string {
	return fmt.Sprintf("OpenBLAS core %s (%s), %d goroutines × %d-thread OpenBLAS per product",
		C.GoString(C.openblas_get_corename()), strings.TrimSpace(C.GoString(C.openblas_get_config())),
		runtime.GOMAXPROCS(0), int(C.openblas_get_num_threads()))
}
