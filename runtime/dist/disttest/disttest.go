// Package disttest is a conformance suite for dist.Comm transports.
//
// Every rank of a group calls Check on its own communicator at the same time (goroutines
// for dist.Local, processes for dist/mpi). Check runs each collective with rank-dependent
// data whose result every rank can compute on its own, so a rank checks what it received
// without trusting any other rank, and it all-gathers reduced results to check that every
// rank holds the same bits. The first failure is returned as an error naming the check
// and the rank; the other ranks may then fail or time out in the next collective, which
// is how a transport reports a peer that left.
package disttest

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/moec-dev/moec/runtime/dist"
)

// Check runs the suite on c; every rank of c's group must call it concurrently.
func Check(c dist.Comm) error {
	if c.Size() < 1 || c.Rank() < 0 || c.Rank() >= c.Size() {
		return fmt.Errorf("disttest: rank %d of a group of %d is out of range", c.Rank(), c.Size())
	}
	checks := []struct {
		name string
		run  func(dist.Comm) error
	}{
		{"barrier", checkBarrier},
		{"all_reduce_f32", checkAllReduceF32},
		{"all_reduce_f64", checkAllReduceF64},
		{"all_reduce_bits", checkReduceBits},
		{"all_reduce_max_f32", checkAllReduceMaxF32},
		{"send_recv", checkSendRecv},
		{"all_gather", checkAllGather},
		{"all_to_all_v", checkAllToAllV},
		{"split", checkSplit},
		{"all_gather_ints", checkAllGatherInts},
		{"all_gather_f32", checkAllGatherF32},
		{"reduce_scatter_f32", checkReduceScatterF32},
		{"barrier_end", checkBarrier},
	}
	for _, ch := range checks {
		if err := ch.run(c); err != nil {
			return fmt.Errorf("disttest: %s: rank %d of %d on group %q: %w", ch.name, c.Rank(), c.Size(), c.Name(), err)
		}
	}
	return nil
}

// lengths are the vector lengths every numeric collective is run with: empty, one, odd,
// and one long enough that transports switch to their large-message algorithms.
var lengths = [...]int{0, 1, 7, 33, 4099}

func checkBarrier(c dist.Comm) error {
	for range 3 {
		if err := c.Barrier(); err != nil {
			return err
		}
	}
	return nil
}

// exactF32 is rank r's element i for the exact-sum checks: small integers and halves,
// so every partial sum is representable and the sum does not depend on its order.
func exactF32(r, i int) float32 { return float32((r+1)*(i%13)-7*r) + 0.5*float32(i%2) }

func exactF64(r, i int) float64 { return float64((r+3)*(i%29)-11*r) + 0.25*float64(i%4) }

func checkAllReduceF32(c dist.Comm) error {
	for _, n := range lengths {
		x := make([]float32, n)
		for i := range x {
			x[i] = exactF32(c.Rank(), i)
		}
		if err := c.AllReduceF32(x); err != nil {
			return fmt.Errorf("%d floats: %w", n, err)
		}
		for i, got := range x {
			var want float32
			for r := range c.Size() {
				want += exactF32(r, i)
			}
			if got != want {
				return fmt.Errorf("%d floats: element %d is %v, want %v", n, i, got, want)
			}
		}
	}
	return nil
}

func checkAllReduceF64(c dist.Comm) error {
	for _, n := range lengths {
		x := make([]float64, n)
		for i := range x {
			x[i] = exactF64(c.Rank(), i)
		}
		if err := c.AllReduceF64(x); err != nil {
			return fmt.Errorf("%d values: %w", n, err)
		}
		for i, got := range x {
			var want float64
			for r := range c.Size() {
				want += exactF64(r, i)
			}
			if got != want {
				return fmt.Errorf("%d values: element %d is %v, want %v", n, i, got, want)
			}
		}
	}
	return nil
}

// checkReduceBits reduces values whose sum rounds (so its bits depend on the order of
// the additions) and checks that every rank got the same bits and that they are close to
// the exact sum: a transport may add in any order, but the same one on every rank.
func checkReduceBits(c dist.Comm) error {
	for _, n := range lengths {
		x := make([]float32, n)
		y := make([]float64, n)
		for i := range x {
			v := 1/float64(c.Rank()+3) + float64(i)*1e-3*float64(c.Rank()+1)
			x[i], y[i] = float32(v), v
		}
		if err := c.AllReduceF32(x); err != nil {
			return fmt.Errorf("%d floats: %w", n, err)
		}
		if err := c.AllReduceF64(y); err != nil {
			return fmt.Errorf("%d values: %w", n, err)
		}
		for i := range x {
			var want float64
			for r := range c.Size() {
				want += 1/float64(r+3) + float64(i)*1e-3*float64(r+1)
			}
			if math.Abs(float64(x[i])-want) > 1e-5*math.Max(1, math.Abs(want))*float64(c.Size()) {
				return fmt.Errorf("%d floats: element %d is %v, want about %v", n, i, x[i], want)
			}
			if math.Abs(y[i]-want) > 1e-13*math.Max(1, math.Abs(want))*float64(c.Size()) {
				return fmt.Errorf("%d values: element %d is %v, want about %v", n, i, y[i], want)
			}
		}
		mine := append(append([]byte(nil), dist.AsBytes(x)...), f64Bytes(y)...)
		all := make([]byte, c.Size()*len(mine))
		if err := c.AllGather(mine, all); err != nil {
			return fmt.Errorf("%d floats: gathering the sums: %w", n, err)
		}
		for r := range c.Size() {
			if !bytes.Equal(all[r*len(mine):(r+1)*len(mine)], mine) {
				return fmt.Errorf("%d floats: rank %d's sum has other bits than this rank's", n, r)
			}
		}
	}
	return nil
}

func f64Bytes(x []float64) []byte {
	b := make([]byte, 0, 8*len(x))
	for _, v := range x {
		u := math.Float64bits(v)
		for k := range 8 {
			b = append(b, byte(u>>(8*k)))
		}
	}
	return b
}

// gatherByte is byte i of rank r's all-gather block.
func gatherByte(r, i int) byte { return byte(r*37 + i*11 + 5) }

func checkAllGather(c dist.Comm) error {
	for _, n := range []int{0, 1, 13, 4096 + 3} {
		send := make([]byte, n)
		for i := range send {
			send[i] = gatherByte(c.Rank(), i)
		}
		recv := make([]byte, c.Size()*n)
		for i := range recv {
			recv[i] = 0xee
		}
		if err := c.AllGather(send, recv); err != nil {
			return fmt.Errorf("%d bytes: %w", n, err)
		}
		for r := range c.Size() {
			for i := range n {
				if got, want := recv[r*n+i], gatherByte(r, i); got != want {
					return fmt.Errorf("%d bytes: byte %d of rank %d's block is %#x, want %#x", n, i, r, got, want)
				}
			}
		}
		if n > 0 && send[n-1] != gatherByte(c.Rank(), n-1) {
			return fmt.Errorf("%d bytes: the send buffer changed", n)
		}
	}
	return nil
}

// a2aLayout is one all-to-all pattern: count(from, to) bytes go from rank from to rank to.
type a2aLayout struct {
	name  string
	count func(from, to int) int
}

var a2aLayouts = []a2aLayout{
	// Uneven, with zero-byte blocks wherever from+2·to is a multiple of 3.
	{"uneven", func(from, to int) int { return ((from + 2*to) % 3) * 5 }},
	// Every block non-empty and of a different size.
	{"dense", func(from, to int) int { return 1 + from + 3*to }},
	// Only rank 0 receives anything, and a lot of it.
	{"to_zero", func(from, to int) int {
		if to == 0 {
			return 3000 + from
		}
		return 0
	}},
	// Nothing at all moves.
	{"empty", func(int, int) int { return 0 }},
}

// a2aByte is byte j of the block rank from sends to rank to.
func a2aByte(from, to, j int) byte { return byte(from*53 + to*17 + j*3 + 1) }

// reversedOffsets lays n blocks out in reverse peer order after a gap of lead bytes and
// with gap bytes between blocks, so a transport that ignores offsets is caught.
func reversedOffsets(counts []int, lead, gap int) (offs []int, total int) {
	offs = make([]int, len(counts))
	at := lead
	for p := len(counts) - 1; p >= 0; p-- {
		offs[p] = at
		at += counts[p] + gap
	}
	return offs, at
}

func checkAllToAllV(c dist.Comm) error {
	me, n := c.Rank(), c.Size()
	for _, l := range a2aLayouts {
		sendCount, recvCount := make([]int, n), make([]int, n)
		for p := range n {
			sendCount[p] = l.count(me, p)
			recvCount[p] = l.count(p, me)
		}
		sendOff, sendLen := reversedOffsets(sendCount, 3, 2)
		recvOff, recvLen := reversedOffsets(recvCount, 5, 1)
		send := make([]byte, sendLen)
		for i := range send {
			send[i] = 0xcc
		}
		for p := range n {
			for j := range sendCount[p] {
				send[sendOff[p]+j] = a2aByte(me, p, j)
			}
		}
		orig := slices.Clone(send)
		const fill = 0xee
		recv := make([]byte, recvLen)
		for i := range recv {
			recv[i] = fill
		}
		if err := c.AllToAllV(send, sendCount, sendOff, recv, recvCount, recvOff); err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
		inBlock := make([]bool, recvLen)
		for p := range n {
			for j := range recvCount[p] {
				inBlock[recvOff[p]+j] = true
				if got, want := recv[recvOff[p]+j], a2aByte(p, me, j); got != want {
					return fmt.Errorf("%s: byte %d of the block from rank %d is %#x, want %#x", l.name, j, p, got, want)
				}
			}
		}
		for i, b := range recv {
			if !inBlock[i] && b != fill {
				return fmt.Errorf("%s: byte %d of the receive buffer lies outside every block but was written (%#x)", l.name, i, b)
			}
		}
		if !bytes.Equal(send, orig) {
			return fmt.Errorf("%s: the send buffer changed", l.name)
		}
	}
	return nil
}

// checkSplit splits the group by parity with keys that reverse the order, checks the
// sub-groups' ranks, sizes and members, runs collectives inside them (which must not mix
// across colors), then splits again with equal keys, which must keep the parent's order.
func checkSplit(c dist.Comm) error {
	me, n := c.Rank(), c.Size()
	color := me % 2
	sub, err := c.Split(color, -me, "parity")
	if err != nil {
		return err
	}
	var want []int64 // members of my color, by descending parent rank
	for r := n - 1; r >= 0; r-- {
		if r%2 == color {
			want = append(want, int64(r))
		}
	}
	if err := checkMembers(sub, "parity", want, me); err != nil {
		return err
	}
	// A sum inside each sub-group covers only its own color.
	x := []float64{float64(me + 1), 1}
	if err := sub.AllReduceF64(x); err != nil {
		return fmt.Errorf("all-reduce in sub-group: %w", err)
	}
	var wantSum float64
	for _, r := range want {
		wantSum += float64(r + 1)
	}
	if x[0] != wantSum || x[1] != float64(len(want)) {
		return fmt.Errorf("all-reduce in sub-group of color %d gave %v, want [%v %v]", color, x, wantSum, len(want))
	}
	if err := checkAllGather(sub); err != nil {
		return fmt.Errorf("all-gather in sub-group: %w", err)
	}
	if err := checkAllToAllV(sub); err != nil {
		return fmt.Errorf("all-to-all in sub-group: %w", err)
	}
	if err := checkSendRecv(sub); err != nil {
		return fmt.Errorf("send and receive in sub-group: %w", err)
	}
	if err := sub.Barrier(); err != nil {
		return fmt.Errorf("barrier in sub-group: %w", err)
	}
	// The parent still works after a split.
	if err := c.Barrier(); err != nil {
		return fmt.Errorf("barrier on the parent after the split: %w", err)
	}
	// Equal keys: the order falls back to the parent's.
	same, err := c.Split(7, 0, "same")
	if err != nil {
		return fmt.Errorf("split with equal keys: %w", err)
	}
	all := make([]int64, n)
	for r := range all {
		all[r] = int64(r)
	}
	if err := checkMembers(same, "same", all, me); err != nil {
		return fmt.Errorf("split with equal keys: %w", err)
	}
	// A split of a split.
	if sub.Size() > 1 {
		half, err := sub.Split(sub.Rank()/2, sub.Rank(), "half")
		if err != nil {
			return fmt.Errorf("split of the sub-group: %w", err)
		}
		if err := half.Barrier(); err != nil {
			return fmt.Errorf("barrier in the split of the sub-group: %w", err)
		}
		if half.Rank() != sub.Rank()%2 {
			return fmt.Errorf("split of the sub-group: rank %d, want %d", half.Rank(), sub.Rank()%2)
		}
	}
	return nil
}

// checkMembers checks that sub's ranks are, in order, the parent ranks want, and that
// this rank (parent rank me) sits at its place in that order.
func checkMembers(sub dist.Comm, name string, want []int64, me int) error {
	if sub.Name() != name {
		return fmt.Errorf("sub-group is named %q, want %q", sub.Name(), name)
	}
	if sub.Size() != len(want) {
		return fmt.Errorf("sub-group %q has %d ranks, want %d", name, sub.Size(), len(want))
	}
	if at := slices.Index(want, int64(me)); sub.Rank() != at {
		return fmt.Errorf("rank %d is rank %d of sub-group %q, want %d", me, sub.Rank(), name, at)
	}
	got, err := dist.AllGatherRows(sub, []int64{int64(me)})
	if err != nil {
		return fmt.Errorf("gathering the members of %q: %w", name, err)
	}
	for i, g := range got {
		if len(g) != 1 || g[0] != want[i] {
			return fmt.Errorf("sub-group %q: member %d is parent rank %v, want %d", name, i, g, want[i])
		}
	}
	return nil
}

// intsOf is rank r's vector of the k-th all-gather-ints case: empty, one value, and
// values at both ends of the int64 range.
func intsOf(r int64, k int) []int64 {
	return [][]int64{{}, {r}, {r, -r, r * r * 1e12, math.MinInt64 + r, math.MaxInt64 - r}}[k]
}

func checkAllGatherInts(c dist.Comm) error {
	for k := range 3 {
		local := intsOf(int64(c.Rank()), k)
		got, err := dist.AllGatherRows(c, local)
		if err != nil {
			return fmt.Errorf("%d ints: %w", len(local), err)
		}
		if len(got) != c.Size() {
			return fmt.Errorf("%d ints: %d vectors, want %d", len(local), len(got), c.Size())
		}
		for r, g := range got {
			if want := intsOf(int64(r), k); !slices.Equal(g, want) {
				return fmt.Errorf("%d ints: rank %d's vector is %v, want %v", len(local), r, g, want)
			}
		}
	}
	return nil
}

func checkAllGatherF32(c dist.Comm) error {
	for _, n := range []int{0, 1, 5, 257} {
		shard := make([]float32, n)
		for i := range shard {
			shard[i] = float32(c.Rank()) + float32(i)/8
		}
		out := make([]float32, c.Size()*n)
		if err := dist.AllGatherOf(c, shard, out); err != nil {
			return fmt.Errorf("%d floats: %w", n, err)
		}
		for r := range c.Size() {
			for i := range n {
				if got, want := out[r*n+i], float32(r)+float32(i)/8; got != want {
					return fmt.Errorf("%d floats: element %d of rank %d's shard is %v, want %v", n, i, r, got, want)
				}
			}
		}
	}
	return nil
}

func checkReduceScatterF32(c dist.Comm) error {
	me, size := c.Rank(), c.Size()
	for _, per := range []int{0, 1, 9} {
		x := make([]float32, per*size)
		for i := range x {
			x[i] = exactF32(me, i)
		}
		out := make([]float32, per)
		if err := dist.ReduceScatterF32(c, x, out); err != nil {
			return fmt.Errorf("%d per rank: %w", per, err)
		}
		for j := range out {
			i := me*per + j
			var want float32
			for r := range size {
				want += exactF32(r, i)
			}
			if out[j] != want {
				return fmt.Errorf("%d per rank: element %d of this rank's block is %v, want %v", per, j, out[j], want)
			}
		}
	}
	// A length that does not divide is refused on every rank alike, before any traffic.
	if size > 1 {
		err := dist.ReduceScatterF32(c, make([]float32, size+1), make([]float32, 1))
		if err == nil {
			return errors.New("reduce-scatter of a length that the group size does not divide succeeded")
		}
	}
	return nil
}

// maxF32 is rank r's element i for the maximum checks: which rank holds the largest value
// changes with i, and negative values and infinities take part.
func maxF32(r, i int) float32 {
	switch {
	case i%11 == 10:
		return float32(math.Inf(-1))
	case i%17 == 16 && r == i%3:
		return float32(math.Inf(1))
	}
	return float32((r*7+i*5)%13) - 6.5 - float32(r)/4
}

func checkAllReduceMaxF32(c dist.Comm) error {
	for _, n := range lengths {
		x := make([]float32, n)
		for i := range x {
			x[i] = maxF32(c.Rank(), i)
		}
		if err := c.AllReduceMaxF32(x); err != nil {
			return fmt.Errorf("%d floats: %w", n, err)
		}
		for i, got := range x {
			want := maxF32(0, i)
			for r := 1; r < c.Size(); r++ {
				want = max(want, maxF32(r, i))
			}
			if got != want {
				return fmt.Errorf("%d floats: element %d is %v, want %v", n, i, got, want)
			}
		}
	}
	return nil
}

// p2pF32 is element i of the k-th message from rank from to rank to.
func p2pF32(from, to, k, i int) float32 { return float32(from*1000+to*100+k*10) + float32(i)/4 }

// checkSendRecv sends to both neighbours on a ring before receiving anything (sends must
// not wait for the receiver), several messages on one tag (they must arrive in order,
// whatever their sizes) and one on another tag sent first and received last (tags must
// be matched).
func checkSendRecv(c dist.Comm) error {
	me, n := c.Rank(), c.Size()
	right, left := (me+1)%n, (me+n-1)%n
	sizes := []int{5, 0, 4099, 1}
	msg := func(from, to, k int) []float32 {
		x := make([]float32, sizes[k%len(sizes)])
		for i := range x {
			x[i] = p2pF32(from, to, k, i)
		}
		return x
	}
	if err := c.SendF32(right, 2, msg(me, right, 9)); err != nil {
		return fmt.Errorf("send to rank %d with tag 2: %w", right, err)
	}
	for k := range sizes {
		for _, to := range []int{right, left} {
			x := msg(me, to, k)
			if err := c.SendF32(to, 1, x); err != nil {
				return fmt.Errorf("send %d to rank %d: %w", k, to, err)
			}
			clear(x) // the transport keeps its own copy
		}
	}
	for k := range sizes {
		for _, from := range []int{left, right} {
			want := msg(from, me, k)
			got := make([]float32, len(want))
			if err := c.RecvF32(from, 1, got); err != nil {
				return fmt.Errorf("receive %d from rank %d: %w", k, from, err)
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("message %d from rank %d is %v, want %v", k, from, head(got), head(want))
			}
		}
	}
	want := msg(left, me, 9)
	got := make([]float32, len(want))
	if err := c.RecvF32(left, 2, got); err != nil {
		return fmt.Errorf("receive from rank %d with tag 2: %w", left, err)
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("the tag-2 message from rank %d is %v, want %v", left, head(got), head(want))
	}
	return c.Barrier()
}

func head(x []float32) []float32 { return x[:min(len(x), 4)] }
