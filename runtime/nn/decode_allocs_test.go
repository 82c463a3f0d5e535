package nn

import "testing"

// TestDecodeStepAllocatesNothing: a decoding step of one sequence allocates nothing (no
// closures for its norms, attention or experts), dense and MoE layers alike.
func TestDecodeStepAllocatesNothing(t *testing.T) {
	m := randomised(t, tinyMoE(), 7)
	dec := m.NewDecoder(1, 64)
	tok := []int32{1}
	if _, err := dec.Step(tok); err != nil { // first use sizes what it keeps
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := dec.Step(tok); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("a decoding step allocates %v times", allocs)
	}
}
