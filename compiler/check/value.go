package check

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// valueKind is the dynamic kind of an evaluated expression.
type valueKind int

const (
	kindNone valueKind = iota
	kindNum
	kindBool
	kindIdent // a bare identifier used as an enum value or a name
	kindString
	kindList
	kindCall // a constructor, evaluated into its own scope
)

func (k valueKind) String() string {
	switch k {
	case kindNum:
		return "number"
	case kindBool:
		return "bool"
	case kindIdent:
		return "identifier"
	case kindString:
		return "string"
	case kindList:
		return "list"
	case kindCall:
		return "constructor"
	}
	return "nothing"
}

// dim is the physical dimension of a number. Counts (k, M, B, T) are plain numbers.
type dim int

const (
	dimNone  dim = iota
	dimBytes     // bytes
	dimRate      // bytes per second (bit rates are converted on input)
	dimFLOPS     // floating-point operations per second
)

func (d dim) String() string {
	switch d {
	case dimBytes:
		return "bytes"
	case dimRate:
		return "a rate (bytes/s)"
	case dimFLOPS:
		return "FLOP/s"
	}
	return "a plain number"
}

// value is an evaluated expression. Numbers are exact rationals so that integer keys
// can demand exact division and 1.6T stays 1600000000000.
type value struct {
	kind valueKind
	num  *big.Rat
	dim  dim
	b    bool
	s    string // identifier or string contents
	list []value
	call *scope // a constructor's resolved arguments
}

func numValue(r *big.Rat, d dim) value { return value{kind: kindNum, num: r, dim: d} }

// unit describes one numeric suffix.
type unit struct {
	mul *big.Rat
	dim dim
}

// maxExponent bounds decimal exponents so that a fuzzed 1e999999999 cannot make the
// exact arithmetic allocate without limit; floats end near 1e308 anyway.
const maxExponent = 400

// suffixes lists every numeric suffix the language knows. A bare B is a count.
func suffixes() map[string]unit {
	pow := func(base int64, n int) *big.Rat {
		r := big.NewRat(1, 1)
		for range n {
			r.Mul(r, big.NewRat(base, 1))
		}
		return r
	}
	m := map[string]unit{
		"k": {pow(1000, 1), dimNone}, "K": {pow(1000, 1), dimNone},
		"M": {pow(1000, 2), dimNone}, "B": {pow(1000, 3), dimNone}, "T": {pow(1000, 4), dimNone},
	}
	for i, p := range []string{"K", "M", "G", "T", "P"} {
		m[p+"B"] = unit{pow(1000, i+1), dimBytes}
		m[p+"iB"] = unit{pow(1024, i+1), dimBytes}
		m[p+"B/s"] = unit{pow(1000, i+1), dimRate}
		m[p+"iB/s"] = unit{pow(1024, i+1), dimRate}
		bits := pow(1000, i+1)
		bits.Quo(bits, big.NewRat(8, 1))
		m[p+"bps"] = unit{bits, dimRate}
		m[p+"FLOPS"] = unit{pow(1000, i+1), dimFLOPS}
	}
	m["bps"] = unit{big.NewRat(1, 8), dimRate}
	m["B/s"] = unit{big.NewRat(1, 1), dimRate}
	m["FLOPS"] = unit{big.NewRat(1, 1), dimFLOPS}
	m["GFLOP/s"] = m["GFLOPS"]
	m["TFLOP/s"] = m["TFLOPS"]
	m["PFLOP/s"] = m["PFLOPS"]
	return m
}

// errReported marks a literal the lexer has already diagnosed (overflow, unknown
// suffix, malformed text): the checker skips it silently rather than say it twice.
var errReported = errors.New("number already reported by the parser")

// parseNumber turns a literal's text and suffix into an exact value.
func parseNumber(text, suffix string) (value, error) {
	digits := strings.TrimSuffix(text, suffix)
	digits = strings.ReplaceAll(digits, "_", "")
	if _, err := strconv.ParseFloat(digits, 64); err != nil {
		return value{}, errReported
	}
	if i := strings.IndexAny(digits, "eE"); i >= 0 {
		// ParseFloat lets 1e-999999999 through as 0; exact arithmetic would not.
		exp, err := strconv.Atoi(digits[i+1:])
		if err != nil || exp > maxExponent || exp < -maxExponent {
			return value{}, fmt.Errorf("exponent of `%s` is out of range (at most %d either way)", text, maxExponent)
		}
	}
	if len(digits) > 400 {
		return value{}, fmt.Errorf("number `%s` is too long", text)
	}
	r, ok := new(big.Rat).SetString(digits)
	if !ok {
		return value{}, errReported
	}
	d := dimNone
	if suffix != "" {
		u, ok := suffixes()[suffix]
		if !ok {
			return value{}, errReported
		}
		r.Mul(r, u.mul)
		d = u.dim
	}
	return numValue(r, d), nil
}

// ratString formats an exact number: integers in full, others as the shortest float.
func ratString(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// niceRat writes a non-integer for a message: 2.5 as 2.5, 128/3 as "128/3 (42.67)".
func niceRat(r *big.Rat) string {
	if s := ratString(r); r.IsInt() || len(s) <= 8 {
		return s
	}
	f, _ := r.Float64()
	return r.RatString() + " (" + strconv.FormatFloat(f, 'g', 4, 64) + ")"
}

// withUnit writes r with the suffix that gives the shortest exact text, so 16GiB prints
// as 16GiB and 1TB as 1TB (not 976562500KiB); ties go to the earlier suffix in units.
// A value no suffix divides falls back to a decimal fraction of the first suffix.
func withUnit(r *big.Rat, units []string) string {
	table := suffixes()
	best := ""
	for _, u := range units {
		q := new(big.Rat).Quo(r, table[u].mul)
		if !q.IsInt() {
			continue
		}
		if s := q.Num().String() + u; best == "" || len(s) < len(best) {
			best = s
		}
	}
	if best != "" {
		return best
	}
	q := new(big.Rat).Quo(r, table[units[0]].mul)
	return ratString(q) + units[0]
}

// String is the canonical text of a value, as Explain prints it and as experiment
// overrides store it. It reads back as the same value.
func (v value) String() string {
	switch v.kind {
	case kindNum:
		switch v.dim {
		case dimBytes:
			return withUnit(v.num, []string{"KB", "MB", "GB", "TB", "PB", "KiB", "MiB", "GiB", "TiB", "PiB"})
		case dimRate:
			return withUnit(v.num, []string{"KB/s", "MB/s", "GB/s", "TB/s", "PB/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s", "PiB/s"})
		case dimFLOPS:
			return withUnit(v.num, []string{"GFLOPS", "TFLOPS", "PFLOPS"})
		}
		return ratString(v.num)
	case kindBool:
		return strconv.FormatBool(v.b)
	case kindIdent:
		return v.s
	case kindString:
		return strconv.Quote(v.s)
	case kindList:
		parts := make([]string, len(v.list))
		for i, e := range v.list {
			parts[i] = e.String()
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case kindCall:
		return v.call.callString()
	}
	return "<none>"
}
