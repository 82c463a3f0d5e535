package blas

import "math"

// FP16Convert reports whether RoundFP16s rounds through the CPU's F16C instructions
// (vcvtps2ph, vcvtph2ps); where it does not, a Go loop gives the same bits.
func FP16Convert() bool { return haveF16C }

// RoundFP16 rounds x to the nearest IEEE binary16 (half) value, ties to even, returned as
// the float32 of the same value: magnitudes from 65520 up become ±Inf, values below the
// smallest normal half (2⁻¹⁴) keep their subnormal halves' steps of 2⁻²⁴ (so 2⁻²⁵ and
// less round to ±0), NaN stays a (quiet) NaN and ±Inf stays ±Inf.
func RoundFP16(x float32) float32 { return fromFP16Bits(toFP16Bits(x)) }

// toFP16Bits is the binary16 bits nearest the float32 x, ties to even (vcvtps2ph with
// imm8 0 writes the same bits, NaN payloads included).
func toFP16Bits(x float32) uint16 {
	u := math.Float32bits(x)
	sign := uint16(u>>16) & 0x8000
	u &= 0x7fffffff
	switch {
	case u > 0x7f800000: // NaN: quieted, the payload's top ten bits kept
		return sign | 0x7e00 | uint16(u>>13)&0x3ff
	case u >= 0x477ff000: // 65520 and up (the tie between 65504 and 2¹⁶ goes to the even, Inf)
		return sign | 0x7c00
	case u >= 0x38800000: // a normal half: rebias the exponent by 127−15, round the 13 bits dropped
		v := u - 0x38000000
		v += 0x0fff + (v>>13)&1
		return sign | uint16(v>>13)
	default: // a subnormal half (or zero): the nearest multiple of 2⁻²⁴; 1024·2⁻²⁴ is 2⁻¹⁴'s bits
		return sign | uint16(math.RoundToEven(float64(math.Float32frombits(u))*(1<<24)))
	}
}

// fromFP16Bits is the float32 of the binary16 bits h (exact: every half is a float32).
func fromFP16Bits(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	e, m := uint32(h>>10)&0x1f, uint32(h&0x3ff)
	switch e {
	case 0:
		return math.Float32frombits(math.Float32bits(float32(m)*0x1p-24) | sign)
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | m<<13)
	default:
		return math.Float32frombits(sign | (e+112)<<23 | m<<13)
	}
}

// roundFP16Go writes dst[i] = RoundFP16(src[i]) (the fallback of roundFP16Row).
func roundFP16Go(dst, src []float32) {
	for i, v := range src {
		dst[i] = RoundFP16(v)
	}
}

// RoundFP16s writes dst[i] = RoundFP16(src[i]) for every i < len(src) (dst may be src),
// through F16C where the CPU has it (FP16Convert).
func RoundFP16s(dst, src []float32) {
	if len(dst) < len(src) {
		panic("blas: RoundFP16s: dst shorter than src")
	}
	roundFP16Row(dst[:len(src)], src)
}

// GemmFP16 computes C = alpha·fp16(op(A))·fp16(op(B)) + beta·C with Gemm's arguments for
// float32 operands: every value of A and B is rounded to IEEE binary16 (RoundFP16) as the
// product reads it, the sums are float32, and C stays float32. A product of two halves is
// exact in float32 (11 + 11 significant bits), so this is what fp16 tensor cores with
// float32 accumulation compute, summed in another order: the mixed-precision training
// product of precision = fp16, float32 master weights and activations rounded at the
// product's inputs. It rounds dense copies of the operands (through F16C where the CPU
// has it) and multiplies them with Gemm; GemmFP16Into keeps the copies' memory between
// calls.
func GemmFP16(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	GemmFP16Into(&FP16Buffers{}, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// FP16Buffers holds GemmFP16Into's rounded copies of the operands, grown as needed and
// reused by the next call; the zero value is ready. One product at a time uses it.
type FP16Buffers struct{ a, b []float32 }

// GemmFP16Into is GemmFP16 rounding into buf's memory instead of new copies.
func GemmFP16Into(buf *FP16Buffers, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkOperands(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if k == 0 {
		Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	ar, ald := roundedFP16Copy(&buf.a, a, transA, m, k, lda)
	br, bld := roundedFP16Copy(&buf.b, b, transB, k, n, ldb)
	Gemm(transA, transB, m, n, k, alpha, ar, ald, br, bld, beta, c, ldc)
}

// roundedFP16Copy copies the stored matrix of op(X) (rows×cols before transposition)
// densely into *dst (grown when short), each value rounded to binary16, and returns it
// with its leading dimension.
func roundedFP16Copy(dst *[]float32, x []float32, trans bool, rows, cols, ld int) ([]float32, int) {
	if trans {
		rows, cols = cols, rows
	}
	if cap(*dst) < rows*cols {
		*dst = make([]float32, rows*cols)
	}
	out := (*dst)[:rows*cols]
	if ld == cols {
		roundFP16Row(out, x[:rows*cols])
		return out, max(cols, 1)
	}
	for i := 0; i < rows; i++ {
		roundFP16Row(out[i*cols:(i+1)*cols], x[i*ld:i*ld+cols])
	}
	return out, max(cols, 1)
}
