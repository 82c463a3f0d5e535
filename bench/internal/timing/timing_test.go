package timing

import (
	"errors"
	"testing"
)

// TestRepeat: one warm-up call not counted, at least minIters timed ones, and an error
// stops the loop and comes back.
func TestRepeat(t *testing.T) {
	calls := 0
	n, dt, err := Repeat(0, 3, func() error { calls++; return nil })
	if err != nil || n != 3 || calls != 4 || dt < 0 {
		t.Fatalf("Repeat(0, 3): %d timed, %d calls, %v s, %v; want 3 timed of 4 calls", n, calls, dt, err)
	}
	boom := errors.New("boom")
	calls = 0
	if _, _, err := Repeat(1, 5, func() error {
		calls++
		if calls == 3 {
			return boom
		}
		return nil
	}); !errors.Is(err, boom) || calls != 3 {
		t.Fatalf("an error on the third call: %v after %d calls", err, calls)
	}
}
