package pythons

import (
	"slices"
	"strings"
	"testing"
)

func TestList(t *testing.T) {
	for _, c := range []struct {
		flag string
		want []string
	}{
		{"", nil},
		{"/usr/bin/python3", []string{"/usr/bin/python3"}},
		{" /usr/bin/python3 , .venv-bench/bin/python,,/usr/bin/python3", []string{"/usr/bin/python3", ".venv-bench/bin/python"}},
	} {
		if got := List(c.flag); !slices.Equal(got, c.want) {
			t.Errorf("List(%q) = %q, want %q", c.flag, got, c.want)
		}
	}
}

func TestDefaultStartsWithDebiansPython(t *testing.T) {
	first, _, _ := strings.Cut(Default(), ",")
	if first != debian && first != "python3" {
		t.Errorf("Default() = %q: want Debian's python3 first", Default())
	}
}
