//go:build !cgo

package llvmrt

import (
	"errors"

	"github.com/moec-dev/moec/kernels"
)

// Without cgo there is no dlopen: every entry point says so, and the rest of moec (which
// only uses compiled kernels on request, with --llvm) builds and runs without them.
var errNoCgo = errors.New("llvmrt: compiled kernels need cgo (this moec was built with CGO_ENABLED=0)")

// Library is a loaded shared object of compiled kernels.
type Library struct{}

// Open fails: loading a shared library needs cgo.
func Open(path string) (*Library, error) { return nil, errNoCgo }

// Close does nothing.
func (l *Library) Close() error { return nil }

// Fingerprint fails without cgo.
func (l *Library) Fingerprint() (uint64, error) { return 0, errNoCgo }

// Set is a library with its kernels looked up.
type Set struct{}

// LoadSet fails without cgo.
func LoadSet(path string, ks []*kernels.Kernel) (*Set, error) { return nil, errNoCgo }

// Run fails without cgo.
func (s *Set) Run(name string, env kernels.Env, workers int) error { return errNoCgo }

// Close does nothing.
func (s *Set) Close() error { return nil }

// Kernel is one compiled kernel.
type Kernel struct{}

// Kernel fails without cgo.
func (l *Library) Kernel(k *kernels.Kernel) (*Kernel, error) { return nil, errNoCgo }

// Run fails without cgo.
func (k *Kernel) Run(env kernels.Env, workers int) error { return errNoCgo }

// Func is an exported packed C function.
type Func struct{}

// Func fails without cgo.
func (l *Library) Func(symbol string) (*Func, error) { return nil, errNoCgo }

// Call fails without cgo.
func (f *Func) Call(begin, end int64, args ...any) error { return errNoCgo }
