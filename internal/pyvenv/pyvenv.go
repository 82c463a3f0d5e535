package pyvenv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Python returns the interpreter that imports every one of modules, or skips t. root is
// the repository's root relative to the test's package folder ("../.." for runtime/serve).
func Python(t testing.TB, root string, modules ...string) string {
	t.Helper()
	py := os.Getenv("MOEC_PYTHON")
	if py == "" {
		abs, err := filepath.Abs(root)
		if err != nil {
			t.Fatal(err)
		}
		py = filepath.Join(abs, ".venv", "bin", "python")
	}
	imports := "import " + strings.Join(modules, ", ")
	if out, err := exec.Command(py, "-c", imports).CombinedOutput(); err != nil {
		t.Skipf("%s is not available to %s (%v: %s); `make venv` installs it", strings.Join(modules, ", "), py, err, bytes.TrimSpace(out))
	}
	return py
}
