package kernels

import (
	"fmt"
	"math"
)

// Env holds the named buffers and scalars one or more kernels run on. Names are shared
// across kernels (the router writes "gate", the un-permute reads it), so a whole forward
// and backward pass can run on one Env.
type Env struct {
	F map[string][]float32
	I map[string][]int32
	S map[string]float64 // scalars; integer scalars hold whole numbers
}

// NewEnv returns an empty Env.
func NewEnv() Env {
	return Env{F: map[string][]float32{}, I: map[string][]int32{}, S: map[string]float64{}}
}

// Clone deep-copies e.
func (e Env) Clone() Env {
	c := NewEnv()
	for k, v := range e.F {
		c.F[k] = append([]float32(nil), v...)
	}
	for k, v := range e.I {
		c.I[k] = append([]int32(nil), v...)
	}
	for k, v := range e.S {
		c.S[k] = v
	}
	return c
}

// Int returns integer scalar name, or an error when it is missing.
func (e Env) Int(name string) (int64, error) {
	s, ok := e.S[name]
	if !ok {
		return 0, fmt.Errorf("scalar %q not set", name)
	}
	return int64(s), nil
}

// value is one interpreter value.
type value struct {
	f float32
	i int64
	b bool
}

type frame struct {
	parent *frame
	vars   map[string]*value
}

func (f *frame) get(name string) (*value, bool) {
	for ; f != nil; f = f.parent {
		if v, ok := f.vars[name]; ok {
			return v, true
		}
	}
	return nil, false
}

type interp struct {
	k   *Kernel
	env Env
}

// constFrame binds shape constants and scalar parameters from env.
func (k *Kernel) constFrame(env Env) (*frame, error) {
	fr := &frame{vars: map[string]*value{}}
	for _, c := range k.Consts {
		fr.vars[c.Name] = &value{f: c.F, i: c.I}
	}
	for _, p := range k.Params {
		if p.Buffer {
			continue
		}
		s, ok := env.S[p.Name]
		if !ok {
			return nil, fmt.Errorf("kernel %s: scalar %q not set", k.Name, p.Name)
		}
		fr.vars[p.Name] = &value{f: float32(s), i: int64(s)}
	}
	return fr, nil
}

// Size evaluates the element count of buffer p for the scalars in env.
func (k *Kernel) Size(p Param, env Env) (int64, error) {
	fr, err := k.constFrame(env)
	if err != nil {
		return 0, err
	}
	in := &interp{k: k, env: env}
	val, err := in.eval(fr, p.Size)
	return val.i, err
}

// GridSize is the number of points of the iteration space for the scalars in env.
func (k *Kernel) GridSize(env Env) (int64, error) {
	fr, err := k.constFrame(env)
	if err != nil {
		return 0, err
	}
	in := &interp{k: k, env: env}
	n := int64(1)
	for _, d := range k.Grid {
		val, err := in.eval(fr, d.Extent)
		if err != nil {
			return 0, err
		}
		n *= val.i
	}
	return n, nil
}

// Interpret runs the kernel's IR on env, point by point in grid order. It is slow and
// exact to the IR's meaning; tests use it to check a description against its Ref before
// any backend is involved, and out-of-range accesses are errors here rather than
// memory corruption on a GPU.
func (k *Kernel) Interpret(env Env) error {
	fr, err := k.constFrame(env)
	if err != nil {
		return err
	}
	in := &interp{k: k, env: env}
	for _, p := range k.Params {
		if !p.Buffer {
			continue
		}
		val, err := in.eval(fr, p.Size)
		if err != nil {
			return err
		}
		have := len(env.F[p.Name])
		if p.Elem == I32 {
			have = len(env.I[p.Name])
		}
		if int64(have) < val.i {
			return fmt.Errorf("kernel %s: buffer %s has %d elements, needs %d", k.Name, p.Name, have, val.i)
		}
	}
	extents := make([]int64, len(k.Grid))
	total := int64(1)
	for i, d := range k.Grid {
		val, err := in.eval(fr, d.Extent)
		if err != nil {
			return err
		}
		extents[i] = val.i
		total *= val.i
	}
	for g := int64(0); g < total; g++ {
		pt := &frame{parent: fr, vars: map[string]*value{}}
		rest := g
		for i := len(extents) - 1; i >= 0; i-- {
			pt.vars[k.Grid[i].Var] = &value{i: rest % extents[i]}
			rest /= extents[i]
		}
		if err := in.stmts(pt, k.Body); err != nil {
			return fmt.Errorf("kernel %s: %w", k.Name, err)
		}
	}
	return nil
}

func (in *interp) stmts(fr *frame, list []Stmt) error {
	for _, st := range list {
		if err := in.stmt(fr, st); err != nil {
			return err
		}
	}
	return nil
}

func (in *interp) stmt(fr *frame, st Stmt) error {
	switch st := st.(type) {
	case *Local:
		x, err := in.eval(fr, st.Init)
		if err != nil {
			return err
		}
		fr.vars[st.Name] = &x
	case *Assign:
		x, err := in.eval(fr, st.X)
		if err != nil {
			return err
		}
		dst, ok := fr.get(st.Name)
		if !ok {
			return fmt.Errorf("assign to undefined %s", st.Name)
		}
		*dst = x
	case *Store:
		idx, err := in.eval(fr, st.Index)
		if err != nil {
			return err
		}
		x, err := in.eval(fr, st.X)
		if err != nil {
			return err
		}
		if p, _ := in.k.Param(st.Buf); p.Elem == I32 {
			b := in.env.I[st.Buf]
			if idx.i < 0 || idx.i >= int64(len(b)) {
				return fmt.Errorf("store %s[%d] out of range %d", st.Buf, idx.i, len(b))
			}
			b[idx.i] = int32(x.i)
			return nil
		}
		b := in.env.F[st.Buf]
		if idx.i < 0 || idx.i >= int64(len(b)) {
			return fmt.Errorf("store %s[%d] out of range %d", st.Buf, idx.i, len(b))
		}
		b[idx.i] = x.f
	case *For:
		lo, err := in.eval(fr, st.Lo)
		if err != nil {
			return err
		}
		hi, err := in.eval(fr, st.Hi)
		if err != nil {
			return err
		}
		for i := lo.i; i < hi.i; i++ {
			body := &frame{parent: fr, vars: map[string]*value{st.Var: {i: i}}}
			if err := in.stmts(body, st.Body); err != nil {
				return err
			}
		}
	case *If:
		c, err := in.eval(fr, st.Cond)
		if err != nil {
			return err
		}
		branch := st.Else
		if c.b {
			branch = st.Then
		}
		return in.stmts(&frame{parent: fr, vars: map[string]*value{}}, branch)
	default:
		return fmt.Errorf("unknown statement %T", st)
	}
	return nil
}

func (in *interp) eval(fr *frame, e Expr) (value, error) {
	switch e := e.(type) {
	case *Const:
		return value{f: e.F, i: e.I}, nil
	case *Ref:
		x, ok := fr.get(e.Name)
		if !ok {
			return value{}, fmt.Errorf("undefined %s", e.Name)
		}
		return *x, nil
	case *Load:
		idx, err := in.eval(fr, e.Index)
		if err != nil {
			return value{}, err
		}
		if e.T == I32 {
			b := in.env.I[e.Buf]
			if idx.i < 0 || idx.i >= int64(len(b)) {
				return value{}, fmt.Errorf("load %s[%d] out of range %d", e.Buf, idx.i, len(b))
			}
			return value{i: int64(b[idx.i])}, nil
		}
		b := in.env.F[e.Buf]
		if idx.i < 0 || idx.i >= int64(len(b)) {
			return value{}, fmt.Errorf("load %s[%d] out of range %d", e.Buf, idx.i, len(b))
		}
		return value{f: b[idx.i]}, nil
	case *Cast:
		x, err := in.eval(fr, e.X)
		if err != nil {
			return value{}, err
		}
		switch {
		case e.To == F32 && isInt(e.X.Type()):
			return value{f: float32(x.i)}, nil
		case isInt(e.To) && e.X.Type() == F32:
			return value{i: int64(x.f)}, nil
		case e.To == I32:
			return value{i: int64(int32(x.i))}, nil
		}
		return x, nil
	case *Select:
		c, err := in.eval(fr, e.C)
		if err != nil {
			return value{}, err
		}
		if c.b {
			return in.eval(fr, e.A)
		}
		return in.eval(fr, e.B)
	case *Bin:
		return in.bin(fr, e)
	}
	return value{}, fmt.Errorf("unknown expression %T", e)
}

func (in *interp) bin(fr *frame, e *Bin) (value, error) {
	a, err := in.eval(fr, e.A)
	if err != nil {
		return value{}, err
	}
	if e.Op.Unary() {
		switch e.Op {
		case Neg:
			return value{f: -a.f, i: -a.i}, nil
		case Exp:
			return value{f: float32(math.Exp(float64(a.f)))}, nil
		case Log:
			return value{f: float32(math.Log(float64(a.f)))}, nil
		case Sqrt:
			return value{f: float32(math.Sqrt(float64(a.f)))}, nil
		}
	}
	b, err := in.eval(fr, e.B)
	if err != nil {
		return value{}, err
	}
	if e.Op == And {
		return value{b: a.b && b.b}, nil
	}
	if e.Op == Or {
		return value{b: a.b || b.b}, nil
	}
	if e.A.Type() == F32 {
		x, y := a.f, b.f
		switch e.Op {
		case Add:
			return value{f: x + y}, nil
		case Sub:
			return value{f: x - y}, nil
		case Mul:
			return value{f: x * y}, nil
		case Div:
			return value{f: x / y}, nil
		case Max:
			return value{f: max(x, y)}, nil
		case Min:
			return value{f: min(x, y)}, nil
		}
		if b, ok := compare(e.Op, x, y); ok {
			return value{b: b}, nil
		}
		return value{}, fmt.Errorf("float %v", e.Op)
	}
	x, y := a.i, b.i
	switch e.Op {
	case Add:
		return value{i: x + y}, nil
	case Sub:
		return value{i: x - y}, nil
	case Mul:
		return value{i: x * y}, nil
	case Div, Rem:
		if y == 0 {
			return value{}, fmt.Errorf("integer division by zero")
		}
		if e.Op == Div {
			return value{i: x / y}, nil
		}
		return value{i: x % y}, nil
	case Max:
		return value{i: max(x, y)}, nil
	case Min:
		return value{i: min(x, y)}, nil
	}
	if b, ok := compare(e.Op, x, y); ok {
		return value{b: b}, nil
	}
	return value{}, fmt.Errorf("integer %v", e.Op)
}

// compare evaluates a comparison; ok is false when op is not one.
func compare[T float32 | int64](op Op, x, y T) (b, ok bool) {
	switch op {
	case Lt:
		return x < y, true
	case Le:
		return x <= y, true
	case Gt:
		return x > y, true
	case Ge:
		return x >= y, true
	case Eq:
		return x == y, true
	case Ne:
		return x != y, true
	}
	return false, false
}
