package kernels

import "fmt"

// Type is the scalar type of a value in the kernel IR.
type Type uint8

const (
	F32  Type = iota + 1 // float / float
	I32                  // int32 / int: stored indices (token ids, expert ids, slots)
	I64                  // int64 / long long: all index arithmetic, so 1T-parameter offsets never overflow
	Bool                 // i1 / bool: comparisons and conditions
)

func (t Type) String() string {
	switch t {
	case F32:
		return "f32"
	case I32:
		return "i32"
	case I64:
		return "i64"
	case Bool:
		return "bool"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Expr is an expression tree node. Types are filled in by Kernel.check, which every
// constructor in this package runs, so lowerings can rely on Type().
type Expr interface {
	Type() Type
	expr()
}

// Const is a literal. F32 literals hold V as float32; integer literals are I64.
type Const struct {
	T Type
	F float32
	I int64
}

// Ref names a scalar: a shape constant, a scalar parameter, a grid index, a loop
// variable or a local. Its type is resolved by check.
type Ref struct {
	Name string
	T    Type
}

// Load reads Buf[Index]; Index is I64 after check.
type Load struct {
	Buf   string
	Index Expr
	T     Type
}

// Op is a binary or unary operator.
type Op uint8

const (
	Add Op = iota + 1
	Sub
	Mul
	Div
	Rem // integers only
	Max
	Min
	Lt
	Le
	Gt
	Ge
	Eq
	Ne
	And // booleans
	Or
	// Unary (Bin.B == nil).
	Neg
	Exp
	Log
	Sqrt
)

var opNames = [...]string{Add: "add", Sub: "sub", Mul: "mul", Div: "div", Rem: "rem", Max: "max", Min: "min",
	Lt: "lt", Le: "le", Gt: "gt", Ge: "ge", Eq: "eq", Ne: "ne", And: "and", Or: "or",
	Neg: "neg", Exp: "exp", Log: "log", Sqrt: "sqrt"}

func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Unary reports whether o takes one operand.
func (o Op) Unary() bool { return o >= Neg }

// Compare reports whether o yields a Bool from two numbers.
func (o Op) Compare() bool { return o >= Lt && o <= Ne }

// Bin applies Op to A (and B, for binary operators).
type Bin struct {
	Op   Op
	A, B Expr
	T    Type
}

// Select is C ? A : B.
type Select struct {
	C, A, B Expr
}

// Cast converts X to To (int<->float, widening and narrowing of integers).
type Cast struct {
	To Type
	X  Expr
}

func (c *Const) Type() Type  { return c.T }
func (r *Ref) Type() Type    { return r.T }
func (l *Load) Type() Type   { return l.T }
func (b *Bin) Type() Type    { return b.T }
func (s *Select) Type() Type { return s.A.Type() }
func (c *Cast) Type() Type   { return c.To }
func (*Const) expr()         {}
func (*Ref) expr()           {}
func (*Load) expr()          {}
func (*Bin) expr()           {}
func (*Select) expr()        {}
func (*Cast) expr()          {}

// Stmt is a statement.
type Stmt interface{ stmt() }

// Local declares a mutable scalar local initialised to Init; its type is Init's.
type Local struct {
	Name string
	Init Expr
}

// Assign sets a local.
type Assign struct {
	Name string
	X    Expr
}

// Store writes X to Buf[Index].
type Store struct {
	Buf   string
	Index Expr
	X     Expr
}

// Hint tells a lowering what a loop allows.
type Hint uint8

const (
	// Serial loops carry dependences other than reductions (e.g. top-k passes).
	Serial Hint = iota
	// Vector loops have independent iterations except for sum/max reductions into locals;
	// lowerings may reorder floating-point reductions (LLVM: reassoc flags; CUDA: unroll
	// so that the load/store vectoriser can fuse accesses).
	Vector
)

// For runs Body for Var in [Lo, Hi), step 1. Var is I64.
type For struct {
	Var    string
	Lo, Hi Expr
	Hint   Hint
	Body   []Stmt
}

// If runs Then when Cond holds, else Else.
type If struct {
	Cond       Expr
	Then, Else []Stmt
}

func (*Local) stmt()  {}
func (*Assign) stmt() {}
func (*Store) stmt()  {}
func (*For) stmt()    {}
func (*If) stmt()     {}

// Access says how a kernel uses a buffer.
type Access uint8

const (
	In    Access = iota + 1 // read only
	Out                     // written (every element it is responsible for), not read
	InOut                   // read and written (accumulation, in-place update)
)

// Param is a kernel argument: a buffer (Size > nil) or a scalar.
type Param struct {
	Name   string
	Elem   Type
	Buffer bool
	Access Access // buffers only
	// Size is the element count as an expression of shape constants and integer
	// scalar parameters; hosts and tests allocate with it.
	Size Expr
	Doc  string
}

// ShapeConst is a size baked into the generated code.
type ShapeConst struct {
	Name string
	T    Type // I64 or F32
	I    int64
	F    float32
}

// Dim is one axis of the parallel iteration space.
type Dim struct {
	Var    string
	Extent Expr // I64; may use integer scalar parameters (token counts are runtime values)
}

// Kernel is one described kernel: its interface, its parallel iteration space and the
// per-point body. Every backend runs Body once for each point of Grid; no two points
// write the same element, which is what lets CUDA map points to threads and the CPU
// split them into ranges across cores.
type Kernel struct {
	Name   string // identifier-safe; backends prefix it with "moe_"
	Doc    string
	Consts []ShapeConst
	Params []Param
	Grid   []Dim
	Body   []Stmt
	// Contraction, when set, says the kernel is a grouped matrix product (Grid and Body
	// are derived from it); backends may lower it as a tiled GEMM.
	Contraction *Contraction
	// Ref is the Go reference implementation, written by hand (not derived from Body) so
	// that backends are checked against an independent statement of the math.
	Ref func(env Env) error
}

// Param returns the parameter with the given name.
func (k *Kernel) Param(name string) (Param, bool) {
	for _, p := range k.Params {
		if p.Name == name {
			return p, true
		}
	}
	return Param{}, false
}

// Outputs lists buffers the kernel writes.
func (k *Kernel) Outputs() []Param {
	var out []Param
	for _, p := range k.Params {
		if p.Buffer && p.Access != In {
			out = append(out, p)
		}
	}
	return out
}
