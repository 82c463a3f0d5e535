package check

import (
	"fmt"
	"math/big"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// resolver evaluates keys on demand, memoised per scope, so that keys may refer to one
// another in any order; a key met again while it is being evaluated closes a cycle.
type resolver struct {
	schema   *schema
	diags    diag.List
	stack    []stackItem
	defaults map[string]ast.Expr
	// typos holds "path.key" for required keys a misspelt key was taken for, so the
	// missing key is not reported a second time.
	typos map[string]bool
	// quiet drops diagnostics while a default expression is evaluated: a default that
	// cannot be computed (its declaration's model is unknown) follows from an error
	// reported elsewhere and would only repeat it.
	quiet bool
}

type stackItem struct {
	s   *scope
	key string
}

func (r *resolver) errorf(code diag.Code, rng diag.Range, format string, args ...any) *diag.Diagnostic {
	if r.quiet {
		var sink diag.List
		return sink.Errorf(code, rng, format, args...)
	}
	return r.diags.Errorf(code, rng, format, args...)
}

// get resolves key in s.
func (r *resolver) get(s *scope, key string) (value, bool) {
	sl := s.slot(key)
	switch sl.state {
	case done:
		return sl.val, sl.ok
	case visiting:
		r.reportCycle(s, key)
		return value{}, false
	}
	sl.state = visiting
	r.stack = append(r.stack, stackItem{s, key})
	v, ok := r.compute(s, key, sl)
	r.stack = r.stack[:len(r.stack)-1]
	sl.state, sl.val, sl.ok = done, v, ok
	return v, ok
}

// reportCycle names the cycle that ends at (s, key) and points at its first written
// entry. It is reported even in quiet mode: a cycle through a default is the user's.
func (r *resolver) reportCycle(s *scope, key string) {
	start := 0
	for i, it := range r.stack {
		if it.s == s && it.key == key {
			start = i
			break
		}
	}
	cycle := r.stack[start:]
	var names []string
	var at *entry
	for _, it := range cycle {
		names = append(names, shortPath(s, it.s, it.key))
		// Point at what this declaration wrote if it closes the cycle, else at the
		// inherited entry (in its base's file).
		if e := it.s.entries[it.key]; e != nil && (at == nil || at.source != program.Written && e.source == program.Written) {
			at = e
		}
	}
	names = append(names, shortPath(s, s, key))
	rng := s.blockRange()
	if at != nil {
		rng = diag.RangeOf(at.file, at.keyNode)
	}
	d := r.diags.Errorf(diag.CodeReferenceCycle, rng, "values refer to each other in a cycle: %s", strings.Join(names, " -> "))
	d.Suggestion = "write one of these values as a number"
	if at != nil && at.source == program.Inherited {
		d.Notes = append(d.Notes, fmt.Sprintf("while checking %s, which inherits this from %s", s.root().path, at.from))
	}
}

// shortPath names key relative to the declaration that holds base.
func shortPath(base, s *scope, key string) string {
	root := base
	for root.parent != nil {
		root = root.parent
	}
	p := strings.TrimPrefix(s.path, root.path)
	p = strings.TrimPrefix(p, ".")
	if p == "" {
		return key
	}
	return p + "." + key
}

// compute evaluates a key from its entry, its default or its computed default.
func (r *resolver) compute(s *scope, key string, sl *slot) (value, bool) {
	spec := s.spec.key(key)
	if spec == nil {
		return value{}, false
	}
	// A key's own problems are always reported; only a default expression's failures
	// are quiet (see resolver.quiet).
	quiet := r.quiet
	r.quiet = false
	defer func() { r.quiet = quiet }()
	if e := s.entries[key]; e != nil {
		sl.source, sl.from = e.source, e.from
		if e.source == program.Written {
			sl.from = e.where()
		}
		before := len(r.diags)
		v, ok := r.eval(s, e.expr, spec, e.file)
		if ok {
			v, ok = r.coerce(s, spec, v, diag.RangeOf(e.file, e.expr))
		}
		if e.source == program.Inherited {
			r.noteInherited(before, s, e)
		}
		return v, ok
	}
	if spec.defFn != nil {
		r.quiet = true
		v, from, ok := spec.defFn(r, s)
		r.quiet = false
		if !ok {
			return value{}, false
		}
		sl.source, sl.from = program.Default, from
		if !strings.HasPrefix(from, "catalog") {
			sl.source = program.Derived
		}
		return r.coerce(s, spec, v, s.blockRange())
	}
	if spec.def == "" {
		if spec.required && !s.root().incomplete && !r.typos[s.path+"."+key] {
			d := r.errorf(diag.CodeMissingKey, s.blockRange(), "%s needs `%s` (%s)", s.path, key, spec.doc)
			d.Suggestion = "write `" + key + " = ...` in this block"
		}
		return value{}, false
	}
	expr := r.defaultExpr(spec.def)
	sl.source = program.Default
	if !literal(expr, spec) {
		sl.source, sl.from = program.Derived, spec.def
	}
	r.quiet = true
	v, ok := r.eval(s, expr, spec, s.file)
	r.quiet = false
	if !ok {
		return value{}, false
	}
	if spec.defCode != "" && v.kind == kindNum && spec.typ.kind == tyInt && !v.num.IsInt() {
		d := r.errorf(spec.defCode, s.blockRange(), "%s: %s defaults to %s = %s, which is not an integer",
			s.path, key, spec.def, niceRat(v.num))
		d.Suggestion = "write `" + key + " = ...` explicitly, or choose values that divide exactly"
		return value{}, false
	}
	return r.coerce(s, spec, v, s.blockRange())
}

// noteInherited tells the reader of an error inside an inherited expression which model
// was being checked: the expression is written in the base but evaluated in the child.
func (r *resolver) noteInherited(from int, s *scope, e *entry) {
	start, end := e.expr.Pos().Offset, e.expr.EndPos().Offset
	for i := from; i < len(r.diags); i++ {
		d := &r.diags[i]
		if d.Subject.File == e.file && d.Subject.Start.Offset >= start && d.Subject.Start.Offset <= end {
			d.Notes = append(d.Notes, fmt.Sprintf("while checking %s, which inherits this from %s", s.root().path, e.from))
		}
	}
}

// defaultExpr parses a schema default once per Check. The schema is ours, so a default
// that does not parse is a bug in moec and panics (turned into E0299 at the API edge).
func (r *resolver) defaultExpr(src string) ast.Expr {
	if e, ok := r.defaults[src]; ok {
		return e
	}
	e, err := parseDefault(src)
	if err != nil {
		panic(err)
	}
	r.defaults[src] = e
	return e
}

// literal reports whether a default mentions no other key.
func literal(e ast.Expr, spec *keySpec) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name == "true" || e.Name == "false" || contains(spec.typ.enums, e.Name) || ctorNamed(spec.typ, e.Name) != nil
	case *ast.Binary:
		return literal(e.X, spec) && literal(e.Y, spec)
	case *ast.Call:
		return true
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func ctorNamed(t keyType, name string) *blockSpec {
	for _, c := range t.ctors {
		if c.kind == name {
			return c
		}
	}
	return nil
}

// lookup finds the scope and key a name in an expression refers to: a dotted path
// through sections and links, else the innermost enclosing block that has the key, else
// the one section of the declaration that has it (`hidden` from inside moe).
func (r *resolver) lookup(s *scope, name string) (*scope, string, bool) {
	parts := strings.Split(name, ".")
	if len(parts) > 1 {
		for c := s; c != nil; c = c.parent {
			t := c.child(parts[0])
			if t == nil {
				continue
			}
			for _, p := range parts[1 : len(parts)-1] {
				if t = t.child(p); t == nil {
					return nil, "", false
				}
			}
			last := parts[len(parts)-1]
			if t.spec.key(last) != nil {
				return t, last, true
			}
			return nil, "", false
		}
		return nil, "", false
	}
	for c := s; c != nil; c = c.parent {
		if c.spec.key(name) != nil {
			return c, name, true
		}
	}
	root := s
	for root.parent != nil {
		root = root.parent
	}
	var found *scope
	for _, sec := range root.spec.sections {
		if c := root.sections[sec]; c != nil && c.spec.key(name) != nil {
			if found != nil {
				return nil, "", false // ambiguous: the user must qualify it
			}
			found = c
		}
	}
	if found != nil {
		return found, name, true
	}
	return nil, "", false
}

// sectionsWithKey names the sections of s's declaration that have key.
func sectionsWithKey(s *scope, key string) []string {
	root := s.root()
	var owners []string
	for _, sec := range root.spec.sections {
		if c := root.sections[sec]; c != nil && c.spec.key(key) != nil {
			owners = append(owners, sec)
		}
	}
	return owners
}

// visibleNames lists the names an expression in s could refer to, for suggestions.
func visibleNames(s *scope) []string {
	var names []string
	for c := s; c != nil; c = c.parent {
		names = append(names, c.spec.keyNames()...)
		if c.parent == nil {
			for _, sec := range c.spec.sections {
				if sc := c.sections[sec]; sc != nil {
					names = append(names, sc.spec.keyNames()...)
				}
			}
		}
	}
	return names
}

// eval evaluates an expression in s for a key of the given spec (the spec decides
// whether a bare word is an enum value, a constructor or a reference).
func (r *resolver) eval(s *scope, e ast.Expr, spec *keySpec, file string) (value, bool) {
	switch e := e.(type) {
	case *ast.Number:
		v, err := parseNumber(e.Text, e.Suffix)
		if err == errReported {
			return value{}, false
		}
		if err != nil {
			r.errorf(diag.CodeNumberRange, diag.RangeOf(file, e), "%v", err)
			return value{}, false
		}
		return v, true
	case *ast.String:
		return value{kind: kindString, s: e.Value}, true
	case *ast.Paren:
		return r.eval(s, e.X, spec, file)
	case *ast.Ident:
		return r.evalIdent(s, e, spec, file)
	case *ast.List:
		out := value{kind: kindList}
		for _, x := range e.Elems {
			v, ok := r.eval(s, x, spec, file)
			if !ok {
				return value{}, false
			}
			if spec.typ.kind == tyIntList || spec.typ.kind == tyFloatList {
				if v, ok = r.listElem(v, diag.RangeOf(file, x), spec); !ok {
					return value{}, false
				}
			}
			out.list = append(out.list, v)
		}
		return out, true
	case *ast.Unary:
		v, ok := r.eval(s, e.X, spec, file)
		if !ok {
			return value{}, false
		}
		if v.kind != kindNum {
			r.errorf(diag.CodeWrongType, diag.RangeOf(file, e), "`%s` needs a number, got a %s", e.Op, v.kind)
			return value{}, false
		}
		if e.Op == "-" {
			v.num = new(big.Rat).Neg(v.num)
		}
		return v, true
	case *ast.Binary:
		return r.evalBinary(s, e, spec, file)
	case *ast.Call:
		return r.evalCall(s, e, spec, file)
	}
	r.errorf(diag.CodeWrongType, diag.RangeOf(file, e), "unsupported expression")
	return value{}, false
}

func (r *resolver) listElem(v value, rng diag.Range, spec *keySpec) (value, bool) {
	if spec.typ.kind == tyFloatList {
		switch {
		case v.kind != kindNum:
			r.errorf(diag.CodeWrongType, rng, "%s is a list of numbers; this element is a %s", spec.name, v.kind)
		case v.dim != dimNone:
			r.errorf(diag.CodeWrongUnit, rng, "%s is a list of plain numbers; this element is %s", spec.name, v.dim)
		default:
			return v, true
		}
		return value{}, false
	}
	switch {
	case v.kind != kindNum:
		r.errorf(diag.CodeWrongType, rng, "%s is a list of integers; this element is a %s", spec.name, v.kind)
	case v.dim != dimNone:
		r.errorf(diag.CodeWrongUnit, rng, "%s is a list of plain integers; this element is %s", spec.name, v.dim)
	case !v.num.IsInt() || !v.num.Num().IsInt64():
		r.errorf(diag.CodeNotInteger, rng, "%s is a list of integers; %s is not an integer", spec.name, niceRat(v.num))
	default:
		return v, true
	}
	return value{}, false
}

func (r *resolver) evalIdent(s *scope, e *ast.Ident, spec *keySpec, file string) (value, bool) {
	t := spec.typ
	switch {
	case e.Name == "true" || e.Name == "false":
		return value{kind: kindBool, b: e.Name == "true"}, true
	case contains(t.enums, e.Name):
		return value{kind: kindIdent, s: e.Name}, true
	case t.kind == tyName:
		return value{kind: kindIdent, s: e.Name}, true
	case t.kind == tyCtor && ctorNamed(t, e.Name) != nil:
		return r.evalCall(s, &ast.Call{Span: e.Span, Fn: e}, spec, file)
	}
	if target, key, ok := r.lookup(s, e.Name); ok {
		return r.get(target, key)
	}
	switch t.kind {
	case tyEnum:
		d := r.errorf(diag.CodeUnknownEnum, diag.RangeOf(file, e), "`%s` is not a value of %s; expected %s", e.Name, spec.name, t)
		d.Suggestion = didYouMean(e.Name, t.enums)
	case tyCtor:
		d := r.errorf(diag.CodeBadConstructor, diag.RangeOf(file, e), "`%s` is not a constructor for %s; expected %s", e.Name, spec.name, t)
		d.Suggestion = didYouMean(e.Name, ctorNames(t))
	default:
		if owners := sectionsWithKey(s, e.Name); len(owners) > 1 {
			d := r.errorf(diag.CodeUnknownName, diag.RangeOf(file, e), "`%s` is ambiguous in %s: it is a key of %s", e.Name, s.path, strings.Join(owners, " and "))
			d.Suggestion = "write the value itself"
			break
		}
		d := r.errorf(diag.CodeUnknownName, diag.RangeOf(file, e), "unknown name `%s` in %s", e.Name, s.path)
		d.Suggestion = didYouMean(e.Name, append(visibleNames(s), t.enums...))
	}
	return value{}, false
}

func ctorNames(t keyType) []string {
	var names []string
	for _, c := range t.ctors {
		names = append(names, c.kind)
	}
	return names
}

// evalBinary evaluates a chain such as `a + b - c * d`. The parser folds a chain to the
// left, so a chain of n operators is a tree n levels deep down its left side: the left
// side is walked with a loop, and only the right operands (bounded by the nesting of
// brackets) recurse. Every operand is evaluated even after one fails, so each reports
// its own errors.
func (r *resolver) evalBinary(s *scope, e *ast.Binary, spec *keySpec, file string) (value, bool) {
	spine := []*ast.Binary{e}
	for {
		b, isBinary := spine[len(spine)-1].X.(*ast.Binary)
		if !isBinary {
			break
		}
		spine = append(spine, b)
	}
	acc, ok := r.eval(s, spine[len(spine)-1].X, spec, file)
	for i := len(spine) - 1; i >= 0; i-- {
		b := spine[i]
		y, oky := r.eval(s, b.Y, spec, file)
		if ok && oky {
			acc, ok = r.binaryOp(b, acc, y, file)
		} else {
			ok = false
		}
	}
	if !ok {
		return value{}, false
	}
	return acc, true
}

// binaryOp applies e's operator to its evaluated operands.
func (r *resolver) binaryOp(e *ast.Binary, x, y value, file string) (value, bool) {
	rng := diag.RangeOf(file, e)
	if x.kind != kindNum || y.kind != kindNum {
		bad := x
		if x.kind == kindNum {
			bad = y
		}
		r.errorf(diag.CodeWrongType, rng, "`%s` needs numbers, got a %s", e.Op, bad.kind)
		return value{}, false
	}
	out := value{kind: kindNum, num: new(big.Rat)}
	switch e.Op {
	case ">":
		return value{kind: kindBool, b: x.num.Cmp(y.num) > 0}, true
	case "+", "-":
		if x.dim != y.dim {
			r.errorf(diag.CodeWrongUnit, rng, "cannot %s %s and %s", map[string]string{"+": "add", "-": "subtract"}[e.Op], x.dim, y.dim)
			return value{}, false
		}
		out.dim = x.dim
		if e.Op == "+" {
			out.num.Add(x.num, y.num)
		} else {
			out.num.Sub(x.num, y.num)
		}
	case "*":
		if x.dim != dimNone && y.dim != dimNone {
			r.errorf(diag.CodeWrongUnit, rng, "cannot multiply %s by %s", x.dim, y.dim)
			return value{}, false
		}
		out.dim = max(x.dim, y.dim)
		out.num.Mul(x.num, y.num)
	case "/":
		if y.num.Sign() == 0 {
			r.errorf(diag.CodeDivisionByZero, rng, "division by zero")
			return value{}, false
		}
		switch {
		case x.dim == y.dim:
			out.dim = dimNone
		case y.dim == dimNone:
			out.dim = x.dim
		default:
			r.errorf(diag.CodeWrongUnit, rng, "cannot divide %s by %s", x.dim, y.dim)
			return value{}, false
		}
		out.num.Quo(x.num, y.num)
	default:
		r.errorf(diag.CodeWrongType, rng, "unknown operator `%s`", e.Op)
		return value{}, false
	}
	// Exact arithmetic must not grow without bound on adversarial input.
	if out.num.Num().BitLen() > 4096 || out.num.Denom().BitLen() > 4096 {
		r.errorf(diag.CodeNumberRange, rng, "value is out of range")
		return value{}, false
	}
	return out, true
}

// evalCall resolves a constructor (adamw {...}, zero(3, offload = cpu), copy(noise =
// 0.01)) into a scope of its own whose keys are its parameters.
func (r *resolver) evalCall(s *scope, e *ast.Call, spec *keySpec, file string) (value, bool) {
	t := spec.typ
	if t.kind != tyCtor {
		r.errorf(diag.CodeWrongType, diag.RangeOf(file, e), "%s expects %s, not a constructor call", spec.name, t)
		return value{}, false
	}
	cs := ctorNamed(t, e.Fn.Name)
	if cs == nil {
		d := r.errorf(diag.CodeBadConstructor, diag.RangeOf(file, e.Fn), "`%s` is not a constructor for %s; expected %s", e.Fn.Name, spec.name, t)
		d.Suggestion = didYouMean(e.Fn.Name, ctorNames(t))
		return value{}, false
	}
	entries := map[string]*entry{}
	ok := true
	for i, a := range e.Args {
		if i >= len(cs.positional) {
			r.errorf(diag.CodeBadConstructor, diag.RangeOf(file, a), "%s takes at most %d positional arguments", cs.kind, len(cs.positional))
			ok = false
			continue
		}
		entries[cs.positional[i]] = &entry{key: cs.positional[i], keyNode: a, expr: a, file: file, source: program.Written}
	}
	for _, a := range e.Named {
		if cs.key(a.Key.Name) == nil {
			d := r.errorf(diag.CodeUnknownKey, diag.RangeOf(file, a.Key), "%s has no argument `%s`", cs.kind, a.Key.Name)
			d.Suggestion = didYouMean(a.Key.Name, cs.keyNames())
			ok = false
			continue
		}
		if prev := entries[a.Key.Name]; prev != nil {
			d := r.errorf(diag.CodeDuplicateKey, diag.RangeOf(file, a.Key), "%s argument `%s` is given twice", cs.kind, a.Key.Name)
			d.Label(diag.RangeOf(prev.file, prev.keyNode), "first given here")
			ok = false
			continue
		}
		entries[a.Key.Name] = &entry{key: a.Key.Name, keyNode: a.Key, expr: a.Value, file: file, source: program.Written}
	}
	path := s.path + "." + spec.name
	cscope := newScope(path, cs, file, e, entries, s)
	if len(r.stack) > 0 {
		top := r.stack[len(r.stack)-1]
		cscope.path = top.s.path + "." + top.key
	}
	for _, k := range cs.keys {
		if _, kok := r.get(cscope, k.name); !kok && (cscope.written(k.name) || k.required) {
			ok = false
		}
	}
	if !ok {
		return value{}, false
	}
	return value{kind: kindCall, call: cscope}, true
}

// evalAll resolves every key of s and its sections, so every error is reported even for
// keys nothing else reads.
func (r *resolver) evalAll(s *scope) {
	for _, k := range s.spec.keys {
		r.get(s, k.name)
	}
	for _, sec := range s.spec.sections {
		if c := s.sections[sec]; c != nil {
			r.evalAll(c)
		}
	}
}
