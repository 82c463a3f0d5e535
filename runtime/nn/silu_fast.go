package nn

import "github.com/moec-dev/moec/runtime/internal/vec"

// siluVecMin is the length below which a cgo call costs more than the Go loop saves.
const siluVecMin = 256

// siluForwardFast is siluForward32 on AVX2 lanes where the build and CPU have them.
func siluForwardFast(h, a, u []float32) {
	if len(a) < siluVecMin || !vec.SiLUForward(h, a, u) {
		siluForward32(h, a, u)
	}
}

// siluBackwardFast is siluBackward32 on AVX2 lanes where the build and CPU have them.
func siluBackwardFast(da, du, dh, a, u []float32) {
	if len(a) < siluVecMin || !vec.SiLUBackward(da, du, dh, a, u) {
		siluBackward32(da, du, dh, a, u)
	}
}
