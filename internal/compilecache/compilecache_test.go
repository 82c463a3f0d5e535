package compilecache

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClang writes a shell script that acts as clang++ for CompileEach: for every
// "-c SRC -o OBJ" it writes OBJ (the source's bytes) and counts the call in a log.
func fakeClang(t *testing.T) (clang, log string) {
	t.Helper()
	bin := t.TempDir()
	log = filepath.Join(bin, "calls")
	clang = filepath.Join(bin, "clang++")
	script := `#!/bin/sh
src=""; out=""
while [ $# -gt 0 ]; do
  case "$1" in
    -c) src="$2"; shift ;;
    -o) out="$2"; shift ;;
  esac
  shift
done
echo "$src" >> "` + log + `"
cat "$src" > "$out"
`
	if err := os.WriteFile(clang, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return clang, log
}

func calls(t *testing.T, log string) int {
	t.Helper()
	data, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}

// TestCompileCacheReusesObjects: the second build of the same sources compiles nothing and
// hands back objects with the first build's bytes; a changed source or header misses; a
// cache turned off compiles every time, into the build's own folder.
func TestCompileCacheReusesObjects(t *testing.T) {
	clang, log := fakeClang(t)
	t.Setenv(Env, t.TempDir())
	sources := []string{"a.cpp", "b.cpp", "c.cpp"}
	session := func(header string) string {
		t.Helper()
		dir := t.TempDir()
		for _, s := range sources {
			if err := os.WriteFile(filepath.Join(dir, s), []byte("source "+s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "k.h"), []byte(header), 0o644); err != nil {
			t.Fatal(err)
		}
		c := Open()
		key, err := Key(clang, []string{"-O1"}, dir, append(sources, "k.h"))
		if err != nil {
			t.Fatal(err)
		}
		objects, err := c.Build(key, dir, func(out string) error {
			return CompileEach(context.Background(), dir, out, clang, []string{"-O1"}, sources, 2)
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sources {
			got, err := os.ReadFile(filepath.Join(objects, strings.TrimSuffix(s, ".cpp")+".o"))
			if err != nil || string(got) != "source "+s {
				t.Fatalf("object of %s: %q, %v", s, got, err)
			}
		}
		return objects
	}
	first := session("v1")
	if n := calls(t, log); n != len(sources) {
		t.Fatalf("first build: %d compiles, want %d", n, len(sources))
	}
	if again := session("v1"); again != first || calls(t, log) != len(sources) {
		t.Errorf("same sources: folder %s (first %s), %d compiles in all; want the cached folder and no compile", again, first, calls(t, log))
	}
	if other := session("v2"); other == first || calls(t, log) != 2*len(sources) {
		t.Errorf("a changed header: folder %s, %d compiles in all; want a new entry and %d compiles", other, calls(t, log), 2*len(sources))
	}
	t.Setenv(Env, "off")
	off := session("v1")
	if calls(t, log) != 3*len(sources) || filepath.Dir(off) == filepath.Dir(first) {
		t.Errorf("cache off: %d compiles in all into %s; want %d, in the session's folder", calls(t, log), off, 3*len(sources))
	}
}

// TestCompileCacheKeepsNoFailedBuild: a compile that fails stores nothing, so the next
// build compiles again instead of reading a partial entry.
func TestCompileCacheKeepsNoFailedBuild(t *testing.T) {
	root := t.TempDir()
	t.Setenv(Env, root)
	c := Open()
	if _, err := c.Put("k", t.TempDir(), func(string) error { return os.ErrInvalid }); err == nil {
		t.Fatal("a failing build stored without error")
	}
	if c.Get("k") != "" {
		t.Fatal("a failed build left an entry")
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 0 {
		t.Fatalf("a failed build left %d folders in the cache", len(entries))
	}
}

// TestCompileCacheBuildsOnce: builders of one key at the same time (as the test packages
// of one `go test`, or an mpirun job's ranks, start cold) build it once; the others wait
// for the first and take its entry.
func TestCompileCacheBuildsOnce(t *testing.T) {
	t.Setenv(Env, t.TempDir())
	var builds atomic.Int32
	var wg sync.WaitGroup
	dirs := make([]string, 4)
	errs := make([]error, 4)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs[i], errs[i] = Open().Build("k1", t.TempDir(), func(out string) error {
				builds.Add(1)
				time.Sleep(50 * time.Millisecond) // long enough for the others to arrive
				return os.WriteFile(filepath.Join(out, "obj.o"), []byte("object"), 0o644)
			})
		}()
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil || dirs[i] != dirs[0] {
			t.Fatalf("builder %d: folder %q (%v); builder 0 got %q", i, dirs[i], errs[i], dirs[0])
		}
	}
	if n := builds.Load(); n != 1 {
		t.Fatalf("%d builds of one key by four builders at once; want 1", n)
	}
}

// TestParallelRunsEachOnceAndReportsTheFirstFailure: every index runs once, whatever the
// workers, and the failure returned is the smallest index's.
func TestParallelRunsEachOnceAndReportsTheFirstFailure(t *testing.T) {
	for _, workers := range []int{0, 1, 3, 64} {
		var mu sync.Mutex
		ran := map[int]int{}
		err := Parallel(10, workers, func(i int) error {
			mu.Lock()
			ran[i]++
			mu.Unlock()
			if i == 4 || i == 7 {
				return fmt.Errorf("index %d", i)
			}
			return nil
		})
		if err == nil || err.Error() != "index 4" {
			t.Errorf("workers %d: error %v, want index 4's", workers, err)
		}
		for i := range 10 {
			if ran[i] != 1 {
				t.Errorf("workers %d: index %d ran %d times", workers, i, ran[i])
			}
		}
	}
	if err := Parallel(0, 2, func(int) error { return fmt.Errorf("ran") }); err != nil {
		t.Errorf("no work: %v", err)
	}
}
