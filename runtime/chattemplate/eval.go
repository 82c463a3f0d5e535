package chattemplate

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
)

// Template is a compiled chat template.
type Template struct {
	nodes []node
	// Now is the clock of strftime_now (nil: time.Now).
	Now func() time.Time
}

// Compile parses a template, refusing what moec does not render.
func Compile(src string) (*Template, error) {
	// As Jinja's keep_trailing_newline=False: one newline at the end of the source goes.
	src = strings.TrimSuffix(src, "\n")
	nodes, err := parseTemplate(src)
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	return &Template{nodes: nodes}, nil
}

// maxItems bounds what a template may build (range's items), so that a template cannot
// exhaust memory.
const maxItems = 1 << 20

// RaiseError is a template's raise_exception.
type RaiseError struct{ Message string }

func (e *RaiseError) Error() string { return "the chat template refused: " + e.Message }

// errLoop carries break and continue out of a loop body.
type errLoop struct{ brk bool }

func (errLoop) Error() string { return "break or continue outside a loop" }

// Render evaluates the template with vars (messages, add_generation_prompt, bos_token, …;
// values as FromJSON makes them).
func (t *Template) Render(vars map[string]any) (string, error) {
	r := &renderer{t: t, scopes: []map[string]any{t.globals(), vars}}
	var b strings.Builder
	if err := r.nodes(&b, t.nodes); err != nil {
		var le errLoop
		if errors.As(err, &le) {
			return "", le
		}
		return "", err
	}
	return b.String(), nil
}

type renderer struct {
	t      *Template
	scopes []map[string]any
}

func (t *Template) globals() map[string]any {
	return map[string]any{
		"raise_exception": callable(func(args []any, _ map[string]any) (any, error) {
			msg := ""
			if len(args) > 0 {
				msg = str(args[0])
			}
			return nil, &RaiseError{msg}
		}),
		"namespace": callable(func(args []any, kw map[string]any) (any, error) {
			d := NewDict()
			if len(args) > 0 {
				if src, ok := args[0].(*Dict); ok {
					for _, k := range src.keys {
						d.Set(k, src.m[k])
					}
				}
			}
			for _, k := range sortedKeys(kw) {
				d.Set(k, kw[k])
			}
			return &namespace{d}, nil
		}),
		"range": callable(func(args []any, _ map[string]any) (any, error) {
			var lo, hi, step int64 = 0, 0, 1
			ints := make([]int64, len(args))
			for i, a := range args {
				n, ok := a.(int64)
				if !ok {
					return nil, fmt.Errorf("range of a %T", a)
				}
				ints[i] = n
			}
			switch len(ints) {
			case 1:
				hi = ints[0]
			case 2:
				lo, hi = ints[0], ints[1]
			case 3:
				lo, hi, step = ints[0], ints[1], ints[2]
			default:
				return nil, fmt.Errorf("range takes 1 to 3 arguments")
			}
			if step == 0 {
				return nil, fmt.Errorf("range step 0")
			}
			if n := (hi - lo) / step; n > maxItems {
				return nil, fmt.Errorf("range of %d items: more than a chat template needs (%d)", n, maxItems)
			}
			var out []any
			for i := lo; (step > 0 && i < hi) || (step < 0 && i > hi); i += step {
				out = append(out, i)
			}
			return out, nil
		}),
		"strftime_now": callable(func(args []any, _ map[string]any) (any, error) {
			now := time.Now
			if t.Now != nil {
				now = t.Now
			}
			f := "%Y-%m-%d"
			if len(args) > 0 {
				f = str(args[0])
			}
			return strftime(now(), f), nil
		}),
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func strftime(t time.Time, f string) string {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' || i+1 == len(f) {
			b.WriteByte(f[i])
			continue
		}
		i++
		switch f[i] {
		case 'Y':
			fmt.Fprintf(&b, "%04d", t.Year())
		case 'm':
			fmt.Fprintf(&b, "%02d", int(t.Month()))
		case 'd':
			fmt.Fprintf(&b, "%02d", t.Day())
		case 'b':
			b.WriteString(t.Month().String()[:3])
		case 'B':
			b.WriteString(t.Month().String())
		case 'H':
			fmt.Fprintf(&b, "%02d", t.Hour())
		case 'M':
			fmt.Fprintf(&b, "%02d", t.Minute())
		case 'S':
			fmt.Fprintf(&b, "%02d", t.Second())
		case 'A':
			b.WriteString(t.Weekday().String())
		case 'a':
			b.WriteString(t.Weekday().String()[:3])
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(f[i])
		}
	}
	return b.String()
}

func (r *renderer) lookup(name string) any {
	for i := len(r.scopes) - 1; i >= 0; i-- {
		if v, ok := r.scopes[i][name]; ok {
			return v
		}
	}
	return undefined{name}
}

func (r *renderer) nodes(b *strings.Builder, ns []node) error {
	for _, n := range ns {
		if err := r.node(b, n); err != nil {
			return err
		}
	}
	return nil
}

func (r *renderer) node(b *strings.Builder, n node) error {
	switch x := n.(type) {
	case textNode:
		b.WriteString(x.text)
	case outNode:
		v, err := r.eval(x.e)
		if err != nil {
			return err
		}
		b.WriteString(str(v))
	case ifNode:
		for i, c := range x.conds {
			v, err := r.eval(c)
			if err != nil {
				return err
			}
			if truthy(v) {
				return r.nodes(b, x.bodies[i])
			}
		}
		return r.nodes(b, x.els)
	case setNode:
		v, err := r.eval(x.e)
		if err != nil {
			return err
		}
		if x.attr == "" {
			r.scopes[len(r.scopes)-1][x.name] = v
			return nil
		}
		ns, ok := r.lookup(x.name).(*namespace)
		if !ok {
			return fmt.Errorf("set %s.%s: %s is not a namespace", x.name, x.attr, x.name)
		}
		ns.d.Set(x.attr, v)
	case loopCtl:
		return errLoop(x)
	case macroNd:
		r.scopes[len(r.scopes)-1][x.name] = r.macro(x)
	case forNode:
		return r.loop(b, x)
	default:
		return fmt.Errorf("internal: node %T", n)
	}
	return nil
}

// macro is a macro as a callable: its body rendered in a scope of its parameters, above
// the template's globals and top-level variables.
func (r *renderer) macro(m macroNd) callable {
	return func(args []any, kwargs map[string]any) (any, error) {
		if len(args) > len(m.params) {
			return nil, fmt.Errorf("macro %s takes %d arguments, given %d", m.name, len(m.params), len(args))
		}
		scope := map[string]any{}
		inner := &renderer{t: r.t, scopes: append(append([]map[string]any{}, r.scopes[:2]...), scope)}
		for i, name := range m.params {
			switch v, ok := kwargs[name]; {
			case i < len(args):
				scope[name] = args[i]
			case ok:
				scope[name] = v
			case m.defaults[name] != nil:
				d, err := inner.eval(m.defaults[name])
				if err != nil {
					return nil, err
				}
				scope[name] = d
			default:
				scope[name] = undefined{name}
			}
		}
		var b strings.Builder
		if err := inner.nodes(&b, m.body); err != nil {
			return nil, err
		}
		return b.String(), nil
	}
}

func (r *renderer) loop(b *strings.Builder, x forNode) error {
	seqV, err := r.eval(x.iter)
	if err != nil {
		return err
	}
	var items []any
	switch s := seqV.(type) {
	case []any:
		items = s
	case *Dict:
		for _, k := range s.keys {
			items = append(items, k)
		}
	case string:
		for _, c := range s {
			items = append(items, string(c))
		}
	case nil, undefined:
	default:
		return fmt.Errorf("for over a %T", seqV)
	}
	scope := map[string]any{}
	r.scopes = append(r.scopes, scope)
	defer func() { r.scopes = r.scopes[:len(r.scopes)-1] }()
	bind := func(item any) error {
		if len(x.targets) == 1 {
			scope[x.targets[0]] = item
			return nil
		}
		tuple, ok := item.([]any)
		if !ok || len(tuple) != len(x.targets) {
			return fmt.Errorf("cannot unpack %s into %d names", repr(item), len(x.targets))
		}
		for i, name := range x.targets {
			scope[name] = tuple[i]
		}
		return nil
	}
	if x.filter != nil {
		var kept []any
		for _, item := range items {
			if err := bind(item); err != nil {
				return err
			}
			v, err := r.eval(x.filter)
			if err != nil {
				return err
			}
			if truthy(v) {
				kept = append(kept, item)
			}
		}
		items = kept
	}
	if len(items) == 0 {
		return r.nodes(b, x.els)
	}
	for i, item := range items {
		for k := range scope {
			delete(scope, k)
		}
		if err := bind(item); err != nil {
			return err
		}
		loop := NewDict()
		n := int64(len(items))
		loop.Set("index", int64(i)+1)
		loop.Set("index0", int64(i))
		loop.Set("revindex", n-int64(i))
		loop.Set("revindex0", n-int64(i)-1)
		loop.Set("first", i == 0)
		loop.Set("last", i == len(items)-1)
		loop.Set("length", n)
		if i > 0 {
			loop.Set("previtem", items[i-1])
		}
		if i+1 < len(items) {
			loop.Set("nextitem", items[i+1])
		}
		scope["loop"] = loop
		err := r.nodes(b, x.body)
		var le errLoop
		if errors.As(err, &le) {
			if le.brk {
				break
			}
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *renderer) eval(e expr) (any, error) {
	switch x := e.(type) {
	case litExpr:
		return x.v, nil
	case nameExp:
		return r.lookup(x.name), nil
	case listExp:
		out := make([]any, len(x.items))
		for i, it := range x.items {
			v, err := r.eval(it)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	case dictExp:
		d := NewDict()
		for i := range x.keys {
			k, err := r.eval(x.keys[i])
			if err != nil {
				return nil, err
			}
			v, err := r.eval(x.vals[i])
			if err != nil {
				return nil, err
			}
			d.Set(str(k), v)
		}
		return d, nil
	case attrExp:
		v, err := r.eval(x.x)
		if err != nil {
			return nil, err
		}
		return getAttr(v, x.name), nil
	case itemExp:
		v, err := r.eval(x.x)
		if err != nil {
			return nil, err
		}
		k, err := r.eval(x.key)
		if err != nil {
			return nil, err
		}
		return getItem(v, k), nil
	case sliceEx:
		return r.slice(x)
	case callExp:
		fn, err := r.eval(x.fn)
		if err != nil {
			return nil, err
		}
		c, ok := fn.(callable)
		if !ok {
			return nil, fmt.Errorf("%s is not callable", describe(x.fn))
		}
		args, kwargs, err := r.evalArgs(x.args, x.kwargs)
		if err != nil {
			return nil, err
		}
		return c(args, kwargs)
	case filterE:
		v, err := r.eval(x.x)
		if err != nil {
			return nil, err
		}
		args, kwargs, err := r.evalArgs(x.args, x.kwargs)
		if err != nil {
			return nil, err
		}
		return applyFilter(x.name, v, args, kwargs)
	case testExp:
		v, err := r.eval(x.x)
		if err != nil {
			return nil, err
		}
		args, _, err := r.evalArgs(x.args, nil)
		if err != nil {
			return nil, err
		}
		ok, err := applyTest(x.name, v, args)
		return ok != x.not, err
	case notExp:
		v, err := r.eval(x.x)
		return !truthy(v), err
	case negExp:
		v, err := r.eval(x.x)
		if err != nil {
			return nil, err
		}
		switch n := v.(type) {
		case int64:
			return -n, nil
		case float64:
			return -n, nil
		}
		return nil, fmt.Errorf("unary minus of %s", repr(v))
	case condExp:
		c, err := r.eval(x.cond)
		if err != nil {
			return nil, err
		}
		if truthy(c) {
			return r.eval(x.a)
		}
		return r.eval(x.b)
	case binExp:
		return r.binary(x)
	}
	return nil, fmt.Errorf("internal: expression %T", e)
}

func describe(e expr) string {
	switch x := e.(type) {
	case nameExp:
		return x.name
	case attrExp:
		return describe(x.x) + "." + x.name
	}
	return "the value"
}

func (r *renderer) evalArgs(args []expr, kwargs map[string]expr) ([]any, map[string]any, error) {
	out := make([]any, len(args))
	for i, a := range args {
		v, err := r.eval(a)
		if err != nil {
			return nil, nil, err
		}
		out[i] = v
	}
	kw := map[string]any{}
	for k, a := range kwargs {
		v, err := r.eval(a)
		if err != nil {
			return nil, nil, err
		}
		kw[k] = v
	}
	return out, kw, nil
}

func (r *renderer) slice(x sliceEx) (any, error) {
	v, err := r.eval(x.x)
	if err != nil {
		return nil, err
	}
	var bounds [3]*int64
	for i, e := range []expr{x.lo, x.hi, x.step} {
		if e == nil {
			continue
		}
		b, err := r.eval(e)
		if err != nil {
			return nil, err
		}
		if b == nil {
			continue
		}
		n, ok := b.(int64)
		if !ok {
			return nil, fmt.Errorf("a slice bound must be an integer, not %s", repr(b))
		}
		bounds[i] = &n
	}
	var seq []any
	s, isStr := v.(string)
	if isStr {
		for _, c := range s {
			seq = append(seq, string(c))
		}
	} else if l, ok := v.([]any); ok {
		seq = l
	} else {
		return nil, fmt.Errorf("slice of %s", repr(v))
	}
	idx := pySlice(len(seq), bounds)
	out := make([]any, len(idx))
	for i, j := range idx {
		out[i] = seq[j]
	}
	if isStr {
		var b strings.Builder
		for _, c := range out {
			b.WriteString(c.(string))
		}
		return b.String(), nil
	}
	return out, nil
}

// pySlice is the indices of Python's seq[lo:hi:step].
func pySlice(n int, b [3]*int64) []int {
	step := int64(1)
	if b[2] != nil {
		step = *b[2]
	}
	if step == 0 {
		return nil
	}
	clamp := func(p *int64, def int64) int64 {
		if p == nil {
			return def
		}
		v := *p
		if v < 0 {
			v += int64(n)
		}
		if step > 0 {
			return max(0, min(v, int64(n)))
		}
		return max(-1, min(v, int64(n)-1))
	}
	var lo, hi int64
	if step > 0 {
		lo, hi = clamp(b[0], 0), clamp(b[1], int64(n))
	} else {
		lo, hi = clamp(b[0], int64(n)-1), clamp(b[1], -1)
		if b[1] == nil {
			hi = -1
		}
	}
	var out []int
	for i := lo; (step > 0 && i < hi) || (step < 0 && i > hi); i += step {
		out = append(out, int(i))
	}
	return out
}

func (r *renderer) binary(x binExp) (any, error) {
	a, err := r.eval(x.a)
	if err != nil {
		return nil, err
	}
	switch x.op {
	case "and":
		if !truthy(a) {
			return a, nil
		}
		return r.eval(x.b)
	case "or":
		if truthy(a) {
			return a, nil
		}
		return r.eval(x.b)
	}
	b, err := r.eval(x.b)
	if err != nil {
		return nil, err
	}
	switch x.op {
	case "==":
		return equal(a, b), nil
	case "!=":
		return !equal(a, b), nil
	case "in", "not in":
		in, err := contains(b, a)
		return in == (x.op == "in"), err
	case "~":
		return str(a) + str(b), nil
	case "<", ">", "<=", ">=":
		c, err := compare(a, b)
		if err != nil {
			return nil, err
		}
		return map[string]bool{"<": c < 0, ">": c > 0, "<=": c <= 0, ">=": c >= 0}[x.op], nil
	case "+":
		if sa, ok := a.(string); ok {
			if sb, ok := b.(string); ok {
				return sa + sb, nil
			}
		}
		if la, ok := a.([]any); ok {
			if lb, ok := b.([]any); ok {
				return append(append([]any{}, la...), lb...), nil
			}
		}
	}
	ia, aInt := a.(int64)
	ib, bInt := b.(int64)
	fa, okA := num(a)
	fb, okB := num(b)
	if !okA || !okB {
		if x.op == "*" {
			if s, ok := a.(string); ok && bInt {
				if int64(len(s))*ib > maxItems*64 {
					return nil, fmt.Errorf("a string repeated %d times: longer than a chat template needs", ib)
				}
				return strings.Repeat(s, int(max(ib, 0))), nil
			}
		}
		return nil, fmt.Errorf("%s %s %s: unsupported operands", repr(a), x.op, repr(b))
	}
	if _, isBool := a.(bool); isBool {
		aInt, ia = true, int64(fa)
	}
	if _, isBool := b.(bool); isBool {
		bInt, ib = true, int64(fb)
	}
	both := aInt && bInt
	switch x.op {
	case "+":
		if both {
			return ia + ib, nil
		}
		return fa + fb, nil
	case "-":
		if both {
			return ia - ib, nil
		}
		return fa - fb, nil
	case "*":
		if both {
			return ia * ib, nil
		}
		return fa * fb, nil
	case "/":
		if fb == 0 {
			return nil, fmt.Errorf("division by zero")
		}
		return fa / fb, nil
	case "//":
		if fb == 0 {
			return nil, fmt.Errorf("division by zero")
		}
		if both {
			q := ia / ib
			if (ia%ib != 0) && ((ia < 0) != (ib < 0)) {
				q--
			}
			return q, nil
		}
		return math.Floor(fa / fb), nil
	case "%":
		if fb == 0 {
			return nil, fmt.Errorf("modulo by zero")
		}
		if both {
			m := ia % ib
			if m != 0 && (m < 0) != (ib < 0) {
				m += ib
			}
			return m, nil
		}
		return fa - fb*math.Floor(fa/fb), nil
	}
	return nil, fmt.Errorf("operator %s", x.op)
}

func compare(a, b any) (int, error) {
	if fa, ok := num(a); ok {
		if fb, ok := num(b); ok {
			switch {
			case fa < fb:
				return -1, nil
			case fa > fb:
				return 1, nil
			}
			return 0, nil
		}
	}
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok {
			return strings.Compare(sa, sb), nil
		}
	}
	return 0, fmt.Errorf("cannot compare %s and %s", repr(a), repr(b))
}

func contains(container, item any) (bool, error) {
	switch c := container.(type) {
	case string:
		s, ok := item.(string)
		if !ok {
			return false, fmt.Errorf("'in <string>' needs a string on the left, not %s", repr(item))
		}
		return strings.Contains(c, s), nil
	case []any:
		for _, e := range c {
			if equal(e, item) {
				return true, nil
			}
		}
		return false, nil
	case *Dict:
		s, ok := item.(string)
		if !ok {
			return false, nil
		}
		_, in := c.m[s]
		return in, nil
	case *namespace:
		s, _ := item.(string)
		_, in := c.d.m[s]
		return in, nil
	case undefined:
		return false, nil // Jinja's Undefined iterates as empty
	case nil:
		return false, fmt.Errorf("'in' on None")
	}
	return false, fmt.Errorf("'in' on a %T", container)
}

// getAttr is Jinja's a.b: an attribute (a method of a string or dict), else an item.
func getAttr(v any, name string) any {
	if m := method(v, name); m != nil {
		return m
	}
	return getItem(v, name)
}

// getItem is Jinja's a[b]: an item, else an attribute.
func getItem(v any, key any) any {
	switch x := v.(type) {
	case *Dict:
		if s, ok := key.(string); ok {
			if e, ok := x.m[s]; ok {
				return e
			}
			if m := method(v, s); m != nil {
				return m
			}
		}
	case *namespace:
		if s, ok := key.(string); ok {
			if e, ok := x.d.m[s]; ok {
				return e
			}
		}
	case []any:
		if i, ok := key.(int64); ok {
			if i < 0 {
				i += int64(len(x))
			}
			if i >= 0 && i < int64(len(x)) {
				return x[i]
			}
		}
	case string:
		if i, ok := key.(int64); ok {
			rs := []rune(x)
			if i < 0 {
				i += int64(len(rs))
			}
			if i >= 0 && i < int64(len(rs)) {
				return string(rs[i])
			}
		}
		if s, ok := key.(string); ok {
			if m := method(v, s); m != nil {
				return m
			}
		}
	}
	return undefined{fmt.Sprint(key)}
}

// method returns a Python method of a string or dict bound to v, or nil.
func method(v any, name string) any {
	switch x := v.(type) {
	case string:
		return stringMethod(x, name)
	case *Dict:
		switch name {
		case "items":
			return callable(func([]any, map[string]any) (any, error) {
				out := make([]any, len(x.keys))
				for i, k := range x.keys {
					out[i] = []any{k, x.m[k]}
				}
				return out, nil
			})
		case "keys":
			return callable(func([]any, map[string]any) (any, error) {
				out := make([]any, len(x.keys))
				for i, k := range x.keys {
					out[i] = k
				}
				return out, nil
			})
		case "values":
			return callable(func([]any, map[string]any) (any, error) {
				out := make([]any, len(x.keys))
				for i, k := range x.keys {
					out[i] = x.m[k]
				}
				return out, nil
			})
		case "get":
			return callable(func(args []any, _ map[string]any) (any, error) {
				if len(args) == 0 {
					return nil, fmt.Errorf("get needs a key")
				}
				if e, ok := x.m[str(args[0])]; ok {
					return e, nil
				}
				if len(args) > 1 {
					return args[1], nil
				}
				return nil, nil
			})
		}
	}
	return nil
}

func stringMethod(s, name string) any {
	strip := func(f func(string, string) string, g func(string, func(rune) bool) string) callable {
		return func(args []any, _ map[string]any) (any, error) {
			if len(args) > 0 && args[0] != nil {
				return f(s, str(args[0])), nil
			}
			return g(s, unicode.IsSpace), nil
		}
	}
	switch name {
	case "strip":
		return strip(strings.Trim, strings.TrimFunc)
	case "lstrip":
		return strip(strings.TrimLeft, strings.TrimLeftFunc)
	case "rstrip":
		return strip(strings.TrimRight, strings.TrimRightFunc)
	case "startswith", "endswith":
		return callable(func(args []any, _ map[string]any) (any, error) {
			if len(args) == 0 {
				return nil, fmt.Errorf("%s needs an argument", name)
			}
			prefixes := []any{args[0]}
			if l, ok := args[0].([]any); ok {
				prefixes = l
			}
			for _, p := range prefixes {
				if (name == "startswith" && strings.HasPrefix(s, str(p))) || (name == "endswith" && strings.HasSuffix(s, str(p))) {
					return true, nil
				}
			}
			return false, nil
		})
	case "split", "rsplit":
		return callable(func(args []any, kw map[string]any) (any, error) {
			limit := int64(-1)
			if len(args) > 1 {
				limit, _ = args[1].(int64)
			}
			if m, ok := kw["maxsplit"].(int64); ok {
				limit = m
			}
			var parts []string
			if len(args) == 0 || args[0] == nil {
				if limit >= 0 {
					return nil, fmt.Errorf("split() with maxsplit and no separator is not supported")
				}
				parts = strings.Fields(s)
			} else {
				sep := str(args[0])
				if sep == "" {
					return nil, fmt.Errorf("empty separator")
				}
				switch {
				case limit < 0:
					parts = strings.Split(s, sep)
				case name == "split":
					parts = strings.SplitN(s, sep, int(limit)+1)
				default:
					parts = rsplitN(s, sep, int(limit))
				}
			}
			out := make([]any, len(parts))
			for i, p := range parts {
				out[i] = p
			}
			return out, nil
		})
	case "replace":
		return callable(func(args []any, _ map[string]any) (any, error) {
			if len(args) < 2 {
				return nil, fmt.Errorf("replace needs two arguments")
			}
			n := -1
			if len(args) > 2 {
				if c, ok := args[2].(int64); ok {
					n = int(c)
				}
			}
			return strings.Replace(s, str(args[0]), str(args[1]), n), nil
		})
	case "lower":
		return callable(func([]any, map[string]any) (any, error) { return strings.ToLower(s), nil })
	case "upper":
		return callable(func([]any, map[string]any) (any, error) { return strings.ToUpper(s), nil })
	case "title":
		return callable(func([]any, map[string]any) (any, error) { return title(s), nil })
	case "capitalize":
		return callable(func([]any, map[string]any) (any, error) { return capitalize(s), nil })
	case "find":
		return callable(func(args []any, _ map[string]any) (any, error) {
			if len(args) == 0 {
				return nil, fmt.Errorf("find needs an argument")
			}
			i := strings.Index(s, str(args[0]))
			if i < 0 {
				return int64(-1), nil
			}
			return int64(len([]rune(s[:i]))), nil
		})
	}
	return nil
}

func rsplitN(s, sep string, n int) []string {
	var out []string
	for n > 0 {
		i := strings.LastIndex(s, sep)
		if i < 0 {
			break
		}
		out = append([]string{s[i+len(sep):]}, out...)
		s = s[:i]
		n--
	}
	return append([]string{s}, out...)
}

func title(s string) string {
	var b strings.Builder
	prevLetter := false
	for _, r := range s {
		if unicode.IsLetter(r) {
			if prevLetter {
				b.WriteRune(unicode.ToLower(r))
			} else {
				b.WriteRune(unicode.ToUpper(r))
			}
			prevLetter = true
		} else {
			b.WriteRune(r)
			prevLetter = false
		}
	}
	return b.String()
}

func capitalize(s string) string {
	rs := []rune(strings.ToLower(s))
	if len(rs) > 0 {
		rs[0] = unicode.ToUpper(rs[0])
	}
	return string(rs)
}
