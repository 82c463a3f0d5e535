package nn

import (
	"math"
	"unsafe"
)

// expF is e^x in the precision of F. The float32 instantiation uses exp32, which is about
// three times faster than math.Exp and exact to two ulps; the float64 instantiation (the
// gradient checks) keeps math.Exp. The size test is resolved at compile time per shape.
func expF[F Float](x F) F {
	if unsafe.Sizeof(x) == 4 {
		return F(exp32(float32(x)))
	}
	return F(math.Exp(float64(x)))
}

// exp32 computes e^x for float32: x = n·ln2 + r with |r| ≤ ln2/2, e^r by its degree-6
// Taylor polynomial (truncation error below 2e-7 relative), times 2^n built in the
// exponent bits. Results saturate at 0 and +Inf outside float32's range.
func exp32(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		ln2hi = 0.693145751953125
		ln2lo = 1.42860682030941723212e-6
	)
	if x > 88.72 {
		return float32(math.Inf(1))
	}
	if x < -87.33 {
		return 0
	}
	kf := x*log2e + 0.5
	if x < 0 {
		kf = x*log2e - 0.5
	}
	k := int32(kf)
	r := x - float32(k)*ln2hi - float32(k)*ln2lo
	p := 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720))))))
	if k > 127 { // 2^128 is not a float32; scale in two steps
		p *= 2
		k--
	}
	return p * math.Float32frombits(uint32(k+127)<<23)
}
