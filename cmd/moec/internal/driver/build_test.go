package driver_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
)

const tinyMoe = `model tiny {
  vocab = 256; d_model = 32; layers = 2; seq_len = 32
  attention { heads = 2 }
  ffn { hidden = 64; activation = gelu }
  moe { experts = 4; top_k = 2; every = 2 }
}
cluster local { gpu = cpu; ranks = 1; host_memory = 8GiB }
train tiny on local {
  tokens_per_batch = 256; micro_batch = 4; precision = fp32
  optimizer = adamw { lr = 3e-3 }
  data = "text/*.txt"
  stage dense { experts = 1; steps = 20 }
  stage moe from dense { experts = 4; grow = copy(noise = 0.01); steps = 20 }
}
`

// TestBuildListsEveryFile: the files a build reports (and `moec build` counts) are
// exactly the files it leaves in the output folder, with and without code.
func TestBuildListsEveryFile(t *testing.T) {
	dir, l := loadTiny(t)
	for _, noCode := range []bool{true, false} {
		root := filepath.Join(dir, "out", map[bool]string{true: "nocode", false: "code"}[noCode])
		res, diags, err := driver.Build(l, driver.BuildOptions{OutRoot: root, NoCode: noCode})
		if err != nil || diags.HasErrors() {
			t.Fatalf("NoCode %v: %v %v", noCode, err, diags.Err())
		}
		var onDisk []string
		err = filepath.WalkDir(res.OutDir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				onDisk = append(onDisk, p)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		listed := slices.Clone(res.Files)
		slices.Sort(listed)
		slices.Sort(onDisk)
		if !slices.Equal(listed, onDisk) {
			t.Errorf("NoCode %v: build lists %d files, wrote %d:\nlisted  %q\non disk %q", noCode, len(listed), len(onDisk), listed, onDisk)
		}
		for _, want := range []string{"report.md", "report.json", "report.html"} {
			if !slices.Contains(listed, filepath.Join(res.OutDir, want)) {
				t.Errorf("NoCode %v: %s is not listed", noCode, want)
			}
		}
	}
}

// loadTiny writes tinyMoe into a fresh folder and loads it, failing t when it does not
// check; it returns the folder and the loaded file.
func loadTiny(t *testing.T) (string, *driver.Loaded) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "tiny.moe")
	if err := os.WriteFile(path, []byte(tinyMoe), 0o644); err != nil {
		t.Fatal(err)
	}
	l := driver.Load(path)
	if l.Diags.HasErrors() {
		t.Fatalf("tiny.moe does not check: %v", l.Diags.Err())
	}
	return dir, l
}
