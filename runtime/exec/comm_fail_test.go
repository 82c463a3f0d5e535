package exec

import (
	"errors"
	"testing"
	"time"
)

// TestFailStopsSendAndRecv: a rank that fails stops its pipeline peers' receives and
// sends at once with its error, as it stops collectives, instead of leaving them to wait
// out the timeout.
func TestFailStopsSendAndRecv(t *testing.T) {
	w := NewWorld(5 * time.Second)
	stop := errors.New("rank 0 failed")
	got := make(chan error, 2)
	go func() { got <- w.Rank(1).Recv(0, make([]float32, 4)) }()
	go func() {
		c := w.Rank(2)
		var err error
		for i := 0; err == nil && i < 1000; i++ { // more than the mailbox holds
			err = c.Send(3, make([]float32, 4))
		}
		got <- err
	}()
	w.Fail(stop)
	for range 2 {
		if err := <-got; !errors.Is(err, stop) {
			t.Errorf("after the world failed: %v, want %v", err, stop)
		}
	}
}
