package report

import (
	"strconv"
	"strings"

	"github.com/moec-dev/moec/internal/human"
)

// both is the human form with the exact integer: "46.70B (46,702,792,704)".
func both(n int64) string {
	if n < 1000 && n > -1000 {
		return human.Exact(n)
	}
	return count(n) + " (" + human.Exact(n) + ")"
}

// Sci writes a large quantity in scientific notation as papers do: 3.14e23. report.md
// and report.html write training FLOPs this way.
func Sci(x float64) string { return sci(x) }

func sci(x float64) string {
	if x == 0 {
		return "0"
	}
	s := strconv.FormatFloat(x, 'e', 2, 64) // 3.14e+23
	m, e, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(e)
	return m + "e" + strconv.Itoa(exp)
}

// count writes a parameter count for people through human.Count: 46.7B.
func count(n int64) string { return human.Count(float64(n)) }
