//go:build !unix

package train

import (
	"errors"
	"os"
)

// tryLock cannot lock on this system; a run there says so instead of running unguarded.
func tryLock(*os.File) (bool, error) {
	return false, errors.New("file locks are not supported on this system")
}
