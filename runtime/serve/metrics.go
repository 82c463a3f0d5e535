package serve

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"time"
)

// nBuckets is the number of finite buckets of the request duration histogram.
const nBuckets = 12

// latencyBuckets are the upper bounds (seconds) of the request duration histogram; a
// function, not a variable, so nothing can change them under a running server.
func latencyBuckets() [nBuckets]float64 {
	return [nBuckets]float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
}

// metrics are the server's counters, written in the Prometheus text format. One mutex is
// enough: the scheduler updates them once per decoding step, handlers once per request.
type metrics struct {
	mu          sync.Mutex
	slots       int
	queueCap    int
	queueLen    func() int
	requests    map[requestKey]int64
	durations   map[string]*histogram // by endpoint
	tokensOut   int64
	tokensIn    int64
	steps       int64
	stepSeconds float64
	slotSteps   int64 // busy slots summed over steps: slotSteps/steps is the mean batch
	busy        int
	queueWait   float64
	admitted    int64
}

type requestKey struct {
	endpoint string
	code     int
}

type histogram struct {
	counts [nBuckets]int64
	count  int64
	sum    float64
}

func newMetrics(slots, queueCap int, queueLen func() int) *metrics {
	return &metrics{slots: slots, queueCap: queueCap, queueLen: queueLen,
		requests: map[requestKey]int64{}, durations: map[string]*histogram{}}
}

func (m *metrics) observeRequest(endpoint string, code int, d time.Duration, promptTokens int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[requestKey{endpoint, code}]++
	m.tokensIn += int64(promptTokens)
	h := m.durations[endpoint]
	if h == nil {
		h = &histogram{}
		m.durations[endpoint] = h
	}
	s := d.Seconds()
	for i, le := range latencyBuckets() {
		if s <= le {
			h.counts[i]++
		}
	}
	h.count++
	h.sum += s
}

func (m *metrics) observeStep(d time.Duration, busy int) {
	m.mu.Lock()
	m.steps++
	m.stepSeconds += d.Seconds()
	m.slotSteps += int64(busy)
	m.mu.Unlock()
}

func (m *metrics) observeQueueWait(d time.Duration) {
	m.mu.Lock()
	m.queueWait += d.Seconds()
	m.admitted++
	m.mu.Unlock()
}

func (m *metrics) addTokens(n int) {
	m.mu.Lock()
	m.tokensOut += int64(n)
	m.mu.Unlock()
}

func (m *metrics) setSlotsBusy(n int) {
	m.mu.Lock()
	m.busy = n
	m.mu.Unlock()
}

// write prints every metric in the Prometheus text exposition format (version 0.0.4),
// labels sorted so the output is stable.
func (m *metrics) write(w io.Writer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b []byte
	p := func(format string, args ...any) { b = fmt.Appendf(b, format, args...) }
	p("# HELP moec_requests_total HTTP requests by endpoint and status code.\n# TYPE moec_requests_total counter\n")
	keys := make([]requestKey, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].endpoint != keys[j].endpoint {
			return keys[i].endpoint < keys[j].endpoint
		}
		return keys[i].code < keys[j].code
	})
	for _, k := range keys {
		p("moec_requests_total{endpoint=%q,code=\"%d\"} %d\n", k.endpoint, k.code, m.requests[k])
	}
	p("# HELP moec_request_duration_seconds Time from request to the last byte of the answer.\n# TYPE moec_request_duration_seconds histogram\n")
	eps := make([]string, 0, len(m.durations))
	for e := range m.durations {
		eps = append(eps, e)
	}
	sort.Strings(eps)
	for _, e := range eps {
		h := m.durations[e]
		for i, le := range latencyBuckets() {
			p("moec_request_duration_seconds_bucket{endpoint=%q,le=\"%g\"} %d\n", e, le, h.counts[i])
		}
		p("moec_request_duration_seconds_bucket{endpoint=%q,le=\"+Inf\"} %d\n", e, h.count)
		p("moec_request_duration_seconds_sum{endpoint=%q} %g\n", e, h.sum)
		p("moec_request_duration_seconds_count{endpoint=%q} %d\n", e, h.count)
	}
	counter := func(name, help string, v any) {
		p("# HELP %s %s\n# TYPE %s counter\n%s %v\n", name, help, name, name, v)
	}
	gauge := func(name, help string, v any) {
		p("# HELP %s %s\n# TYPE %s gauge\n%s %v\n", name, help, name, name, v)
	}
	counter("moec_prompt_tokens_total", "Prompt tokens (bytes) of requests that reached the scheduler.", m.tokensIn)
	counter("moec_generated_tokens_total", "Tokens (bytes) generated.", m.tokensOut)
	counter("moec_decode_steps_total", "Batched decoding steps.", m.steps)
	counter("moec_decode_step_seconds_total", "Time spent in batched decoding steps.", m.stepSeconds)
	counter("moec_decode_slot_steps_total", "Busy slots summed over decoding steps (divided by steps: the mean batch).", m.slotSteps)
	counter("moec_queue_wait_seconds_total", "Time admitted requests waited for a slot.", m.queueWait)
	counter("moec_admitted_total", "Requests that reached the scheduler.", m.admitted)
	gauge("moec_slots", "Sequences decoded together.", m.slots)
	gauge("moec_slots_busy", "Slots holding a request.", m.busy)
	gauge("moec_queue_capacity", "Requests that may wait for a slot.", m.queueCap)
	gauge("moec_queue_length", "Requests waiting for a slot.", m.queueLen())
	_, err := w.Write(b)
	return err
}
