package serve

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/moec-dev/moec/runtime/chattemplate"
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
	// A chat template writes the special tokens itself (transformers encodes its output
	// without adding any).
	ids, err := tok.Encode(text, !sp.templated)
	if err != nil {
		return badRequest("prompt", "the prompt cannot be tokenized: %v", err)
	}
	sp.promptIDs = make([]int32, len(ids))
	for i, id := range ids {
		sp.promptIDs[i] = int32(id)
	}
	return nil
}

// chatTemplate is the tokenizer's chat template, compiled when the server starts; nil
// when there is none. A template outside moec's Jinja subset leaves err set, and chat
// requests are refused with it.
type chatTemplate struct {
	t        *chattemplate.Template
	err      error
	bos, eos string // bos_token and eos_token as the template sees them
}

func newChatTemplate(opt Options) *chatTemplate {
	if opt.Tokenizer == nil || opt.TokenizerConfig.ChatTemplate == "" {
		return nil
	}
	c := &chatTemplate{}
	c.t, c.err = chattemplate.Compile(opt.TokenizerConfig.ChatTemplate)
	if ids := opt.TokenizerConfig.BOS; len(ids) > 0 {
		c.bos, _ = opt.Tokenizer.Token(ids[0])
	}
	if ids := opt.TokenizerConfig.EOS; len(ids) > 0 {
		c.eos, _ = opt.Tokenizer.Token(ids[0])
	}
	return c
}

// renderTemplate applies the chat template to the conversation, with the generation
// prompt, as transformers' apply_chat_template(add_generation_prompt=True) does.
func (s *Server) renderTemplate(msgs []chatMessage) (string, *requestError) {
	c := s.chat
	if c.err != nil {
		return "", &requestError{status: http.StatusNotImplemented, apiError: apiError{
			Message: fmt.Sprintf("this model's %v; render the conversation yourself and send it to /v1/completions", c.err),
			Type:    "invalid_request_error", Param: "messages", Code: "chat_template_unsupported"}}
	}
	if len(msgs) == 0 {
		return "", badRequest("messages", "messages is empty; give at least one message")
	}
	list := make([]any, len(msgs))
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant", "developer":
		default:
			return "", badRequest(fmt.Sprintf("messages[%d].role", i), "role %q is not one of system, developer, user, assistant", m.Role)
		}
		content, err := messageText(i, m.Content)
		if err != nil {
			return "", err
		}
		d := chattemplate.NewDict()
		d.Set("role", m.Role)
		d.Set("content", content)
		if m.Name != "" {
			d.Set("name", m.Name)
		}
		list[i] = d
	}
	out, err := c.t.Render(map[string]any{"messages": list, "add_generation_prompt": true, "bos_token": c.bos, "eos_token": c.eos})
	if err != nil {
		return "", badRequest("messages", "%v", err)
	}
	return out, nil
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
