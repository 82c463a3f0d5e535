package human

import (
	"math"
	"strconv"
)

// sig3 writes v with three significant digits and no exponent for |v| < 1000: 46.7, 338,
// 1.5, 0.25.
func sig3(v float64) string {
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// scaled writes x in the largest unit of names (each base times the one before) that
// keeps its mantissa at least 1, moving up a unit when the rounded mantissa needs four
// digits (999.7k is 1M, not 1e+03k; 1000 KiB is 0.977 MiB).
func scaled(x float64, base float64, names []string) string {
	a := math.Abs(x)
	i := 0
	for i+1 < len(names) && a >= base {
		a /= base
		i++
	}
	v := math.Copysign(a, x)
	if i+1 < len(names) {
		if r, _ := strconv.ParseFloat(sig3(a), 64); r >= 1000 {
			v /= base
			i++
		}
	}
	return sig3(v) + names[i]
}

// Count writes a count with three significant digits and a decimal suffix: 46.7B, 12.9B,
// 1.57T, 338M, 2.56k, 17. Beyond the trillions it keeps T (1570T) rather than switching to
// an exponent a reader must decode. Non-finite values print as Go prints them.
func Count(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	if a := math.Abs(x); a < 1000 {
		if x == math.Trunc(x) {
			return strconv.FormatFloat(x, 'f', 0, 64)
		}
		return sig3(x)
	}
	if math.Abs(x) >= 1e15 {
		return strconv.FormatFloat(x/1e12, 'f', 0, 64) + "T"
	}
	return scaled(x, 1000, []string{"", "k", "M", "B", "T"})
}

// Bytes writes a size in binary units with three significant digits: 461 MiB, 1.5 GiB,
// 40 GiB, 17.2 TiB; below 1 KiB, the exact number of bytes (512 B).
func Bytes(n int64) string {
	if n > -1024 && n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	return scaled(float64(n), 1024, []string{" B", " KiB", " MiB", " GiB", " TiB", " PiB", " EiB"})
}

// Exact writes an integer with thousands separators: 46,702,792,704.
func Exact(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3+1)
	if neg {
		out = append(out, '-')
	}
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// SI writes a quantity of unit with three significant digits and an SI prefix: 25.8 GFLOP,
// 312 TFLOP/s, 25 GB. Below 1 it keeps the plain unit (0.5 FLOP).
func SI(x float64, unit string) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return strconv.FormatFloat(x, 'g', -1, 64) + " " + unit
	}
	return scaled(x, 1000, []string{" ", " k", " M", " G", " T", " P", " E", " Z", " Y"}) + unit
}
