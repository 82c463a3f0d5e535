package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
)

// The feeding program's own ops (LowerFeed): a decoding step's, over rows that name
// their sequence.
const (
	OpKVAppendRows OpKind = "kv_append_rows" // feed: each row's keys and values into its sequence's cache at its position
	OpAttnRows     OpKind = "attn_rows"      // feed: each row's query against its sequence's cache up to its position
	OpPickRows     OpKind = "pick_rows"      // feed: each sequence's last row (none: zeros)
)

// The feeding program's inputs beside `tokens` and `pos` (each row's token and position).
const (
	FeedSeq  = "seq"  // [rows] each row's sequence (its caches' row); −1: a padding row
	FeedLast = "last" // [sequences] each sequence's last row, whose logits it gets; −1: none
)

// feedState is a feeding program's inputs: seq and last are buffers, seqs the sequences
// the caches hold.
type feedState struct {
	seqs, seq, last int
}

// LowerFeed builds the feeding program on one rank: rows tokens (input `tokens`), each of
// a sequence (input `seq`, −1 for a padding row that writes and reads nothing) at a
// position (input `pos`), go through the model as one batch, each row's keys and values
// joining its sequence's caches (seqs sequences of maxLen positions: the names and
// shapes of LowerDecode's for seqs sequences) before any row attends, and every row
// attending to its sequence's cache up to its own position. The program ends with the
// logits of one row per sequence (input `last`, −1: zeros), [seqs, vocab]. A prompt's
// chunk at any position (chunked prefill, appending to the cache) and the decoding tokens
// of other sequences share one step, as runtime/nn's Decoder.Feed reads them; a decoding
// step is the feed of one row per sequence. No backward; dropless routing. Latent
// attention feeds as its decoding step runs (feed_mla.go).
func LowerFeed(m *program.Model, seqs, rows, maxLen int) (*Program, error) {
	if seqs < 1 || rows < 1 || maxLen < 1 {
		return nil, fmt.Errorf("step: a feed of %d rows over %d sequences of %d positions", rows, seqs, maxLen)
	}
	dm := *m
	dm.Attention.ShareWeights = 1 // inference always recomputes
	if m.MoE != nil {
		moe := *m.MoE
		moe.CapacityFactor = 0 // and routes dropless
		dm.MoE = &moe
	}
	b := Batch{MicroBatch: rows, SeqLen: 1, Micro: 1}
	l, d, walk, err := prepare(&dm, b, Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	if err != nil {
		return nil, err
	}
	lw := newLowerer(&dm, d, b, l, 0, walk)
	if d.E > 0 {
		lw.capacity = b.Tokens() * d.K // dropless
		lw.packed = packs(0, l.EP)
	}
	lw.declareInference()
	lw.micro, lw.phase = 0, Forward
	lw.feed = &feedState{seqs: seqs, seq: lw.buf(FeedSeq, KindInput, rows), last: lw.buf(FeedLast, KindInput, seqs)}
	lw.p.Buffers[lw.feed.seq].Int = true
	lw.p.Buffers[lw.feed.last].Int = true
	lw.inferStep(maxLen, false)
	lw.p.Memory = planInference(lw.p)
	return lw.p, nil
}

// cacheSeqs is the sequences the KV caches hold: the batch's, or a feeding program's.
func (lw *lowerer) cacheSeqs() int {
	if lw.feed != nil {
		return lw.feed.seqs
	}
	return lw.b.MicroBatch
}

// rowsOp is op of a decoding step as the feeding program runs it: the cache's append and
// the attention read each row's sequence (input `seq`, after the positions).
func (lw *lowerer) rowsOp(op Op) Op {
	if lw.feed == nil {
		return op
	}
	if mla, ok := lw.mlaRowsOp(op); ok { // feed_mla.go
		return mla
	}
	switch op.Kind {
	case OpKVAppend:
		op.Kind, op.In = OpKVAppendRows, append(op.In, lw.feed.seq)
	case OpAttnDecode:
		op.Kind = OpAttnRows
		op.In = append(append(append([]int{}, op.In[:4]...), lw.feed.seq), op.In[4:]...)
	}
	return op
}

// pickRows emits a feeding program's last row of each sequence (x itself elsewhere); the
// head then reads one row per sequence.
func (lw *lowerer) pickRows(x int) int {
	if lw.feed == nil {
		return x
	}
	last := lw.act("last", KindActivation, lw.feed.seqs, lw.d.D)
	lw.fwd(Op{Kind: OpPickRows, Layer: -1, In: []int{x, lw.feed.last}, Out: []int{last}, Attr: "each sequence's last row"})
	lw.b = Batch{MicroBatch: lw.feed.seqs, SeqLen: 1, Micro: 1}
	return last
}

// AttnInputs are the inputs of an attn_decode or attn_rows op by role: the queries, the
// caches, the positions, the rows' sequences (attn_rows; else −1), the talking-heads
// mixers (−1 without) and the sink logits (−1 without).
type AttnInputs struct {
	Q, KCache, VCache, Pos, Seq, Pre, Post, Sinks int
}

// AttnInputsOf reads op's inputs by role.
func AttnInputsOf(op *Op) AttnInputs {
	in := op.In
	a := AttnInputs{Q: in[0], KCache: in[1], VCache: in[2], Pos: in[3], Seq: -1, Pre: -1, Post: -1, Sinks: -1}
	rest := in[4:]
	if op.Kind == OpAttnRows {
		a.Seq, rest = in[4], in[5:]
	}
	if len(rest) >= 2 {
		a.Pre, a.Post = rest[0], rest[1]
	}
	if len(rest)%2 == 1 {
		a.Sinks = rest[len(rest)-1]
	}
	return a
}

// PackFeed lays runs (sequence i's tokens from position pos[i] on) out as a feeding
// program's inputs: rows one run after another, then padding (token 0 at position 0 of
// no sequence); last[i] is run i's last row (−1 for an empty run). It refuses a run
// outside the caches' maxLen positions (or the maxPos learned ones, when > 0), a token
// outside the vocab, and more rows than tokens holds.
func PackFeed(runs [][]int32, pos []int, maxLen, maxPos, vocab int, tokens, at, seq, last []int32) error {
	r := 0
	for i, run := range runs {
		last[i] = -1
		if len(run) == 0 {
			continue
		}
		limit := maxLen
		if maxPos > 0 {
			limit = min(limit, maxPos)
		}
		if p := pos[i]; p < 0 || p+len(run) > limit {
			return fmt.Errorf("sequence %d's %d tokens at position %d pass the %d positions it may hold", i, len(run), p, limit)
		}
		p := pos[i]
		if r+len(run) > len(tokens) {
			return fmt.Errorf("%d tokens and more for a feed of %d rows", r+len(run), len(tokens))
		}
		for j, t := range run {
			if t < 0 || int(t) >= vocab {
				return fmt.Errorf("token %d of sequence %d is outside the vocabulary of %d", t, i, vocab)
			}
			tokens[r], at[r], seq[r] = t, int32(p+j), int32(i)
			r++
		}
		last[i] = int32(r - 1)
	}
	for ; r < len(tokens); r++ {
		tokens[r], at[r], seq[r] = 0, 0, -1
	}
	return nil
}
