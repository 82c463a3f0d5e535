//go:build cgo

package mpi

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/dist"
)

// TestArgumentsRefusedBeforeMPI: wrong buffers and values that do not fit MPI's C ints
// are refused with a *dist.Error before anything reaches MPI (the comm here has no MPI
// behind it, so a call that got through would fail differently).
func TestArgumentsRefusedBeforeMPI(t *testing.T) {
	c := &comm{p: &proc{worldRank: 3, worldSize: 4}, name: "ep", rank: 1, size: 2}
	two := func(a, b int) []int { return []int{a, b} }
	for _, tc := range []struct {
		name, want string
		call       func() error
	}{
		{"gather into a short buffer", "receive buffer of 7 bytes", func() error { return c.AllGather(make([]byte, 4), make([]byte, 7)) }},
		{"one count per rank", "one entry per rank", func() error {
			return c.AllToAllV(nil, []int{0}, []int{0}, nil, two(0, 0), two(0, 0))
		}},
		{"send block outside its buffer", "outside the 10-byte send buffer", func() error {
			return c.AllToAllV(make([]byte, 10), two(4, 4), two(0, 7), make([]byte, 8), two(4, 4), two(0, 4))
		}},
		{"receive block outside its buffer", "outside the 8-byte receive buffer", func() error {
			return c.AllToAllV(make([]byte, 8), two(4, 4), two(0, 4), make([]byte, 8), two(4, 4), two(0, 5))
		}},
		{"negative count", "does not fit", func() error {
			return c.AllToAllV(make([]byte, 8), two(-1, 4), two(0, 4), make([]byte, 8), two(4, 4), two(0, 4))
		}},
		{"offset beyond a C int", "does not fit", func() error {
			return c.AllToAllV(make([]byte, 8), two(0, 4), two(math.MaxInt32+1, 4), make([]byte, 8), two(0, 4), two(0, 4))
		}},
		{"negative color", "color -1", func() error { _, err := c.Split(-1, 0, "x"); return err }},
		{"key beyond a C int", "key", func() error { _, err := c.Split(0, math.MaxInt32+1, "x"); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var de *dist.Error
			if !errors.As(err, &de) {
				t.Fatalf("got %v, want a *dist.Error", err)
			}
			if de.Rank != 3 || de.Group != "ep" || de.Timeout != 0 || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v (rank %d, group %q), want rank 3 on group ep saying %q", err, de.Rank, de.Group, tc.want)
			}
		})
	}
}

// TestCallsAfterFailureFailFast: once a collective has failed the process is aborting,
// and later calls return at once instead of queueing behind the stuck one.
func TestCallsAfterFailureFailFast(t *testing.T) {
	first := &dist.Error{Rank: 0, Op: "barrier", Group: "world", Failed: -1, Err: errors.New("boom")}
	c := &comm{p: &proc{worldRank: 0, worldSize: 2, failed: first}, name: "world", size: 2}
	err := c.Barrier()
	if !errors.Is(err, first) || !strings.Contains(err.Error(), "an earlier MPI call failed") {
		t.Errorf("got %v, want the earlier failure", err)
	}
}
