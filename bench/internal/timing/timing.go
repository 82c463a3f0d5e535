// Package timing is the benchmarks' way of timing a workload: one call to warm up, then
// calls repeated until both a least count and a least time have passed.
package timing

import "time"

// Repeat calls fn once to warm up, then again until it has run at least minIters times
// and at least seconds have passed, and returns the timed calls and the seconds they
// took. An error from fn stops it.
func Repeat(seconds float64, minIters int, fn func() error) (iters int, elapsed float64, err error) {
	if err := fn(); err != nil {
		return 0, 0, err
	}
	n, t0 := 0, time.Now()
	for n < minIters || time.Since(t0).Seconds() < seconds {
		if err := fn(); err != nil {
			return n, 0, err
		}
		n++
	}
	return n, time.Since(t0).Seconds(), nil
}
