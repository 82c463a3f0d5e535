package serve

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/runtime/nn"
)

// benchModel has the shape of examples/hunyuan_tiny.moe: 4 layers of width 128, 8 experts
// in every second layer, a 128-byte context.
func benchModel(b *testing.B) *nn.Model {
	b.Helper()
	cfg := programtest.Model(b, "bench", `vocab = 256; vocab_pad_to = 1; d_model = 128; layers = 4; seq_len = 128
attention { heads = 4 }
ffn { hidden = 512; activation = gelu }
moe { experts = 8; top_k = 1; every = 2; router = token_embedding; capacity_factor = dropless; balance_loss = 0.01 }`)
	m, err := nn.New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkServeLoad is the load test of `make bench`: clients concurrent clients send
// b.N completion requests (a 13-byte prompt, 32 sampled tokens) to a server on the
// loopback interface (httptest listens on 127.0.0.1 only), and it reports requests/s,
// generated tokens/s and the p50/p99 request latency. slots=1 decodes one request at a
// time: the peer that continuous batching (slots=8) is measured against in the same run.
// The load is bounded by b.N (the benchmark's time budget) and each request by the
// server's timeout.
func BenchmarkServeLoad(b *testing.B) {
	const clients, tokens = 8, 32
	m := benchModel(b)
	for _, slots := range []int{1, 8} {
		b.Run(fmt.Sprintf("slots=%d/clients=%d", slots, clients), func(b *testing.B) {
			_, ts := startServer(b, m, Options{Slots: slots, QueueDepth: clients, Timeout: time.Minute})
			if !strings.HasPrefix(ts.URL, "http://127.0.0.1:") {
				b.Fatalf("load test server at %s: only loopback is allowed", ts.URL)
			}
			lat := make([]time.Duration, b.N)
			var next atomic.Int64
			var failed atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := int(next.Add(1) - 1)
						if i >= b.N {
							return
						}
						body := fmt.Sprintf(`{"prompt":"func main() {","max_tokens":%d,"temperature":0.8,"seed":%d}`, tokens, i)
						t0 := time.Now()
						resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(body))
						if err == nil {
							_, err = readBody(resp)
						}
						if err != nil {
							failed.Add(1)
						}
						lat[i] = time.Since(t0)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d of %d requests failed", n, b.N)
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			pct := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1e3
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(b.N*tokens)/elapsed.Seconds(), "tok/s")
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
		})
	}
}

// readBody reads and closes a response, failing on any status but 200.
func readBody(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, sb.String())
	}
	return []byte(sb.String()), nil
}
