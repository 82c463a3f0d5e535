package serve

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/runtime/nn"
)

// tinyModel is a small MoE decoder with rotary positions and a 32-position context, so
// requests of a few dozen tokens exercise the context refill.
func tinyModel() *program.Model { return programtest.TinyMoE() }

func newModel(t testing.TB) *nn.Model {
	t.Helper()
	m, err := nn.New(tinyModel(), 3)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// startServer serves m on a loopback httptest server.
func startServer(t testing.TB, m *nn.Model, opt Options) (*Server, *httptest.Server) {
	t.Helper()
	s, err := New(m, "tiny/s", opt)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		ts.Close()
		s.Close()
	})
	return s, ts
}

// post sends body as JSON and returns the status and the body.
func post(t testing.TB, url string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case string:
		r = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(js)
	}
	resp, err := http.Post(url, "application/json", r)
	if err != nil {
		t.Error(err)
		return 0, nil
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Error(err)
	}
	return resp.StatusCode, out
}

// completion is the subset of a completion answer the tests read.
type completion struct {
	Choices []struct {
		Text         string `json:"text"`
		FinishReason string `json:"finish_reason"`
		Message      struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error *apiError `json:"error"`
}

func decodeCompletion(t testing.TB, b []byte) completion {
	t.Helper()
	var c completion
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	return c
}

// readEvents splits a server-sent event stream into its data payloads; it fails unless
// the stream ends with [DONE].
func readEvents(t testing.TB, body []byte) []completion {
	t.Helper()
	var out []completion
	sc := bufio.NewScanner(bytes.NewReader(body))
	done := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("stream line %q is not a data line", line)
		}
		if done {
			t.Fatalf("data after [DONE]: %q", data)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		out = append(out, decodeCompletion(t, []byte(data)))
	}
	if !done {
		t.Fatalf("stream did not end with [DONE]:\n%s", body)
	}
	return out
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readAll(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// viaJSON is s as it arrives through a JSON string: each invalid UTF-8 byte becomes U+FFFD.
func viaJSON(t testing.TB, s string) string {
	t.Helper()
	var out string
	if err := json.Unmarshal([]byte(mustJSON(t, s)), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// stepCounts returns the decoding steps so far and the busy slots summed over them.
func (s *Server) stepCounts() (steps, slotSteps int64) {
	return int64(testutil.ToFloat64(s.m.steps)), int64(testutil.ToFloat64(s.m.slotSteps))
}
