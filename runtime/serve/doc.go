// Package serve serves a trained byte-level checkpoint over HTTP with an OpenAI-compatible
// API: POST /v1/completions and /v1/chat/completions (JSON, or server-sent events with
// "stream": true), GET /v1/models, /healthz and /metrics (Prometheus text format).
//
// In: an *nn.Model (Load reads one from a checkpoint or run directory) and Options: slots,
// queue depth, per-request timeout and input limits.
//
// Out: an http.Handler. One scheduler goroutine owns a batched nn.Decoder with Options.Slots
// slots and runs continuous batching: between two decoding steps a waiting request takes a
// free slot (starting at position 0 while the others go on) and a finished or abandoned one
// leaves. Each request samples from its own stream, keyed by its seed and its token index,
// so its text does not depend on which requests it shared the decoder with. Requests that
// find every slot busy wait in a bounded queue; a full queue is a 429, a request past its
// timeout a 504, and inputs beyond the limits a 400 or 413 that says which limit.
//
// The chat template (the model is byte-level and has no special tokens) renders each
// message as "<role>: <content>\n" and then "assistant:", and stops generation at "\nuser:"
// besides any stop strings the request gives.
package serve
