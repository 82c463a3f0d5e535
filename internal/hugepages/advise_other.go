//go:build !linux

package hugepages

// Advise does nothing: transparent huge pages are Linux's.
func Advise(b []byte, collapse bool) {}
