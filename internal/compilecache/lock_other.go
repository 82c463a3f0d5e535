//go:build !unix

package compilecache

import (
	"errors"
	"os"
)

// lockFile takes no lock here: concurrent builds of one key run twice, which Put
// tolerates.
func lockFile(*os.File) error { return errors.New("compile cache: no file locks on this system") }
