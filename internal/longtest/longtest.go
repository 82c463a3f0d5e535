package longtest

import (
	"os"
	"testing"
)

// Env is the variable that turns the long comparisons on.
const Env = "MOEC_LONG_EMULATION"

// On reports whether the long comparisons run (Env is set to anything but "").
func On() bool { return os.Getenv(Env) != "" }

// Require skips t unless the long comparisons run, saying what the test costs and, where
// there is one, which default test holds the same thing more cheaply (why).
func Require(t testing.TB, why string) {
	t.Helper()
	if !On() {
		t.Skipf("set %s=1 for this comparison (%s)", Env, why)
	}
}
