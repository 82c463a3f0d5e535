// Package tokenizer reads a Hugging Face tokenizer.json and turns text into token ids and
// back, as the `tokenizers` library does, for the BPE models current language models ship:
// byte-level BPE (GPT-2's ByteLevel mapping behind the regex splits of Qwen2/3, Llama 3,
// DeepSeek-V3 and gpt-oss's o200k) and the BPE that SentencePiece models (Llama 2, Mistral,
// Mixtral) convert to (Prepend/Replace normalizers or a Metaspace pre-tokenizer, byte
// fallback, a fused unknown token).
//
// Encoding follows the library's pipeline: added and special tokens are split out of the
// text first (the ones marked normalized=false on the raw text, the others after
// normalizing, each honouring lstrip/rstrip/single_word), the normalizer runs on each piece
// in between, the pre-tokenizer splits it into words, the BPE model turns each word into ids,
// and the post-processor (TemplateProcessing) adds the special tokens of a sequence when
// asked. Decoding runs the decoder chain. A tokenizer.json whose model is not BPE
// (WordPiece, Unigram, WordLevel), or which uses a component this package does not
// implement, is refused with the kind it names.
//
// The regex splits use lookahead (`\s+(?!\S)`), which Go's regexp lacks; they run on
// github.com/dlclark/regexp2, a backtracking engine with .NET syntax, whose Unicode classes
// (\p{L}, \p{N}, \s, (?i:…)) match those of the Oniguruma engine `tokenizers` uses. Go's
// tables are Unicode 15.0, that Oniguruma's 16.0 (tokenizers 0.23; 0.20's are older): each
// \p{…} of a pattern also holds the code points assigned since (unicode_additions.go,
// written by gen_unicode.py). Matching is in runes; offsets are converted to bytes.
//
// The package sits beside runtime/data: the CLI (moec tokenize), the data loader, generate
// and serve use it; it imports nothing of moec but lang/diag for its refusals.
package tokenizer
