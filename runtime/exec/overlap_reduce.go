package exec

import "github.com/moec-dev/moec/compiler/step"

// The gradients' bucketed all-reduces (compiler/step's bucket.go) run beside the backward:
// on the shared-memory communicator, a data-parallel all-reduce of parameter gradients
// starts on its own goroutine, and the rank goes on with the program's next ops. The rank
// waits for it, the rule the CUDA host program follows for its communication stream,
// before the first later op that reads or writes one of its buffers (the gradients are
// persistent, so no other buffer shares their arena bytes), before any other collective
// or pipeline message (one collective in flight, so the ranks' collectives keep the
// program's order, as they do on one NCCL stream), and at the step's end. The sums are
// those of the same all-reduce run in place (AllReduce adds in member order), so losses
// and weights are bit-equal. The message-passing communicator (NewOver) keeps every
// collective on the rank's goroutine.

// reduceInFlight is a gradient all-reduce running on its own goroutine.
type reduceInFlight struct {
	op   *step.Op
	bufs map[int]bool
	done chan error
}

// runsBeside reports whether op runs on its own goroutine: a gradient all-reduce of the
// reduction phase over the shared-memory communicator.
func (e *Executor) runsBeside(op *step.Op) bool {
	if op.Kind != step.OpAllReduce || op.Phase != step.Reduce || e.msg != nil || e.comm == nil || op.ReduceMax {
		return false
	}
	for _, b := range op.In {
		if e.p.Buffers[b].Kind != step.KindGrad {
			return false
		}
	}
	return true
}

// startBeside starts op's all-reduce on its own goroutine (after the one in flight).
func (e *Executor) startBeside(op *step.Op) error {
	if err := e.awaitReduce(); err != nil {
		return err
	}
	r := &reduceInFlight{op: op, bufs: map[int]bool{}, done: make(chan error, 1)}
	for _, b := range op.In {
		r.bufs[b] = true
	}
	for _, b := range op.Out {
		r.bufs[b] = true
	}
	e.inFlight = r
	go func() { r.done <- e.communicate(op) }()
	return nil
}

// awaitBefore waits for the all-reduce in flight when op must follow it: op touches one
// of its buffers, or communicates.
func (e *Executor) awaitBefore(op *step.Op) error {
	r := e.inFlight
	if r == nil {
		return nil
	}
	if op.Kind.Collective() || op.Kind.PointToPoint() {
		return e.awaitReduce()
	}
	for _, bufs := range [][]int{op.In, op.Out} {
		for _, b := range bufs {
			if r.bufs[b] {
				return e.awaitReduce()
			}
		}
	}
	return nil
}

// awaitReduce waits for the all-reduce in flight, if any, and returns its error.
func (e *Executor) awaitReduce() error {
	r := e.inFlight
	if r == nil {
		return nil
	}
	e.inFlight = nil
	return <-r.done
}
