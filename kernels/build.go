package kernels

// Short constructors that keep the kernel descriptions close to the math they state.

func fc(v float32) Expr          { return &Const{T: F32, F: v} }
func ic(v int64) Expr            { return &Const{T: I64, I: v} }
func v(name string) Expr         { return &Ref{Name: name} }
func ld(buf string, i Expr) Expr { return &Load{Buf: buf, Index: i} }
func add(a, b Expr) Expr         { return &Bin{Op: Add, A: a, B: b} }
func sub(a, b Expr) Expr         { return &Bin{Op: Sub, A: a, B: b} }
func mul(a, b Expr) Expr         { return &Bin{Op: Mul, A: a, B: b} }
func div(a, b Expr) Expr         { return &Bin{Op: Div, A: a, B: b} }
func rem(a, b Expr) Expr         { return &Bin{Op: Rem, A: a, B: b} }
func fmax(a, b Expr) Expr        { return &Bin{Op: Max, A: a, B: b} }
func lt(a, b Expr) Expr          { return &Bin{Op: Lt, A: a, B: b} }
func gt(a, b Expr) Expr          { return &Bin{Op: Gt, A: a, B: b} }
func eq(a, b Expr) Expr          { return &Bin{Op: Eq, A: a, B: b} }
func and(a, b Expr) Expr         { return &Bin{Op: And, A: a, B: b} }
func or(a, b Expr) Expr          { return &Bin{Op: Or, A: a, B: b} }
func neg(a Expr) Expr            { return &Bin{Op: Neg, A: a} }
func exp(a Expr) Expr            { return &Bin{Op: Exp, A: a} }
func log(a Expr) Expr            { return &Bin{Op: Log, A: a} }
func sqrt(a Expr) Expr           { return &Bin{Op: Sqrt, A: a} }
func sel(c, a, b Expr) Expr      { return &Select{C: c, A: a, B: b} }
func tof(a Expr) Expr            { return &Cast{To: F32, X: a} }
func mul3(a, b, c Expr) Expr     { return mul(mul(a, b), c) }
func add3(a, b, c Expr) Expr     { return add(add(a, b), c) }

// at2 is the row-major offset i*n + j.
func at2(i, n, j Expr) Expr { return add(mul(i, n), j) }

func local(name string, init Expr) Stmt         { return &Local{Name: name, Init: init} }
func set(name string, x Expr) Stmt              { return &Assign{Name: name, X: x} }
func store(buf string, i, x Expr) Stmt          { return &Store{Buf: buf, Index: i, X: x} }
func iff(c Expr, then []Stmt, els ...Stmt) Stmt { return &If{Cond: c, Then: then, Else: els} }

// loop is a Serial loop; vloop a Vector one (independent iterations, reductions allowed).
func loop(i string, lo, hi Expr, body ...Stmt) Stmt {
	return &For{Var: i, Lo: lo, Hi: hi, Hint: Serial, Body: body}
}
func vloop(i string, lo, hi Expr, body ...Stmt) Stmt {
	return &For{Var: i, Lo: lo, Hi: hi, Hint: Vector, Body: body}
}

func in(name string, t Type, size Expr) Param {
	return Param{Name: name, Elem: t, Buffer: true, Access: In, Size: size}
}
func out(name string, t Type, size Expr) Param {
	return Param{Name: name, Elem: t, Buffer: true, Access: Out, Size: size}
}
func inout(name string, t Type, size Expr) Param {
	return Param{Name: name, Elem: t, Buffer: true, Access: InOut, Size: size}
}
func scalar(name string, t Type) Param { return Param{Name: name, Elem: t} }

func ci(name string, val int64) ShapeConst   { return ShapeConst{Name: name, T: I64, I: val} }
func cf(name string, val float32) ShapeConst { return ShapeConst{Name: name, T: F32, F: val} }
func dim(name string, extent Expr) Dim       { return Dim{Var: name, Extent: extent} }
