package cudastep

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// ZeRO 3 over several ranks: each rank keeps one flat shard of its group's weights (the
// update writes it, zeroPiece), and compiler/step gathers the whole tensors a layer needs
// right before its forward and again before its backward (gatherParams), into buffers the
// memory plan frees after their use. The gradients are reduce-scattered into the rank's
// gradient shard as under ZeRO 2 (reduceScatter). Under the unified cache the shards live
// in the host tier and the cache's fetch is such an all_gather (step.Op.CacheFill): the
// rank's own parts are copied from the host shard into the device copies on the
// communication stream and sent from there (gatherShards); the reduce_scatter and the
// update run over the host tier (collective_cache.go, cache.go).

// gatherShards lowers ZeRO 3's all_gather of the sharded weights: each gathered tensor's
// part in this rank's shard copied into place on the compute stream (before the calls),
// and every other part received from the rank whose shard holds it while this rank sends
// its parts to every other rank (grouped ncclSend and ncclRecv; every rank's program lists
// the tensors in the same order), as runtime/exec's AllGather assembles them from the
// shards at the tensors' flat offsets.
func (lw *opLowerer) gatherShards(op *step.Op, g step.Group, ranks int, c *Collective) error {
	p := lw.p
	if len(op.In) != 1 {
		return fmt.Errorf("ZeRO 3's all_gather reads %d buffers, want the group's one shard", len(op.In))
	}
	shard := p.Buffers[op.In[0]]
	S := g.Shard
	if shard.Elements() != S {
		return fmt.Errorf("ZeRO 3's all_gather from %s of %d values, the shard holds %d", shard.Name, shard.Elements(), S)
	}
	if g.Size != ranks {
		return fmt.Errorf("ZeRO 3's all_gather over %d ranks, group %s spans %d", ranks, g.Name, g.Size)
	}
	for _, b := range op.Out {
		buf := p.Buffers[b]
		f, n := buf.Flat, buf.Elements()
		if f < 0 || f+n > S*int64(ranks) {
			return fmt.Errorf("gathered %s has no place in group %s's flat vector", buf.Name, g.Name)
		}
		for owner := 0; owner < ranks; owner++ {
			lo, hi := max(f, int64(owner)*S), min(f+n, int64(owner+1)*S)
			if lo >= hi {
				continue
			}
			at := buf.Offset + 4*(lo-f)
			if owner == g.Index && shard.Tier == step.Host {
				// The unified cache's fetch (CacheFill): the rank's part copied from its
				// host shard into the device copy on the communication stream, then sent
				// from there; NCCL reads device memory only.
				c.HostIn = append(c.HostIn, HostCopy{Device: at, Host: shard.Offset + 4*(lo-int64(owner)*S), Bytes: 4 * (hi - lo),
					What: fmt.Sprintf("%s[%d:%d]", buf.Name, lo-f, hi-f)})
				for peer := 0; peer < ranks; peer++ {
					if peer != owner {
						c.Calls = append(c.Calls, NCCLCall{Func: "ncclSend", Send: at, Recv: -1, Count: hi - lo, Peer: peer,
							Description: fmt.Sprintf("%s[%d:%d] to rank %d", buf.Name, lo-f, hi-f, peer)})
					}
				}
				continue
			}
			if owner == g.Index { // the rank's place in the group (not its global rank: the expert groups of dp 4 × ep 2)
				dst, src := lw.buf(b), lw.buf(op.In[0])
				dst.Offset, src.Offset = lo-f, lo-int64(owner)*S
				c.Before = append(c.Before, denseElementwise("dense_copy", hi-lo, dst, src, IntArg(I64, hi-lo)))
				for peer := 0; peer < ranks; peer++ {
					if peer != owner {
						c.Calls = append(c.Calls, NCCLCall{Func: "ncclSend", Send: shard.Offset + 4*(lo-int64(owner)*S), Recv: -1, Count: hi - lo, Peer: peer,
							Description: fmt.Sprintf("%s[%d:%d] to rank %d", buf.Name, lo-f, hi-f, peer)})
					}
				}
				continue
			}
			c.Calls = append(c.Calls, NCCLCall{Func: "ncclRecv", Send: -1, Recv: at, Count: hi - lo, Peer: owner,
				Description: fmt.Sprintf("%s[%d:%d] from rank %d", buf.Name, lo-f, hi-f, owner)})
		}
	}
	return nil
}
