package serve

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// resources is what the process holds: what must come back to its idle level after load.
type resources struct {
	fds        int
	goroutines int
	heap       uint64 // bytes of in-use heap spans after a collection
	rss        uint64 // resident bytes (reported; the Go runtime returns memory to the OS lazily)
}

func measure(t *testing.T) resources {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r := resources{goroutines: runtime.NumGoroutine(), heap: ms.HeapInuse}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		r.fds = len(fds)
	}
	if statm, err := os.ReadFile("/proc/self/statm"); err == nil {
		var size, resident uint64
		if _, err := fmt.Sscan(string(statm), &size, &resident); err == nil {
			r.rss = resident * uint64(os.Getpagesize())
		}
	}
	return r
}

// TestLoadWithDisconnects is a bounded load test on 127.0.0.1: 8 streaming clients send 96
// requests, and every third client asks for 100000 tokens and hangs up after a few chunks
// (the server is still generating for it: its slot must come free for the others). It reports the requests
// served, p50/p99 latency of the finished ones, and checks that once the load is over the
// slots are free and open file descriptors, goroutines and the Go heap are back at their
// idle level (RSS is reported). Bounded to 96 requests and a minute.
func TestLoadWithDisconnects(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped in -short")
	}
	const clients, requests, tokens, leaverTokens = 8, 96, 48, 100000
	s, url, _, _ := startServe(t, Options{Slots: 4, QueueDepth: clients, Timeout: time.Minute, MaxConns: 64, MaxTokens: leaverTokens})
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("load test server at %s: only loopback is allowed", url)
	}
	transport := &http.Transport{MaxIdleConnsPerHost: clients}
	client := &http.Client{Transport: transport}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// stream sends request i and reads its chunks; it hangs up after `leave` chunks (0: reads
	// to [DONE]). It returns whether the answer was complete.
	stream := func(i, leave int) (bool, error) {
		rctx, hangUp := context.WithCancel(ctx)
		defer hangUp()
		n := tokens
		if leave > 0 {
			n = leaverTokens // still generating when its client leaves
		}
		body := fmt.Sprintf(`{"prompt":"load %d","max_tokens":%d,"stream":true,"seed":%d,"stream_options":{"include_usage":true}}`, i, n, i)
		req, err := http.NewRequestWithContext(rctx, "POST", url+"/v1/completions", strings.NewReader(body))
		if err != nil {
			return false, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return false, fmt.Errorf("status %d", resp.StatusCode)
		}
		sc := bufio.NewScanner(resp.Body)
		chunks := 0
		for sc.Scan() {
			line := sc.Text()
			if line == "data: [DONE]" {
				return true, nil
			}
			if strings.HasPrefix(line, "data: ") {
				chunks++
				if leave > 0 && chunks == leave {
					return false, nil // hang up mid-stream: the deferred hangUp and Close drop the connection
				}
			}
		}
		return false, fmt.Errorf("stream of request %d ended without [DONE]: %v", i, sc.Err())
	}

	// Warm up (the decoder's buffers, the connection pool), then take the idle level.
	for i := range 4 {
		if ok, err := stream(-1-i, 0); !ok || err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}
	transport.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)
	idle := measure(t)

	var next atomic.Int64
	var served, left, failed atomic.Int64
	lat := make([]time.Duration, requests)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= requests || ctx.Err() != nil {
					return
				}
				leave := 0
				if c%3 == 2 {
					leave = 3 + i%5
				}
				t0 := time.Now()
				ok, err := stream(i, leave)
				switch {
				case err != nil:
					failed.Add(1)
					t.Errorf("request %d: %v", i, err)
				case ok:
					served.Add(1)
					lat[i] = time.Since(t0)
				default:
					left.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("the load did not finish within its minute (%d served)", served.Load())
	}
	var done []time.Duration
	for _, d := range lat {
		if d > 0 {
			done = append(done, d)
		}
	}
	sort.Slice(done, func(i, j int) bool { return done[i] < done[j] })
	pct := func(p float64) time.Duration { return done[min(len(done)-1, int(p*float64(len(done))))] }
	if len(done) == 0 || left.Load() == 0 || failed.Load() > 0 {
		t.Fatalf("served %d, hung up %d, failed %d", served.Load(), left.Load(), failed.Load())
	}
	t.Logf("%d requests in %v: %d served, %d hung up mid-stream; latency of the served p50 %v p99 %v; %.0f req/s",
		requests, elapsed.Round(time.Millisecond), served.Load(), left.Load(), pct(0.5).Round(time.Millisecond),
		pct(0.99).Round(time.Millisecond), float64(served.Load()+left.Load())/elapsed.Seconds())

	// The server saw every hang-up (a request it counts as 499), and every slot and queue
	// place comes back, then the process's resources.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n := int64(testutil.ToFloat64(s.m.requests.WithLabelValues(kindCompletion, "499")))
		if n == left.Load() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server counts %d requests whose client left, the clients left %d", n, left.Load())
		}
	}
	transport.CloseIdleConnections()
	var after resources
	deadline := time.Now().Add(10 * time.Second)
	for {
		busy, queued := testutil.ToFloat64(s.m.running), len(s.sched.queue)
		after = measure(t)
		back := busy == 0 && queued == 0 && after.fds <= idle.fds && after.goroutines <= idle.goroutines+2 &&
			after.heap <= idle.heap+8<<20
		if back {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("10 s after the load: %v slots busy, %d queued; fds %d (idle %d), goroutines %d (idle %d), heap %d MiB (idle %d MiB)",
				busy, queued, after.fds, idle.fds, after.goroutines, idle.goroutines, after.heap>>20, idle.heap>>20)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("idle → after: fds %d → %d, goroutines %d → %d, heap %.1f → %.1f MiB, RSS %.1f → %.1f MiB",
		idle.fds, after.fds, idle.goroutines, after.goroutines, float64(idle.heap)/(1<<20), float64(after.heap)/(1<<20),
		float64(idle.rss)/(1<<20), float64(after.rss)/(1<<20))
}
