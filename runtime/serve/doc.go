// Package serve serves a trained byte-level checkpoint over HTTP with an OpenAI-compatible
// API: POST /v1/completions and /v1/chat/completions (JSON, or server-sent events with
// "stream": true), GET /v1/models and /v1/models/{id}, /healthz and /metrics (Prometheus).
//
// In: an *nn.Model (Load reads one from a checkpoint or run directory) and Options: slots,
// queue depth, per-request timeout, input limits, and for Serve the connection cap, read
// and idle timeouts and the drain time.
//
// Out: an http.Handler, or Serve, which runs it on a listener with those bounds and drains
// when its context ends. One scheduler goroutine owns a batched nn.Decoder with
// Options.Slots slots and runs continuous batching: between two decoding steps a waiting
// choice takes a free slot (starting at position 0 while the others go on) and a finished
// or abandoned one leaves. A step feeds each decoding slot its one token and, beside them, up
// to Options.PrefillChunk tokens of the prompts being read (oldest first), as one batched
// forward (nn.Decoder.Feed, or with Options.Device runtime/gpu's Feeder: the same steps
// through moec's generated CUDA): chunked prefill, so a prompt of P tokens reaches its first token
// in ceil(P/PrefillChunk) steps without holding the others back; a context read again after
// the cache filled is read the same way. A request with n choices is n jobs. Each choice samples from its
// own stream, keyed by the request's seed, its token index and the choice index, so its
// text does not depend on which requests it shared the decoder with; choice 0 is what
// `moec generate` writes with the same seed. A request without a seed gets one drawn from
// the server's own random source (X-Moec-Seed reports it). Choices that find every slot
// busy wait in a bounded queue; a full queue is a 429, a request past its timeout a 504,
// and inputs beyond the limits a 400, 413 or 415 that says which limit.
//
// Sampling applies OpenAI's presence and frequency penalties (over the generated tokens),
// then temperature, top-k and top-p. Log-probabilities are the model's own (log-softmax of
// the raw logits, before penalties and temperature); a byte that is not a whole character
// is named "bytes:\xNN" as OpenAI names such tokens.
//
// The chat template (the model is byte-level and has no special tokens) renders each
// message as "<role>: <content>\n" ("<role> (<name>): …" for a message with a name; text
// parts joined by newlines) and then "assistant:", and stops generation at "\nuser:"
// besides any stop strings the request gives.
//
// With Options.Tokenizer (a Hugging Face tokenizer.json: `moec serve --tokenizer`, or the
// one kept with the checkpoint) prompts are its ids, with the BOS its post-processor adds,
// sampling ranges over its ids, text is its decoding (special tokens left out) and an
// end-of-sequence id from generation_config.json or tokenizer_config.json ends a choice with
// finish_reason "stop". A chat request to a model whose tokenizer_config.json has a chat
// template is rendered with it (runtime/chattemplate, as apply_chat_template with the
// generation prompt) and encoded without adding special tokens; a template outside the
// Jinja subset runtime/chattemplate reads is refused (501) naming what it met, and one that
// raises answers 400 with its message. Logprobs are reported for byte-level models only.
package serve
