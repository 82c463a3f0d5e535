package exec

import (
	"fmt"
	"sync"
	"time"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// LocalDecoder runs inference programs (step.LowerInference) on every rank of a layout in
// this process, one goroutine per rank, as Local runs training steps: the decoding
// step's programs, and a prefill's for each prompt length asked for (lowered on first
// use), sharing the decoding programs' weights and KV caches. Each data-parallel replica
// (ep = dp) decodes its own Batch sequences; the whole batch is replicas·Batch sequences,
// replica r's being [r·Batch, (r+1)·Batch). A rank's failure (a bug, or a peer that
// does not answer) stops the world: the decoder is spent.
type LocalDecoder struct {
	m       *program.Model
	layout  step.Layout
	batch   int // per replica
	maxLen  int
	world   *World
	decode  []*Executor
	prefill map[int][]*Executor
	logits  []float32 // [replicas·batch, V]
}

// NewLocalDecoder lowers m's decoding step for batch sequences per replica of maxLen
// positions at l and prepares an executor per rank. A layout that does not divide m is
// a *step.LayoutError.
func NewLocalDecoder(m *program.Model, batch, maxLen int, l step.Layout, timeout time.Duration) (*LocalDecoder, error) {
	progs, err := step.LowerInference(m, step.Inference{Batch: batch, MaxLen: maxLen}, l)
	if err != nil {
		return nil, err
	}
	l = progs[0].Layout
	d, err := m.Dims()
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	ld := &LocalDecoder{m: m, layout: l, batch: batch, maxLen: maxLen, world: NewWorld(timeout),
		prefill: map[int][]*Executor{}, logits: make([]float32, l.DP*batch*d.V)}
	for r, p := range progs {
		ex, err := New(p, m, ld.world.Rank(r))
		if err != nil {
			return nil, err
		}
		ld.decode = append(ld.decode, ex)
	}
	return ld, nil
}

// Sequences is the whole batch: replicas × sequences per replica.
func (ld *LocalDecoder) Sequences() int { return ld.layout.DP * ld.batch }

// Layout is the layout the decoder runs at.
func (ld *LocalDecoder) Layout() step.Layout { return ld.layout }

// Load fills every rank's weights from whole tensors by parameter name (a checkpoint's).
func (ld *LocalDecoder) Load(ts []safetensors.Tensor) error {
	walk, err := params.Walk(ld.m)
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	byName := map[string]safetensors.Tensor{}
	for _, t := range ts {
		byName[t.Name] = t
	}
	byID := map[params.ID]safetensors.Tensor{}
	for _, p := range walk {
		t, ok := byName[p.Name]
		if !ok {
			return fmt.Errorf("exec: no tensor %s", p.Name)
		}
		if int64(len(t.Data)) != p.Elements() {
			return fmt.Errorf("exec: tensor %s has %d values, the model's %d", p.Name, len(t.Data), p.Elements())
		}
		byID[p.ID] = safetensors.Tensor{Shape: p.Shape, Data: t.Data}
	}
	for _, ex := range ld.decode {
		if err := ex.LoadParams(func(id params.ID) ([]float32, []int) { t := byID[id]; return t.Data, t.Shape }); err != nil {
			return err
		}
	}
	return nil
}

// Prefill fills the caches from the prompts (one per sequence of the whole batch, each
// of 1 to maxLen tokens; shorter ones padded at the end, see Executor.Prefill) and
// returns the logits of each prompt's last position ([sequences, vocab], reused by the
// next call). The prefill program is lowered for the longest prompt.
func (ld *LocalDecoder) Prefill(prompts [][]int32) ([]float32, error) {
	if len(prompts) != ld.Sequences() {
		return nil, fmt.Errorf("exec: %d prompts for %d sequences", len(prompts), ld.Sequences())
	}
	T := 0
	for i, p := range prompts {
		if len(p) < 1 || len(p) > ld.maxLen {
			return nil, fmt.Errorf("exec: prompt %d has %d tokens, the cache %d positions", i, len(p), ld.maxLen)
		}
		if err := ld.checkTokens(p); err != nil {
			return nil, err
		}
		T = max(T, len(p))
	}
	exs, ok := ld.prefill[T]
	if !ok {
		progs, err := step.LowerInference(ld.m, step.Inference{Batch: ld.batch, Prompt: T, MaxLen: ld.maxLen}, ld.layout)
		if err != nil {
			return nil, err
		}
		for r, p := range progs {
			ex, err := NewSharing(p, ld.m, ld.world.Rank(r), ld.decode[r])
			if err != nil {
				return nil, err
			}
			exs = append(exs, ex)
		}
		ld.prefill[T] = exs
	}
	return ld.all(exs, func(ex *Executor, first int) ([]float32, error) {
		return ex.Prefill(prompts[first : first+ld.batch])
	})
}

// Decode feeds tokens[i] to sequence i at position pos[i] and returns every sequence's
// next-token logits ([sequences, vocab], reused by the next call).
func (ld *LocalDecoder) Decode(tokens []int32, pos []int) ([]float32, error) {
	if len(tokens) != ld.Sequences() || len(pos) != ld.Sequences() {
		return nil, fmt.Errorf("exec: %d tokens and %d positions for %d sequences", len(tokens), len(pos), ld.Sequences())
	}
	for i, p := range pos {
		if p < 0 || p >= ld.maxLen {
			return nil, fmt.Errorf("exec: position %d of sequence %d outside the cache of %d positions", p, i, ld.maxLen)
		}
	}
	if err := ld.checkTokens(tokens); err != nil {
		return nil, err
	}
	return ld.all(ld.decode, func(ex *Executor, first int) ([]float32, error) {
		return ex.DecodeAt(tokens[first:first+ld.batch], pos[first:first+ld.batch])
	})
}

// checkTokens refuses token ids outside the vocabulary before any rank runs: a rank's
// error stops the world's collectives for good.
func (ld *LocalDecoder) checkTokens(tokens []int32) error {
	for i, t := range tokens {
		if t < 0 || int64(t) >= ld.m.Vocab {
			return fmt.Errorf("exec: token %d at %d outside the vocabulary of %d", t, i, ld.m.Vocab)
		}
	}
	return nil
}

// all runs f on every rank at once (first: the rank's replica's first sequence) and
// gathers the logits of tp rank 0 of each replica's last pipeline stage.
func (ld *LocalDecoder) all(exs []*Executor, f func(ex *Executor, first int) ([]float32, error)) ([]float32, error) {
	if len(exs) == 1 { // one rank: no goroutine
		out, err := f(exs[0], 0)
		if err != nil {
			return nil, err
		}
		copy(ld.logits, out)
		return ld.logits, nil
	}
	errs := make([]error, len(exs))
	var wg sync.WaitGroup
	for r, ex := range exs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					errs[r] = fmt.Errorf("rank %d panicked: %v", r, p)
					ld.world.Fail(errs[r])
				}
			}()
			c := ex.p.Coord
			out, err := f(ex, c.DP*ld.batch)
			if err != nil {
				errs[r] = fmt.Errorf("rank %d: %w", r, err)
				ld.world.Fail(errs[r])
				return
			}
			if c.TP == 0 && out != nil { // the last pipeline stage's
				copy(ld.logits[c.DP*len(out):], out)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return ld.logits, nil
}
