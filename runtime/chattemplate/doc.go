// Package chattemplate renders the chat templates of Hugging Face tokenizer_config.json
// files: the subset of Jinja they use, evaluated as transformers' apply_chat_template does
// (trim_blocks and lstrip_blocks on, its tojson, raise_exception and strftime_now, loop
// controls).
//
// Supported: text with {{ }}, {% %} and {# #} tags and "-" whitespace control; if / elif /
// else, for (with a filter, an else, tuple targets and the loop variable), set (names and
// namespace attributes), break and continue, macros (positional and keyword arguments,
// defaults); literals (strings, numbers, true/false/none, lists, dicts), names,
// attributes, subscripts and slices, calls, filters, tests, the arithmetic, comparison,
// membership, string-concatenation and boolean operators and the conditional expression;
// the common filters, tests and Python string and dict methods. A template using anything
// else (call blocks, filter blocks, includes, recursive loops) is refused when it is
// compiled, naming what it met; rendering errors (raise_exception) name their message.
//
// The published templates of Qwen3, QwQ, Llama 3.2 and 3.3, DeepSeek-V3.1, gpt-oss,
// Mistral Nemo and Small 3.2, Devstral, Phi-3.5, Gemma 2 and Granite 3.3 render as Jinja2
// renders them (checked outside the repository: the templates are their publishers');
// testdata holds templates written in their styles, with Jinja2's output.
package chattemplate
