// Package longtest gates moec's long comparisons: the emulated CUDA runs (and the few
// other tests) that `make test` leaves out to stay under ten minutes and `make test-long`
// (MOEC_LONG_EMULATION=1) runs, as CI does.
//
// In: the environment. Out: a skip, or nothing.
package longtest
