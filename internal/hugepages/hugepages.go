package hugepages

import "unsafe"

// Size is an x86-64 transparent huge page.
const Size = 2 << 20

// Interior is the part of x that whole huge pages cover, as bytes (nil when none).
func Interior[T any](x []T) []byte {
	if len(x) == 0 {
		return nil
	}
	var zero T
	start := uintptr(unsafe.Pointer(&x[0]))
	end := start + uintptr(len(x))*unsafe.Sizeof(zero)
	lo, hi := (start+Size-1)&^(Size-1), end&^(Size-1)
	if hi <= lo {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), end-start)[lo-start : hi-start]
}

// Back advises huge pages for x's interior before it is written (Advise) and merges the
// small pages already there (Collapse): for a buffer allocated just now, whose memory may
// be fresh or reused.
func Back[T any](x []T) {
	b := Interior(x)
	Advise(b, false)
	Advise(b, true)
}
