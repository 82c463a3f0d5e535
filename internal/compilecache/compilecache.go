package compilecache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Env names the environment variable that moves the compile cache (a folder), or turns
// it off ("off"). Unset, the cache lives in the user's cache folder
// (os.UserCacheDir()/moec/cuda).
const Env = "MOEC_CUDA_CACHE"

// cacheUnused is how long a cache entry may go unused before a later store removes it.
const cacheUnused = 30 * 24 * time.Hour

// Cache keeps what clang makes of sources that do not change between sessions (the
// emulated kernel library, the driver and NCCL stand-ins: nine translation units that take
// over nine tenths of an emulated session's compile; each kernel file's PTX), keyed by the
// SHA-256 of the compiler, its arguments and every input byte, as Triton and ccache key
// theirs. An entry is a folder written whole under a temporary name and renamed into
// place, so a reader sees all of it or none; two processes storing the same key keep the
// first. Entries unused for a month go when another is stored.
type Cache struct {
	root string // "" when there is no cache: every build runs in its own folder
}

// Open opens the cache Env names, or the user's; a machine with no cache
// folder (no HOME, a read-only disk) gets no cache, never an error.
func Open() Cache {
	root := os.Getenv(Env)
	switch {
	case root == "off":
		return Cache{}
	case root == "":
		base, err := os.UserCacheDir()
		if err != nil {
			return Cache{}
		}
		root = filepath.Join(base, "moec", "cuda")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return Cache{}
	}
	return Cache{root: root}
}

// Key is the hex SHA-256 of the compiler (its path, size and time, so an upgraded
// clang misses), the arguments and the named files of dir, names and contents.
func Key(clang string, args []string, dir string, files []string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "moec-cuda-cache 1\x00%s\x00", clang)
	if path, err := resolveTool(clang); err == nil {
		if st, err := os.Stat(path); err == nil {
			fmt.Fprintf(h, "%s %d %d\x00", path, st.Size(), st.ModTime().UnixNano())
		}
	}
	for _, a := range args {
		fmt.Fprintf(h, "arg %s\x00", a)
	}
	names := slices.Clone(files)
	slices.Sort(names)
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return "", fmt.Errorf("compile cache: %w", err)
		}
		fmt.Fprintf(h, "file %s\x00", n)
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("compile cache: %w", err)
		}
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// resolveTool is the file a command name runs (itself when it is a path), symbolic links
// followed.
func resolveTool(name string) (string, error) {
	path := name
	if !strings.ContainsRune(name, filepath.Separator) {
		var err error
		if path, err = exec.LookPath(name); err != nil {
			return "", err
		}
	}
	return filepath.EvalSymlinks(path)
}

// Get returns the folder of key's entry when the cache holds it whole (marking it used),
// else "".
func (c Cache) Get(key string) string {
	if c.root == "" {
		return ""
	}
	dir := filepath.Join(c.root, key)
	if _, err := os.Stat(filepath.Join(dir, doneMark)); err != nil {
		return ""
	}
	now := time.Now()
	_ = os.Chtimes(dir, now, now) // best effort: an entry marked late is only pruned early
	return dir
}

// doneMark is the file an entry's folder holds once every output is in it.
const doneMark = "complete"

// Put runs build in a fresh folder and stores what it leaves there as key's entry,
// returning the entry's folder. Without a cache, or when storing fails, the outputs stay
// in a folder under fallback and that is returned.
func (c Cache) Put(key, fallback string, build func(dir string) error) (string, error) {
	if c.root == "" {
		return fallback, build(fallback)
	}
	tmp, err := os.MkdirTemp(c.root, key+".tmp-*")
	if err != nil {
		return fallback, build(fallback)
	}
	if err := build(tmp); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := syncFolder(tmp); err != nil {
		os.RemoveAll(tmp)
		return fallback, build(fallback)
	}
	final := filepath.Join(c.root, key)
	if err := os.Rename(tmp, final); err != nil {
		// Another process stored the same key first (its entry is the same bytes), or the
		// rename failed: use the stored entry when it is whole, else this build's outputs.
		if dir := c.Get(key); dir != "" {
			os.RemoveAll(tmp)
			return dir, nil
		}
		if err := copyFolder(tmp, fallback); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("compile cache: %w", err)
		}
		os.RemoveAll(tmp)
		return fallback, nil
	}
	c.prune(key)
	return final, nil
}

// syncFolder writes the done mark into dir and flushes every file in it to the disk, so a
// crash leaves no entry that looks whole but is not.
func syncFolder(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, doneMark), nil, 0o644); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range append(entries, nil) {
		name := dir
		if e != nil {
			name = filepath.Join(dir, e.Name())
		}
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// copyFolder copies the plain files of src into dst.
func copyFolder(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// prune removes the entries other than keep that went unused for cacheUnused, and
// temporary folders of builds that died as old.
func (c Cache) prune(keep string) {
	entries, err := os.ReadDir(c.root)
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-cacheUnused)
	for _, e := range entries {
		if e.Name() == keep || !e.IsDir() && !strings.HasSuffix(e.Name(), lockSuffix) {
			continue
		}
		info, err := e.Info()
		if err != nil || info.ModTime().After(cutoff) {
			continue
		}
		_ = os.RemoveAll(filepath.Join(c.root, e.Name()))
	}
}

// CompileEach compiles each source of dir to an object of the same base name in out (clang
// args… -c source -o out/base.o, run in dir), as many at once as workers, and returns the
// first failure.
func CompileEach(ctx context.Context, dir, out, clang string, args []string, sources []string, workers int) error {
	return Parallel(len(sources), workers, func(i int) error {
		obj := filepath.Join(out, strings.TrimSuffix(sources[i], filepath.Ext(sources[i]))+".o")
		return Run(ctx, dir, clang, slices.Concat(args, []string{"-c", sources[i], "-o", obj})...)
	})
}

// Parallel runs do(i) for every i in [0, n), as many at once as workers, and returns the
// failure of the smallest i that failed (nil when none did).
func Parallel(n, workers int, do func(i int) error) error {
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(1, min(workers, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs[i] = do(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Run runs the compiler with args in dir; a failure carries the compiler's output.
func Run(ctx context.Context, dir, compiler string, args ...string) error {
	cmd := exec.CommandContext(ctx, compiler, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", filepath.Base(compiler), strings.Join(args, " "), err, out)
	}
	return nil
}

// Build returns the folder of key's entry, running build into a new one on a miss (Put).
func (c Cache) Build(key, fallback string, build func(dir string) error) (string, error) {
	if dir := c.Get(key); dir != "" {
		return dir, nil
	}
	// One build per key at a time, across processes (the ranks of an mpirun job, the test
	// packages of one `go test`): a second builder waits for the first and takes its entry.
	unlock := c.lock(key)
	defer unlock()
	if dir := c.Get(key); dir != "" {
		return dir, nil
	}
	return c.Put(key, fallback, build)
}

// lockSuffix names the file whose lock a key's builder holds.
const lockSuffix = ".lock"

// lock takes key's build lock (an exclusive flock on root/key.lock, waiting while another
// process or goroutine holds it) and returns its release. Without a cache, or where the
// lock cannot be taken, it takes nothing: builds may then run twice, which Put tolerates.
func (c Cache) lock(key string) func() {
	if c.root == "" {
		return func() {}
	}
	f, err := os.OpenFile(filepath.Join(c.root, key+lockSuffix), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return func() {}
	}
	now := time.Now()
	_ = os.Chtimes(f.Name(), now, now) // in use: not pruned
	if err := lockFile(f); err != nil {
		f.Close()
		return func() {}
	}
	return func() { f.Close() } // closing the file releases the lock
}
