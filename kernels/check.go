package kernels

import (
	"fmt"
	"regexp"
)

// identRE is what a kernel, parameter or variable name must look like: the names reach
// generated C and LLVM code verbatim, so they are restricted here, where they are written.
// No trailing underscore and no double underscore: backends use names ending in "_" for
// their own helpers, so those can never collide with a described name.
var identRE = regexp.MustCompile(`^[a-z]([a-z0-9]|_[a-z0-9])*$`)

// scope resolves names to types during check.
type scope struct {
	parent *scope
	names  map[string]Type
}

func (s *scope) lookup(name string) (Type, bool) {
	for ; s != nil; s = s.parent {
		if t, ok := s.names[name]; ok {
			return t, true
		}
	}
	return 0, false
}

func (s *scope) define(name string, t Type) error {
	if !identRE.MatchString(name) {
		return fmt.Errorf("name %q is not a lower-case identifier", name)
	}
	if _, ok := s.lookup(name); ok {
		return fmt.Errorf("%q is already defined", name)
	}
	s.names[name] = t
	return nil
}

func (s *scope) child() *scope { return &scope{parent: s, names: map[string]Type{}} }

type checker struct {
	k    *Kernel
	bufs map[string]Param
}

// check resolves the types of every Ref, Load and Bin, inserts the integer widening and
// narrowing casts the descriptions leave implicit, and rejects ill-typed kernels. It is
// the verifier of the IR: every kernel passes it before any backend sees it.
func (k *Kernel) check() error {
	if !identRE.MatchString(k.Name) {
		return fmt.Errorf("kernel name %q is not a lower-case identifier", k.Name)
	}
	c := &checker{k: k, bufs: map[string]Param{}}
	top := &scope{names: map[string]Type{}}
	for _, sc := range k.Consts {
		if err := top.define(sc.Name, sc.T); err != nil {
			return fmt.Errorf("kernel %s: const: %w", k.Name, err)
		}
	}
	for _, p := range k.Params {
		if p.Buffer {
			if !identRE.MatchString(p.Name) {
				return fmt.Errorf("kernel %s: buffer name %q is not an identifier", k.Name, p.Name)
			}
			if _, dup := c.bufs[p.Name]; dup {
				return fmt.Errorf("kernel %s: buffer %q twice", k.Name, p.Name)
			}
			if p.Elem != F32 && p.Elem != I32 {
				return fmt.Errorf("kernel %s: buffer %s: element type %v (want f32 or i32)", k.Name, p.Name, p.Elem)
			}
			c.bufs[p.Name] = p
			continue
		}
		if p.Elem != F32 && p.Elem != I64 {
			return fmt.Errorf("kernel %s: scalar %s: type %v (want f32 or i64)", k.Name, p.Name, p.Elem)
		}
		if err := top.define(p.Name, p.Elem); err != nil {
			return fmt.Errorf("kernel %s: param: %w", k.Name, err)
		}
	}
	for i := range k.Params {
		p := &k.Params[i]
		if !p.Buffer {
			continue
		}
		if p.Size == nil {
			return fmt.Errorf("kernel %s: buffer %s has no size", k.Name, p.Name)
		}
		var err error
		if p.Size, err = c.index(top, p.Size); err != nil {
			return fmt.Errorf("kernel %s: size of %s: %w", k.Name, p.Name, err)
		}
	}
	if len(k.Grid) == 0 {
		return fmt.Errorf("kernel %s: empty grid", k.Name)
	}
	for i := range k.Grid {
		var err error
		if k.Grid[i].Extent, err = c.index(top, k.Grid[i].Extent); err != nil {
			return fmt.Errorf("kernel %s: grid %s: %w", k.Name, k.Grid[i].Var, err)
		}
	}
	body := top.child()
	for _, d := range k.Grid {
		if err := body.define(d.Var, I64); err != nil {
			return fmt.Errorf("kernel %s: grid: %w", k.Name, err)
		}
	}
	if err := c.stmts(body, k.Body); err != nil {
		return fmt.Errorf("kernel %s: %w", k.Name, err)
	}
	return nil
}

func (c *checker) stmts(s *scope, list []Stmt) error {
	for _, st := range list {
		if err := c.stmt(s, st); err != nil {
			return err
		}
	}
	return nil
}

func (c *checker) stmt(s *scope, st Stmt) error {
	switch st := st.(type) {
	case *Local:
		x, err := c.expr(s, st.Init)
		if err != nil {
			return fmt.Errorf("local %s: %w", st.Name, err)
		}
		st.Init = x
		return s.define(st.Name, x.Type())
	case *Assign:
		t, ok := s.lookup(st.Name)
		if !ok {
			return fmt.Errorf("assign to undefined %q", st.Name)
		}
		x, err := c.expr(s, st.X)
		if err != nil {
			return fmt.Errorf("assign %s: %w", st.Name, err)
		}
		if st.X, err = convert(x, t); err != nil {
			return fmt.Errorf("assign %s: %w", st.Name, err)
		}
		return nil
	case *Store:
		p, ok := c.bufs[st.Buf]
		if !ok {
			return fmt.Errorf("store to unknown buffer %q", st.Buf)
		}
		if p.Access == In {
			return fmt.Errorf("store to input buffer %q", st.Buf)
		}
		idx, err := c.index(s, st.Index)
		if err != nil {
			return fmt.Errorf("store %s index: %w", st.Buf, err)
		}
		st.Index = idx
		x, err := c.expr(s, st.X)
		if err != nil {
			return fmt.Errorf("store %s: %w", st.Buf, err)
		}
		if st.X, err = convert(x, p.Elem); err != nil {
			return fmt.Errorf("store %s: %w", st.Buf, err)
		}
		return nil
	case *For:
		var err error
		if st.Lo, err = c.index(s, st.Lo); err != nil {
			return fmt.Errorf("for %s: %w", st.Var, err)
		}
		if st.Hi, err = c.index(s, st.Hi); err != nil {
			return fmt.Errorf("for %s: %w", st.Var, err)
		}
		in := s.child()
		if err := in.define(st.Var, I64); err != nil {
			return err
		}
		return c.stmts(in, st.Body)
	case *If:
		cond, err := c.expr(s, st.Cond)
		if err != nil {
			return err
		}
		if cond.Type() != Bool {
			return fmt.Errorf("if condition is %v, not bool", cond.Type())
		}
		st.Cond = cond
		if err := c.stmts(s.child(), st.Then); err != nil {
			return err
		}
		return c.stmts(s.child(), st.Else)
	}
	return fmt.Errorf("unknown statement %T", st)
}

// index checks an integer expression and widens it to I64.
func (c *checker) index(s *scope, e Expr) (Expr, error) {
	x, err := c.expr(s, e)
	if err != nil {
		return nil, err
	}
	return convert(x, I64)
}

// convert inserts integer widening/narrowing; int<->float conversions must be written.
func convert(x Expr, to Type) (Expr, error) {
	from := x.Type()
	if from == to {
		return x, nil
	}
	if (from == I32 || from == I64) && (to == I32 || to == I64) {
		if k, ok := x.(*Const); ok && to == I64 {
			return &Const{T: I64, I: k.I}, nil
		}
		return &Cast{To: to, X: x}, nil
	}
	return nil, fmt.Errorf("%v value where %v is needed (write a cast)", from, to)
}

func isInt(t Type) bool { return t == I32 || t == I64 }

func (c *checker) expr(s *scope, e Expr) (Expr, error) {
	switch e := e.(type) {
	case *Const:
		if e.T != F32 && e.T != I64 {
			return nil, fmt.Errorf("literal of type %v", e.T)
		}
		return e, nil
	case *Ref:
		t, ok := s.lookup(e.Name)
		if !ok {
			return nil, fmt.Errorf("undefined name %q", e.Name)
		}
		e.T = t
		return e, nil
	case *Load:
		p, ok := c.bufs[e.Buf]
		if !ok {
			return nil, fmt.Errorf("load from unknown buffer %q", e.Buf)
		}
		if p.Access == Out {
			return nil, fmt.Errorf("load from output-only buffer %q", e.Buf)
		}
		idx, err := c.index(s, e.Index)
		if err != nil {
			return nil, fmt.Errorf("load %s index: %w", e.Buf, err)
		}
		e.Index, e.T = idx, p.Elem
		return e, nil
	case *Cast:
		x, err := c.expr(s, e.X)
		if err != nil {
			return nil, err
		}
		if x.Type() == Bool || e.To == Bool {
			return nil, fmt.Errorf("cast involving bool")
		}
		e.X = x
		if x.Type() == e.To {
			return x, nil
		}
		return e, nil
	case *Select:
		cond, err := c.expr(s, e.C)
		if err != nil {
			return nil, err
		}
		if cond.Type() != Bool {
			return nil, fmt.Errorf("select condition is %v", cond.Type())
		}
		a, err := c.expr(s, e.A)
		if err != nil {
			return nil, err
		}
		b, err := c.expr(s, e.B)
		if err != nil {
			return nil, err
		}
		if a, b, err = unify(a, b); err != nil {
			return nil, fmt.Errorf("select: %w", err)
		}
		e.C, e.A, e.B = cond, a, b
		return e, nil
	case *Bin:
		a, err := c.expr(s, e.A)
		if err != nil {
			return nil, err
		}
		e.A = a
		if e.Op.Unary() {
			if e.B != nil {
				return nil, fmt.Errorf("%v takes one operand", e.Op)
			}
			if e.Op != Neg && a.Type() != F32 {
				return nil, fmt.Errorf("%v of %v (want f32)", e.Op, a.Type())
			}
			e.T = a.Type()
			return e, nil
		}
		b, err := c.expr(s, e.B)
		if err != nil {
			return nil, err
		}
		switch {
		case e.Op == And || e.Op == Or:
			if a.Type() != Bool || b.Type() != Bool {
				return nil, fmt.Errorf("%v of %v and %v", e.Op, a.Type(), b.Type())
			}
			e.B, e.T = b, Bool
			return e, nil
		case e.Op == Rem && (!isInt(a.Type()) || !isInt(b.Type())):
			return nil, fmt.Errorf("rem of %v and %v", a.Type(), b.Type())
		}
		if a, b, err = unify(a, b); err != nil {
			return nil, fmt.Errorf("%v: %w", e.Op, err)
		}
		e.A, e.B = a, b
		e.T = a.Type()
		if e.Op.Compare() {
			e.T = Bool
		}
		return e, nil
	}
	return nil, fmt.Errorf("unknown expression %T", e)
}

// unify widens mixed I32/I64 operands to I64.
func unify(a, b Expr) (Expr, Expr, error) {
	ta, tb := a.Type(), b.Type()
	if ta == tb {
		return a, b, nil
	}
	if isInt(ta) && isInt(tb) {
		var err error
		if a, err = convert(a, I64); err != nil {
			return nil, nil, err
		}
		b, err = convert(b, I64)
		return a, b, err
	}
	return nil, nil, fmt.Errorf("mixed %v and %v (write a cast)", ta, tb)
}
