package llvmrt

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

typedef void (*moe_packed_fn)(void **args, int64_t begin, int64_t end);
typedef int64_t (*moe_fingerprint_fn)(void);

static int64_t moe_fingerprint(void *fn) { return ((moe_fingerprint_fn)fn)(); }

static void moe_call(void *fn, void **args, int64_t begin, int64_t end) {
	((moe_packed_fn)fn)(args, begin, end);
}

static void *moe_open(const char *path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }
static const char *moe_dlerror(void) { const char *e = dlerror(); return e ? e : "unknown dlopen error"; }
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/moec-dev/moec/kernels"
)

// Library is a loaded shared object of compiled kernels.
type Library struct {
	handle unsafe.Pointer
	path   string
}

// Open loads the shared library at path (as written by codegen.Emit with clang).
func Open(path string) (*Library, error) {
	cs := C.CString(path)
	defer C.free(unsafe.Pointer(cs))
	h := C.moe_open(cs)
	if h == nil {
		return nil, fmt.Errorf("llvmrt: open %s: %s", path, C.GoString(C.moe_dlerror()))
	}
	return &Library{handle: h, path: path}, nil
}

// Close unloads the library; kernels looked up from it must not be called afterwards.
func (l *Library) Close() error {
	if l.handle == nil {
		return nil
	}
	if C.dlclose(l.handle) != 0 {
		return fmt.Errorf("llvmrt: close %s: %s", l.path, C.GoString(C.moe_dlerror()))
	}
	l.handle = nil
	return nil
}

// Fingerprint returns the kernel-set fingerprint compiled into the library.
func (l *Library) Fingerprint() (uint64, error) {
	sym := C.CString("moe_fingerprint")
	defer C.free(unsafe.Pointer(sym))
	fn := C.dlsym(l.handle, sym)
	if fn == nil {
		return 0, fmt.Errorf("llvmrt: %s has no moe_fingerprint: not a moec kernel library", l.path)
	}
	return uint64(C.moe_fingerprint(fn)), nil
}

// Set is a library bound to the kernel set it was generated from.
type Set struct {
	lib     *Library
	kernels map[string]*Kernel
}

// LoadSet opens the library at path and binds every kernel of ks, after checking that
// the library was generated for exactly this set (kernels.Fingerprint): a library built
// for another shape would read and write buffers of other sizes.
func LoadSet(path string, ks []*kernels.Kernel) (*Set, error) {
	lib, err := Open(path)
	if err != nil {
		return nil, err
	}
	fp, err := lib.Fingerprint()
	if err == nil && fp != kernels.Fingerprint(ks) {
		err = fmt.Errorf("llvmrt: %s was generated for other kernel shapes (fingerprint %016x, want %016x); regenerate it",
			path, fp, kernels.Fingerprint(ks))
	}
	if err != nil {
		lib.Close()
		return nil, err
	}
	s := &Set{lib: lib, kernels: map[string]*Kernel{}}
	for _, k := range ks {
		ck, err := lib.Kernel(k)
		if err != nil {
			lib.Close()
			return nil, err
		}
		s.kernels[k.Name] = ck
	}
	return s, nil
}

// Run runs the named kernel on env (see Kernel.Run).
func (s *Set) Run(name string, env kernels.Env, workers int) error {
	k, ok := s.kernels[name]
	if !ok {
		return fmt.Errorf("llvmrt: no kernel %q in the set", name)
	}
	return k.Run(env, workers)
}

// Close unloads the library.
func (s *Set) Close() error { return s.lib.Close() }

// Kernel is one compiled kernel bound to its description.
type Kernel struct {
	desc *kernels.Kernel
	fn   unsafe.Pointer
}

// Kernel looks up the compiled form of k (symbol moe_<name>_packed).
func (l *Library) Kernel(k *kernels.Kernel) (*Kernel, error) {
	sym := C.CString("moe_" + k.Name + "_packed")
	defer C.free(unsafe.Pointer(sym))
	fn := C.dlsym(l.handle, sym)
	if fn == nil {
		return nil, fmt.Errorf("llvmrt: %s has no kernel %s", l.path, k.Name)
	}
	return &Kernel{desc: k, fn: fn}, nil
}

// Run executes the kernel on env's buffers and scalars, splitting the grid into
// contiguous ranges over workers goroutines (workers < 1 means GOMAXPROCS). Buffers are
// checked against the sizes the description gives, so a short buffer is an error, not
// an out-of-bounds write in C.
func (k *Kernel) Run(env kernels.Env, workers int) error {
	d := k.desc
	var pin runtime.Pinner
	defer pin.Unpin()
	// The argument array lives in C memory; the Go buffers it points to are pinned, which
	// is what the cgo rules require for Go pointers stored in C memory.
	n := len(d.Params)
	// Addresses are stored as integers: the Go buffers are pinned for the whole call, and
	// storing them as pointers into C memory would run Go write barriers on C memory.
	args := (*[1 << 20]C.uintptr_t)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(uintptr(0)))))[:n:n]
	defer C.free(unsafe.Pointer(&args[0]))
	scalars := (*[1 << 20]int64)(C.malloc(C.size_t(n) * 8))[:n:n]
	defer C.free(unsafe.Pointer(&scalars[0]))
	for i, p := range d.Params {
		if !p.Buffer {
			s, ok := env.S[p.Name]
			if !ok {
				return fmt.Errorf("llvmrt: %s: scalar %s not set", d.Name, p.Name)
			}
			if p.Elem == kernels.F32 {
				*(*float32)(unsafe.Pointer(&scalars[i])) = float32(s)
			} else {
				scalars[i] = int64(s)
			}
			args[i] = C.uintptr_t(uintptr(unsafe.Pointer(&scalars[i])))
			continue
		}
		size, err := d.Size(p, env)
		if err != nil {
			return fmt.Errorf("llvmrt: %s: %w", d.Name, err)
		}
		var ptr unsafe.Pointer
		var have int
		if p.Elem == kernels.I32 {
			b := env.I[p.Name]
			have = len(b)
			if have > 0 {
				ptr = unsafe.Pointer(&b[0])
			}
		} else {
			b := env.F[p.Name]
			have = len(b)
			if have > 0 {
				ptr = unsafe.Pointer(&b[0])
			}
		}
		if int64(have) < size {
			return fmt.Errorf("llvmrt: %s: buffer %s has %d elements, needs %d", d.Name, p.Name, have, size)
		}
		if ptr != nil {
			pin.Pin(ptr)
		}
		args[i] = C.uintptr_t(uintptr(ptr))
	}
	total, err := d.GridSize(env)
	if err != nil {
		return fmt.Errorf("llvmrt: %s: %w", d.Name, err)
	}
	if workers < 1 {
		workers = runtime.GOMAXPROCS(0)
	}
	if int64(workers) > total {
		workers = int(max(total, 1))
	}
	argv := (*unsafe.Pointer)(unsafe.Pointer(&args[0]))
	if workers == 1 {
		C.moe_call(k.fn, argv, 0, C.int64_t(total))
		return nil
	}
	var wg sync.WaitGroup
	chunk := (total + int64(workers) - 1) / int64(workers)
	for lo := int64(0); lo < total; lo += chunk {
		hi := min(lo+chunk, total)
		wg.Add(1)
		go func() {
			defer wg.Done()
			C.moe_call(k.fn, argv, C.int64_t(lo), C.int64_t(hi))
		}()
	}
	wg.Wait()
	return nil
}

// Func is an exported C function of the packed form void f(void **args, int64_t begin,
// int64_t end), looked up by its symbol: how tests and drivers call compiled code whose
// arguments no kernels.Kernel describes.
type Func struct {
	fn   unsafe.Pointer
	name string
}

// Func looks up the packed function symbol.
func (l *Library) Func(symbol string) (*Func, error) {
	sym := C.CString(symbol)
	defer C.free(unsafe.Pointer(sym))
	fn := C.dlsym(l.handle, sym)
	if fn == nil {
		return nil, fmt.Errorf("llvmrt: %s has no function %s", l.path, symbol)
	}
	return &Func{fn: fn, name: symbol}, nil
}

// Call calls the function with args[i] as the i-th element of its argument array: a
// []float32, []int32, []uint16 or []byte passes the address of its first element (pinned
// for the call; nil when empty), a float32, int32 or int64 the address of a copy in C
// memory. Any other type is an error.
func (f *Func) Call(begin, end int64, args ...any) error {
	var pin runtime.Pinner
	defer pin.Unpin()
	n := max(len(args), 1)
	ptrs := (*[1 << 20]C.uintptr_t)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(uintptr(0)))))[:n:n]
	defer C.free(unsafe.Pointer(&ptrs[0]))
	scalars := (*[1 << 20]int64)(C.malloc(C.size_t(n) * 8))[:n:n]
	defer C.free(unsafe.Pointer(&scalars[0]))
	for i, a := range args {
		var p unsafe.Pointer
		switch v := a.(type) {
		case []float32:
			if len(v) > 0 {
				p = unsafe.Pointer(&v[0])
			}
		case []int32:
			if len(v) > 0 {
				p = unsafe.Pointer(&v[0])
			}
		case []uint16:
			if len(v) > 0 {
				p = unsafe.Pointer(&v[0])
			}
		case []byte:
			if len(v) > 0 {
				p = unsafe.Pointer(&v[0])
			}
		case float32:
			*(*float32)(unsafe.Pointer(&scalars[i])) = v
			ptrs[i] = C.uintptr_t(uintptr(unsafe.Pointer(&scalars[i])))
			continue
		case int32:
			*(*int32)(unsafe.Pointer(&scalars[i])) = v
			ptrs[i] = C.uintptr_t(uintptr(unsafe.Pointer(&scalars[i])))
			continue
		case int64:
			scalars[i] = v
			ptrs[i] = C.uintptr_t(uintptr(unsafe.Pointer(&scalars[i])))
			continue
		default:
			return fmt.Errorf("llvmrt: %s: argument %d has type %T, want a slice of float32, int32, uint16 or byte, or a float32, int32 or int64", f.name, i, a)
		}
		if p != nil {
			pin.Pin(p)
		}
		ptrs[i] = C.uintptr_t(uintptr(p))
	}
	C.moe_call(f.fn, (*unsafe.Pointer)(unsafe.Pointer(&ptrs[0])), C.int64_t(begin), C.int64_t(end))
	return nil
}
