package longtest

import "testing"

// recorder is a testing.TB that records a skip instead of stopping the goroutine.
type recorder struct {
	testing.TB
	skipped string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = format
	_ = args
}

// TestRequireSkipsUnlessOn: without the variable Require skips with its message; with it,
// it lets the test run.
func TestRequireSkipsUnlessOn(t *testing.T) {
	t.Setenv(Env, "")
	r := &recorder{TB: t}
	Require(r, "minutes")
	if r.skipped == "" || On() {
		t.Fatalf("with %s unset: skipped %q, On %v", Env, r.skipped, On())
	}
	t.Setenv(Env, "1")
	r = &recorder{TB: t}
	Require(r, "minutes")
	if r.skipped != "" || !On() {
		t.Fatalf("with %s=1: skipped %q, On %v", Env, r.skipped, On())
	}
}
