package hugepages

import "syscall"

// madvCollapse is Linux's MADV_COLLAPSE (6.1 and later; older kernels refuse it).
const madvCollapse = 25

// Advise asks Linux to back b with transparent huge pages: MADV_HUGEPAGE before the
// memory is first touched (the page faults then take huge pages where the system's
// transparent_hugepage setting is madvise or always), MADV_COLLAPSE with collapse (the
// small pages already there merged now).
func Advise(b []byte, collapse bool) {
	if len(b) == 0 {
		return
	}
	advice := syscall.MADV_HUGEPAGE
	if collapse {
		advice = madvCollapse
	}
	_ = syscall.Madvise(b, advice) // advice only: refusal changes speed, never results
}
