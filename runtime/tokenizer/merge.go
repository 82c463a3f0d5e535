package tokenizer

import "container/heap"

// mergeAll applies the merges to a word's symbols as `tokenizers`' Word::merge_all does:
// the lowest-ranked pair first, the leftmost among equals, through a priority queue over a
// linked list of symbols, so that a long word (a SentencePiece model's whole text, which
// no pre-tokenizer splits) costs O(n log n), not O(n²).
func (b *bpe) mergeAll(syms []int) []int {
	n := len(syms)
	if n < 2 {
		return syms
	}
	prev := make([]int, n)
	next := make([]int, n)
	alive := make([]bool, n)
	for i := range syms {
		prev[i], next[i], alive[i] = i-1, i+1, true
	}
	next[n-1] = -1
	q := &mergeQueue{}
	push := func(pos, right int) {
		if m, ok := b.merges[[2]int{syms[pos], syms[right]}]; ok {
			heap.Push(q, pending{rank: m.rank, pos: pos, id: m.id})
		}
	}
	for i := 0; i+1 < n; i++ {
		push(i, i+1)
	}
	for q.Len() > 0 {
		top := heap.Pop(q).(pending)
		if !alive[top.pos] || next[top.pos] < 0 {
			continue
		}
		right := next[top.pos]
		// The pair may have changed since it was queued: it must still merge into top.id.
		if m, ok := b.merges[[2]int{syms[top.pos], syms[right]}]; !ok || m.id != top.id {
			continue
		}
		syms[top.pos] = top.id
		alive[right] = false
		next[top.pos] = next[right]
		if next[right] >= 0 {
			prev[next[right]] = top.pos
		}
		if p := prev[top.pos]; p >= 0 {
			push(p, top.pos)
		}
		if nx := next[top.pos]; nx >= 0 {
			push(top.pos, nx)
		}
	}
	out := syms[:0]
	for i := 0; i >= 0; i = next[i] {
		out = append(out, syms[i])
	}
	return out
}

// pending is a queued merge of the symbol at pos with the one after it.
type pending struct{ rank, pos, id int }

type mergeQueue []pending

func (q mergeQueue) Len() int { return len(q) }
func (q mergeQueue) Less(i, j int) bool {
	if q[i].rank != q[j].rank {
		return q[i].rank < q[j].rank
	}
	return q[i].pos < q[j].pos
}
func (q mergeQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *mergeQueue) Push(x any)   { *q = append(*q, x.(pending)) }
func (q *mergeQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
