package disttest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moec-dev/moec/runtime/dist"
)

// TestLocal runs the suite on goroutine ranks for the group sizes the runtime uses.
func TestLocal(t *testing.T) {
	for _, n := range []int{1, 2, 3, 4} {
		t.Run(fmt.Sprintf("ranks=%d", n), func(t *testing.T) {
			comms, err := dist.Local(n, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			errs := make([]error, n)
			var wg sync.WaitGroup
			for r, c := range comms {
				wg.Go(func() { errs[r] = Check(c) })
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// brokenComm wraps a Comm and corrupts one kind of result, to show that Check notices.
type brokenComm struct {
	dist.Comm
	break_ string
}

func (b brokenComm) AllReduceF32(x []float32) error {
	err := b.Comm.AllReduceF32(x)
	if b.break_ == "sum" && len(x) > 3 && b.Rank() == 1 {
		x[3] = -x[3] + 1
	}
	return err
}

func (b brokenComm) AllReduceMaxF32(x []float32) error {
	if b.break_ == "max" {
		return b.Comm.AllReduceF32(x) // a sum where a maximum was asked for
	}
	return b.Comm.AllReduceMaxF32(x)
}

func (b brokenComm) RecvF32(from, tag int, x []float32) error {
	err := b.Comm.RecvF32(from, tag, x)
	if b.break_ == "recv" && len(x) > 1 {
		x[0], x[1] = x[1], x[0] // delivers the floats out of order
	}
	return err
}

func (b brokenComm) AllToAllV(send []byte, sendCount, sendOff []int, recv []byte, recvCount, recvOff []int) error {
	if b.break_ == "offsets" {
		// A transport that packs blocks densely instead of honouring the offsets.
		dense := make([]int, len(sendOff))
		at := 0
		for p := range dense {
			dense[p] = at
			at += sendCount[p]
		}
		sendOff = dense
	}
	return b.Comm.AllToAllV(send, sendCount, sendOff, recv, recvCount, recvOff)
}

func (b brokenComm) Split(color, key int, name string) (dist.Comm, error) {
	if b.break_ == "split" {
		key = 0 // ignores the key
	}
	sub, err := b.Comm.Split(color, key, name)
	if err != nil {
		return nil, err
	}
	return brokenComm{sub, b.break_}, nil
}

// TestCheckFails checks that the suite catches a wrong sum, ignored offsets, an ignored
// split key, a sum for a maximum and a message out of order, and that its error names the check.
func TestCheckFails(t *testing.T) {
	for _, tc := range []struct{ break_, check string }{
		{"sum", "all_reduce_f32"},
		{"offsets", "all_to_all_v"},
		{"split", "split"},
		{"max", "all_reduce_max_f32"},
		{"recv", "send_recv"},
	} {
		t.Run(tc.break_, func(t *testing.T) {
			comms, err := dist.Local(3, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			errs := make([]error, len(comms))
			var wg sync.WaitGroup
			for r, c := range comms {
				wg.Go(func() {
					// A rank that fails aborts, as the runtime does, so the others stop
					// at once instead of waiting for it until the timeout.
					if errs[r] = Check(brokenComm{c, tc.break_}); errs[r] != nil {
						c.Abort(errs[r])
					}
				})
			}
			wg.Wait()
			var found bool
			for _, err := range errs {
				if err != nil && strings.Contains(err.Error(), "disttest: "+tc.check+":") {
					found = true
				}
			}
			if !found {
				t.Fatalf("no rank reported a failure of %s: %v", tc.check, errs)
			}
		})
	}
}
