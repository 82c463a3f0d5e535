package dist

import (
	"fmt"
	"sync"
	"time"
)

// mailKey names one ordered stream of messages: from one rank of a group to another, with
// one tag.
type mailKey struct {
	g        *group
	from, to int // group ranks
	tag      int
}

// mailbox holds the messages sent on one stream and not yet received, oldest first.
type mailbox struct {
	mu    sync.Mutex
	queue [][]float32
	ready chan struct{} // holds a token while the queue may be non-empty
}

func (w *world) mailbox(k mailKey) *mailbox {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.mail[k]
	if b == nil {
		b = &mailbox{ready: make(chan struct{}, 1)}
		w.mail[k] = b
	}
	return b
}

// pop takes the oldest message, if any, and leaves a token for the next one.
func (b *mailbox) pop() ([]float32, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		return nil, false
	}
	msg := b.queue[0]
	b.queue[0] = nil
	b.queue = b.queue[1:]
	if len(b.queue) > 0 {
		b.signal()
	}
	return msg, true
}

func (b *mailbox) signal() {
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

// peerError is a send or receive refused before it reaches a peer.
func (c *localComm) peerError(op string, peer int) error {
	if peer < 0 || peer >= c.Size() {
		return &Error{Rank: c.worldRank(), Op: op, Group: c.g.name, Failed: -1,
			Err: fmt.Errorf("rank %d is not in the group of %d", peer, c.Size())}
	}
	if f, cause := c.g.w.abortState(); f >= 0 {
		return &Error{Rank: c.worldRank(), Op: op, Group: c.g.name, Failed: f, Err: cause}
	}
	return nil
}

// SendF32 queues a copy of x for rank to; it never waits for the receiver.
func (c *localComm) SendF32(to, tag int, x []float32) error {
	if err := c.peerError("send", to); err != nil {
		return err
	}
	b := c.g.w.mailbox(mailKey{g: c.g, from: c.rank, to: to, tag: tag})
	b.mu.Lock()
	b.queue = append(b.queue, append([]float32(nil), x...))
	b.signal()
	b.mu.Unlock()
	return nil
}

// RecvF32 waits for the oldest message from rank from with tag, up to the world's timeout;
// a timeout, or a message of another length than x, aborts the world as a failed
// collective does.
func (c *localComm) RecvF32(from, tag int, x []float32) error {
	if err := c.peerError("recv", from); err != nil {
		return err
	}
	w := c.g.w
	fail := func(err *Error) error {
		w.abort(c.worldRank(), err)
		return err
	}
	b := w.mailbox(mailKey{g: c.g, from: from, to: c.rank, tag: tag})
	deadline := time.NewTimer(w.timeout)
	defer deadline.Stop()
	for {
		if msg, ok := b.pop(); ok {
			if len(msg) != len(x) {
				return fail(&Error{Rank: c.worldRank(), Op: "recv", Group: c.g.name, Failed: -1,
					Err: fmt.Errorf("rank %d sent %d floats with tag %d, rank %d expects %d: the ranks' programs diverged", from, len(msg), tag, c.rank, len(x))})
			}
			copy(x, msg)
			return nil
		}
		select {
		case <-b.ready:
		case <-w.aborted:
			f, cause := w.abortState()
			return &Error{Rank: c.worldRank(), Op: "recv", Group: c.g.name, Failed: f, Err: cause}
		case <-deadline.C:
			return fail(&Error{Rank: c.worldRank(), Op: "recv", Group: c.g.name, Timeout: w.timeout,
				Missing: []int{c.g.members[from]}, Failed: -1})
		}
	}
}
