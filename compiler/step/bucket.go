package step

import (
	"fmt"
	"sort"

	"github.com/moec-dev/moec/compiler/params"
)

// Bucketed gradient reduction, as PyTorch's DistributedDataParallel (bucket_cap_mb, the
// buckets filled in the reverse order of the parameters' use) and Megatron-Core's
// DistributedDataParallel (overlap_grad_reduce: a bucket's collective starts as soon as
// every gradient in it is final) do it. Gradients accumulate over the micro-batches;
// during the last micro-batch's backward a gradient is final after its last write, and
// the backward writes the last layers' gradients first. The data-parallel all-reduce of
// a group (ZeRO 0 and 1) is cut into buckets of about Layout.GradBucket bytes, filled in
// the order the gradients become final, and each bucket's all-reduce is placed right
// after the op that finishes its last gradient: the backward of the earlier layers runs
// beside it (the CUDA backend's communication stream, codegen/cudastep). The sums are
// the same sums, element by element in rank order, so losses and weights are bit-equal
// to one all-reduce after the backward.
//
// What stays in the group's all-reduce after the backward, and why:
//   - the gradients another reduction sums first (sequence parallelism's norms and
//     router, the per-head q/k norm scales under tp, the tied embedding's two copies
//     and the token-embedding router table's copies under pp): summing over dp before
//     tp (or the embedding or router group) would add the same values in another order,
//     and the result would differ in its last bits;
//   - a gradient the last backward does not write (it was final before it);
//   - everything under the unified cache, whose gradients reach the host copies through
//     write-backs that the reduction follows (cache.go);
//   - ZeRO 2's reduce-scatter, which packs the group's whole flat vector into this rank's
//     gradient shard: a bucket's scatter would need the shards laid out by bucket, not
//     by the group's flat order, so it keeps one reduce-scatter after the backward.
//
// Verify refuses a program whose collective is followed by a compute op writing one of
// its buffers, which catches a bucket emitted before its last gradient write.

// DefaultGradBucket is the bucket size when Layout.GradBucket is 0: PyTorch DDP's
// bucket_cap_mb default (25 MiB). A group smaller than MinGradBuckets of them is cut
// into MinGradBuckets buckets, so that a small model's last layers overlap too.
const DefaultGradBucket int64 = 25 << 20

// MinGradBuckets is the number of buckets a group smaller than its bucket size is cut
// into (fewer where it has fewer gradients).
const MinGradBuckets = 4

// lateReduced lists the parameters whose gradients another reduction sums after the
// backward (see above): their data-parallel reduction stays after it. (reduceInBuckets
// would keep them there anyway, since those reductions write the gradients after the
// backward; the list says why, and does not depend on the order reduceAndUpdate emits
// them in.)
func (lw *lowerer) lateReduced() map[params.ID]bool {
	late := map[params.ID]bool{}
	for id := range lw.seqPartialParams() {
		late[id] = true // sequence.go: summed over tp first
	}
	if lw.l.TP > 1 && lw.m.Attention.QKNorm && !lw.qkNormSplit() {
		for _, id := range lw.order {
			if id.Role == params.RoleQNorm || id.Role == params.RoleKNorm {
				late[id] = true // attention_qk.go: the heads' parts summed over tp first
			}
		}
	}
	if lw.m.TieEmbeddings && lw.l.PP > 1 && (lw.c.PP == 0 || lw.c.PP == lw.l.PP-1) {
		late[tiedEmbedding()] = true // tied.go: the two stages' copies summed first
	}
	if lw.routerTableShared() {
		late[routerTable()] = true // router_table.go: the routing stages' copies summed first
	}
	return late
}

// reduceInBuckets places the all-reduces of g's gradients gs (ZeRO 0 or 1, more than one
// rank) that can run during the last backward, in buckets, and returns the gradients
// left for the all-reduce after the backward (all of gs when bucketing is off).
func (lw *lowerer) reduceInBuckets(g *group, gs []int, late map[params.ID]bool) []int {
	if lw.l.GradBucket < 0 || lw.cache != nil {
		return gs
	}
	// The last write of each gradient in the last micro-batch's backward.
	lateBuf := map[int]bool{}
	for id := range late {
		if b, ok := lw.grad[id]; ok {
			lateBuf[b] = true
		}
	}
	lastWrite := map[int]int{}
	for _, b := range gs {
		if !lateBuf[b] {
			lastWrite[b] = -1
		}
	}
	for i := lw.lastBackward; i < len(lw.p.Ops); i++ {
		op := &lw.p.Ops[i]
		for _, b := range op.Out {
			if _, ok := lastWrite[b]; ok {
				if op.Phase != Backward {
					delete(lastWrite, b) // written after the backward: stays there
					continue
				}
				lastWrite[b] = i
			}
		}
	}
	var early, rest []int
	var total int64
	for _, b := range gs {
		if at, ok := lastWrite[b]; ok && at >= 0 {
			early = append(early, b)
			total += lw.p.Buffers[b].Bytes()
		} else {
			rest = append(rest, b)
		}
	}
	if len(early) == 0 {
		return gs
	}
	sort.SliceStable(early, func(i, j int) bool { return lastWrite[early[i]] < lastWrite[early[j]] })
	capBytes := lw.l.GradBucket
	if capBytes == 0 {
		capBytes = min(DefaultGradBucket, ceilDiv(total, MinGradBuckets))
	}
	// Fill the buckets in the order the gradients become final; a bucket closes once it
	// holds capBytes (DDP's rule: the gradient that crosses the cap stays in it).
	var buckets [][]int
	var cur []int
	var size int64
	for _, b := range early {
		cur = append(cur, b)
		size += lw.p.Buffers[b].Bytes()
		if size >= capBytes {
			buckets, cur, size = append(buckets, cur), nil, 0
		}
	}
	if len(cur) > 0 {
		buckets = append(buckets, cur)
	}
	after := map[int][]Op{} // op index → the bucket all-reduces that follow it
	for k, bs := range buckets {
		var bytes int64
		for _, b := range bs {
			bytes += lw.p.Buffers[b].Bytes()
		}
		at := lastWrite[bs[len(bs)-1]]
		after[at] = append(after[at], Op{Kind: OpAllReduce, Phase: Reduce, Layer: lw.p.Ops[at].Layer, Micro: -1, In: bs, Out: bs, Group: g.axis,
			Attr:  fmt.Sprintf("%s gradients, bucket %d of %d, sum (the loss is a mean over replicas): overlaps the backward", g.name, k+1, len(buckets)),
			Bytes: 2 * bytes * int64(g.size-1) / int64(g.size)})
	}
	ops := make([]Op, 0, len(lw.p.Ops)+len(buckets))
	for i, op := range lw.p.Ops {
		ops = append(ops, op)
		ops = append(ops, after[i]...)
	}
	lw.p.Ops = ops
	return rest
}
