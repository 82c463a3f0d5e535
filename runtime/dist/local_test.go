package dist

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// runRanks runs f on every rank of comms concurrently and returns each rank's error.
func runRanks(comms []Comm, f func(c Comm) error) []error {
	errs := make([]error, len(comms))
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Go(func() { errs[r] = f(c) })
	}
	wg.Wait()
	return errs
}

// TestLocalTimeout: a rank that never arrives makes the others fail within the timeout
// with an *Error that says it timed out and names the missing rank.
func TestLocalTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	comms, err := Local(3, timeout)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	errs := runRanks(comms[:2], func(c Comm) error { return c.AllReduceF32(make([]float32, 4)) })
	if took := time.Since(start); took > 20*timeout {
		t.Errorf("the ranks took %s to give up, with a timeout of %s", took, timeout)
	}
	var timedOut bool
	for r, err := range errs {
		var de *Error
		if !errors.As(err, &de) {
			t.Fatalf("rank %d: got %v, want a *dist.Error", r, err)
		}
		if de.Rank != r || de.Group != "world" {
			t.Errorf("rank %d: error names rank %d on group %q", r, de.Rank, de.Group)
		}
		// The first rank to time out aborts the world, so the other may instead report
		// that rank's failure; at least one must be the timeout itself.
		if de.Timeout > 0 {
			timedOut = true
			if de.Timeout != timeout || !slices.Equal(de.Missing, []int{2}) || de.Op != "all_reduce" {
				t.Errorf("rank %d: timeout %s op %s missing %v, want %s all_reduce [2]", r, de.Timeout, de.Op, de.Missing, timeout)
			}
			if !strings.Contains(de.Error(), "timed out") || !strings.Contains(de.Error(), "[2]") {
				t.Errorf("rank %d: message %q does not say it timed out waiting for rank 2", r, de.Error())
			}
		} else if de.Failed < 0 || de.Failed > 1 {
			t.Errorf("rank %d: neither a timeout nor a peer's failure: %v", r, de)
		}
	}
	if !timedOut {
		t.Errorf("no rank reported the timeout: %v", errs)
	}
	// The late rank finds the world failed instead of waiting again.
	err = comms[2].AllReduceF32(make([]float32, 4))
	var de *Error
	if !errors.As(err, &de) || de.Failed < 0 {
		t.Errorf("late rank: got %v, want the failure that stopped the others", err)
	}
}

// TestLocalAbort: a rank that aborts makes the others' pending collective fail at once
// with an error naming it, well before the timeout.
func TestLocalAbort(t *testing.T) {
	const timeout = time.Minute
	comms, err := Local(4, timeout)
	if err != nil {
		t.Fatal(err)
	}
	cause := errors.New("out of memory in expert 3")
	start := time.Now()
	errs := runRanks(comms, func(c Comm) error {
		if c.Rank() == 2 {
			time.Sleep(20 * time.Millisecond) // let the others block in the barrier
			c.Abort(cause)
			return nil
		}
		return c.Barrier()
	})
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the others took %s to notice the abort", took)
	}
	for r, err := range errs {
		if r == 2 {
			continue
		}
		var de *Error
		if !errors.As(err, &de) {
			t.Fatalf("rank %d: got %v, want a *dist.Error", r, err)
		}
		if de.Failed != 2 || !errors.Is(err, cause) || de.Timeout != 0 {
			t.Errorf("rank %d: %v does not name rank 2's failure", r, err)
		}
		if !strings.Contains(err.Error(), "rank 2 failed") {
			t.Errorf("rank %d: message %q does not name rank 2", r, err)
		}
	}
	// Later collectives fail at once too, in sub-groups as well as the world.
	if err := comms[0].Barrier(); err == nil {
		t.Error("a barrier after the abort succeeded")
	}
}

// TestLocalAbortInSubgroup: an abort reaches ranks blocked in a split group.
func TestLocalAbortInSubgroup(t *testing.T) {
	comms, err := Local(4, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	errs := runRanks(comms, func(c Comm) error {
		sub, err := c.Split(c.Rank()%2, c.Rank(), "ep")
		if err != nil {
			return err
		}
		if c.Rank() == 3 {
			time.Sleep(20 * time.Millisecond)
			c.Abort(errors.New("injected"))
			return nil
		}
		return sub.AllReduceF64(make([]float64, 2))
	})
	// Rank 2 (color 0) is not waiting on rank 3 and may finish; rank 1 shares a group
	// with rank 3 and must see its failure.
	var de *Error
	if !errors.As(errs[1], &de) || de.Failed != 3 || de.Group != "ep" || de.Rank != 1 {
		t.Errorf("rank 1: got %v, want rank 3's failure on group ep", errs[1])
	}
}

// TestLocalOpMismatch: ranks that call different collectives get an error, not a hang.
func TestLocalOpMismatch(t *testing.T) {
	comms, err := Local(2, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	errs := runRanks(comms, func(c Comm) error {
		if c.Rank() == 0 {
			return c.AllReduceF32(make([]float32, 3))
		}
		return c.Barrier()
	})
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the mismatch took %s to be reported", took)
	}
	for r, err := range errs {
		if err == nil {
			t.Errorf("rank %d: no error", r)
			continue
		}
		if !strings.Contains(err.Error(), "diverged") && !strings.Contains(err.Error(), "failed") {
			t.Errorf("rank %d: %q does not describe the mismatch", r, err)
		}
	}
}

// TestLocalSizeMismatch: ranks that reduce vectors of different lengths get an error.
func TestLocalSizeMismatch(t *testing.T) {
	comms, err := Local(2, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	errs := runRanks(comms, func(c Comm) error { return c.AllReduceF32(make([]float32, 3+c.Rank())) })
	for r, err := range errs {
		if err == nil {
			t.Errorf("rank %d: no error for reducing 3 floats against 4", r)
		}
	}
}

// TestLocalRefusesNoRanks: a group needs a rank.
func TestLocalRefusesNoRanks(t *testing.T) {
	if _, err := Local(0, 0); err == nil {
		t.Error("Local(0) succeeded")
	}
}
