package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An interrupted run stops with a checkpoint, says where and how to continue, and exits
// 130 without a second "context canceled" error line.
func TestInterruptedRun(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "script", "run.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The archive's files: tiny.moe and its data.
	parts := strings.Split(string(src), "\n-- ")
	for _, p := range parts[1:] {
		name, body, _ := strings.Cut(p, " --\n")
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"run", "--stage", "dense", "--steps", "1000000", "tiny.moe"}, &stdout, &stderr)
	}()
	// Interrupt once training has logged a step: the signal handler is installed by then.
	logPath := filepath.Join("out", "tiny", "dense", "run", "log.jsonl")
	deadline := time.Now().Add(time.Minute)
	for {
		if fi, err := os.Stat(logPath); err == nil && fi.Size() > 0 {
			break
		}
		select {
		case status := <-done:
			t.Fatalf("the run ended (status %d) before it could be interrupted:\n%s", status, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no step logged within a minute")
		}
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var status int
	select {
	case status = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the run did not stop within a minute of SIGINT")
	}
	if status != exitInterrupted {
		t.Errorf("exit status %d, want %d", status, exitInterrupted)
	}
	if !strings.Contains(stderr.String(), "interrupted at step") || !strings.Contains(stderr.String(), "resume with --resume") {
		t.Errorf("stderr lacks the interrupted message:\n%s", stderr.String())
	}
	if strings.Contains(stderr.String(), "context canceled") || strings.Contains(stderr.String(), "moec: ") {
		t.Errorf("stderr reports the interruption as an error:\n%s", stderr.String())
	}
}
