package hf

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Tencent ships both HunYuan MoE families as remote code under model_type hunyuan:
// Hunyuan-Large's config names HunYuanForCausalLM, Hunyuan-A13B's (tencent/
// Hunyuan-A13B-Instruct, before transformers took it in as hunyuan_v1_moe) names
// HunYuanMoEV1ForCausalLM, in architectures and in auto_map's AutoModelForCausalLM
// ("hunyuan.HunYuanMoEV1ForCausalLM"). The two read the same keys differently (a top-1
// expert's weight; the defaults of use_qk_norm and use_mixed_mlp_moe), so the class the
// config names decides which family moec reads; a config naming both, or a class of
// neither, is refused.

// hunyuanClasses are the model_type hunyuan classes moec imports, by the family each is.
var hunyuanClasses = map[string]Arch{
	"HunYuanForCausalLM":      Hunyuan,
	"HunYuanMoEV1ForCausalLM": HunyuanMoE,
}

// hunyuanRemoteClass reads which class a model_type hunyuan config names and sets s's
// family and class to it: Hunyuan-Large's when the config names none.
func (s *spec) hunyuanRemoteClass(r *reader) {
	named := map[string][]string{} // class → the keys that name it
	var archs []string
	if raw, ok := r.fields["architectures"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &archs) != nil {
			r.bad("architectures", "want a list of class names, have %s", compact(raw))
			return
		}
	}
	for _, a := range archs {
		named[a] = append(named[a], "architectures")
	}
	var autoMap map[string]string
	if raw, ok := r.fields["auto_map"]; ok && string(raw) != "null" && json.Unmarshal(raw, &autoMap) == nil {
		if ref := autoMap["AutoModelForCausalLM"]; ref != "" {
			class := ref[strings.LastIndex(ref, ".")+1:]
			named[class] = append(named[class], "auto_map.AutoModelForCausalLM")
		}
	}
	classes := make([]string, 0, len(named))
	for c := range named {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	var families []string
	for _, c := range classes {
		if _, ok := hunyuanClasses[c]; !ok {
			r.bad("architectures", "%s names %s, which is not a model_type hunyuan class moec imports (HunYuanForCausalLM: Hunyuan-Large; HunYuanMoEV1ForCausalLM: Hunyuan-A13B)", strings.Join(named[c], " and "), c)
			return
		}
		families = append(families, c)
	}
	switch len(families) {
	case 0:
		return // Hunyuan-Large's class, the one model_type hunyuan first named
	case 2:
		r.bad("architectures", "the config names both HunYuanForCausalLM (%s) and HunYuanMoEV1ForCausalLM (%s): Hunyuan-Large's and Hunyuan-A13B's remote code read its keys differently (a top-1 expert's weight, the defaults of use_qk_norm and use_mixed_mlp_moe), so which model it is is unknown; keep the class the checkpoint was saved from",
			strings.Join(named["HunYuanForCausalLM"], " and "), strings.Join(named["HunYuanMoEV1ForCausalLM"], " and "))
		return
	}
	s.class, s.arch = families[0], hunyuanClasses[families[0]]
	if s.arch != HunyuanMoE {
		return
	}
	r.notes = append(r.notes, fmt.Sprintf("model_type hunyuan naming %s (%s): Tencent's Hunyuan-A13B remote code, read as Hunyuan-A13B (transformers' hunyuan_v1_moe), not as Hunyuan-Large", s.class, strings.Join(named[s.class], " and ")))
	// Where Tencent's remote configuration and transformers' class may read a key
	// differently, the config must say it: moec does not guess.
	for _, k := range []string{"use_qk_norm", "use_mixed_mlp_moe"} {
		if !r.present(k) {
			r.bad(k, "missing: Hunyuan-A13B's remote HunYuanConfig (model_type hunyuan) and transformers' hunyuan_v1_moe may default it differently; write it out")
		}
	}
}

// hunyuanRemoteTop1 refuses a top-1 router in Hunyuan-A13B's remote form: transformers'
// HunYuanMoEV1Gate renormalises it to weight 1, while Tencent's remote code and the
// engines that follow it (renormalising a top-k above one only) weigh it by its
// probability, so which model the config describes is unknown.
func (s *spec) hunyuanRemoteTop1(r *reader, topK int) {
	if s.modelType == "hunyuan" && s.arch == HunyuanMoE && topK == 1 {
		r.refuse("moe_topk", "a top-1 router under model_type hunyuan naming HunYuanMoEV1ForCausalLM",
			"transformers' HunYuanMoEV1 gives the one expert weight 1 and Tencent's remote code its softmax probability, so which it is is unknown")
	}
}
