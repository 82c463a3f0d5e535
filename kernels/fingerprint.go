package kernels

import (
	"fmt"
	"hash/fnv"
)

// Fingerprint identifies a kernel set's interface and baked-in shapes: kernel names,
// parameter names, types and access, and shape constants. Compiled kernels carry it
// (moe_fingerprint in the LLVM module) so that a loader can refuse a library built for
// another shape, whose buffers would be sized differently.
func Fingerprint(ks []*Kernel) uint64 {
	h := fnv.New64a()
	for _, k := range ks {
		fmt.Fprintf(h, "kernel %s\n", k.Name)
		for _, c := range k.Consts {
			fmt.Fprintf(h, "const %s %v %d %g\n", c.Name, c.T, c.I, c.F)
		}
		for _, p := range k.Params {
			fmt.Fprintf(h, "param %s %v %t %d\n", p.Name, p.Elem, p.Buffer, p.Access)
		}
	}
	return h.Sum64()
}
