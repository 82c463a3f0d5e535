package gpu

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/step"
)

// loadShards uploads, under ZeRO 3, this rank's flat shard of each sharded group's
// weights from get, as runtime/exec's LoadParams assembles it: every tensor of the group
// (named, with its offset in the group's flat vector, by its gradient or gathered
// buffers) contributes its elements inside the shard.
func (s *Session) loadShards(get func(id params.ID) []float32) error {
	p := s.p
	for gi, g := range p.Groups {
		if g.ZeRO != 3 {
			continue
		}
		shard := -1
		prefix := "params[" + g.Name + "]"
		for i, b := range p.Buffers {
			if b.Kind == step.KindParam && b.Param == nil && len(b.Name) >= len(prefix) && b.Name[:len(prefix)] == prefix {
				shard = i
			}
		}
		if shard < 0 {
			return fmt.Errorf("gpu: group %s is under ZeRO 3 but the program has no shard of its weights", g.Name)
		}
		vals := make([]float32, p.Buffers[shard].Elements())
		if err := flatPart(p, gi, int64(g.Index)*g.Shard, vals, get, true); err != nil {
			return err
		}
		// Under the unified cache the shard lives in the host tier (the cache's fetch gathers
		// from it).
		if err := s.UploadBuffer(p.Buffers[shard], vals); err != nil {
			return fmt.Errorf("gpu: uploading %s: %w", p.Buffers[shard].Name, err)
		}
	}
	return nil
}

// flatPart fills vals with the elements [lo, lo+len(vals)) of group gi's flat vector, as
// runtime/exec's LoadParams assembles it from get: every tensor of the group (named, with
// its offset in the flat vector, by its gradient or gathered buffers) contributes its
// elements inside the part. wholeOnly refuses a tensor-parallel slice (ZeRO 3's shards
// hold whole tensors only).
func flatPart(p *step.Program, gi int, lo int64, vals []float32, get func(id params.ID) []float32, wholeOnly bool) error {
	hi := lo + int64(len(vals))
	seen := map[params.ID]bool{}
	for _, b := range p.Buffers {
		if b.Param == nil || b.Flat < 0 || (b.Kind != step.KindActGrad && b.Kind != step.KindGrad && b.Kind != step.KindGathered) {
			continue
		}
		id := *b.Param
		id.Shard = params.Shard{}
		if seen[id] || groupIndex(p, id) != gi {
			continue
		}
		seen[id] = true
		if wholeOnly && !b.Param.Shard.Whole() {
			return fmt.Errorf("gpu: ZeRO 3 shard of %s: a tensor-parallel slice", id)
		}
		n := b.Elements()
		a, z := max(lo, b.Flat), min(hi, b.Flat+n)
		if a >= z {
			continue
		}
		w := get(id)
		if int64(len(w)) != n {
			return fmt.Errorf("gpu: parameter %s: %d values, the model's tensor holds %d", id, len(w), n)
		}
		copy(vals[a-lo:z-lo], w[a-b.Flat:z-b.Flat])
	}
	return nil
}

// groupIndex is the index in p.Groups of the group parameter id belongs to (the routed
// experts' own group when there is one).
func groupIndex(p *step.Program, id params.ID) int {
	if id.Role.Routed() && len(p.Groups) > 1 {
		return 1
	}
	return 0
}
