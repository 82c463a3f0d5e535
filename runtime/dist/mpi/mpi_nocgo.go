//go:build !cgo

package mpi

import (
	"errors"
	"time"

	"github.com/moec-dev/moec/runtime/dist"
)

// errNoCgo is why MPI is unavailable in a binary built without cgo: libmpi is reached
// through a C shim.
var errNoCgo = errors.New("mpi: this moec was built without cgo (CGO_ENABLED=0), so it cannot load Open MPI; rebuild it with cgo")

func load() error { return errNoCgo }

// Init fails: MPI needs cgo.
func Init(time.Duration) (dist.Comm, error) { return nil, errNoCgo }

// Finalize fails: MPI needs cgo.
func Finalize() error { return errNoCgo }
