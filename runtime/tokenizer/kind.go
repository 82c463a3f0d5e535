package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// otherKind names the kind of a file that is not a tokenizer.json but that a model folder
// commonly holds beside it (or instead of it), and how to get a tokenizer.json; "" when the
// file is none of those.
func otherKind(data []byte) string {
	const convert = "save the tokenizer with transformers (AutoTokenizer.from_pretrained(folder).save_pretrained(out)) to get its tokenizer.json"
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return "an empty file"
	}
	if !utf8.Valid(data) {
		// SentencePiece's ModelProto starts with its repeated pieces (field 1, bytes: 0x0a).
		if data[0] == 0x0a {
			return "a SentencePiece model (tokenizer.model, a binary protobuf); " + convert
		}
		return "a binary file"
	}
	if trimmed[0] == '{' {
		var obj map[string]json.RawMessage
		if json.Unmarshal(trimmed, &obj) != nil {
			return ""
		}
		has := func(key string) bool { _, ok := obj[key]; return ok }
		switch {
		case has("model_type") || has("architectures"):
			return "a transformers model config (config.json); the tokenizer is tokenizer.json in the same folder"
		case has("tokenizer_class") || has("chat_template") || has("added_tokens_decoder"):
			return "a tokenizer_config.json (special tokens and the chat template); the vocabulary is in tokenizer.json beside it"
		case has("vocab") && has("config") && !has("model"):
			return "a Mistral tekken.json (mistral-common's format); " + convert
		case len(obj) > 0 && !has("model") && allNumbers(obj):
			return "a vocab.json of a slow tokenizer (with merges.txt); " + convert
		case (has("bos_token") || has("eos_token")) && !has("model"):
			return "a special_tokens_map.json; the vocabulary is in tokenizer.json beside it"
		}
		return ""
	}
	if bytes.HasPrefix(trimmed, []byte("#version")) {
		return "a merges.txt of a slow tokenizer (with vocab.json); " + convert
	}
	if isTiktoken(trimmed) {
		return "a tiktoken BPE ranks file (base64 token and rank per line: Llama 3's original tokenizer.model, o200k_base.tiktoken); " + convert
	}
	return ""
}

// allNumbers reports whether every value of obj is a number.
func allNumbers(obj map[string]json.RawMessage) bool {
	for _, v := range obj {
		if _, err := strconv.ParseFloat(string(bytes.TrimSpace(v)), 64); err != nil {
			return false
		}
	}
	return true
}

// isTiktoken reports whether the first lines of text are tiktoken's "base64 rank" pairs.
func isTiktoken(text []byte) bool {
	lines := bufio.NewScanner(bytes.NewReader(text))
	n := 0
	for lines.Scan() && n < 8 {
		fields := strings.Fields(lines.Text())
		if len(fields) != 2 {
			return false
		}
		if _, err := base64.StdEncoding.DecodeString(fields[0]); err != nil {
			return false
		}
		if _, err := strconv.Atoi(fields[1]); err != nil {
			return false
		}
		n++
	}
	return n > 0
}
