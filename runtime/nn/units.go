package nn

import (
	"fmt"
	"reflect"
)

// A Unit is a group of parameters a step uses together: the embedding (unit 0), one
// transformer layer (units 1..layers) or the final norm and head (the last unit). A
// sharded trainer keeps each unit's weights and gradients in flat buffers it can gather,
// reduce-scatter and release unit by unit (ZeRO stages 2 and 3); Bind points the unit's
// tensors at such buffers.
//
// Each unit has two parts: the dense part (replicated over the data-parallel ranks) and
// the expert part (a rank's routed experts, replicated only over the ranks holding the
// same experts). A part's flat layout is its tensors' storage in creation order.
type Unit struct {
	Name      string
	DenseLen  int // floats in the dense part
	ExpertLen int // floats in the expert part
	Params    []UnitParam
}

// UnitParam places one of Model.Params() in its unit's flat buffers.
type UnitParam struct {
	Index  int  // into Model.Params()
	Expert bool // in the expert part
	Offset int  // first float in its part
}

// Units lists the model's units in step order.
func (m *Model) Units() []Unit {
	c := m.c
	units := make([]Unit, c.d.L+2)
	for i := range units {
		switch {
		case i == 0:
			units[i].Name = "embedding"
		case i <= c.d.L:
			units[i].Name = fmt.Sprintf("layer %d", i-1)
		default:
			units[i].Name = "head"
		}
	}
	offset := map[*tensor[float32]]int{}
	for _, t := range c.storage {
		u := &units[t.unit]
		if t.expert {
			offset[t] = u.ExpertLen
			u.ExpertLen += len(t.w)
		} else {
			offset[t] = u.DenseLen
			u.DenseLen += len(t.w)
		}
	}
	for i, t := range c.params {
		off, ok := offset[t]
		if t.base != nil {
			off, ok = offset[t.base]
			off += t.off
		}
		if !ok {
			panic(fmt.Sprintf("nn: parameter %s has no storage", t.name))
		}
		units[t.unit].Params = append(units[t.unit].Params, UnitParam{Index: i, Expert: t.expert, Offset: off})
	}
	return units
}

// Bind points unit u's weights and gradients at the given flat buffers (lengths DenseLen
// and ExpertLen; a nil buffer leaves those tensors unbound, so a use of a released unit
// fails loudly instead of reading stale values). Params() reflects the new buffers.
func (m *Model) Bind(u int, denseW, denseG, expertW, expertG []float32) {
	c := m.c
	var dOff, eOff int
	part := func(buf []float32, off, n int) []float32 {
		if buf == nil {
			return nil
		}
		return buf[off : off+n : off+n]
	}
	for _, t := range c.storage {
		if t.unit != u {
			continue
		}
		n := elems(t.shape)
		if t.expert {
			t.w, t.g = part(expertW, eOff, n), part(expertG, eOff, n)
			eOff += n
		} else {
			t.w, t.g = part(denseW, dOff, n), part(denseG, dOff, n)
			dOff += n
		}
	}
	for i, t := range c.params {
		if t.unit != u {
			continue
		}
		if t.base != nil { // a view follows its storage
			n := elems(t.shape)
			t.w, t.g = part(t.base.w, t.off, n), part(t.base.g, t.off, n)
		}
		m.params[i].W, m.params[i].G = t.w, t.g
	}
}

func elems(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

// WorkspaceBytes splits the buffers the last step used the way the plan names a rank's
// memory: activations (everything kept for backward and the gradient scratch), the MoE
// dispatch and combine buffers (the expert-sorted rows and, on an expert-parallel rank,
// the rows it received and their outputs), and the logits (the plan's temporary
// buffers). Buffers shared by several layers count once.
func (m *Model) WorkspaceBytes() (activations, dispatch, logits int64) {
	c := m.c
	if c.measured == c.buffers && c.buffers > 0 {
		r := c.wsMeasure
		return r[0], r[1], r[2]
	}
	defer func() {
		c.measured, c.wsMeasure = c.buffers, [3]int64{activations, dispatch, logits}
	}()
	seen := map[uintptr]bool{}
	var all int64
	if c.ws != nil {
		all = sliceBytes(reflect.ValueOf(c.ws), seen)
		logits = int64(cap(c.ws.logits)) * int64(reflect.TypeOf(c.ws.logits).Elem().Size())
		for _, l := range c.ws.layers {
			if l.moe != nil {
				dispatch += int64(4 * (cap(l.moe.xs) + cap(l.moe.out)))
			}
		}
	}
	if c.shard != nil {
		for _, L := range c.shard.layers {
			all += sliceBytes(reflect.ValueOf(L), seen)
			dispatch += int64(4 * (cap(L.recv) + cap(L.recvOut)))
		}
	}
	return all - dispatch - logits, dispatch, logits
}

// sliceBytes sums the capacity in bytes of every slice reachable from v through structs,
// pointers and slices of them, counting each backing array once.
func sliceBytes(v reflect.Value, seen map[uintptr]bool) int64 {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return 0
		}
		return sliceBytes(v.Elem(), seen)
	case reflect.Struct:
		var n int64
		for i := 0; i < v.NumField(); i++ {
			n += sliceBytes(v.Field(i), seen)
		}
		return n
	case reflect.Map:
		var n int64
		for it := v.MapRange(); it.Next(); {
			n += sliceBytes(it.Value(), seen)
		}
		return n
	case reflect.Slice:
		if v.IsNil() || v.Cap() == 0 {
			return 0
		}
		p := v.Pointer()
		if seen[p] {
			return 0
		}
		seen[p] = true
		switch v.Type().Elem().Kind() {
		case reflect.Slice, reflect.Pointer, reflect.Struct:
			var n int64
			for i := 0; i < v.Len(); i++ {
				n += sliceBytes(v.Index(i), seen)
			}
			return n
		}
		return int64(v.Cap()) * int64(v.Type().Elem().Size())
	}
	return 0
}
