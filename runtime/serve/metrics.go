package serve

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, in a registry of its own (two servers in one
// process count apart). The names follow vLLM's with the moec_ prefix, so dashboards made
// for it need only the prefix changed. The registry also holds the Go runtime and process
// collectors (go_*, process_*: heap, resident memory, open file descriptors).
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec   // by endpoint and status code
	e2e          *prometheus.HistogramVec // by endpoint
	ttft         prometheus.Histogram
	interToken   prometheus.Histogram
	queueTime    prometheus.Histogram
	promptTokens prometheus.Counter
	genTokens    prometheus.Counter
	reqPrompt    prometheus.Histogram
	reqGen       prometheus.Histogram
	step         prometheus.Histogram
	steps        prometheus.Counter
	slotSteps    prometheus.Counter // busy slots summed over steps: divided by steps, the mean batch
	running      prometheus.Gauge
}

// latencyBuckets are the bounds (seconds) of the request latency histograms.
func latencyBuckets() []float64 {
	return []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
}

// tokenBuckets are the bounds of the tokens-per-request histograms.
func tokenBuckets() []float64 {
	return []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000}
}

func newMetrics(slots, queueCap int, queueLen func() int) *metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) } // names are constants: a clash is a bug
	h := func(name, help string, buckets []float64) prometheus.Histogram {
		x := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
		f(x)
		return x
	}
	c := func(name, help string) prometheus.Counter {
		x := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		f(x)
		return x
	}
	m := &metrics{reg: reg}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moec_requests_total",
		Help: "HTTP requests by endpoint and status code (499: the client left)."}, []string{"endpoint", "code"})
	f(m.requests)
	m.e2e = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moec_e2e_request_latency_seconds",
		Help: "Time from a request's arrival to the last byte of its answer.", Buckets: latencyBuckets()}, []string{"endpoint"})
	f(m.e2e)
	m.ttft = h("moec_time_to_first_token_seconds", "Time from a request's arrival to its first generated token.",
		[]float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80})
	m.interToken = h("moec_inter_token_latency_seconds", "Time between two consecutive tokens of one choice.",
		[]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5})
	m.queueTime = h("moec_request_queue_time_seconds", "Time a choice waited in the queue for a slot.", latencyBuckets())
	m.promptTokens = c("moec_prompt_tokens_total", "Prompt tokens (bytes) of the requests answered.")
	m.genTokens = c("moec_generation_tokens_total", "Tokens (bytes) generated.")
	m.reqPrompt = h("moec_request_prompt_tokens", "Prompt tokens (bytes) per answered request.", tokenBuckets())
	m.reqGen = h("moec_request_generation_tokens", "Generated tokens per answered request, all choices together.", tokenBuckets())
	m.step = h("moec_decode_step_seconds", "Time of one batched step: the decoding slots' tokens and the prompt chunks read beside them.",
		[]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1})
	m.steps = c("moec_decode_steps_total", "Batched decoding steps.")
	m.slotSteps = c("moec_decode_slot_steps_total", "Busy slots summed over decoding steps (divided by steps: the mean batch).")
	m.running = prometheus.NewGauge(prometheus.GaugeOpts{Name: "moec_num_requests_running", Help: "Choices holding a decoding slot."})
	f(m.running)
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "moec_num_requests_waiting", Help: "Choices waiting for a slot."},
		func() float64 { return float64(queueLen()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "moec_slots", Help: "Sequences decoded together."},
		func() float64 { return float64(slots) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "moec_queue_capacity", Help: "Choices that may wait for a slot."},
		func() float64 { return float64(queueCap) }))
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves the registry in the Prometheus exposition format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// observeRequest counts a request that ended with code; an answered one (200) also counts
// its tokens.
func (m *metrics) observeRequest(endpoint string, code int, d time.Duration, promptTokens, generated int) {
	m.requests.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
	m.e2e.WithLabelValues(endpoint).Observe(d.Seconds())
	if code == http.StatusOK {
		m.promptTokens.Add(float64(promptTokens))
		m.reqPrompt.Observe(float64(promptTokens))
		m.reqGen.Observe(float64(generated))
	}
}

func (m *metrics) observeFirstToken(d time.Duration) { m.ttft.Observe(d.Seconds()) }

func (m *metrics) observeInterToken(d time.Duration) { m.interToken.Observe(d.Seconds()) }

func (m *metrics) observeStep(d time.Duration, busy int) {
	m.step.Observe(d.Seconds())
	m.steps.Inc()
	m.slotSteps.Add(float64(busy))
}

func (m *metrics) observeQueueWait(d time.Duration) { m.queueTime.Observe(d.Seconds()) }

func (m *metrics) addTokens(n int) { m.genTokens.Add(float64(n)) }

func (m *metrics) setSlotsBusy(n int) { m.running.Set(float64(n)) }
