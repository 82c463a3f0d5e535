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
	large := "no library threads (not OpenBLAS's pthreads build)"
	if libraryThreads() {
		large = fmt.Sprintf("from %d multiply-adds, when no other product runs, one %d-thread OpenBLAS call", libraryThreadedMinWork, runtime.GOMAXPROCS(0))
	}
	return fmt.Sprintf("OpenBLAS core %s (%s), %d goroutines × %d-thread OpenBLAS per product; %s",
		C.GoString(C.openblas_get_corename()), strings.TrimSpace(C.GoString(C.openblas_get_config())),
		runtime.GOMAXPROCS(0), int(C.openblas_get_num_threads()), large)
}
