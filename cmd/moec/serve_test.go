package main

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// extractArchive writes the files of a testdata/script archive into dir.
func extractArchive(t *testing.T, name, dir string) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "script", name))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Split(string(src), "\n-- ")[1:] {
		file, body, _ := strings.Cut(p, " --\n")
		path := filepath.Join(dir, file)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// SIGTERM (how systemd, Docker and Kubernetes stop a service) drains the server as SIGINT
// does: the stream in flight ends with its finish reason and [DONE], and serve exits 0.
func TestServeDrainsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	extractArchive(t, "serve.txtar", dir)
	t.Chdir(dir)
	var out bytes.Buffer
	if status := run([]string{"run", "--stage", "dense", "--steps", "2", "tiny.moe"}, &out, &out); status != exitOK {
		t.Fatalf("run: status %d\n%s", status, out.String())
	}
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"serve", "--checkpoint", "out/tiny/dense/run", "--addr", "127.0.0.1:0", "--slots", "1",
			"--max-tokens", "20000"}, &stdout, &stderr)
	}()
	addrRE := regexp.MustCompile(`on http://(127\.0\.0\.1:\d+)`)
	var addr string
	for deadline := time.Now().Add(time.Minute); addr == ""; {
		if m := addrRE.FindStringSubmatch(stdout.String()); m != nil {
			addr = m[1]
		}
		select {
		case status := <-done:
			t.Fatalf("serve ended (status %d) before it served:\n%s", status, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("serve did not start within a minute")
		}
	}
	resp, err := http.Post("http://"+addr+"/v1/completions", "application/json",
		strings.NewReader(`{"prompt":"term","max_tokens":20000,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Errorf("the stream was cut: %v", err)
	}
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") || !strings.Contains(string(rest), `"finish_reason":"length"`) {
		t.Errorf("the stream in flight did not finish: ...%s", rest[max(0, len(rest)-300):])
	}
	select {
	case status := <-done:
		if status != exitOK {
			t.Errorf("serve exited %d after SIGTERM, want 0\n%s", status, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("serve still running a minute after SIGTERM")
	}
	if !strings.Contains(stderr.String(), "serve: shutting down") {
		t.Errorf("stderr does not say it drains:\n%s", stderr.String())
	}
}

// Limits that are not positive are usage errors (exit 2), not the defaults.
func TestServeFlagsMustBePositive(t *testing.T) {
	for _, flag := range []string{"--slots=0", "--queue=0", "--max-tokens=0", "--max-prompt-bytes=0", "--max-conns=0",
		"--timeout=0s", "--read-timeout=0s", "--drain=0s", "--slots=-1", "--prefill-chunk=0", "--prefill-chunk=-3"} {
		var out bytes.Buffer
		status := run([]string{"serve", "--checkpoint", "nowhere", flag}, &out, &out)
		name, _, _ := strings.Cut(strings.TrimPrefix(flag, "--"), "=")
		if status != exitUsage || !strings.Contains(out.String(), "--"+name+" ") || !strings.Contains(out.String(), "usage: moec serve") {
			t.Errorf("%s: status %d, output %q", flag, status, out.String())
		}
	}
}
