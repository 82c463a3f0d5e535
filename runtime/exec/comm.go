package exec

import (
	"fmt"
	"sync"
	"time"
)

// Comm is how a rank meets the other ranks of its groups. The in-process implementation
// (World) shares memory: Share hands every member the others' buffers, the members read
// what they need from them, and Barrier keeps a member from reusing its buffers while a
// peer still reads them. Send and Recv carry pipeline messages.
type Comm interface {
	// Share deposits this rank's value for a collective over members (ranks, in group
	// order) and returns every member's, in that order, once all have deposited.
	Share(members []int, mine any) ([]any, error)
	// Barrier returns when every member has called it.
	Barrier(members []int) error
	// Send queues a copy of data for peer; Recv fills into with the next message from peer.
	Send(peer int, data []float32) error
	Recv(peer int, into []float32) error
}

// World connects the in-process ranks of one layout.
type World struct {
	mu      sync.Mutex
	groups  map[string]*rendezvous
	mail    map[[2]int]chan []float32
	timeout time.Duration
	// failed, once set, makes every wait return it: a rank that fails stops the others;
	// down is closed then, for the pipeline's sends and receives.
	failed error
	down   chan struct{}
}

// rendezvous is one group's meeting point, reused call after call.
type rendezvous struct {
	cond    *sync.Cond
	gen     int
	arrived int
	vals    []any
	out     []any
}

// NewWorld returns a world for ranks that give up waiting for a peer after timeout.
func NewWorld(timeout time.Duration) *World {
	return &World{groups: map[string]*rendezvous{}, mail: map[[2]int]chan []float32{}, timeout: timeout, down: make(chan struct{})}
}

// Fail stops every rank waiting in a collective of the world with err.
func (w *World) Fail(err error) {
	w.mu.Lock()
	if w.failed == nil {
		w.failed = err
		close(w.down)
	}
	for _, g := range w.groups {
		g.cond.Broadcast()
	}
	w.mu.Unlock()
}

// Rank is the Comm of rank r.
func (w *World) Rank(r int) Comm { return &rankComm{w: w, rank: r} }

type rankComm struct {
	w    *World
	rank int
}

func (c *rankComm) Share(members []int, mine any) ([]any, error) {
	return c.w.meet(members, c.rank, mine)
}

func (c *rankComm) Barrier(members []int) error {
	_, err := c.w.meet(members, c.rank, nil)
	return err
}

// meet waits for every member and returns their deposits.
func (w *World) meet(members []int, rank int, mine any) ([]any, error) {
	key := fmt.Sprint(members)
	pos := -1
	for i, m := range members {
		if m == rank {
			pos = i
		}
	}
	if pos < 0 {
		return nil, fmt.Errorf("rank %d is not in group %s", rank, key)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	g, ok := w.groups[key]
	if !ok {
		g = &rendezvous{cond: sync.NewCond(&w.mu), vals: make([]any, len(members))}
		w.groups[key] = g
	}
	if w.failed != nil {
		return nil, w.failed
	}
	gen := g.gen
	g.vals[pos] = mine
	g.arrived++
	if g.arrived == len(members) {
		g.out = append([]any(nil), g.vals...)
		g.arrived = 0
		g.gen++
		g.cond.Broadcast()
		return g.out, nil
	}
	deadline := time.AfterFunc(w.timeout, func() {
		w.Fail(fmt.Errorf("rank %d waited %v for the other ranks of group %s", rank, w.timeout, key))
	})
	defer deadline.Stop()
	for g.gen == gen && w.failed == nil {
		g.cond.Wait()
	}
	if g.gen == gen {
		return nil, w.failed
	}
	return g.out, nil
}

func (w *World) box(from, to int) chan []float32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := [2]int{from, to}
	ch, ok := w.mail[k]
	if !ok {
		ch = make(chan []float32, 64)
		w.mail[k] = ch
	}
	return ch
}

func (c *rankComm) Send(peer int, data []float32) error {
	select {
	case c.w.box(c.rank, peer) <- append([]float32(nil), data...):
		return nil
	case <-c.w.down:
		return c.w.failure()
	case <-time.After(c.w.timeout):
		return fmt.Errorf("rank %d: send to rank %d timed out after %v", c.rank, peer, c.w.timeout)
	}
}

// failure is the error that stopped the world.
func (w *World) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

func (c *rankComm) Recv(peer int, into []float32) error {
	select {
	case msg := <-c.w.box(peer, c.rank):
		if len(msg) != len(into) {
			return fmt.Errorf("rank %d: a message of %d values from rank %d, want %d", c.rank, len(msg), peer, len(into))
		}
		copy(into, msg)
		return nil
	case <-c.w.down:
		return c.w.failure()
	case <-time.After(c.w.timeout):
		return fmt.Errorf("rank %d: nothing from rank %d after %v", c.rank, peer, c.w.timeout)
	}
}
