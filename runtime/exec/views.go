package exec

import "unsafe"

// Buffer is program buffer b's view of the executor's arena (an int32 buffer's values as
// their float32 bits), nil when no op of the program touches it: what a copy of the arena
// elsewhere (a GPU's, runtime/gpu) reads and writes, buffer by buffer, at the same
// offsets.
func (e *Executor) Buffer(b int) []float32 {
	if b < 0 || b >= len(e.f32) {
		return nil
	}
	if e.f32[b] != nil {
		return e.f32[b]
	}
	if v := e.i32[b]; v != nil {
		return asFloat32(v)
	}
	return nil
}

func asFloat32(view []int32) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(view))), len(view))
}
