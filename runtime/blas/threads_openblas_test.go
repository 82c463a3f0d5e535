//go:build cgo && !noopenblas

package blas

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestLibraryThreadsYieldToOtherProducts: while a one-thread product holds the library, a
// threaded one is refused (Gemm splits it instead), and products from many goroutines at
// once, large and small, all come out right.
func TestLibraryThreadsYieldToOtherProducts(t *testing.T) {
	if !libraryThreads() {
		t.Skip("this build's BLAS has no threads moec can stop (not OpenBLAS's pthreads build)")
	}
	var started, release sync.WaitGroup
	started.Add(1)
	release.Add(1)
	go oneThread(func() { started.Done(); release.Wait() })
	started.Wait()
	c := make([]float32, 4)
	if gemmLibraryThreaded(false, false, 2, 2, 2, float32(1), []float32{1, 2, 3, 4}, 2, []float32{1, 0, 0, 1}, 2, 0, c, 2) {
		t.Error("a threaded product ran while a one-thread product held the library")
	}
	release.Done()

	// 1024×512×512 is at libraryThreadedMinWork: some of these go to the library's threads
	// when they find it free, the rest split.
	const m, n, k = 1024, 512, 512
	a, bt := make([]float32, m*k), make([]float32, n*k)
	randomOperands(a, bt, nil)
	want := make([]float32, m*n)
	gemmGo(false, true, m, n, k, 1, a, k, bt, k, 0, want, n)
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				rows := m
				if g%2 == 1 {
					rows = 40 // a small product: one-thread calls
				}
				got := make([]float32, rows*n)
				Gemm(false, true, rows, n, k, 1, a, k, bt, k, 0, got, n)
				for i := range got {
					if math.Abs(float64(want[i]-got[i])) > 1e-3*(1+math.Abs(float64(want[i]))) {
						errs <- fmt.Sprintf("goroutine %d, element %d: %v, want %v", g, i, got[i], want[i])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestGemmHandsALoneLargeProductToTheLibrary: Gemm runs a product of
// libraryThreadedMinWork multiply-adds or more that nothing else multiplies beside as one
// call over the library's threads (the last threaded product's time moves), and a smaller
// one as its own split (it does not).
func TestGemmHandsALoneLargeProductToTheLibrary(t *testing.T) {
	if !libraryThreads() || runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs OpenBLAS's pthreads build and two cores")
	}
	lastThreaded := func() time.Time {
		threading.server.Lock()
		defer threading.server.Unlock()
		return threading.last
	}
	const m, n, k = 1024, 512, 512 // libraryThreadedMinWork
	a, b, c := make([]float32, m*k), make([]float32, k*n), make([]float32, m*n)
	randomOperands(a, b, c)
	before := lastThreaded()
	Gemm(false, false, m/2, n, k, 1, a, k, b, n, 0, c, n)
	if got := lastThreaded(); !got.Equal(before) {
		t.Errorf("a product of %d multiply-adds went to the library's threads", m/2*n*k)
	}
	Gemm(false, false, m, n, k, 1, a, k, b, n, 0, c, n)
	if got := lastThreaded(); !got.After(before) {
		t.Errorf("a lone product of %d multiply-adds did not go to the library's threads", m*n*k)
	}
}

// TestLibraryThreadsStopAfterAProduct: after a threaded product the library's workers are
// stopped, not spinning: the process uses almost no CPU while it then sleeps. (A spinning
// worker burns the whole pause; at the library's default timeout about a tenth of a second.)
func TestLibraryThreadsStopAfterAProduct(t *testing.T) {
	if !libraryThreads() || runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs OpenBLAS's pthreads build and two cores")
	}
	const n = 512
	a, b, c := make([]float32, n*n), make([]float32, n*n), make([]float32, n*n)
	randomOperands(a, b, c)
	if !gemmLibraryThreaded(false, false, n, n, n, float32(1), a, n, b, n, 0, c, n) {
		t.Fatal("the threaded product did not run with nothing else multiplying")
	}
	before := cpuTime(t)
	time.Sleep(100 * time.Millisecond)
	if used := cpuTime(t) - before; used > 30*time.Millisecond {
		t.Errorf("the process used %v of CPU in the 100 ms after a threaded product: the library's workers still run", used)
	}

	// A one-thread product right after a threaded one stops the workers before it runs.
	gemmLibraryThreaded(false, false, n, n, n, float32(1), a, n, b, n, 0, c, n)
	if !threading.live.Load() {
		t.Skip("the workers stopped before the one-thread product (a slow machine); nothing to check")
	}
	Gemm(false, false, 64, 64, 64, 1, a, n, b, n, 0, c, n)
	if threading.live.Load() {
		t.Error("the library's workers still run after a one-thread product")
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
