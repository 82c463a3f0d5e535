package analysis

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/program"
)

// OverflowError says that a model's parameter count does not fit in 64 bits. compiler/check
// reports it as a diagnostic, so the planner and the report never see a wrapped count.
type OverflowError struct {
	Part string // the first count that overflowed: "routed experts", "attention", "total", ...
}

// MaxCountText is math.MaxInt64, the largest count, as messages write it.
const MaxCountText = "9.2e18"

func (e *OverflowError) Error() string {
	return fmt.Sprintf("the model has more than %s parameters: its %s count overflows a 64-bit integer", MaxCountText, e.Part)
}

// CountChecked is Count with overflow detection: when any count (a layer's, a component's,
// a total, the with-MTP total) leaves int64, it returns an *OverflowError, and the Counts,
// which then hold saturated values, must not be used.
func CountChecked(m *program.Model) (Counts, error) {
	s := resolve(m)
	c := s.count()
	if s.overflow != "" {
		return c, &OverflowError{Part: s.overflow}
	}
	return c, nil
}

// mul multiplies counts, saturating at math.MaxInt64 and recording the part being counted
// (s.part) when the product leaves int64. Counts are sizes, so never negative once checked;
// a negative operand (a model built directly in Go) is multiplied as it is.
func (s *spec) mul(xs ...int64) int64 {
	p := int64(1)
	for _, x := range xs {
		if p == 0 || x == 0 {
			return 0
		}
		q := p * x
		if q/x != p || (p == -1 && x == math.MinInt64) || (x == -1 && p == math.MinInt64) {
			s.overflowed()
			return math.MaxInt64
		}
		p = q
	}
	return p
}

// add adds counts, saturating like mul.
func (s *spec) add(xs ...int64) int64 {
	var sum int64
	for _, x := range xs {
		r := sum + x
		if (x > 0 && r < sum) || (x < 0 && r > sum) {
			s.overflowed()
			return math.MaxInt64
		}
		sum = r
	}
	return sum
}

func (s *spec) overflowed() {
	if s.overflow == "" {
		s.overflow = s.part
		if s.overflow == "" {
			s.overflow = "parameter"
		}
	}
}
