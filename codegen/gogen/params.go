package gogen

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/runtime/nn"
)

// The parameter structs are derived from the runtime's parameter names (nn.ParamList), never
// from names in the .moe file: those are fixed by the runtime (Hugging Face spelling), so
// every identifier below comes from a closed vocabulary.

// field is one *nn.Param field, or (group != "") a slice of expert structs.
type field struct {
	name  string // Go field name
	param string // runtime name (for a group: with %d where the expert index goes)
	shape []int
	group string // Go field name of the expert slice this belongs to, "" for a plain field
	count int    // experts in the group
}

// layerStruct is one generated layer type, shared by layers with the same fields.
type layerStruct struct {
	typeName string
	fields   []string // Go field names, in order; groups appear once as their slice field
	moe      bool
}

// layout is the generated view of a model's parameters.
type layout struct {
	top          []field   // outside the layers, in runtime order
	layers       [][]field // per layer
	layerType    []int     // per layer: index into structs
	structs      []layerStruct
	expertFields []string // fields of the Expert struct, in first-seen order
	total        int64
}

// camel turns a runtime name segment into a Go name part: q_proj -> QProj.
func camel(seg string) string {
	switch seg {
	case "self_attn":
		return "Attn"
	case "block_sparse_moe":
		return "MoE"
	case "mlp":
		return "MLP"
	}
	var b strings.Builder
	for _, p := range strings.Split(seg, "_") {
		if p == "" {
			continue
		}
		b.WriteString(strings.ToUpper(p[:1]) + p[1:])
	}
	return b.String()
}

// goName names a runtime parameter's segments: a trailing "weight" is implied, a
// trailing "bias" becomes a Bias suffix.
func goName(segs []string) string {
	var b strings.Builder
	for i, s := range segs {
		if i == len(segs)-1 && s == "weight" {
			break
		}
		b.WriteString(camel(s))
	}
	return b.String()
}

func buildLayout(params []nn.ParamInfo, layers int) (*layout, error) {
	lay := &layout{layers: make([][]field, layers), layerType: make([]int, layers)}
	seenExpert := map[string]bool{}
	for _, p := range params {
		n := int64(1)
		for _, s := range p.Shape {
			n *= int64(s)
		}
		lay.total += n
		segs := strings.Split(p.Name, ".")
		if len(segs) < 3 || segs[0] != "model" || segs[1] != "layers" {
			if segs[0] == "model" {
				segs = segs[1:]
			}
			lay.top = append(lay.top, field{name: goName(segs), param: p.Name, shape: p.Shape})
			continue
		}
		li, err := strconv.Atoi(segs[2])
		if err != nil || li < 0 || li >= layers {
			return nil, fmt.Errorf("gogen: parameter %s: no such layer", p.Name)
		}
		rest := segs[3:]
		f := field{param: p.Name, shape: p.Shape}
		for i := 0; i+1 < len(rest); i++ {
			if rest[i] != "experts" && rest[i] != "shared_experts" {
				continue
			}
			e, err := strconv.Atoi(rest[i+1])
			if err != nil {
				continue
			}
			f.group = goName(rest[:i+1])
			f.name = goName(rest[i+2:])
			if !seenExpert[f.name] {
				seenExpert[f.name] = true
				lay.expertFields = append(lay.expertFields, f.name)
			}
			// Experts of a group share their shapes; the first one stands for all.
			if e != 0 {
				f.group = "-"
			} else {
				f.param = "model.layers." + segs[2] + "." + strings.Join(rest[:i+1], ".") + ".%d." + strings.Join(rest[i+2:], ".")
			}
			break
		}
		if f.group == "-" {
			continue
		}
		if f.group == "" {
			f.name = goName(rest)
		}
		lay.layers[li] = append(lay.layers[li], f)
	}
	// Count each group's experts from the names.
	for li := range lay.layers {
		for j := range lay.layers[li] {
			g := &lay.layers[li][j]
			if g.group == "" {
				continue
			}
			prefix := strings.Split(g.param, "%d")[0]
			for _, p := range params {
				if strings.HasPrefix(p.Name, prefix) && strings.HasSuffix(p.Name, strings.Split(g.param, "%d")[1]) {
					g.count++
				}
			}
		}
	}
	lay.assignStructs()
	return lay, nil
}

// assignStructs gives layers with the same fields one type: DenseLayer, MoELayer, then
// numbered variants (cross-layer attention makes layers without k_proj/v_proj).
func (lay *layout) assignStructs() {
	bySig := map[string]int{}
	used := map[string]int{}
	for li, fs := range lay.layers {
		var names []string
		moe := false
		for _, f := range fs {
			n := f.name
			if f.group != "" {
				n = f.group
				moe = true
			}
			if len(names) == 0 || names[len(names)-1] != n {
				names = append(names, n)
			}
		}
		sig := strings.Join(names, ",")
		if i, ok := bySig[sig]; ok {
			lay.layerType[li] = i
			continue
		}
		base := "DenseLayer"
		if moe {
			base = "MoELayer"
		}
		used[base]++
		name := base
		if used[base] > 1 {
			name = fmt.Sprintf("%s%d", base, used[base])
		}
		bySig[sig] = len(lay.structs)
		lay.layerType[li] = len(lay.structs)
		lay.structs = append(lay.structs, layerStruct{typeName: name, fields: names, moe: moe})
	}
}
