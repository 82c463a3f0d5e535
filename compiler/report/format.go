package report

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// count writes a parameter count for people: 46.70B, 12.88B, 1.57T, 337.92M, 2.56k.
func count(n int64) string {
	x := float64(n)
	a := math.Abs(x)
	switch {
	case a >= 1e12:
		return fmt.Sprintf("%.2fT", x/1e12)
	case a >= 1e9:
		return fmt.Sprintf("%.2fB", x/1e9)
	case a >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case a >= 1e3:
		return fmt.Sprintf("%.2fk", x/1e3)
	}
	return strconv.FormatInt(n, 10)
}

// exact writes an integer with thousands separators: 46,702,792,704.
func exact(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// both is the human form with the exact integer: "46.70B (46,702,792,704)".
func both(n int64) string {
	if n < 1000 && n > -1000 {
		return exact(n)
	}
	return count(n) + " (" + exact(n) + ")"
}

// flops writes a FLOP count with an SI prefix: 25.76 GFLOP, 3.14 ZFLOP.
func flops(x float64) string {
	prefixes := []string{"", "K", "M", "G", "T", "P", "E", "Z", "Y"}
	i := 0
	for math.Abs(x) >= 1000 && i < len(prefixes)-1 {
		x /= 1000
		i++
	}
	return fmt.Sprintf("%.2f %sFLOP", x, prefixes[i])
}

// sci writes a large quantity in scientific notation as papers do: 3.14e23.
func sci(x float64) string {
	if x == 0 {
		return "0"
	}
	s := strconv.FormatFloat(x, 'e', 2, 64) // 3.14e+23
	m, e, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(e)
	return m + "e" + strconv.Itoa(exp)
}

// bytesIEC writes a byte size with binary prefixes: 1.95 TiB.
func bytesIEC(x float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := 0
	for x >= 1024 && i < len(units)-1 {
		x /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", x)
	}
	return fmt.Sprintf("%.2f %s", x, units[i])
}
