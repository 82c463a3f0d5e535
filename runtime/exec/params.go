package exec

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// LoadParams fills this rank's parameters from whole tensors: get returns parameter id's
// values and shape in the single-rank layout (as a checkpoint stores them). Each rank
// takes its tensor-parallel slice, its experts, and under ZeRO-3 its shard of the group's
// flat vector.
func (e *Executor) LoadParams(get func(id params.ID) ([]float32, []int)) error {
	if err := e.Settle(); err != nil {
		return err
	}
	// local writes this rank's slice of b's parameter into out (b.Elements() values):
	// straight into the arena, or into one scratch slice reused for every ZeRO-3 piece, so
	// that loading allocates no second copy of the model.
	local := func(out []float32, b *step.Buffer) error {
		id := *b.Param
		shard := id.Shard
		id.Shard = params.Shard{}
		whole, shape := get(id)
		if whole == nil {
			return fmt.Errorf("exec: no values for parameter %s", id)
		}
		if err := slice(out, whole, shape, shard); err != nil {
			return fmt.Errorf("exec: parameter %s: %w", id, err)
		}
		return nil
	}
	for i, b := range e.p.Buffers {
		if b.Kind != step.KindParam || e.f32[i] == nil {
			continue
		}
		if b.Param != nil {
			if err := local(e.f32[i], b); err != nil {
				return err
			}
		}
	}
	var tmp []float32
	// ZeRO-3: each group's flat shard, from the tensors at their flat offsets (the
	// gradient buffers of a training program, the gathered buffers of any program that
	// uses the parameter, name every tensor of the group with its offset and local shape).
	for _, g := range e.p.Groups {
		if g.ZeRO != 3 {
			continue
		}
		var shardBuf []float32
		for i, b := range e.p.Buffers {
			if b.Kind == step.KindParam && b.Param == nil && e.f32[i] != nil && len(b.Name) > len(g.Name)+8 && b.Name[:len("params["+g.Name+"]")] == "params["+g.Name+"]" {
				shardBuf = e.f32[i]
			}
		}
		if shardBuf == nil {
			return fmt.Errorf("exec: no parameter shard for group %s", g.Name)
		}
		clear(shardBuf)
		lo := int64(g.Index) * g.Shard
		seen := map[params.ID]bool{}
		for _, b := range e.p.Buffers {
			if b.Param == nil || b.Flat < 0 || (b.Kind != step.KindActGrad && b.Kind != step.KindGrad && b.Kind != step.KindGathered) {
				continue
			}
			id := *b.Param
			id.Shard = params.Shard{}
			if seen[id] {
				continue
			}
			seen[id] = true
			if (id.Role.Routed() && len(e.p.Groups) > 1) != (g.Name == e.p.Groups[len(e.p.Groups)-1].Name && len(e.p.Groups) > 1) {
				continue
			}
			n := b.Elements()
			a, z := max(lo, b.Flat), min(lo+g.Shard, b.Flat+n)
			if a >= z {
				continue
			}
			v := grow(&tmp, int(n))
			if err := local(v, b); err != nil {
				return err
			}
			copy(shardBuf[a-lo:z-lo], v[a-b.Flat:z-b.Flat])
		}
	}
	e.syncHostParams()
	e.refreshMaster()
	return nil
}

// Slice copies a tensor-parallel slice s of a whole tensor (shape) into out.
func Slice(out, whole []float32, shape []int, s params.Shard) error {
	return slice(out, whole, shape, s)
}

// slice copies a tensor-parallel slice s of a whole tensor (shape) into out.
func slice(out, whole []float32, shape []int, s params.Shard) error {
	if s.Whole() {
		if len(out) != len(whole) {
			return fmt.Errorf("%d values for a buffer of %d", len(whole), len(out))
		}
		copy(out, whole)
		return nil
	}
	rows := shape[0]
	cols := 1
	if len(shape) > 1 {
		cols = shape[1]
	}
	if s.Dim == 0 {
		per := rows / s.Count
		copy(out, whole[s.Index*per*cols:(s.Index+1)*per*cols])
		return nil
	}
	per := cols / s.Count
	for r := 0; r < rows; r++ {
		copy(out[r*per:(r+1)*per], whole[r*cols+s.Index*per:r*cols+(s.Index+1)*per])
	}
	return nil
}

// LoadTensors fills this rank's parameters from whole tensors by the names the parameter
// walker gives model m's parameters (a checkpoint's names).
func (e *Executor) LoadTensors(ts []safetensors.Tensor) error {
	walk, err := params.Walk(e.m)
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	byName := make(map[string]safetensors.Tensor, len(ts))
	for _, t := range ts {
		byName[t.Name] = t
	}
	byID := make(map[params.ID]safetensors.Tensor, len(walk))
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
	return e.LoadParams(func(id params.ID) ([]float32, []int) { t := byID[id]; return t.Data, t.Shape })
}
