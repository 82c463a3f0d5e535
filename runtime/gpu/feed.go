package gpu

import (
	"context"
	"fmt"

	"github.com/moec-dev/moec/codegen/cudastep"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// Feeder runs continuous batching on the GPU (or the emulation): m's feeding programs
// (step.LowerFeed) over the KV caches of Seqs sequences of MaxLen positions, lowered
// together into one generated host program over one device arena (cudastep.LowerServing).
// A call feeds each sequence a run of tokens at its own position, a prompt's chunk
// (appending to the cache) or one decoding token, or nothing, all as one batch of rows:
// what runtime/nn's Decoder.Feed computes. The programs differ only in their rows (the
// sequences, then four times as many, up to the most one call takes); a call runs the
// smallest that holds its rows, the rest of them padding. Sampling stays with the caller.
type Feeder struct {
	*Decoder
	rows               []int // each feeding program's rows, fewest first
	tok, at, seq, last []int32
}

// feedRows is the ladder of the feeding programs' rows: seqs (every sequence decoding),
// then ×4 while below most, then most.
func feedRows(seqs, most int) []int {
	rows := []int{seqs}
	for r := seqs * 4; r < most; r *= 4 {
		rows = append(rows, r)
	}
	if most > seqs {
		rows = append(rows, most)
	}
	return rows
}

// OpenFeeder lowers m's feeding programs for seqs sequences of maxLen positions, taking up
// to most rows a call (at least seqs), writes and compiles their host program and opens it
// on the device (or the emulation). The weights are zero until LoadParams.
func OpenFeeder(ctx context.Context, m *program.Model, seqs, most, maxLen int, o Options) (*Feeder, error) {
	if seqs < 1 || maxLen < 2 {
		return nil, fmt.Errorf("gpu: a feeder of %d sequences of %d positions: want at least 1 of 2", seqs, maxLen)
	}
	most = max(most, seqs)
	rows := feedRows(seqs, most)
	progs := make([]*step.Program, len(rows))
	for i, r := range rows {
		p, err := step.LowerFeed(m, seqs, r, maxLen)
		if err != nil {
			return nil, err
		}
		progs[i] = p
	}
	low, err := cudastep.LowerServing(progs, m, cudastep.Options{BF16: o.BF16})
	if err != nil {
		return nil, err
	}
	d, err := m.Dims()
	if err != nil {
		return nil, fmt.Errorf("gpu: %w", err)
	}
	files, err := cudastep.DecodingSources(low)
	if err != nil {
		return nil, err
	}
	lib, fns, handle, err := openHost(ctx, files, low.KernelFiles(), o, fmt.Sprintf("the serving of %s", m.Name))
	if err != nil {
		return nil, err
	}
	dec := &Decoder{m: m, low: low, lib: lib, fns: fns, handle: handle, batch: seqs, maxLen: maxLen, vocab: d.V, maxPos: d.MaxPos,
		logits: make([]float32, seqs*d.V), logitsN: seqs * d.V}
	return &Feeder{Decoder: dec, rows: rows, tok: make([]int32, most), at: make([]int32, most), seq: make([]int32, most),
		last: make([]int32, seqs)}, nil
}

// Rows is the most rows one Feed takes.
func (f *Feeder) Rows() int { return f.rows[len(f.rows)-1] }

// Feed writes runs[i] into sequence i's caches at positions pos[i], pos[i]+1, … (an empty
// run sits the call out) and returns [sequences, padded vocab] logits whose row i follows
// sequence i's last token (zeros for a sequence that sat out), reused by the next call.
// The runs hold at most Rows tokens together.
func (f *Feeder) Feed(runs [][]int32, pos []int) ([]float32, error) {
	if f.lib == nil {
		return nil, fmt.Errorf("gpu: the feeder is closed")
	}
	if len(runs) != f.batch || len(pos) != f.batch {
		return nil, fmt.Errorf("gpu: %d runs and %d positions for %d sequences", len(runs), len(pos), f.batch)
	}
	n := 0
	for _, r := range runs {
		n += len(r)
	}
	which := len(f.rows) - 1
	for i, r := range f.rows {
		if r >= n {
			which = i
			break
		}
	}
	R := f.rows[which]
	if err := step.PackFeed(runs, pos, f.maxLen, f.maxPos, f.vocab, f.tok[:R], f.at[:R], f.seq[:R], f.last); err != nil {
		return nil, fmt.Errorf("gpu: %w", err)
	}
	msg := make([]byte, errBytes)
	if err := f.fns["moec_decode_feed"].Call(0, 0, f.handle, int64(which), f.tok[:R], f.at[:R], f.seq[:R], f.last, f.logits, msg, int64(errBytes)); err != nil {
		return nil, err
	}
	if e := cString(msg); e != "" {
		return nil, fmt.Errorf("gpu: a feed of %d rows: %s", R, e)
	}
	return f.logits, nil
}
