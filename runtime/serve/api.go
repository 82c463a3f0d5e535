package serve

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// completionRequest is the body of POST /v1/completions. As OpenAI does, a field the
// endpoint does not know is refused (400), never ignored: a client that asks for
// something must not get an answer made without it. best_of is accepted only equal to n
// (the server returns every choice it samples); user is metadata and is accepted.
type completionRequest struct {
	Model            string          `json:"model"`
	Prompt           json.RawMessage `json:"prompt"` // a string, or a list of one string
	MaxTokens        *int            `json:"max_tokens"`
	Temperature      *float64        `json:"temperature"`
	TopP             *float64        `json:"top_p"`
	TopK             *int            `json:"top_k"` // not OpenAI's; the sampler's top-k
	Seed             *int64          `json:"seed"`
	Stream           bool            `json:"stream"`
	StreamOptions    *streamOptions  `json:"stream_options"`
	Stop             json.RawMessage `json:"stop"` // a string or a list of up to 4
	N                *int            `json:"n"`
	BestOf           *int            `json:"best_of"`
	Logprobs         *int            `json:"logprobs"` // alternatives per token, 0..20
	Echo             bool            `json:"echo"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	User             string          `json:"user"`
}

// chatRequest is the body of POST /v1/chat/completions; unknown fields are refused as for
// completionRequest.
type chatRequest struct {
	Model               string          `json:"model"`
	Messages            []chatMessage   `json:"messages"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	TopK                *int            `json:"top_k"`
	Seed                *int64          `json:"seed"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	Stop                json.RawMessage `json:"stop"`
	N                   *int            `json:"n"`
	Logprobs            bool            `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"` // alternatives per token, 0..20; needs logprobs
	PresencePenalty     *float64        `json:"presence_penalty"`
	FrequencyPenalty    *float64        `json:"frequency_penalty"`
	User                string          `json:"user"`
}

// streamOptions is OpenAI's stream_options: include_usage adds a last chunk with the
// request's usage and no choices.
type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// samplingFields are the fields both endpoints validate alike.
type samplingFields struct {
	model            string
	maxTokens        *int
	temperature      *float64
	topP             *float64
	topK             *int
	seed             *int64
	stop             json.RawMessage
	n                *int
	presencePenalty  *float64
	frequencyPenalty *float64
	stream           bool
	streamOptions    *streamOptions
}

// chatMessage is one message; content is a string or a list of content parts, of which
// only text parts are read (the model reads text).
type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
	Name    string          `json:"name"`
}

// apiError is OpenAI's error object.
type apiError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"`
	Code    string `json:"code,omitempty"`
}

// requestError is a refusal with its HTTP status.
type requestError struct {
	status int
	apiError
}

func (e *requestError) Error() string { return e.Message }

func badRequest(param, format string, args ...any) *requestError {
	return &requestError{status: 400, apiError: apiError{Message: fmt.Sprintf(format, args...), Type: "invalid_request_error", Param: param}}
}

// maxLogprobs is the most alternatives per token a request may ask for (OpenAI's limit
// for top_logprobs).
const maxLogprobs = 20

// maxChoices is OpenAI's limit on n.
const maxChoices = 128

// sampling is what a request asks of the scheduler, after defaults and limits.
type sampling struct {
	prompt       []byte
	promptIDs    []int32 // the prompt's token ids: its bytes, or the tokenizer's ids
	templated    bool    // the prompt is a chat template's output
	maxTokens    int
	temperature  float64
	topK         int
	topP         float64
	seed         int64
	seeded       bool // the request gave its seed; otherwise the server drew it
	stop         []string
	stream       bool
	includeUsage bool // stream_options.include_usage
	n            int  // choices
	logprobs     bool // report each token's log-probability
	topLogprobs  int  // and this many alternatives
	penalties    penalties
}

// common validates the fields both endpoints share.
func (s *Server) common(f samplingFields) (sampling, *requestError) {
	model, maxTokens, temperature, topK, seed, stop, n := f.model, f.maxTokens, f.temperature, f.topK, f.seed, f.stop, f.n
	sp := sampling{maxTokens: s.opt.DefaultMaxTokens, temperature: 1, topP: 1, n: 1, stream: f.stream}
	if model != "" && model != s.name {
		return sp, &requestError{status: 404, apiError: apiError{
			Message: fmt.Sprintf("model %q is not served here; this server serves %q", model, s.name),
			Type:    "invalid_request_error", Param: "model", Code: "model_not_found"}}
	}
	if n != nil {
		limit := min(maxChoices, s.opt.QueueDepth)
		if *n < 1 || *n > limit {
			return sp, badRequest("n", "n = %d: it must be between 1 and %d (each choice waits in the queue of %d)", *n, limit, s.opt.QueueDepth)
		}
		sp.n = *n
	}
	if f.streamOptions != nil {
		if !f.stream {
			return sp, badRequest("stream_options", "stream_options is only allowed when stream is true")
		}
		sp.includeUsage = f.streamOptions.IncludeUsage
	}
	if maxTokens != nil {
		if *maxTokens < 1 || *maxTokens > s.opt.MaxTokens {
			return sp, badRequest("max_tokens", "max_tokens = %d: it must be between 1 and %d", *maxTokens, s.opt.MaxTokens)
		}
		sp.maxTokens = *maxTokens
	}
	if temperature != nil {
		t := *temperature
		if t < 0 || t > 2 || math.IsNaN(t) {
			return sp, badRequest("temperature", "temperature = %g: it must be between 0 and 2", t)
		}
		sp.temperature = t
	}
	if f.topP != nil {
		p := *f.topP
		if p < 0 || p > 1 || math.IsNaN(p) {
			return sp, badRequest("top_p", "top_p = %g: it must be between 0 and 1", p)
		}
		sp.topP = p
	}
	for _, pen := range []struct {
		name string
		v    *float64
		to   *float64
	}{{"presence_penalty", f.presencePenalty, &sp.penalties.presence}, {"frequency_penalty", f.frequencyPenalty, &sp.penalties.frequency}} {
		if pen.v == nil {
			continue
		}
		if v := *pen.v; v < -2 || v > 2 || math.IsNaN(v) {
			return sp, badRequest(pen.name, "%s = %g: it must be between -2 and 2", pen.name, v)
		}
		*pen.to = *pen.v
	}
	if topK != nil {
		if *topK < 0 {
			return sp, badRequest("top_k", "top_k = %d: it must not be negative (0 = all tokens)", *topK)
		}
		sp.topK = *topK
	}
	if seed != nil {
		sp.seed, sp.seeded = *seed, true
	} else {
		sp.seed = s.seeds.draw()
	}
	var err *requestError
	sp.stop, err = parseStop(stop)
	return sp, err
}

// checkLogprobs validates a number of alternatives per token.
func checkLogprobs(param string, v int) *requestError {
	if v < 0 || v > maxLogprobs {
		return badRequest(param, "%s = %d: it must be between 0 and %d", param, v, maxLogprobs)
	}
	return nil
}

// parseStop reads OpenAI's stop: null, a string, or a list of up to 4 non-empty strings.
func parseStop(raw json.RawMessage) ([]string, *requestError) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, badRequest("stop", "stop must be a string or a list of strings")
	}
	if len(list) > 4 {
		return nil, badRequest("stop", "stop has %d strings; at most 4 are allowed", len(list))
	}
	var out []string
	for _, s := range list {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// parsePrompt reads a prompt: a string or a list holding one string. A missing prompt is
// a mistake (the empty string is a prompt: the start of a document).
func parsePrompt(raw json.RawMessage) (string, *requestError) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", badRequest("prompt", "prompt is missing; give a string (\"\" starts a new document)")
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", badRequest("prompt", "prompt must be a string or a list of one string (token ids are not accepted: the model reads bytes)")
	}
	if len(list) != 1 {
		return "", badRequest("prompt", "prompt is a list of %d strings; this server answers one prompt per request", len(list))
	}
	return list[0], nil
}

// chatStop ends an assistant turn where the template would start the next user turn.
const chatStop = "\nuser:"

// renderChat applies the chat template: "<role>: <content>\n" per message (or
// "<role> (<name>): <content>\n" for a message with a name), then "assistant:". Roles are
// system, user and assistant (developer is read as system).
func renderChat(msgs []chatMessage) (string, *requestError) {
	if len(msgs) == 0 {
		return "", badRequest("messages", "messages is empty; give at least one message")
	}
	var b strings.Builder
	for i, m := range msgs {
		role := m.Role
		switch role {
		case "system", "user", "assistant":
		case "developer":
			role = "system"
		default:
			return "", badRequest(fmt.Sprintf("messages[%d].role", i), "role %q is not one of system, user, assistant", m.Role)
		}
		content, err := messageText(i, m.Content)
		if err != nil {
			return "", err
		}
		if m.Name != "" {
			role += " (" + m.Name + ")"
		}
		fmt.Fprintf(&b, "%s: %s\n", role, content)
	}
	b.WriteString("assistant:")
	return b.String(), nil
}

// messageText reads a message's content: a string, or a list of content parts whose text
// parts are joined by newlines. A part of another type (image_url, input_audio, file…) is
// refused by name: the model reads text only.
func messageText(i int, raw json.RawMessage) (string, *requestError) {
	param := fmt.Sprintf("messages[%d].content", i)
	if len(raw) == 0 || string(raw) == "null" {
		return "", badRequest(param, "%s is missing; give a string or a list of text parts", param)
	}
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return text, nil
	}
	var parts []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", badRequest(param, "%s must be a string or a list of content parts like {\"type\": \"text\", \"text\": \"...\"}", param)
	}
	texts := make([]string, 0, len(parts))
	for k, p := range parts {
		pp := fmt.Sprintf("%s[%d]", param, k)
		var typ string
		if err := json.Unmarshal(p["type"], &typ); err != nil || typ == "" {
			return "", badRequest(pp+".type", "%s has no type; a text part is {\"type\": \"text\", \"text\": \"...\"}", pp)
		}
		if typ != "text" {
			return "", badRequest(pp+".type", "%s is a %q part; this model reads text only, so only \"text\" parts are accepted", pp, typ)
		}
		for key := range p {
			if key != "type" && key != "text" {
				return "", badRequest(pp+"."+key, "%s has an unknown field %q; a text part has type and text", pp, key)
			}
		}
		var t string
		if err := json.Unmarshal(p["text"], &t); err != nil {
			return "", badRequest(pp+".text", "%s.text must be a string", pp)
		}
		texts = append(texts, t)
	}
	return strings.Join(texts, "\n"), nil
}
