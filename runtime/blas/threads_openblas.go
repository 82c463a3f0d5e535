//go:build cgo && !noopenblas

package blas

/*
#include <cblas.h>
#include <dlfcn.h>

typedef int (*moec_blas_shutdown)(void);

// moec_find_blas_shutdown finds OpenBLAS's blas_thread_shutdown_, which stops and joins the
// library's worker threads (its fork handler uses it; the next threaded call starts them
// again). A build without it (a serial or OpenMP OpenBLAS, another CBLAS) gives NULL.
static moec_blas_shutdown moec_find_blas_shutdown(void) {
	return (moec_blas_shutdown)dlsym(RTLD_DEFAULT, "blas_thread_shutdown_");
}

static void moec_call_blas_shutdown(moec_blas_shutdown f) { f(); }
*/
import "C"

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// libraryIdle is how long the library's workers may wait for the next threaded product
// before they are stopped. A run of large products (a backward pass's, a benchmark's
// loop) keeps them; a step that goes on to other work gets its cores back within it.
// Restarting them costs about 0.2 ms, against the 5 ms or more a product this large takes.
const libraryIdle = time.Millisecond

// libraryThreading hands a large product to OpenBLAS's own threads when nothing else
// multiplies. OpenBLAS's thread count is one setting for the whole process, so this is the
// package's one piece of shared state, mirroring the library's:
//   - count: every one-thread call holds it shared; a threaded call holds it alone while
//     the count is raised (OpenBLAS would thread any other call made meanwhile);
//   - server guards the library's workers: a threaded call, or stopping them. Between
//     threaded calls OpenBLAS's workers spin for about a tenth of a second before they
//     sleep, on the cores the step's next ops need (measured: the small benchmark model's
//     training lost a quarter of its speed to them), so they are stopped when a one-thread
//     product starts, or libraryIdle after the last threaded product, whichever is first.
type libraryThreading struct {
	count    sync.RWMutex
	server   sync.Mutex
	shutdown C.moec_blas_shutdown
	live     atomic.Bool // the workers run (written under server)
	last     time.Time   // the last threaded product ended (server)
	idle     *time.Timer
}

// threading is nil where the library's threads cannot be used and stopped: a build whose
// OpenBLAS is not the pthreads one (openblas_get_parallel() ≠ 1) or has no shutdown.
var threading = func() *libraryThreading {
	if C.openblas_get_parallel() != 1 {
		return nil
	}
	shutdown := C.moec_find_blas_shutdown()
	if shutdown == nil {
		return nil
	}
	t := &libraryThreading{shutdown: shutdown}
	// The library started its workers when it loaded; until a product is large enough
	// Gemm makes one-thread calls, so they are stopped now.
	t.live.Store(true)
	t.idle = time.AfterFunc(0, t.stopIdle)
	return t
}()

// stopIdle stops the library's workers when no threaded product has run for libraryIdle.
func (t *libraryThreading) stopIdle() {
	t.server.Lock()
	defer t.server.Unlock()
	if wait := libraryIdle - time.Since(t.last); t.live.Load() && wait > 0 {
		t.idle.Reset(wait)
		return
	}
	t.stopWorkers()
}

// stopWorkers stops and joins the library's workers if they run; server is held.
func (t *libraryThreading) stopWorkers() {
	if t.live.Load() {
		C.moec_call_blas_shutdown(t.shutdown)
		t.live.Store(false)
	}
}

// oneThread runs call, a one-thread OpenBLAS product, while no threaded one is running,
// first stopping the library's workers if a threaded product left them running.
func oneThread(call func()) {
	t := threading
	if t == nil {
		call()
		return
	}
	t.count.RLock()
	defer t.count.RUnlock()
	if t.live.Load() {
		// No threaded product runs (this call holds count shared), so server is held at
		// most by stopIdle or another one-thread call stopping the workers: briefly.
		t.server.Lock()
		t.stopWorkers()
		t.server.Unlock()
	}
	call()
}

// gemmLibraryThreaded computes the product as one OpenBLAS call threaded over GOMAXPROCS
// threads when no other product is running, and reports whether it did. OpenBLAS's
// threads split C in two dimensions and share the packed panels of B, where Gemm's row
// split packs all of B once per goroutine (BenchmarkGemmThreading measures both).
func gemmLibraryThreaded[F Float](transA, transB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) bool {
	if threading == nil || k == 0 || !isBLASType(alpha) || !threading.count.TryLock() {
		return false
	}
	defer threading.count.Unlock()
	threading.server.Lock()
	defer threading.server.Unlock()
	C.openblas_set_num_threads(C.int(runtime.GOMAXPROCS(0)))
	cblasGemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	C.openblas_set_num_threads(1)
	threading.last = time.Now()
	if !threading.live.Load() {
		threading.live.Store(true)
		threading.idle.Reset(libraryIdle)
	}
	return true
}

// libraryThreads reports whether this build can hand products to OpenBLAS's threads.
func libraryThreads() bool { return threading != nil }
