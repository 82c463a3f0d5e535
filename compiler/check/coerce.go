package check

import (
	"fmt"
	"math/big"
	"strings"

	"github.com/moec-dev/moec/lang/diag"
)

// coerce checks an evaluated value against its key's type and range.
func (r *resolver) coerce(s *scope, spec *keySpec, v value, rng diag.Range) (value, bool) {
	t := spec.typ
	wrong := func() (value, bool) {
		r.errorf(diag.CodeWrongType, rng, "%s expects %s, got %s `%s`", spec.name, t, article(v.kind), v)
		return value{}, false
	}
	switch t.kind {
	case tyInt:
		if v.kind != kindNum {
			return wrong()
		}
		if v.dim != dimNone {
			d := r.errorf(diag.CodeWrongUnit, rng, "%s is a plain integer, but `%s` is %s", spec.name, v, v.dim)
			d.Suggestion = "drop the unit"
			return value{}, false
		}
		if !v.num.IsInt() {
			d := r.errorf(diag.CodeNotInteger, rng, "%s must be an integer, got %s", spec.name, niceRat(v.num))
			d.Suggestion = "use a whole number or a division that comes out exact"
			return value{}, false
		}
		if !v.num.Num().IsInt64() {
			r.errorf(diag.CodeOutOfRange, rng, "%s = %s is too large", spec.name, ratString(v.num))
			return value{}, false
		}
	case tyFloat:
		if v.kind == kindIdent && contains(t.enums, v.s) {
			return v, true
		}
		if v.kind != kindNum {
			return wrong()
		}
		if v.dim != dimNone {
			d := r.errorf(diag.CodeWrongUnit, rng, "%s is a plain number, but `%s` is %s", spec.name, v, v.dim)
			d.Suggestion = "drop the unit"
			return value{}, false
		}
	case tyBytes, tyRate, tyFLOPS:
		want := map[typeKind]dim{tyBytes: dimBytes, tyRate: dimRate, tyFLOPS: dimFLOPS}[t.kind]
		if v.kind != kindNum {
			return wrong()
		}
		if v.dim == dimNone {
			d := r.errorf(diag.CodeMissingUnit, rng, "%s expects %s; `%s` has no unit", spec.name, t, ratString(v.num))
			d.Suggestion = "did you mean " + ratString(v.num) + t.unitHint() + "?"
			return value{}, false
		}
		if v.dim != want {
			r.errorf(diag.CodeWrongUnit, rng, "%s expects %s, but `%s` is %s", spec.name, t, v, v.dim)
			return value{}, false
		}
		if t.kind == tyBytes && !v.num.IsInt() {
			r.errorf(diag.CodeNotInteger, rng, "%s must be a whole number of bytes, got %s bytes", spec.name, niceRat(v.num))
			return value{}, false
		}
		if t.kind == tyBytes && !v.num.Num().IsInt64() {
			r.errorf(diag.CodeOutOfRange, rng, "%s = %s is too large", spec.name, v)
			return value{}, false
		}
	case tyBool:
		if v.kind == kindIdent && contains(t.enums, v.s) {
			return v, true
		}
		if v.kind != kindBool {
			return wrong()
		}
	case tyEnum:
		if v.kind != kindIdent || !contains(t.enums, v.s) {
			return wrong()
		}
	case tyString:
		if v.kind != kindString {
			return wrong()
		}
	case tyName:
		if v.kind != kindIdent && v.kind != kindString {
			return wrong()
		}
		if v.s != "" {
			v.kind = kindIdent
		}
	case tyIntList, tyFloatList:
		if v.kind != kindList {
			return wrong()
		}
		for _, e := range v.list {
			if _, ok := r.listElem(e, rng, spec); !ok {
				return value{}, false
			}
		}
	case tyCtor:
		if v.kind != kindCall {
			return wrong()
		}
	}
	if v.kind == kindNum && !r.inRange(spec, v, rng) {
		return value{}, false
	}
	return v, true
}

func article(k valueKind) string {
	switch k {
	case kindIdent:
		return "the identifier"
	case kindList:
		return "the list"
	case kindCall:
		return "the constructor"
	case kindString:
		return "the string"
	case kindBool:
		return "the bool"
	}
	return "the " + k.String()
}

func (r *resolver) inRange(spec *keySpec, v value, rng diag.Range) bool {
	code := diag.CodeOutOfRange
	if spec.rangeCode != "" {
		code = spec.rangeCode
	}
	if len(spec.oneOf) > 0 {
		for _, x := range spec.oneOf {
			if v.num.Cmp(big.NewRat(x, 1)) == 0 {
				return true
			}
		}
		var opts []string
		for _, x := range spec.oneOf {
			opts = append(opts, big.NewInt(x).String())
		}
		r.errorf(code, rng, "%s = %s is not allowed; expected one of %s", spec.name, v, strings.Join(opts, ", "))
		return false
	}
	sign := v.num.Sign()
	one := v.num.Cmp(big.NewRat(1, 1))
	bad := false
	switch spec.limit {
	case positive:
		bad = sign <= 0
	case nonNegative:
		bad = sign < 0
	case probability:
		bad = sign <= 0 || one > 0
	case fraction:
		bad = sign < 0 || one > 0
	case openFraction:
		bad = sign < 0 || one >= 0
	case atLeastOne:
		bad = one < 0
	}
	if bad {
		d := r.errorf(code, rng, "%s = %s is out of range: it %s", spec.name, v, spec.limit)
		d.Suggestion = spec.rangeHelp
		return false
	}
	if spec.max > 0 && v.num.Cmp(big.NewRat(spec.max, 1)) > 0 {
		d := r.errorf(code, rng, "%s = %s is above the limit of %s", spec.name, v, shortCount(spec.max))
		d.Notes = append(d.Notes, spec.maxWhy)
		d.Suggestion = fmt.Sprintf("use %s <= %s", spec.name, shortCount(spec.max))
		return false
	}
	return true
}

// shortCount writes n with the largest count suffix that divides it exactly (100k, 10M,
// 1B), as a person would write the number in a .moe file.
func shortCount(n int64) string {
	for _, u := range []struct {
		suffix string
		mul    int64
	}{{"T", 1e12}, {"B", 1e9}, {"M", 1e6}, {"k", 1e3}} {
		if n != 0 && n%u.mul == 0 {
			return fmt.Sprintf("%d%s", n/u.mul, u.suffix)
		}
	}
	return fmt.Sprint(n)
}
