//go:build !linux

package nn

// adviseHuge does nothing: transparent huge pages are Linux's.
func adviseHuge(b []byte, collapse bool) {}
