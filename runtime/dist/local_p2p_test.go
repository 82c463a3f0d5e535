package dist

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLocalRecvTimeout: a receive whose sender never sends fails with a timeout naming
// the sender, and aborts the world.
func TestLocalRecvTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	comms, err := Local(2, timeout)
	if err != nil {
		t.Fatal(err)
	}
	err = comms[0].RecvF32(1, 0, make([]float32, 2))
	var de *Error
	if !errors.As(err, &de) || de.Op != "recv" || de.Timeout != timeout || !slices.Equal(de.Missing, []int{1}) {
		t.Fatalf("got %v, want a recv timeout waiting for rank 1", err)
	}
	if err := comms[1].Barrier(); !errors.As(err, &de) || de.Failed != 0 {
		t.Errorf("rank 1 after rank 0's timeout: got %v, want rank 0's failure", err)
	}
}

// TestLocalRecvLengthMismatch: a message of another length than the receiver expects is
// an error on the receiver, and the sender's next call learns of it.
func TestLocalRecvLengthMismatch(t *testing.T) {
	comms, err := Local(2, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := comms[1].SendF32(0, 3, make([]float32, 3)); err != nil {
		t.Fatal(err)
	}
	err = comms[0].RecvF32(1, 3, make([]float32, 4))
	if err == nil || !strings.Contains(err.Error(), "rank 1 sent 3 floats with tag 3, rank 0 expects 4") {
		t.Fatalf("got %v, want the length mismatch", err)
	}
	var de *Error
	if err := comms[1].SendF32(0, 3, nil); !errors.As(err, &de) || de.Failed != 0 {
		t.Errorf("sender after the mismatch: got %v, want rank 0's failure", err)
	}
}

// TestLocalRecvAbort: a rank that aborts stops a peer waiting to receive from it.
func TestLocalRecvAbort(t *testing.T) {
	comms, err := Local(2, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cause := errors.New("stage 1 ran out of memory")
	errs := runRanks(comms, func(c Comm) error {
		if c.Rank() == 1 {
			c.Abort(cause)
			return nil
		}
		return c.RecvF32(1, 0, make([]float32, 1))
	})
	var de *Error
	if !errors.As(errs[0], &de) || de.Failed != 1 || !errors.Is(errs[0], cause) {
		t.Errorf("got %v, want rank 1's failure", errs[0])
	}
}

// TestLocalSendRefusesStranger: a peer outside the group is refused.
func TestLocalSendRefusesStranger(t *testing.T) {
	comms, err := Local(2, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range []int{-1, 2} {
		if err := comms[0].SendF32(peer, 0, nil); err == nil {
			t.Errorf("send to rank %d of 2 succeeded", peer)
		}
		if err := comms[0].RecvF32(peer, 0, nil); err == nil {
			t.Errorf("receive from rank %d of 2 succeeded", peer)
		}
	}
}
