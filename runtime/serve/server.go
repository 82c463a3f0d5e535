package serve

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/data"
	"github.com/moec-dev/moec/runtime/gpu"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/tokenizer"
	"github.com/moec-dev/moec/runtime/train"
)

// Options bound what the server accepts and how much it does at once. Zero fields take the
// defaults in brackets.
type Options struct {
	Slots            int           // sequences decoded together in one batched step [4]
	PrefillChunk     int           // prompt tokens one step reads, all slots together, besides each decoding slot's token [256]
	QueueDepth       int           // choices that may wait for a slot; more get 429 [64]
	Timeout          time.Duration // per request, queueing included [2m]
	MaxPromptBytes   int           // longest prompt (chat: the rendered conversation) [16384]
	MaxTokens        int           // largest max_tokens a request may ask for [2048]
	DefaultMaxTokens int           // max_tokens when a request gives none [128]
	MaxBodyBytes     int64         // largest request body [1 MiB]
	MaxConns         int           // connections held at once (Serve); more wait to be accepted [256]
	ReadTimeout      time.Duration // to read a request's headers, and then its body (Serve) [10s]
	IdleTimeout      time.Duration // a keep-alive connection's wait for its next request (Serve) [60s]
	DrainTimeout     time.Duration // on shutdown, how long requests in flight may take to finish (Serve) [20s]
	Log              io.Writer     // where Serve says what it does on shutdown; nil: nowhere
	// Tokenizer reads prompts and writes text as token ids; nil: each byte is a token.
	// TokenizerConfig is what its tokenizer_config.json and generation_config.json say
	// (end-of-sequence ids, which end a choice as a stop string does; the chat template).
	Tokenizer       *tokenizer.Tokenizer
	TokenizerConfig tokenizer.Config
	// Device decodes on a GPU through moec's generated CUDA (cuda) or its CPU emulation
	// (cuda-emulated); "": runtime/nn on the CPU. BF16 runs the device's weight products in
	// bfloat16 with float32 sums.
	Device string
	BF16   bool
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDuration := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Slots, 4)
	def(&o.PrefillChunk, 256)
	def(&o.QueueDepth, 64)
	def(&o.MaxPromptBytes, 16384)
	def(&o.MaxTokens, 2048)
	def(&o.DefaultMaxTokens, 128)
	def(&o.MaxConns, 256)
	o.DefaultMaxTokens = min(o.DefaultMaxTokens, o.MaxTokens)
	defDuration(&o.Timeout, 2*time.Minute)
	defDuration(&o.ReadTimeout, 10*time.Second)
	defDuration(&o.IdleTimeout, time.Minute)
	defDuration(&o.DrainTimeout, 20*time.Second)
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o
}

// Server answers the OpenAI-style endpoints for one model. Close stops its scheduler.
type Server struct {
	name     string
	opt      Options
	created  int64 // unix time the server started: the model's "created"
	sched    *scheduler
	m        *metrics
	mux      *http.ServeMux
	ids      atomic.Int64
	seeds    *seedSource
	chat     *chatTemplate // the tokenizer's chat template; nil: "role: content" lines
	draining atomic.Bool   // Serve is shutting down: health says so
	device   *gpu.Feeder   // the GPU decoder (Options.Device); nil on the CPU
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

// seedSource draws the seeds of requests that give none, so that two identical unseeded
// requests sample apart. It is the server's own: a ChaCha8 stream keyed from crypto/rand
// when the server starts.
type seedSource struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newSeedSource() *seedSource {
	var key [32]byte
	_, _ = cryptorand.Read(key[:]) // never fails (crypto/rand.Read panics rather than return an error)
	return &seedSource{r: rand.New(rand.NewChaCha8(key))}
}

// draw returns a fresh non-negative seed.
func (s *seedSource) draw() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.Int64()
}

// Load reads the model of a checkpoint directory, or of a run directory's newest
// checkpoint, and names it after its train and stage ("train/stage").
func Load(dir string) (*nn.Model, string, error) {
	ckpt, err := train.ResolveCheckpoint(dir)
	if err != nil {
		return nil, "", err
	}
	net, man, err := train.LoadNet(ckpt, nil)
	if err != nil {
		return nil, "", err
	}
	m, ok := net.(*nn.Model)
	if !ok {
		return nil, "", fmt.Errorf("serve: the model of %s has no decoder", ckpt)
	}
	name := m.Config().Name
	if man.Train != "" && man.Stage != "" {
		name = man.Train + "/" + man.Stage
	}
	return m, name, nil
}

// New starts the scheduler for m (served under name) and returns the server.
func New(m *nn.Model, name string, opt Options) (*Server, error) {
	opt = opt.withDefaults()
	s := &Server{name: name, opt: opt, mux: http.NewServeMux(), created: time.Now().Unix(), seeds: newSeedSource(), chat: newChatTemplate(opt)}
	var queue func() int
	s.m = newMetrics(opt.Slots, opt.QueueDepth, func() int { return queue() })
	usable := data.Vocab
	if opt.Tokenizer != nil {
		usable = opt.Tokenizer.VocabSize()
	}
	var dec feeder // nil: runtime/nn's
	if opt.Device != "" {
		f, err := openDevice(context.Background(), m, opt) // gpu.go
		if err != nil {
			return nil, err
		}
		s.device, dec = f, f
	}
	sched, err := newScheduler(m, dec, opt.Slots, opt.QueueDepth, usable, opt.PrefillChunk, s.m)
	if err != nil {
		s.closeDevice()
		return nil, err
	}
	queue = func() int { return len(sched.queue) }
	s.sched = sched
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sched.run(ctx)
	}()
	s.mux.HandleFunc("POST /v1/completions", s.handleCompletions)
	s.mux.HandleFunc("POST /v1/chat/completions", s.handleChat)
	s.mux.HandleFunc("GET /v1/models", s.handleModels)
	s.mux.HandleFunc("GET /v1/models/{id...}", s.handleModel) // the name holds a slash: train/stage
	s.mux.HandleFunc("GET /healthz", s.handleHealth)
	s.mux.Handle("GET /metrics", s.m.handler())
	return s, nil
}

// Handler is the server's HTTP interface.
func (s *Server) Handler() http.Handler { return s.mux }

// Name is the model name requests may give.
func (s *Server) Name() string { return s.name }

// Close stops the scheduler; running and waiting requests end with an error.
func (s *Server) Close() {
	s.stop()
	s.wg.Wait()
	s.closeDevice()
}

// closeDevice releases the GPU decoder's device memory (none on the CPU; a second call
// does nothing).
func (s *Server) closeDevice() {
	if s.device == nil {
		return
	}
	if err := s.device.Close(); err != nil {
		fmt.Fprintf(s.opt.Log, "serve: releasing the device: %v\n", err)
	}
}

// Serve answers HTTP on ln until ctx ends, then drains: it stops accepting connections and
// lets the requests in flight and in the queue finish for up to Options.DrainTimeout; those
// still running then end as Close ends them (an error event and [DONE], or a 503). Serve
// bounds what a client can hold: at most MaxConns connections at once (the rest wait to be
// accepted), ReadTimeout to send the headers and again the body, IdleTimeout between two
// requests on a connection. It closes the server before it returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer s.Close()
	hs := &http.Server{Handler: s.mux, ReadHeaderTimeout: s.opt.ReadTimeout, IdleTimeout: s.opt.IdleTimeout,
		ErrorLog: log.New(s.opt.Log, "serve: ", 0)}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(netutil.LimitListener(ln, s.opt.MaxConns)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.draining.Store(true)
	fmt.Fprintf(s.opt.Log, "serve: shutting down: no new connections; requests in flight have %v to finish\n", s.opt.DrainTimeout)
	drain, cancel := context.WithTimeout(context.Background(), s.opt.DrainTimeout)
	defer cancel()
	if err := hs.Shutdown(drain); err == nil {
		<-errc
		return nil
	}
	fmt.Fprintf(s.opt.Log, "serve: the requests still running after %v end with an error\n", s.opt.DrainTimeout)
	s.Close() // ends streams with an error event, queued requests with 503
	last, cancelLast := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelLast()
	if err := hs.Shutdown(last); err != nil {
		_ = hs.Close() // a handler that cannot write its error: cut its connection
	}
	<-errc
	return nil
}

// endpoint kinds: the two differ only in how the request reads and the answer is shaped.
const (
	kindCompletion = "completions"
	kindChat       = "chat/completions"
)

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req completionRequest
	if e := s.decode(w, r, &req); e != nil {
		s.fail(w, kindCompletion, start, e)
		return
	}
	sp, e := s.common(samplingFields{model: req.Model, maxTokens: req.MaxTokens, temperature: req.Temperature, topP: req.TopP, topK: req.TopK,
		seed: req.Seed, stop: req.Stop, n: req.N, presencePenalty: req.PresencePenalty, frequencyPenalty: req.FrequencyPenalty,
		stream: req.Stream, streamOptions: req.StreamOptions})
	if e == nil && req.BestOf != nil && *req.BestOf != sp.n {
		e = badRequest("best_of", "best_of = %d: this server returns every choice it samples, so best_of must equal n (%d)", *req.BestOf, sp.n)
	}
	if e == nil && req.Logprobs != nil {
		e = checkLogprobs("logprobs", *req.Logprobs)
		if e == nil && req.Echo {
			e = badRequest("logprobs", "logprobs with echo: the log-probabilities of prompt tokens are not computed; leave one out")
		}
		sp.logprobs, sp.topLogprobs = true, *req.Logprobs
	}
	var prompt string
	if e == nil {
		prompt, e = parsePrompt(req.Prompt)
	}
	if e != nil {
		s.fail(w, kindCompletion, start, e)
		return
	}
	sp.prompt = []byte(prompt)
	if e := s.tokenizePrompt(&sp); e != nil {
		s.fail(w, kindCompletion, start, e)
		return
	}
	s.serve(w, r, kindCompletion, start, sp, req.Echo)
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req chatRequest
	if e := s.decode(w, r, &req); e != nil {
		s.fail(w, kindChat, start, e)
		return
	}
	maxTokens := req.MaxTokens
	if req.MaxCompletionTokens != nil {
		maxTokens = req.MaxCompletionTokens
	}
	sp, e := s.common(samplingFields{model: req.Model, maxTokens: maxTokens, temperature: req.Temperature, topP: req.TopP, topK: req.TopK,
		seed: req.Seed, stop: req.Stop, n: req.N, presencePenalty: req.PresencePenalty, frequencyPenalty: req.FrequencyPenalty,
		stream: req.Stream, streamOptions: req.StreamOptions})
	if e == nil && req.TopLogprobs != nil {
		e = checkLogprobs("top_logprobs", *req.TopLogprobs)
		if e == nil && !req.Logprobs {
			e = badRequest("top_logprobs", "top_logprobs needs logprobs: true")
		}
		sp.topLogprobs = *req.TopLogprobs
	}
	sp.logprobs = req.Logprobs
	var prompt string
	if e == nil && s.chat != nil {
		prompt, e = s.renderTemplate(req.Messages)
		sp.templated = true
	} else if e == nil {
		prompt, e = renderChat(req.Messages)
	}
	if e != nil {
		s.fail(w, kindChat, start, e)
		return
	}
	sp.prompt = []byte(prompt)
	if !sp.templated {
		sp.stop = append(sp.stop, chatStop)
	}
	if e := s.tokenizePrompt(&sp); e != nil {
		s.fail(w, kindChat, start, e)
		return
	}
	s.serve(w, r, kindChat, start, sp, false)
}

// decode reads a JSON body: Content-Type application/json (or none), within the size limit
// and ReadTimeout, one JSON object and nothing after it.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) *requestError {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return &requestError{status: http.StatusUnsupportedMediaType, apiError: apiError{
				Message: fmt.Sprintf("Content-Type %q: the body must be JSON, sent as application/json (curl: -H 'Content-Type: application/json')", ct),
				Type:    "invalid_request_error", Code: "unsupported_media_type"}}
		}
	}
	// A client that sends its headers and then trickles (or withholds) its body must not
	// hold the connection past ReadTimeout. The deadline is lifted once the body is read, so
	// a long answer is not cut (the server's background read of a finished body would
	// otherwise end the request's context when it fires).
	rc := http.NewResponseController(w)
	deadline := rc.SetReadDeadline(time.Now().Add(s.opt.ReadTimeout)) == nil
	r.Body = http.MaxBytesReader(w, r.Body, s.opt.MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	e := s.readJSON(dec, v)
	if e != nil {
		// A refused body may be unread (too large, too slow, data after the object): the
		// connection closes after the answer instead of waiting for the rest.
		w.Header().Set("Connection", "close")
		return e
	}
	if deadline {
		_ = rc.SetReadDeadline(time.Time{})
	}
	return nil
}

// readJSON decodes one JSON object into v and checks nothing follows it.
func (s *Server) readJSON(dec *json.Decoder, v any) *requestError {
	if err := dec.Decode(v); err != nil {
		return s.bodyError(err, v)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil {
			if e := s.bodyError(err, v); e.status != http.StatusBadRequest {
				return e // too large, or too slow
			}
		}
		return badRequest("", "the request body has data after its JSON object; send exactly one object")
	}
	return nil
}

// bodyError says why the body of a request for v could not be read.
func (s *Server) bodyError(err error, v any) *requestError {
	var tooBig *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooBig):
		return &requestError{status: http.StatusRequestEntityTooLarge, apiError: apiError{
			Message: fmt.Sprintf("the request body is larger than the limit of %d bytes", s.opt.MaxBodyBytes),
			Type:    "invalid_request_error", Code: "request_too_large"}}
	case errors.As(err, &netErr) && netErr.Timeout():
		return &requestError{status: http.StatusRequestTimeout, apiError: apiError{
			Message: fmt.Sprintf("the request body did not arrive within %v", s.opt.ReadTimeout),
			Type:    "invalid_request_error", Code: "request_timeout"}}
	}
	// encoding/json has no typed error for an unknown field; its message is
	// `json: unknown field "NAME"`.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		e := badRequest(name, "Unrecognized request argument supplied: %s", name)
		if c, ok := diag.Closest(name, jsonFields(v)); ok {
			e.Message += fmt.Sprintf(" (did you mean %s?)", c)
		}
		return e
	}
	return badRequest("", "the request body is not valid JSON for this endpoint: %v", err)
}

// jsonFields lists the JSON names of the fields of the struct v points to.
func jsonFields(v any) []string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// serve runs one request's choices through the scheduler and writes the answer, streamed
// or whole.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, kind string, start time.Time, sp sampling, echo bool) {
	promptTokens := len(sp.promptIDs)
	if len(sp.prompt) > s.opt.MaxPromptBytes {
		s.fail(w, kind, start, &requestError{status: 400, apiError: apiError{
			Message: fmt.Sprintf("the prompt is %d bytes; the limit is %d", len(sp.prompt), s.opt.MaxPromptBytes),
			Type:    "invalid_request_error", Param: "prompt", Code: "context_length_exceeded"}})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opt.Timeout)
	defer cancel()
	jobs, cancels, out := newJobs(ctx, sp)
	for _, j := range jobs {
		if !s.sched.submit(j) {
			cancel() // the choices already queued leave when the scheduler reaches them
			w.Header().Set("Retry-After", "1")
			s.fail(w, kind, start, &requestError{status: http.StatusTooManyRequests, apiError: apiError{
				Message: fmt.Sprintf("the server is busy: %d choices are already waiting for one of %d slots; retry later", s.opt.QueueDepth, s.opt.Slots),
				Type:    "server_error", Code: "queue_full"}})
			return
		}
	}
	a := &answer{s: s, w: w, kind: kind, id: s.newID(kind), created: time.Now().Unix(), stream: sp.stream,
		includeUsage: sp.includeUsage, logprobs: sp.logprobs, choices: make([]choiceState, sp.n)}
	for i := range a.choices {
		a.choices[i].text.stops = sp.stop
		if s.opt.Tokenizer != nil {
			a.choices[i].detok = s.opt.Tokenizer.NewStream(true)
		}
	}
	if echo {
		a.prefix = string(sp.prompt)
	}
	// The seed the request sampled with, drawn or given: with it the answer can be had again.
	w.Header().Set("X-Moec-Seed", strconv.FormatInt(sp.seed, 10))
	if sp.stream {
		a.begin()
	}
	lastToken := make([]time.Time, sp.n)
	first := true
	running := sp.n
	var batch []event
	for running > 0 {
		select {
		case <-out.ready:
			batch = out.take(batch)
		case <-s.sched.done:
			batch = append(out.take(batch), event{choice: -1, done: true, err: errShuttingDown})
		case <-ctx.Done():
			batch = append(batch[:0], event{choice: -1, done: true, err: ctx.Err()})
		}
		for _, ev := range batch {
			if running == 0 {
				break
			}
			if ev.choice >= 0 && a.choices[ev.choice].finish != "" {
				continue // a choice that met a stop string: what its job sends after is not wanted
			}
			if ev.done && ev.err != nil {
				e := s.jobError(r, ev.err)
				s.m.observeRequest(kind, e.status, time.Since(start), promptTokens, 0)
				if a.started {
					a.abort(e) // the status line is gone; the stream ends with an error event
					return
				}
				writeJSON(w, e.status, map[string]any{"error": e.apiError})
				return
			}
			c := &a.choices[ev.choice]
			if ev.done {
				if c.detok != nil {
					chunk, stopped := c.addBytes(c.detok.Flush())
					a.text(ev.choice, chunk)
					if stopped {
						a.finish(ev.choice, "stop")
						running--
						continue
					}
				}
				a.text(ev.choice, c.text.flush())
				a.finish(ev.choice, "length")
				running--
				continue
			}
			if first {
				s.m.observeFirstToken(ev.at.Sub(start))
				first = false
			}
			if t := lastToken[ev.choice]; !t.IsZero() {
				s.m.observeInterToken(ev.at.Sub(t))
			}
			lastToken[ev.choice] = ev.at
			c.generated++
			if ev.logprob != nil {
				c.logprobs = append(c.logprobs, *ev.logprob)
			}
			chunk, stopped := s.addToken(c, ev.tok)
			a.text(ev.choice, chunk)
			if stopped {
				cancels[ev.choice]() // frees the slot at the scheduler's next step
				a.finish(ev.choice, "stop")
				running--
			}
		}
	}
	a.end(promptTokens)
	s.m.observeRequest(kind, http.StatusOK, time.Since(start), promptTokens, a.usage(promptTokens).CompletionTokens)
}

// jobError says why a job ended early, for the client.
func (s *Server) jobError(r *http.Request, err error) *requestError {
	switch {
	case r.Context().Err() != nil:
		// 499 (nginx's "client closed request") only reaches the metrics: nobody reads it.
		return &requestError{status: 499, apiError: apiError{Message: "the client closed the request", Type: "client_error"}}
	case errors.Is(err, context.DeadlineExceeded):
		return &requestError{status: http.StatusGatewayTimeout, apiError: apiError{
			Message: fmt.Sprintf("the request took longer than the server's timeout of %v", s.opt.Timeout),
			Type:    "server_error", Code: "timeout"}}
	case errors.Is(err, errShuttingDown):
		return &requestError{status: http.StatusServiceUnavailable, apiError: apiError{Message: err.Error(), Type: "server_error", Code: "shutting_down"}}
	default:
		return &requestError{status: http.StatusInternalServerError, apiError: apiError{Message: err.Error(), Type: "server_error"}}
	}
}

func (s *Server) newID(kind string) string {
	prefix := "cmpl-"
	if kind == kindChat {
		prefix = "chatcmpl-"
	}
	return prefix + strconv.FormatInt(s.ids.Add(1), 10)
}

// fail writes an OpenAI error object with e's status and counts the request.
func (s *Server) fail(w http.ResponseWriter, kind string, start time.Time, e *requestError) {
	s.m.observeRequest(kind, e.status, time.Since(start), 0, 0)
	writeJSON(w, e.status, map[string]any{"error": e.apiError})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may be gone; there is nobody left to tell
}

func (s *Server) model() map[string]any {
	return map[string]any{"id": s.name, "object": "model", "created": s.created, "owned_by": "moec"}
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{s.model()}})
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	if id := r.PathValue("id"); id != s.name {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": apiError{
			Message: fmt.Sprintf("model %q is not served here; this server serves %q", id, s.name),
			Type:    "invalid_request_error", Param: "model", Code: "model_not_found"}})
		return
	}
	writeJSON(w, http.StatusOK, s.model())
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.sched.done:
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "stopped"})
		return
	default:
	}
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "draining"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "model": s.name, "slots": s.opt.Slots,
		"queued": len(s.sched.queue), "queue_capacity": s.opt.QueueDepth})
}
