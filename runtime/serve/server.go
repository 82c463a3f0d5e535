package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/train"
)

// Options bound what the server accepts and how much it does at once. Zero fields take the
// defaults in brackets.
type Options struct {
	Slots            int           // sequences decoded together in one batched step [4]
	QueueDepth       int           // requests that may wait for a slot; more get 429 [64]
	Timeout          time.Duration // per request, queueing included [2m]
	MaxPromptBytes   int           // longest prompt (chat: the rendered conversation) [16384]
	MaxTokens        int           // largest max_tokens a request may ask for [2048]
	DefaultMaxTokens int           // max_tokens when a request gives none [128]
	MaxBodyBytes     int64         // largest request body [1 MiB]
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Slots, 4)
	def(&o.QueueDepth, 64)
	def(&o.MaxPromptBytes, 16384)
	def(&o.MaxTokens, 2048)
	def(&o.DefaultMaxTokens, 128)
	o.DefaultMaxTokens = min(o.DefaultMaxTokens, o.MaxTokens)
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	return o
}

// Server answers the OpenAI-style endpoints for one model. Close stops its scheduler.
type Server struct {
	name  string
	opt   Options
	sched *scheduler
	m     *metrics
	mux   *http.ServeMux
	ids   atomic.Int64
	stop  context.CancelFunc
	wg    sync.WaitGroup
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
	s := &Server{name: name, opt: opt, mux: http.NewServeMux()}
	var queue func() int
	s.m = newMetrics(opt.Slots, opt.QueueDepth, func() int { return queue() })
	sched, err := newScheduler(m, opt.Slots, opt.QueueDepth, s.m)
	if err != nil {
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
	s.mux.HandleFunc("GET /healthz", s.handleHealth)
	s.mux.HandleFunc("GET /metrics", s.handleMetrics)
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
		seed: req.Seed, stop: req.Stop, n: req.N, presencePenalty: req.PresencePenalty, frequencyPenalty: req.FrequencyPenalty})
	if e == nil && req.BestOf != nil && *req.BestOf != 1 {
		e = badRequest("best_of", "best_of = %d: this server returns one choice per request", *req.BestOf)
	}
	if e == nil && len(req.Logprobs) > 0 && string(req.Logprobs) != "null" {
		e = badRequest("logprobs", "logprobs are not supported")
	}
	var prompt string
	if e == nil {
		prompt, e = parsePrompt(req.Prompt)
	}
	if e != nil {
		s.fail(w, kindCompletion, start, e)
		return
	}
	sp.prompt, sp.stream = []byte(prompt), req.Stream
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
		seed: req.Seed, stop: req.Stop, n: req.N, presencePenalty: req.PresencePenalty, frequencyPenalty: req.FrequencyPenalty})
	if e == nil && req.Logprobs {
		e = badRequest("logprobs", "logprobs are not supported")
	}
	var prompt string
	if e == nil {
		prompt, e = renderChat(req.Messages)
	}
	if e != nil {
		s.fail(w, kindChat, start, e)
		return
	}
	sp.prompt, sp.stream = []byte(prompt), req.Stream
	sp.stop = append(sp.stop, chatStop)
	s.serve(w, r, kindChat, start, sp, false)
}

// decode reads a JSON body within the size limit.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) *requestError {
	r.Body = http.MaxBytesReader(w, r.Body, s.opt.MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &requestError{status: http.StatusRequestEntityTooLarge, apiError: apiError{
				Message: fmt.Sprintf("the request body is larger than the limit of %d bytes", s.opt.MaxBodyBytes),
				Type:    "invalid_request_error", Code: "request_too_large"}}
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
	return nil
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

// serve runs one request through the scheduler and writes the answer, streamed or whole.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, kind string, start time.Time, sp sampling, echo bool) {
	if len(sp.prompt) > s.opt.MaxPromptBytes {
		s.fail(w, kind, start, &requestError{status: 400, apiError: apiError{
			Message: fmt.Sprintf("the prompt is %d bytes; the limit is %d", len(sp.prompt), s.opt.MaxPromptBytes),
			Type:    "invalid_request_error", Param: "prompt", Code: "context_length_exceeded"}})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opt.Timeout)
	defer cancel()
	j := newJob(ctx, sp.prompt, sp.maxTokens, sp.temperature, sp.topK, sp.topP, sp.seed)
	if !s.sched.submit(j) {
		w.Header().Set("Retry-After", "1")
		s.fail(w, kind, start, &requestError{status: http.StatusTooManyRequests, apiError: apiError{
			Message: fmt.Sprintf("the server is busy: %d requests are already waiting for one of %d slots; retry later", s.opt.QueueDepth, s.opt.Slots),
			Type:    "server_error", Code: "queue_full"}})
		return
	}
	a := &answer{s: s, w: w, kind: kind, id: s.newID(kind), created: time.Now().Unix(), stream: sp.stream}
	if echo {
		a.prefix = string(sp.prompt)
	}
	if sp.stream {
		a.begin()
	}
	ts := &textStream{stops: sp.stop}
	generated := 0
	for {
		var ev event
		select {
		case ev = <-j.events:
		case <-s.sched.done:
			ev = event{done: true, err: errShuttingDown}
		case <-ctx.Done():
			ev = event{done: true, err: ctx.Err()}
		}
		if !ev.done {
			generated++
			chunk, stopped := ts.add(ev.tok)
			a.text(chunk)
			if stopped {
				cancel() // frees the slot at the scheduler's next step
				a.finish(ts.text(), "stop", len(sp.prompt), generated)
				s.m.observeRequest(kind, http.StatusOK, time.Since(start), len(sp.prompt))
				return
			}
			continue
		}
		if ev.err == nil {
			a.text(ts.flush())
			a.finish(ts.text(), "length", len(sp.prompt), generated)
			s.m.observeRequest(kind, http.StatusOK, time.Since(start), len(sp.prompt))
			return
		}
		e := s.jobError(r, ev.err)
		if a.started {
			a.abort(e) // the status line is gone; the stream ends with an error event
			s.m.observeRequest(kind, e.status, time.Since(start), len(sp.prompt))
			return
		}
		s.fail(w, kind, start, e)
		return
	}
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
	s.m.observeRequest(kind, e.status, time.Since(start), 0)
	writeJSON(w, e.status, map[string]any{"error": e.apiError})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may be gone; there is nobody left to tell
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []map[string]any{
		{"id": s.name, "object": "model", "created": 0, "owned_by": "moec"}}})
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.sched.done:
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "stopped"})
	default:
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "model": s.name, "slots": s.opt.Slots,
			"queued": len(s.sched.queue), "queue_capacity": s.opt.QueueDepth})
	}
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_ = s.m.write(w) // a write error means the scraper left
}
