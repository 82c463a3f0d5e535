package hf

import (
	"bytes"
	"encoding/json"
)

// configAliases are config keys transformers accepts under a second name (its config
// classes' attribute_map) and that transformers 5's save_pretrained writes under that
// second name: a Qwen3-MoE it saves says num_local_experts where the published checkpoints
// say num_experts. Per model_type: {the name the importer reads, the other name}.
var configAliases = map[string][][2]string{
	"mixtral":     {{"num_local_experts", "num_experts"}},
	"qwen3_moe":   {{"num_experts", "num_local_experts"}},
	"olmoe":       {{"num_experts", "num_local_experts"}},
	"gpt_oss":     {{"num_local_experts", "num_experts"}},
	"deepseek_v2": {{"n_routed_experts", "num_experts"}},
	"deepseek_v3": {{"n_routed_experts", "num_local_experts"}, {"num_nextn_predict_layers", "num_mtp_layers"}},
}

// resolveAliases reads each second name of modelType's fields as its first: the value
// moves over when the first is absent, and two different values for one field are refused.
func (r *reader) resolveAliases(modelType string) {
	for _, a := range configAliases[modelType] {
		name, alias := a[0], a[1]
		if _, ok := r.fields[alias]; !ok {
			continue
		}
		r.used[alias] = true
		if !r.present(alias) {
			continue
		}
		if r.present(name) && !sameJSON(r.fields[name], r.fields[alias]) {
			r.bad(alias, "transformers reads %s as %s, and the two differ (%s against %s); keep one", alias, name, compact(r.fields[alias]), compact(r.fields[name]))
			continue
		}
		r.fields[name] = r.fields[alias]
	}
}

// sameJSON reports whether two JSON values are equal as values (1 and 1.0 are).
func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}
