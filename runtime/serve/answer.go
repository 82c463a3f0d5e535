package serve

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/moec-dev/moec/runtime/tokenizer"
)

// answer writes one request's response: a JSON object at the end, or server-sent events
// ("data: {chunk}\n\n" per piece of text of a choice, a chunk with the finish reason as
// each choice ends, the usage chunk when stream_options.include_usage asks for it, then
// "data: [DONE]\n\n") as text arrives.
type answer struct {
	s            *Server
	w            http.ResponseWriter
	kind         string
	id           string
	created      int64
	stream       bool
	includeUsage bool
	logprobs     bool // report the log-probabilities of the tokens
	started      bool // the stream's headers are out
	prefix       string
	choices      []choiceState
}

// choiceState is one choice as it is written.
type choiceState struct {
	text      textStream
	detok     *tokenizer.Stream // the tokenizer's text of the ids so far; nil: bytes
	sent      int               // bytes of text handed to text (streamed, or kept for the end)
	logprobs  []tokenLogprob    // per generated token, when asked for
	generated int
	finish    string // the finish reason once the choice has ended
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func (a *answer) object(chunk bool) string {
	switch {
	case a.kind == kindChat && chunk:
		return "chat.completion.chunk"
	case a.kind == kindChat:
		return "chat.completion"
	}
	return "text_completion"
}

// begin sends the stream's headers and, per choice, the assistant role (chat) or the
// echoed prompt (completions with echo).
func (a *answer) begin() {
	h := a.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	a.w.WriteHeader(http.StatusOK)
	a.started = true
	for i := range a.choices {
		if a.kind == kindChat {
			a.event(i, map[string]any{"role": "assistant", "content": ""}, nil, nil)
		}
		if a.prefix != "" {
			a.event(i, a.prefix, nil, nil)
		}
	}
}

// text takes the next piece of choice i's text and streams it (nothing to send for an
// empty one or a whole answer).
func (a *answer) text(i int, t string) {
	c := &a.choices[i]
	from := c.sent
	c.sent += len(t)
	if !a.stream || t == "" {
		return
	}
	var lp any
	if a.logprobs {
		lp = a.logprobsJSON(c.logprobs[from:c.sent], len(a.prefix)+from)
	}
	if a.kind == kindChat {
		a.event(i, map[string]any{"content": t}, lp, nil)
	} else {
		a.event(i, t, lp, nil)
	}
}

// event writes one chunk for choice i: delta is the chat delta or the completion text.
func (a *answer) event(i int, delta, logprobs any, finish *string) {
	choice := map[string]any{"index": i, "finish_reason": finish, "logprobs": logprobs}
	if a.kind == kindChat {
		choice["delta"] = delta
	} else {
		choice["text"] = delta
	}
	a.chunk([]any{choice}, nil)
}

// chunk writes one streamed chunk; with include_usage every chunk has a usage field, null
// but in the last.
func (a *answer) chunk(choices []any, u *usage) {
	v := map[string]any{"id": a.id, "object": a.object(true), "created": a.created, "model": a.s.name, "choices": choices}
	if a.includeUsage {
		v["usage"] = u
	}
	a.send(v)
}

func (a *answer) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return // only plain maps, strings and numbers reach here
	}
	_, _ = a.w.Write([]byte("data: "))
	_, _ = a.w.Write(b)
	_, _ = a.w.Write([]byte("\n\n"))
	if f, ok := a.w.(http.Flusher); ok {
		f.Flush()
	}
}

// finish ends choice i with reason; a stream says so at once.
func (a *answer) finish(i int, reason string) {
	a.choices[i].finish = reason
	if !a.stream {
		return
	}
	if a.kind == kindChat {
		a.event(i, map[string]any{}, nil, &reason)
	} else {
		a.event(i, "", nil, &reason)
	}
}

// usage counts the prompt once and the tokens of every choice.
func (a *answer) usage(promptTokens int) usage {
	u := usage{PromptTokens: promptTokens}
	for _, c := range a.choices {
		u.CompletionTokens += c.generated
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// end completes the answer once every choice has finished: the usage chunk (if asked
// for) and [DONE], or the whole JSON object.
func (a *answer) end(promptTokens int) {
	u := a.usage(promptTokens)
	if a.stream {
		if a.includeUsage {
			a.chunk([]any{}, &u)
		}
		a.done()
		return
	}
	choices := make([]any, len(a.choices))
	for i := range a.choices {
		c := &a.choices[i]
		text := c.text.text()
		choice := map[string]any{"index": i, "finish_reason": c.finish, "logprobs": nil}
		if a.logprobs {
			choice["logprobs"] = a.logprobsJSON(c.logprobs[:len(text)], len(a.prefix))
		}
		if a.kind == kindChat {
			choice["message"] = map[string]any{"role": "assistant", "content": text}
		} else {
			choice["text"] = a.prefix + text
		}
		choices[i] = choice
	}
	writeJSON(a.w, http.StatusOK, map[string]any{"id": a.id, "object": a.object(false), "created": a.created,
		"model": a.s.name, "choices": choices, "usage": u})
}

func (a *answer) done() {
	_, _ = a.w.Write([]byte("data: [DONE]\n\n"))
	if f, ok := a.w.(http.Flusher); ok {
		f.Flush()
	}
}

// abort ends a stream whose status line is already sent with an error event.
func (a *answer) abort(e *requestError) {
	a.send(map[string]any{"error": e.apiError})
	a.done()
}

// tokenString names a byte token as OpenAI names tokens that are not whole characters:
// ASCII as itself, any other byte as "bytes:\xNN".
func tokenString(b byte) string {
	if b < 0x80 {
		return string(rune(b))
	}
	return fmt.Sprintf(`bytes:\x%02x`, b)
}

// logprobsJSON is the logprobs object of a choice (or chunk) holding the tokens lps, whose
// first byte is at offset in the choice's text: chat's {"content": [...]}, or the
// completions' tokens, token_logprobs, top_logprobs and text_offset.
func (a *answer) logprobsJSON(lps []tokenLogprob, offset int) any {
	if a.kind == kindChat {
		content := make([]map[string]any, len(lps))
		for k, lp := range lps {
			top := make([]map[string]any, len(lp.top))
			for t, alt := range lp.top {
				top[t] = map[string]any{"token": tokenString(alt.token), "logprob": alt.logprob, "bytes": []int{int(alt.token)}}
			}
			content[k] = map[string]any{"token": tokenString(lp.token), "logprob": lp.logprob,
				"bytes": []int{int(lp.token)}, "top_logprobs": top}
		}
		return map[string]any{"content": content}
	}
	tokens := make([]string, len(lps))
	values := make([]float64, len(lps))
	tops := make([]map[string]float64, len(lps))
	offsets := make([]int, len(lps))
	for k, lp := range lps {
		tokens[k], values[k], offsets[k] = tokenString(lp.token), lp.logprob, offset+k
		// As OpenAI: the alternatives, and the sampled token even when it is not among them.
		top := map[string]float64{tokenString(lp.token): lp.logprob}
		for _, alt := range lp.top {
			top[tokenString(alt.token)] = alt.logprob
		}
		tops[k] = top
	}
	return map[string]any{"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
}
