package serve

import (
	"encoding/json"
	"net/http"
)

// answer writes one request's response: a JSON object at the end, or server-sent events
// ("data: {chunk}\n\n" per piece of text, then "data: [DONE]\n\n") as text arrives.
type answer struct {
	s       *Server
	w       http.ResponseWriter
	kind    string
	id      string
	created int64
	stream  bool
	started bool   // the stream's headers are out
	prefix  string // echoed prompt (completions with echo)
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

// begin sends the stream's headers and, for chat, the assistant role.
func (a *answer) begin() {
	h := a.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	a.w.WriteHeader(http.StatusOK)
	a.started = true
	if a.kind == kindChat {
		a.event(map[string]any{"role": "assistant", "content": ""}, nil)
	}
	if a.prefix != "" {
		a.text(a.prefix)
	}
}

// text streams a piece of text (nothing to do for an empty one or a whole answer).
func (a *answer) text(t string) {
	if !a.stream || t == "" {
		return
	}
	if a.kind == kindChat {
		a.event(map[string]any{"content": t}, nil)
	} else {
		a.event(t, nil)
	}
}

// event writes one chunk: delta is the chat delta or the completion text.
func (a *answer) event(delta any, finish *string) {
	choice := map[string]any{"index": 0, "finish_reason": finish}
	if a.kind == kindChat {
		choice["delta"] = delta
	} else {
		choice["text"] = delta
		choice["logprobs"] = nil
	}
	a.send(map[string]any{"id": a.id, "object": a.object(true), "created": a.created, "model": a.s.name,
		"choices": []any{choice}})
}

func (a *answer) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return // only plain maps and strings reach here
	}
	_, _ = a.w.Write([]byte("data: "))
	_, _ = a.w.Write(b)
	_, _ = a.w.Write([]byte("\n\n"))
	if f, ok := a.w.(http.Flusher); ok {
		f.Flush()
	}
}

// finish ends the answer: the final chunk and [DONE], or the whole JSON object.
func (a *answer) finish(text, reason string, promptTokens, generated int) {
	u := usage{PromptTokens: promptTokens, CompletionTokens: generated, TotalTokens: promptTokens + generated}
	if a.stream {
		if a.kind == kindChat {
			a.event(map[string]any{}, &reason)
		} else {
			a.event("", &reason)
		}
		_, _ = a.w.Write([]byte("data: [DONE]\n\n"))
		if f, ok := a.w.(http.Flusher); ok {
			f.Flush()
		}
		return
	}
	choice := map[string]any{"index": 0, "finish_reason": reason}
	if a.kind == kindChat {
		choice["message"] = map[string]any{"role": "assistant", "content": text}
	} else {
		choice["text"] = a.prefix + text
		choice["logprobs"] = nil
	}
	writeJSON(a.w, http.StatusOK, map[string]any{"id": a.id, "object": a.object(false), "created": a.created,
		"model": a.s.name, "choices": []any{choice}, "usage": u})
}

// abort ends a stream whose status line is already sent with an error event.
func (a *answer) abort(e *requestError) {
	a.send(map[string]any{"error": e.apiError})
	_, _ = a.w.Write([]byte("data: [DONE]\n\n"))
	if f, ok := a.w.(http.Flusher); ok {
		f.Flush()
	}
}
