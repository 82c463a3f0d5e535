package dist

import (
	"fmt"
	"time"
	"unsafe"
)

// Comm is one rank's handle on a group of ranks. Every rank of the group must call the same
// collectives in the same order with matching sizes; a mismatch is an error, not a hang.
// Buffers are owned by the caller and are not retained after a call returns.
type Comm interface {
	// Rank is this rank's index in the group, Size the number of ranks in it.
	Rank() int
	Size() int
	// Name names the group in errors ("world", "ep", "edp").
	Name() string
	// AllReduceF32 and AllReduceF64 replace x on every rank by the element-wise sum of
	// every rank's x; every rank gets the same bits (in-process ranks add in rank order;
	// MPI picks its own order, so its last bits may differ from the in-process sum).
	AllReduceF32(x []float32) error
	AllReduceF64(x []float64) error
	// AllReduceMaxF32 replaces x on every rank by the element-wise maximum of every
	// rank's x (the same bits everywhere: a maximum does not depend on the order).
	AllReduceMaxF32(x []float32) error
	// AllGather writes every rank's send (all of one length) into recv in rank order:
	// len(recv) = Size()·len(send).
	AllGather(send, recv []byte) error
	// AllToAllV sends send[sendOff[p]:sendOff[p]+sendCount[p]] to rank p and receives
	// rank p's block for this rank into recv[recvOff[p]:recvOff[p]+recvCount[p]]. Counts
	// and offsets are in bytes; the receiver must know the sizes (exchange them first).
	AllToAllV(send []byte, sendCount, sendOff []int, recv []byte, recvCount, recvOff []int) error
	// SendF32 sends a copy of x to group rank to with tag, and returns without waiting
	// for the receiver (x may change at once). Messages from one rank to another with the
	// same tag arrive in the order they were sent.
	SendF32(to, tag int, x []float32) error
	// RecvF32 waits for the next message from group rank from with tag and copies it into
	// x; a message of another length is an error.
	RecvF32(from, tag int, x []float32) error
	// Barrier returns once every rank has called it.
	Barrier() error
	// Split partitions the group: ranks that pass the same color form a new group, ordered
	// by key (then by rank). name labels the new group in errors.
	Split(color, key int, name string) (Comm, error)
	// Abort tells every rank of the world that this rank failed with err; their pending
	// and later collectives fail with an error that names this rank.
	Abort(err error)
}

// Error is a failed collective: which rank saw it, in which op on which group, and why.
type Error struct {
	Rank    int    // world rank that reports it
	Op      string // "all_reduce", "all_gather", "all_to_all", "send", "recv", "barrier", "split"
	Group   string
	Timeout time.Duration // set when the op timed out
	Missing []int         // world ranks that had not arrived when it timed out (empty under MPI)
	Failed  int           // world rank that aborted, or -1
	Err     error
}

func (e *Error) Error() string {
	switch {
	case e.Timeout > 0 && len(e.Missing) == 0: // MPI cannot say who is missing
		return fmt.Sprintf("rank %d: %s on group %s timed out after %s waiting for the other ranks", e.Rank, e.Op, e.Group, e.Timeout)
	case e.Timeout > 0:
		return fmt.Sprintf("rank %d: %s on group %s timed out after %s waiting for rank(s) %v", e.Rank, e.Op, e.Group, e.Timeout, e.Missing)
	case e.Failed >= 0:
		return fmt.Sprintf("rank %d: %s on group %s: rank %d failed: %v", e.Rank, e.Op, e.Group, e.Failed, e.Err)
	}
	return fmt.Sprintf("rank %d: %s on group %s: %v", e.Rank, e.Op, e.Group, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// DefaultTimeout bounds every collective unless a transport is told otherwise: long
// enough for the slowest step of a CPU run, short enough that a dead rank is noticed.
const DefaultTimeout = 5 * time.Minute

// Number is an element type the typed helpers move through the byte-level collectives.
type Number interface{ ~float32 | ~float64 | ~int64 }

// AsBytes views x as its bytes without copying, so rows move through the collectives
// where they lie. The bytes are the host's order: little-endian on every machine moec
// runs on, and the same on every rank of a job.
func AsBytes[T Number](x []T) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), len(x)*int(unsafe.Sizeof(x[0])))
}

// AllGatherOf all-gathers equal-length shards into out (len = Size()·len(shard)).
func AllGatherOf[T Number](c Comm, shard, out []T) error {
	return c.AllGather(AsBytes(shard), AsBytes(out))
}

// AllGatherRows all-gathers one vector per rank: rows[r] is rank r's local.
func AllGatherRows[T Number](c Comm, local []T) ([][]T, error) {
	all := make([]T, c.Size()*len(local))
	if err := AllGatherOf(c, local, all); err != nil {
		return nil, err
	}
	rows := make([][]T, c.Size())
	for r := range rows {
		rows[r] = all[r*len(local) : (r+1)*len(local) : (r+1)*len(local)]
	}
	return rows, nil
}

// ReduceScatterF32 sums x across the group and leaves rank r's block of the sum,
// x[r·len(x)/Size() : (r+1)·len(x)/Size()], in out; len(x) must be a multiple of Size().
// It is an all-reduce followed by taking the block: a transport with a native
// reduce-scatter can do better, the result is the same.
func ReduceScatterF32(c Comm, x, out []float32) error {
	n := len(x) / c.Size()
	if n*c.Size() != len(x) || len(out) != n {
		return fmt.Errorf("dist: reduce-scatter of %d floats over %d ranks into %d", len(x), c.Size(), len(out))
	}
	if err := c.AllReduceF32(x); err != nil {
		return err
	}
	copy(out, x[c.Rank()*n:(c.Rank()+1)*n])
	return nil
}
