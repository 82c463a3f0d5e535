package safetensors

import "math"

// E4M3 is the value of an OCP FP8 E4M3 byte as torch's float8_e4m3fn reads it (the F8_E4M3
// dtype of safetensors): 1 sign bit, 4 exponent bits of bias 7, 3 mantissa bits, subnormals
// below exponent 1, no infinities, and S.1111.111 (0x7F, 0xFF) NaN. Every value is exact in
// float32; a NaN carries the byte's sign and mantissa bits, as torch's conversion does.
func E4M3(b byte) float32 {
	sign := uint32(b>>7) << 31
	exp := uint32(b>>3) & 0xf
	mant := uint32(b) & 0x7
	switch {
	case exp == 0xf && mant == 0x7:
		return math.Float32frombits(sign | 0xff<<23 | mant<<20)
	case exp == 0: // subnormal: mant · 2^-9
		v := float32(mant) / (1 << 9)
		return math.Float32frombits(sign | math.Float32bits(v))
	}
	return math.Float32frombits(sign | (exp+127-7)<<23 | mant<<20)
}

// E5M2 is the value of an FP8 E5M2 byte (F8_E5M2, torch's float8_e5m2): the upper half of
// an IEEE binary16, with infinities and NaNs; a NaN comes back quiet, as torch's does.
func E5M2(b byte) float32 {
	v := halfToFloat(uint16(b) << 8)
	if bits := math.Float32bits(v); bits&0x7f800000 == 0x7f800000 && bits&0x7fffff != 0 {
		return math.Float32frombits(bits | 0x400000)
	}
	return v
}
