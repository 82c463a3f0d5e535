package cudastep

// ParamKind is the C type of one kernel parameter.
type ParamKind uint8

const (
	PtrF32 ParamKind = iota // float*
	PtrI32                  // int*
	PtrU16                  // unsigned short*: bf16 or fp16 storage
	I32                     // int
	I64                     // long long
	F32                     // float
)

// CType is the parameter's C spelling.
func (k ParamKind) CType() string {
	switch k {
	case PtrF32:
		return "float*"
	case PtrI32:
		return "int*"
	case PtrU16:
		return "unsigned short*"
	case I32:
		return "int"
	case I64:
		return "long long"
	}
	return "float"
}

// Bytes is the size of the parameter's C type.
func (k ParamKind) Bytes() int {
	switch k {
	case I32, F32:
		return 4
	}
	return 8
}

// Pointer reports whether the parameter is a device address.
func (k ParamKind) Pointer() bool { return k <= PtrU16 }

// Kernel is one __global__ function of the step kernel library: its name and its
// parameters' C types, in order. The host program's launches are checked against it, and
// the CPU emulation's trampolines are written from it.
type Kernel struct {
	Name   string
	Params []ParamKind
}

// Arg is one argument of a launch: a program buffer's device address (Buf ≥ 0, plus
// Offset elements), a named workspace of the host program (Work, WorkBytes: scratch that
// no program buffer holds, laid out after the arena and shared by every launch that
// names it), or a scalar (Int or Float, by Kind).
type Arg struct {
	Kind      ParamKind
	Buf       int
	Offset    int64
	Work      string
	WorkBytes int64
	Int       int64
	Float     float32
	// Table lists the program buffers whose device addresses the argument's table holds
	// (TableArg); nil for every other argument.
	Table []int
	// Host names a float scalar the host program computes at run time (HostAdamScale...);
	// empty for a constant.
	Host string
}

// BufArg is the device address of program buffer b.
func BufArg(kind ParamKind, b int) Arg { return Arg{Kind: kind, Buf: b} }

// IntArg is an int (I32) or long long (I64) scalar.
func IntArg(kind ParamKind, v int64) Arg { return Arg{Kind: kind, Buf: -1, Int: v} }

// FloatArg is a float scalar.
func FloatArg(v float32) Arg { return Arg{Kind: F32, Buf: -1, Float: v} }

// WorkArg is the device address of the named workspace, which holds at least bytes.
func WorkArg(kind ParamKind, name string, bytes int64) Arg {
	return Arg{Kind: kind, Buf: -1, Work: name, WorkBytes: bytes}
}

// Launch is one kernel launch of the host program.
type Launch struct {
	Kernel      string
	Grid, Block [3]int
	Shared      int // dynamic shared memory, bytes
	Args        []Arg
}

// Tables of buffer addresses (added for the grouped expert products, whose experts'
// weights are separate program buffers at offsets the memory plan does not stride evenly).
//
// Table, when not nil, makes an argument (Kind PtrF32, Buf −1) the device address of a
// constant table the host program writes once, after laying out the arena: the device
// addresses (8 bytes each) of the program buffers Table lists, in order. The kernel reads
// the parameter as float *const *. A pointer argument with Buf −1 and neither Work nor
// Table is a null address (NullArg).

// TableArg is the device address of a table of the device addresses of program buffers
// bufs.
func TableArg(bufs []int) Arg { return Arg{Kind: PtrF32, Buf: -1, Table: bufs} }

// HostArg is a float scalar the host program computes at run time, named by Arg.Host: the
// optimizer's coefficients of the step, settled from the gradient norm the device summed.
const (
	HostAdamScale  = "adam_scale"  // the gradient multiplier: clipping
	HostAdamB1     = "adam_b1"     // β1
	HostAdamC1     = "adam_c1"     // 1 − β1
	HostAdamB2     = "adam_b2"     // β2
	HostAdamC2     = "adam_c2"     // 1 − β2
	HostAdamInvBC2 = "adam_invbc2" // 1/(1 − β2^t)
	HostAdamEps    = "adam_eps"    // ε
	HostAdamDecay  = "adam_decay"  // lr·weight_decay (tensors that decay)
	HostAdamLRBC1  = "adam_lrbc1"  // lr/(1 − β1^t)
)

// HostFloatArg is the float scalar the host program computes at run time under name.
func HostFloatArg(name string) Arg { return Arg{Kind: F32, Buf: -1, Host: name} }

// NullArg is a null device address of the given pointer kind: an optional buffer the op
// does not have.
func NullArg(kind ParamKind) Arg { return Arg{Kind: kind, Buf: -1} }
