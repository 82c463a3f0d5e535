// Package hugepages asks Linux to back large, long-lived buffers (a model's weights, a step
// program's arenas) with transparent huge pages: a product or a decoding step that
// streams tens of MiB misses the TLB every 4 KiB on small pages, and almost never on
// 2 MiB ones. Everything here is advice: a kernel or a transparent_hugepage setting that
// declines it leaves small pages and the same numbers, never different results.
package hugepages
