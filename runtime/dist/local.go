package dist

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Local returns the communicators of n in-process ranks (goroutines of one process), one
// per rank in rank order. timeout bounds every collective (0: DefaultTimeout).
func Local(n int, timeout time.Duration) ([]Comm, error) {
	if n < 1 {
		return nil, fmt.Errorf("dist: %d local ranks: need at least one", n)
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	w := &world{size: n, timeout: timeout, aborted: make(chan struct{}), failed: -1, groups: map[string]*group{}, mail: map[mailKey]*mailbox{}}
	members := make([]int, n)
	for i := range members {
		members[i] = i
	}
	g := w.newGroup("world", members)
	out := make([]Comm, n)
	for r := range out {
		out[r] = &localComm{g: g, rank: r}
	}
	return out, nil
}

// world is what the in-process ranks share: the abort state and the groups split so far.
type world struct {
	size    int
	timeout time.Duration

	mu      sync.Mutex
	aborted chan struct{} // closed by the first Abort
	failed  int           // world rank that aborted first
	cause   error
	groups  map[string]*group
	mail    map[mailKey]*mailbox
}

func (w *world) abort(rank int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed >= 0 {
		return
	}
	w.failed, w.cause = rank, err
	close(w.aborted)
}

func (w *world) abortState() (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed, w.cause
}

// group is a set of world ranks running collectives together. Each rank numbers its calls;
// call k of every rank meets in round k.
type group struct {
	w       *world
	name    string
	members []int // world ranks, in group-rank order

	mu     sync.Mutex
	seq    []int64 // next call number of each group rank
	rounds map[int64]*round
}

func (w *world) newGroup(name string, members []int) *group {
	return &group{w: w, name: name, members: members, seq: make([]int64, len(members)), rounds: map[int64]*round{}}
}

// round is one collective call: every rank deposits its part, waits for the others, reads
// what it needs, and waits until everyone has read before its buffers may change again.
type round struct {
	parts          []part
	arrived, read  int
	in, out        []bool
	allIn, allRead chan struct{}
}

type part struct {
	op        string
	vals      any // []float32 or []float64 of a reduction
	send      []byte
	sendCount []int
	sendOff   []int
	color     int
	key       int
}

type localComm struct {
	g       *group
	rank    int // in g
	scratch any // the last reduction's sum buffer ([]float32 or []float64), reused
}

func (c *localComm) Rank() int    { return c.rank }
func (c *localComm) Size() int    { return len(c.g.members) }
func (c *localComm) Name() string { return c.g.name }

func (c *localComm) worldRank() int { return c.g.members[c.rank] }

// Abort fails the whole world on behalf of this rank.
func (c *localComm) Abort(err error) { c.g.w.abort(c.worldRank(), err) }

// meet runs one collective: deposit p, wait for every part, call read with all parts (in
// group-rank order), wait until every rank has read, return.
func (c *localComm) meet(p part, read func(k int64, parts []part) error) error {
	g, w := c.g, c.g.w
	fail := func(err error) error {
		var de *Error
		if !errors.As(err, &de) {
			err = &Error{Rank: c.worldRank(), Op: p.op, Group: g.name, Failed: -1, Err: err}
		}
		w.abort(c.worldRank(), err)
		return err
	}
	if f, cause := w.abortState(); f >= 0 {
		return &Error{Rank: c.worldRank(), Op: p.op, Group: g.name, Failed: f, Err: cause}
	}
	g.mu.Lock()
	k := g.seq[c.rank]
	g.seq[c.rank]++
	r := g.rounds[k]
	if r == nil {
		n := len(g.members)
		r = &round{parts: make([]part, n), in: make([]bool, n), out: make([]bool, n), allIn: make(chan struct{}), allRead: make(chan struct{})}
		g.rounds[k] = r
	}
	r.parts[c.rank], r.in[c.rank] = p, true
	r.arrived++
	if r.arrived == len(g.members) {
		close(r.allIn)
	}
	g.mu.Unlock()

	deadline := time.NewTimer(w.timeout)
	defer deadline.Stop()
	if err := c.wait(r.allIn, deadline, p.op, func() []int { return c.missing(r.in) }); err != nil {
		return fail(err)
	}
	for q, o := range r.parts {
		if o.op != p.op {
			return fail(fmt.Errorf("rank %d called %s while rank %d called %s: the ranks' programs diverged", c.rank, p.op, q, o.op))
		}
	}
	readErr := read(k, r.parts)
	g.mu.Lock()
	r.out[c.rank] = true
	r.read++
	if r.read == len(g.members) {
		close(r.allRead)
		delete(g.rounds, k)
	}
	g.mu.Unlock()
	if readErr != nil {
		return fail(&Error{Rank: c.worldRank(), Op: p.op, Group: g.name, Failed: -1, Err: readErr})
	}
	if err := c.wait(r.allRead, deadline, p.op, func() []int { return c.missing(r.out) }); err != nil {
		return fail(err)
	}
	return nil
}

func (c *localComm) missing(flags []bool) []int {
	c.g.mu.Lock()
	defer c.g.mu.Unlock()
	var out []int
	for i, ok := range flags {
		if !ok {
			out = append(out, c.g.members[i])
		}
	}
	return out
}

func (c *localComm) wait(ch chan struct{}, deadline *time.Timer, op string, missing func() []int) error {
	w := c.g.w
	select {
	case <-ch:
		return nil
	case <-w.aborted:
		f, cause := w.abortState()
		return &Error{Rank: c.worldRank(), Op: op, Group: c.g.name, Failed: f, Err: cause}
	case <-deadline.C:
		return &Error{Rank: c.worldRank(), Op: op, Group: c.g.name, Timeout: w.timeout, Missing: missing(), Failed: -1}
	}
}

func (c *localComm) AllReduceF32(x []float32) error { return allReduce(c, "all_reduce", x, false) }

func (c *localComm) AllReduceF64(x []float64) error { return allReduce(c, "all_reduce_f64", x, false) }

func (c *localComm) AllReduceMaxF32(x []float32) error {
	return allReduce(c, "all_reduce_max", x, true)
}

// allReduce sums every rank's x in rank order (or takes the maximum) into a scratch buffer
// the rank keeps, and copies the result into x once every rank has read x (meet waits for
// that).
func allReduce[T float32 | float64](c *localComm, op string, x []T, takeMax bool) error {
	sum, _ := c.scratch.([]T)
	if cap(sum) < len(x) {
		sum = make([]T, len(x))
		c.scratch = sum
	}
	sum = sum[:len(x)]
	err := c.meet(part{op: op, vals: x}, func(_ int64, parts []part) error {
		xs := make([][]T, len(parts))
		for q, p := range parts {
			xs[q] = p.vals.([]T)
			if len(xs[q]) != len(x) {
				return fmt.Errorf("rank %d reduces %d values, rank %d %d", c.rank, len(x), q, len(xs[q]))
			}
		}
		for i := range sum {
			v := xs[0][i]
			for _, y := range xs[1:] {
				if takeMax {
					v = max(v, y[i])
				} else {
					v += y[i]
				}
			}
			sum[i] = v
		}
		return nil
	})
	if err == nil {
		copy(x, sum)
	}
	return err
}

func (c *localComm) AllGather(send, recv []byte) error {
	if len(recv) != c.Size()*len(send) {
		return &Error{Rank: c.worldRank(), Op: "all_gather", Group: c.g.name, Failed: -1,
			Err: fmt.Errorf("receive buffer of %d bytes for %d ranks × %d", len(recv), c.Size(), len(send))}
	}
	return c.meet(part{op: "all_gather", send: send}, func(_ int64, parts []part) error {
		for q, p := range parts {
			if len(p.send) != len(send) {
				return fmt.Errorf("rank %d gathers %d bytes, rank %d %d", c.rank, len(send), q, len(p.send))
			}
			copy(recv[q*len(send):], p.send)
		}
		return nil
	})
}

func (c *localComm) AllToAllV(send []byte, sendCount, sendOff []int, recv []byte, recvCount, recvOff []int) error {
	n := c.Size()
	if len(sendCount) != n || len(sendOff) != n || len(recvCount) != n || len(recvOff) != n {
		return &Error{Rank: c.worldRank(), Op: "all_to_all", Group: c.g.name, Failed: -1, Err: fmt.Errorf("counts and offsets must have one entry per rank (%d)", n)}
	}
	return c.meet(part{op: "all_to_all", send: send, sendCount: sendCount, sendOff: sendOff}, func(_ int64, parts []part) error {
		for q, p := range parts {
			cnt, off := p.sendCount[c.rank], p.sendOff[c.rank]
			if cnt != recvCount[q] {
				return fmt.Errorf("rank %d sends %d bytes to rank %d, which expects %d", q, cnt, c.rank, recvCount[q])
			}
			if cnt < 0 || off < 0 || off+cnt > len(p.send) || recvOff[q] < 0 || recvOff[q]+cnt > len(recv) {
				return fmt.Errorf("block %d→%d of %d bytes is out of its buffer", q, c.rank, cnt)
			}
			copy(recv[recvOff[q]:recvOff[q]+cnt], p.send[off:off+cnt])
		}
		return nil
	})
}

func (c *localComm) Barrier() error {
	return c.meet(part{op: "barrier"}, func(int64, []part) error { return nil })
}

func (c *localComm) Split(color, key int, name string) (Comm, error) {
	g := c.g
	var sub *group
	var subRank int
	err := c.meet(part{op: "split", color: color, key: key}, func(k int64, parts []part) error {
		type entry struct{ key, rank int }
		var mine []entry
		for q, p := range parts {
			if p.color == color {
				mine = append(mine, entry{p.key, q})
			}
		}
		slices.SortStableFunc(mine, func(a, b entry) int {
			if a.key != b.key {
				return a.key - b.key
			}
			return a.rank - b.rank
		})
		members := make([]int, len(mine))
		for i, e := range mine {
			members[i] = g.members[e.rank]
			if e.rank == c.rank {
				subRank = i
			}
		}
		// Round k is the same call on every rank of g, so (g, k, color) names the new group.
		id := fmt.Sprintf("%p/%d/%d", g, k, color)
		w := g.w
		w.mu.Lock()
		defer w.mu.Unlock()
		if sub = w.groups[id]; sub == nil {
			sub = w.newGroup(name, members)
			w.groups[id] = sub
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &localComm{g: sub, rank: subRank}, nil
}
