package hf

import "fmt"

// hunyuanPromptTokenIDs are the ids of the multimodal prompt format Tencent's HunYuan
// configs list beside bos/eos/pad: tokenizer bookkeeping, nothing the network computes.
var hunyuanPromptTokenIDs = []string{
	"im_start_id", "im_end_id", "im_newline_id", "image_token_id",
	"text_start_id", "text_end_id", "video_start_id", "video_end_id", "pad_id",
}

// hunyuanVisionShape are the fields that size the vision tower of Tencent's multimodal
// HunYuan variants; without a tower (vit_type null) they size nothing.
var hunyuanVisionShape = []string{
	"anyres_pooling_size", "anyres_vit_max_image_size", "anyres_vit_two_views",
	"num_media_embeds", "skip_cls_token", "vit_add_patchemb_bias", "vit_input_resolution",
	"vit_mapping_type", "vit_norm_type", "vit_patch", "vit_remove_prenorm", "vit_token",
	"vit_used_rms_norm",
}

// hunyuanVariantFields reads the fields Tencent writes into every HunYuan config for its
// multimodal and embedding variants (the Hunyuan-A13B config.json Tencent publishes carries
// them all): a language model has no vision tower, no classification head, RMSNorm and
// plain rotary positions, and then they describe nothing it computes. A config that does
// turn one on describes another network, which is refused.
func hunyuanVariantFields(r *reader) {
	for _, k := range hunyuanPromptTokenIDs {
		r.used[k] = true
	}
	if r.present("vit_type") || r.present("vit_path") {
		r.used["vit_path"] = true
		r.refuse("vit_type", "a vision tower (vit_type/vit_path)", "moec imports HunYuan's language model only")
	} else {
		for _, k := range hunyuanVisionShape {
			r.used[k] = true
		}
	}
	if r.boolean("add_classification_head", false) {
		r.refuse("add_classification_head", "a classification head", "moec imports the causal language model, whose head is the vocabulary projection")
	} else {
		// class_num, pool_type and dense_list shape the classification and embedding
		// heads, which this config does not build.
		for _, k := range []string{"class_num", "pool_type", "dense_list"} {
			r.used[k] = true
		}
	}
	if nt := r.str("norm_type", "rms"); nt != "rms" {
		r.refuse("norm_type", fmt.Sprintf("norm_type %q", nt), "the HunYuan language models moec imports use RMSNorm")
	}
	if r.boolean("position_embedding_xdrope", false) || r.present("xdrope_section") {
		r.used["xdrope_section"] = true
		r.refuse("position_embedding_xdrope", "XD-RoPE positions", "moec rotates HunYuan's queries and keys with plain rotary positions")
	}
}
