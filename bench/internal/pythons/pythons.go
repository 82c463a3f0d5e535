package pythons

import (
	"os"
	"slices"
	"strings"
)

// BenchVenv is the interpreter of the bench-only virtual environment scripts/venv-torch.sh
// builds with the current PyTorch release from PyPI, relative to the repository's root.
const BenchVenv = ".venv-bench/bin/python"

// debian is the interpreter Debian's python3-torch is installed for; another python3
// earlier on the PATH would not see it.
const debian = "/usr/bin/python3"

// Default is the comma-separated list a -python flag defaults to: Debian's python3 (python3
// where /usr/bin has none) and BenchVenv when it exists.
func Default() string {
	py := []string{"python3"}
	if _, err := os.Stat(debian); err == nil {
		py[0] = debian
	}
	if _, err := os.Stat(BenchVenv); err == nil {
		py = append(py, BenchVenv)
	}
	return strings.Join(py, ",")
}

// List splits a comma-separated -python value into interpreters, trimming spaces and
// dropping empty entries and repeats: "" is none.
func List(flagValue string) []string {
	var out []string
	for _, py := range strings.Split(flagValue, ",") {
		py = strings.TrimSpace(py)
		if py != "" && !slices.Contains(out, py) {
			out = append(out, py)
		}
	}
	return out
}
