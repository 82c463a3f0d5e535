package serve

import (
	"net/http"
	"slices"
	"strings"
)

// tokenizePrompt sets sp.promptIDs: the prompt's bytes, or its tokenizer ids (with the
// special tokens the tokenizer's post-processor adds, a BOS, as `moec generate` does).
func (s *Server) tokenizePrompt(sp *sampling) *requestError {
	tok := s.opt.Tokenizer
	if tok == nil {
		sp.promptIDs = make([]int32, len(sp.prompt))
		for i, b := range sp.prompt {
			sp.promptIDs[i] = int32(b)
		}
		return nil
	}
	if sp.logprobs {
		// The log-probabilities are reported per byte of text; a token of a tokenizer
		// spans several, or part of one.
		return badRequest("logprobs", "logprobs are reported for byte-level models only; this server reads text with a tokenizer")
	}
	text := string(sp.prompt)
	if text == "" {
		text = "\n" // as runtime/generate: an empty prompt starts from a newline
	}
	ids, err := tok.Encode(text, true)
	if err != nil {
		return badRequest("prompt", "the prompt cannot be tokenized: %v", err)
	}
	sp.promptIDs = make([]int32, len(ids))
	for i, id := range ids {
		sp.promptIDs[i] = int32(id)
	}
	return nil
}

// checkChatTemplate refuses a chat request to a model whose tokenizer_config.json has a
// chat template: the template is Jinja, which moec does not render, and the plain
// "role: content" rendering would not be the conversation the model was trained on.
func (s *Server) checkChatTemplate() *requestError {
	if s.opt.Tokenizer == nil || s.opt.TokenizerConfig.ChatTemplate == "" {
		return nil
	}
	return &requestError{status: http.StatusNotImplemented, apiError: apiError{
		Message: "this model's tokenizer_config.json has a chat template (Jinja), which moec serve does not render; render the conversation with the template yourself and send it to /v1/completions",
		Type:    "invalid_request_error", Param: "messages", Code: "chat_template_unsupported"}}
}

// addToken feeds choice c's next token to its text: the byte, or the text the tokenizer
// settles with it. It returns what may be sent now, and whether the text ended: a stop
// string, or an end-of-sequence token of the tokenizer.
func (s *Server) addToken(c *choiceState, tok int32) (string, bool) {
	if c.detok == nil {
		return c.text.add(byte(tok))
	}
	if slices.Contains(s.opt.TokenizerConfig.EOS, int(tok)) {
		chunk, stopped := c.addBytes(c.detok.Flush())
		if stopped {
			return chunk, true
		}
		return chunk + c.text.flush(), true
	}
	b, err := c.detok.Add(int(tok))
	if err != nil {
		return "", false // an id past the tokenizer's: the scheduler samples none
	}
	return c.addBytes(b)
}

// addBytes feeds decoded text to the stop-string filter byte by byte.
func (c *choiceState) addBytes(b []byte) (string, bool) {
	var out strings.Builder
	for _, x := range b {
		chunk, stopped := c.text.add(x)
		out.WriteString(chunk)
		if stopped {
			return out.String(), true
		}
	}
	return out.String(), false
}
