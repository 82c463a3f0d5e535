// Package safetensors reads and writes the safetensors tensor file format used by Hugging
// Face: an 8-byte little-endian header length, a JSON header mapping each tensor name to
// its dtype, shape and byte range ("data_offsets", relative to the end of the header) plus
// an optional "__metadata__" string map, then the raw little-endian tensor bytes.
//
// In: named float32 tensors and metadata (Encode, WriteFile), or bytes from disk (Decode,
// ReadFile). Out: the same tensors. Writing always uses F32; reading also accepts F64, F16
// and BF16 and converts to float32.
//
// Decode treats its input as hostile: every length, offset, shape and dtype is checked
// against the file before use, the data region must be covered exactly once, and a bad
// file yields an error that names the tensor and what is wrong, never a panic or a huge
// allocation. FuzzSafetensors exercises this.
package safetensors
