package serve

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moec-dev/moec/internal/pyvenv"
)

// startServe runs s.Serve on a loopback listener and returns its base URL, the function
// that stops it (as SIGTERM does) and the channel Serve's result arrives on.
func startServe(t *testing.T, opt Options) (*Server, string, context.CancelFunc, <-chan error) {
	t.Helper()
	s, err := New(newModel(t), "tiny/s", opt)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Serve(ctx, ln)
		close(done) // the cleanup's receive returns too when the test has taken the result
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return within 30 s of its stop")
		}
	})
	return s, "http://" + ln.Addr().String(), stop, done
}

// closedWithin reports whether the server ends conn (EOF, reset, or an answer and then
// EOF) within d; what it answered is returned.
func closedWithin(t *testing.T, conn net.Conn, d time.Duration) (bool, string) {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, string(b)
	}
	return true, string(b)
}

// A client that sends part of its headers, or its headers and part of its body, is cut off
// after ReadTimeout instead of holding the connection for ever.
func TestSlowClientsAreCut(t *testing.T) {
	_, url, _, _ := startServe(t, Options{Slots: 1, ReadTimeout: 300 * time.Millisecond, Timeout: time.Minute})
	addr := strings.TrimPrefix(url, "http://")
	for _, c := range []struct {
		name, send, want string
	}{
		{"part of the headers", "POST /v1/completions HTTP/1.1\r\nHost: x\r\n", ""},
		{"part of the body", "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\":", "408"},
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(conn, c.send); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		closed, answer := closedWithin(t, conn, 5*time.Second)
		conn.Close()
		if !closed {
			t.Errorf("%s: the connection is still open after 5 s (read timeout 300ms)", c.name)
			continue
		}
		if !strings.Contains(answer, c.want) {
			t.Errorf("%s: answered %q, want it to contain %q", c.name, answer, c.want)
		}
		t.Logf("%s: cut after %v", c.name, time.Since(start).Round(time.Millisecond))
	}
}

// At most MaxConns connections are served at once: with the cap taken by idle clients a
// request waits, and it is answered once one of them leaves.
func TestConnectionCap(t *testing.T) {
	_, url, _, _ := startServe(t, Options{Slots: 1, MaxConns: 2, ReadTimeout: time.Minute})
	addr := strings.TrimPrefix(url, "http://")
	var idle []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		idle = append(idle, conn)
	}
	answered := make(chan int, 1)
	go func() {
		resp, err := http.Get(url + "/healthz")
		if err != nil {
			answered <- -1
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	select {
	case code := <-answered:
		t.Fatalf("a third connection was served (%d) while the cap of 2 was held", code)
	case <-time.After(500 * time.Millisecond):
	}
	idle[0].Close()
	select {
	case code := <-answered:
		if code != 200 {
			t.Errorf("after a connection left: %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting connection was not served after one of the cap left")
	}
}

// Stopping Serve drains: a stream in flight and a request waiting in the queue finish
// (with [DONE] and 200), health says draining, and new connections are refused.
func TestServeDrains(t *testing.T) {
	s, url, stop, done := startServe(t, Options{Slots: 1, MaxTokens: 5000, DrainTimeout: 30 * time.Second})
	resp, err := http.Post(url+"/v1/completions", "application/json",
		strings.NewReader(`{"prompt":"drain","max_tokens":5000,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	queued := make(chan int, 1)
	go func() {
		code, _ := post(t, url+"/v1/completions", map[string]any{"prompt": "q", "max_tokens": 3})
		queued <- code
	}()
	for deadline := time.Now().Add(5 * time.Second); len(s.sched.queue) == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	stop()
	for deadline := time.Now().Add(5 * time.Second); !s.draining.Load() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("Serve returned at once: the stream was not in flight when it was stopped (or was cut)")
	default:
	}
	rest, err := io.ReadAll(br)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("the stream was cut: %v", err)
	}
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") || strings.Contains(string(rest), `"error"`) ||
		!strings.Contains(string(rest), `"finish_reason":"length"`) {
		t.Errorf("the stream in flight did not finish: ...%s", rest[max(0, len(rest)-300):])
	}
	if code := <-queued; code != 200 {
		t.Errorf("the queued request ended with %d, want 200", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the drain")
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Error("a new connection was accepted after the drain")
	}
}

// Requests still running when the drain time is up end as Close ends them: the stream with
// an error event and [DONE].
func TestServeDrainTimeout(t *testing.T) {
	_, url, stop, done := startServe(t, Options{Slots: 1, MaxTokens: 1000000, DrainTimeout: 200 * time.Millisecond})
	resp, err := http.Post(url+"/v1/completions", "application/json",
		strings.NewReader(`{"prompt":"long","max_tokens":1000000,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	stop()
	rest, _ := io.ReadAll(br)
	resp.Body.Close()
	if !strings.Contains(string(rest), `"code":"shutting_down"`) || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Errorf("stream ended with ...%s", rest[max(0, len(rest)-300):])
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the drain time")
	}
}

// pythonWithOpenAI returns a Python interpreter that imports the official openai package:
// $MOEC_PYTHON, else the repository's .venv (make venv), else it skips saying why.
func pythonWithOpenAI(t *testing.T) string {
	t.Helper()
	return pyvenv.Python(t, "../..", "openai")
}

// The official OpenAI Python client drives the server: models, streaming chat with
// stream_options and content parts, n = 2 with logprobs on both endpoints, penalties, and
// an error as the client's typed exception (testdata/openai_client.py says what it checks).
func TestOfficialOpenAIClient(t *testing.T) {
	py := pythonWithOpenAI(t)
	_, url, _, _ := startServe(t, Options{Slots: 2})
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("server at %s: only loopback is allowed", url)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, filepath.Join("testdata", "openai_client.py"), url+"/v1", "tiny/s")
	cmd.Env = append(os.Environ(), "NO_PROXY=127.0.0.1", "no_proxy=127.0.0.1", "OPENAI_API_KEY=unused")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the openai client: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
