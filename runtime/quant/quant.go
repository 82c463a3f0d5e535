package quant

import (
	"bytes"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Block is the number of input columns that share one activation scale, and the unit
// int4 groups are packed in.
const Block = 32

// Matrix is a quantised weight matrix [Out, In]; see the package doc for the layout.
type Matrix struct {
	Bits    int // 8 or 4
	Out, In int
	Group   int // input columns per scale: In (per output channel) or a multiple of Block dividing In
	Data    []byte
	Scales  []float32
	// scratch holds *Activations between products, so a decoding step allocates nothing.
	scratch sync.Pool
}

// GroupError says a group size does not fit a matrix's input width.
type GroupError struct {
	Bits, Group, In int
	Reason          string
}

func (e *GroupError) Error() string {
	return fmt.Sprintf("int%d with group %d on input width %d: %s", e.Bits, e.Group, e.In, e.Reason)
}

// CheckScheme says whether bits and group (0: one scale per output channel) can quantise a
// matrix of input width in; the error is a *GroupError.
func CheckScheme(bits, group, in int) error {
	if bits != 8 && bits != 4 {
		return fmt.Errorf("quant: %d bits: want 8 or 4", bits)
	}
	switch {
	case group == 0 && bits == 4 && in%Block != 0:
		return &GroupError{bits, group, in, fmt.Sprintf("int4 packs blocks of %d columns; the width is not a multiple of %d", Block, Block)}
	case group == 0:
		return nil
	case group < 0 || group%Block != 0:
		return &GroupError{bits, group, in, fmt.Sprintf("a group must be a positive multiple of %d (32, 64, 128, ...)", Block)}
	case in%group != 0:
		return &GroupError{bits, group, in, fmt.Sprintf("the group does not divide the width (%d %% %d = %d)", in, group, in%group)}
	}
	return nil
}

func qmax(bits int) int {
	if bits == 4 {
		return 7
	}
	return 127
}

// Quantize quantises w ([out, in], row-major) with bits (8 or 4) and group (0: one scale
// per output channel).
func Quantize(w []float32, out, in, bits, group int) (*Matrix, error) {
	if len(w) != out*in {
		return nil, fmt.Errorf("quant: %d values for a [%d, %d] matrix", len(w), out, in)
	}
	if err := CheckScheme(bits, group, in); err != nil {
		return nil, err
	}
	if group == 0 {
		group = in
	}
	m := &Matrix{Bits: bits, Out: out, In: in, Group: group, Scales: make([]float32, out*(in/max(group, 1)))}
	if in == 0 {
		m.Scales = nil
	}
	m.Data = make([]byte, out*in*bits/8)
	qm := float64(qmax(bits))
	gpr := 0
	if in > 0 {
		gpr = in / group
	}
	for o := 0; o < out; o++ {
		for g := 0; g < gpr; g++ {
			cols := w[o*in+g*group : o*in+(g+1)*group]
			var mx float64
			for _, v := range cols {
				mx = math.Max(mx, math.Abs(float64(v)))
			}
			s := float32(mx / qm)
			m.Scales[o*gpr+g] = s
			for k, v := range cols {
				var q int
				if s != 0 {
					q = int(math.RoundToEven(float64(v) / float64(s)))
					q = min(max(q, -int(qm)), int(qm))
				}
				m.set(o, g*group+k, q)
			}
		}
	}
	return m, nil
}

// set stores value q at (o, k).
func (m *Matrix) set(o, k, q int) {
	if m.Bits == 8 {
		m.Data[o*m.In+k] = byte(int8(q))
		return
	}
	at, shift := m.nibble(o, k)
	m.Data[at] = m.Data[at]&^(0xF<<shift) | byte(q+8)<<shift
}

// nibble is the byte and bit shift of int4 element (o, k).
func (m *Matrix) nibble(o, k int) (int, uint) {
	b, r := k/Block, k%Block
	at := o*m.In/2 + b*Block/2 + r%(Block/2)
	if r < Block/2 {
		return at, 0
	}
	return at, 4
}

// Q returns the quantised value at (o, k).
func (m *Matrix) Q(o, k int) int {
	if m.Bits == 8 {
		return int(int8(m.Data[o*m.In+k]))
	}
	at, shift := m.nibble(o, k)
	return int(m.Data[at]>>shift&0xF) - 8
}

// Scale returns the scale of (o, k).
func (m *Matrix) Scale(o, k int) float32 { return m.Scales[o*(m.In/m.Group)+k/m.Group] }

// Dequantize returns s·q for every element, [Out, In] row-major (for tests and checks;
// serving never calls it).
func (m *Matrix) Dequantize() []float32 {
	w := make([]float32, m.Out*m.In)
	for o := 0; o < m.Out; o++ {
		for k := 0; k < m.In; k++ {
			w[o*m.In+k] = m.Scale(o, k) * float32(m.Q(o, k))
		}
	}
	return w
}

// Bytes is the memory the matrix holds: its values and scales.
func (m *Matrix) Bytes() int64 { return int64(len(m.Data)) + 4*int64(len(m.Scales)) }

// Check verifies that Data and Scales have the sizes the shape and scheme need (a
// matrix read from a file).
func (m *Matrix) Check() error {
	if m.Out < 0 || m.In < 0 {
		return fmt.Errorf("quant: negative shape [%d, %d]", m.Out, m.In)
	}
	g := m.Group
	if g == m.In {
		g = 0
	}
	if err := CheckScheme(m.Bits, g, m.In); err != nil {
		return err
	}
	if want := m.Out * m.In * m.Bits / 8; len(m.Data) != want {
		return fmt.Errorf("quant: %d value bytes for an int%d [%d, %d] matrix, want %d", len(m.Data), m.Bits, m.Out, m.In, want)
	}
	// Quantize writes int8 values in [-127, 127]; the kernels negate them.
	if i := bytes.IndexByte(m.Data, 0x80); m.Bits == 8 && i >= 0 {
		return fmt.Errorf("quant: int8 value %d of [%d, %d] is -128, outside [-127, 127]", i, m.Out, m.In)
	}
	if m.In > 0 {
		if want := m.Out * (m.In / m.Group); len(m.Scales) != want {
			return fmt.Errorf("quant: %d scales for [%d, %d] in groups of %d, want %d", len(m.Scales), m.Out, m.In, m.Group, want)
		}
	}
	return nil
}

// Activations are rows of x quantised to int8 in blocks of Block columns.
type Activations struct {
	Q      []int8    // [n, Blocks·Block], zero past In
	Scales []float32 // [n, Blocks]
	Blocks int
}

// size makes a's buffers hold n rows of width in.
func (a *Activations) size(n, in int) {
	nb := (in + Block - 1) / Block
	a.Blocks = nb
	if cap(a.Q) < n*nb*Block {
		a.Q = make([]int8, n*nb*Block)
	}
	if cap(a.Scales) < n*nb {
		a.Scales = make([]float32, n*nb)
	}
	a.Q, a.Scales = a.Q[:n*nb*Block], a.Scales[:n*nb]
}

// QuantizeRows quantises n rows of x (width in) for MulT, reusing a's buffers (the Go
// loop; the C kernels' quantisation gives the same values).
func QuantizeRows(a *Activations, x []float32, n, in int) {
	a.size(n, in)
	nb := a.Blocks
	for i := 0; i < n; i++ {
		row := x[i*in : (i+1)*in]
		for b := 0; b < nb; b++ {
			blk := row[b*Block : min((b+1)*Block, in)]
			var mx float32
			for _, v := range blk {
				mx = max(mx, abs32(v))
			}
			q := a.Q[(i*nb+b)*Block : (i*nb+b+1)*Block]
			s := mx / 127
			a.Scales[i*nb+b] = s
			if s == 0 {
				clear(q)
				continue
			}
			inv := 1 / s
			for k, v := range blk {
				q[k] = int8(min(max(math.RoundToEven(float64(v*inv)), -127), 127))
			}
			clear(q[len(blk):])
		}
	}
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

// splitWork is the n·Out·In above which MulT splits the outputs over goroutines: about
// ten microseconds of one core's work, above what starting and joining a goroutine costs
// on a loaded machine (a 512×128 product, 2 µs, runs on one).
const splitWork = 1 << 18

// MulT computes y = x·Wᵀ (accumulate: y += x·Wᵀ) for n rows of x ([n, In]) into y
// ([n, Out]). It is safe for concurrent use.
func (m *Matrix) MulT(y, x []float32, n int, accumulate bool) {
	if n == 0 || m.Out == 0 {
		return
	}
	if m.In == 0 {
		if !accumulate {
			clear(y[:n*m.Out])
		}
		return
	}
	a, _ := m.scratch.Get().(*Activations)
	if a == nil {
		a = new(Activations)
	}
	if m.workers(n) <= 1 {
		m.mulOne(bestISA, a, y[:n*m.Out], x[:n*m.In], n, accumulate)
	} else {
		quantizeRows(bestISA, a, x[:n*m.In], n, m.In)
		m.mulRows(bestISA, a, y, n, accumulate)
	}
	m.scratch.Put(a)
}

// workers is how many goroutines share a product of n rows: one below splitWork.
func (m *Matrix) workers(n int) int {
	if n*m.Out*m.In >= splitWork && m.Out >= 32 {
		return min(runtime.GOMAXPROCS(0), m.Out/16)
	}
	return 1
}

// mulRows runs the kernel of isa over output rows, split over goroutines when large.
func (m *Matrix) mulRows(isa int, a *Activations, y []float32, n int, accumulate bool) {
	workers := m.workers(n)
	if workers <= 1 {
		m.kernel(isa, a, y, n, 0, m.Out, accumulate)
		return
	}
	var wg sync.WaitGroup
	step := (m.Out + workers - 1) / workers
	for o0 := step; o0 < m.Out; o0 += step {
		wg.Add(1)
		go func(o0, o1 int) {
			defer wg.Done()
			m.kernel(isa, a, y, n, o0, o1, accumulate)
		}(o0, min(o0+step, m.Out))
	}
	m.kernel(isa, a, y, n, 0, min(step, m.Out), accumulate)
	wg.Wait()
}

// mulGo is the portable kernel: output rows [o0, o1) of y from a.
func (m *Matrix) mulGo(a *Activations, y []float32, n, o0, o1 int, accumulate bool) {
	nb, in, gpr := a.Blocks, m.In, m.In/m.Group
	for o := o0; o < o1; o++ {
		sw := m.Scales[o*gpr : (o+1)*gpr]
		for i := 0; i < n; i++ {
			qx := a.Q[i*nb*Block : (i+1)*nb*Block]
			sx := a.Scales[i*nb : (i+1)*nb]
			var acc float32
			for b := 0; b < nb; b++ {
				var isum int32
				hi := min((b+1)*Block, in)
				if m.Bits == 8 {
					row := m.Data[o*in : (o+1)*in]
					for k := b * Block; k < hi; k++ {
						isum += int32(int8(row[k])) * int32(qx[k])
					}
				} else {
					blk := m.Data[o*in/2+b*Block/2 : o*in/2+(b+1)*Block/2]
					for j, p := range blk {
						isum += (int32(p&0xF)-8)*int32(qx[b*Block+j]) + (int32(p>>4)-8)*int32(qx[b*Block+j+Block/2])
					}
				}
				acc += float32(isum) * (sx[b] * sw[b*Block/m.Group])
			}
			if accumulate {
				y[i*m.Out+o] += acc
			} else {
				y[i*m.Out+o] = acc
			}
		}
	}
}

// BoundT is the most |MulT(x) − x·Ŵᵀ| may be for row i and output o, with Ŵ the
// dequantised weights: the activations' rounding (half a block scale per column) times
// |Ŵ|, plus float32 rounding of the sums.
func (m *Matrix) BoundT(x []float32, i, o int) float64 {
	var a Activations
	QuantizeRows(&a, x[i*m.In:(i+1)*m.In], 1, m.In)
	var bound, mag float64
	for k := 0; k < m.In; k++ {
		w := math.Abs(float64(m.Scale(o, k) * float32(m.Q(o, k))))
		bound += float64(a.Scales[k/Block]) / 2 * w
		mag += w * math.Abs(float64(x[i*m.In+k]))
	}
	return bound*(1+1e-5) + 1e-5*mag + 1e-30
}
