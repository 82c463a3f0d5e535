package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/runtime/gpu"
)

// deviceFixture writes exitcode_test.go's tiny model and its data into a fresh folder and
// makes it the working folder.
func deviceFixture(t *testing.T) {
	t.Helper()
	t.Chdir(t.TempDir())
	var text strings.Builder
	for i := 0; i < 80; i++ {
		fmt.Fprintf(&text, "line %d: the router sends each token to one expert along the sequence\n", i)
	}
	for name, body := range map[string]string{"tiny.moe": exitTinyMoe, "data.txt": text.String()} {
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeviceCudaWithoutDriver: on a machine without the NVIDIA driver, --device cuda
// stops run, generate and serve before they read anything, with a message that names
// libcuda.so.1 and says no CUDA SDK is needed.
func TestDeviceCudaWithoutDriver(t *testing.T) {
	if gpu.CheckDriver() == nil {
		t.Skip("this machine has the NVIDIA driver")
	}
	deviceFixture(t)
	for _, args := range [][]string{
		{"run", "--device", "cuda", "--stage", "dense", "--steps", "1", "tiny.moe"},
		{"generate", "--device", "cuda", "--checkpoint", "missing", "--prompt", "x"},
		{"serve", "--device", "cuda", "--checkpoint", "missing"},
	} {
		var out, errb bytes.Buffer
		st := run(args, &out, &errb)
		if st != 1 {
			t.Errorf("%s: status %d, want 1\n%s", strings.Join(args, " "), st, errb.String())
		}
		for _, want := range []string{"libcuda.so.1", "NVIDIA driver", "no CUDA SDK", "cuda-emulated"} {
			if !strings.Contains(errb.String(), want) {
				t.Errorf("%s: the message does not say %q:\n%s", strings.Join(args, " "), want, errb.String())
			}
		}
		if _, err := os.Stat("out"); err == nil {
			t.Errorf("%s wrote a run folder", strings.Join(args, " "))
		}
	}
	var out, errb bytes.Buffer
	if st := run([]string{"run", "--device", "tpu", "--stage", "dense", "tiny.moe"}, &out, &errb); st != 2 {
		t.Errorf("--device tpu: status %d, want 2 (usage)\n%s", st, errb.String())
	}
}

// TestDeviceCudaEmulatedTrains: --device cuda-emulated trains through the generated CUDA
// step on the CPU, and its losses are the CPU engine's; generate decodes the checkpoint
// through the generated CUDA decoding as the CPU does (serve_device.txtar serves it).
func TestDeviceCudaEmulatedTrains(t *testing.T) {
	if cuda.FindClang() == "" {
		t.Skip("no clang++ on PATH: the emulated CUDA step needs clang 16 or newer")
	}
	deviceFixture(t)
	losses := func(dir string, args ...string) []float64 {
		t.Helper()
		return runStageLosses(t, dir, append([]string{"--steps", "3"}, args...)...)
	}
	want := losses("cpu", "--engine", "step")
	got := losses("emu", "--device", "cuda-emulated")
	if len(got) != 3 || len(want) != 3 {
		t.Fatalf("losses %v on the emulated device, %v on the CPU: want 3 steps each", got, want)
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-5*math.Abs(want[i]) {
			t.Errorf("step %d: loss %.7f on the emulated device, %.7f on the CPU", i+1, got[i], want[i])
		}
	}
	t.Logf("losses %v (CPU %v)", got, want)
	// Greedy decoding through the generated CUDA (a prefill program, then a decoding step
	// per token over the KV caches in the device arena) writes the CPU's text.
	generate := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		args = append([]string{"generate", "--checkpoint", "emu", "--prompt", "line 3: the", "--temperature", "0", "--max-tokens", "12"}, args...)
		if st := run(args, &out, &errb); st != 0 {
			t.Fatalf("%s: status %d\n%s", strings.Join(args, " "), st, errb.String())
		}
		return out.String()
	}
	if cpu, emu := generate(), generate("--device", "cuda-emulated"); emu != cpu {
		t.Errorf("generate --device cuda-emulated wrote %q, on the CPU %q", emu, cpu)
	}
}

// runStageLosses runs `moec run --stage dense --out dir ARGS tiny.moe` (the device
// fixture's) and returns the losses its log.jsonl holds, step by step.
func runStageLosses(t *testing.T, dir string, args ...string) []float64 {
	t.Helper()
	var out, errb bytes.Buffer
	args = append([]string{"run", "--stage", "dense", "--out", dir}, append(args, "tiny.moe")...)
	if st := run(args, &out, &errb); st != 0 {
		t.Fatalf("%s: status %d\n%s", strings.Join(args, " "), st, errb.String())
	}
	return logLosses(t, dir)
}

// logLosses are the losses of the steps the run in dir logged, in order.
func logLosses(t *testing.T, dir string) []float64 {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "log.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ls []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Step *int64   `json:"step"`
			Loss *float64 `json:"loss"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Step != nil && rec.Loss != nil {
			ls = append(ls, *rec.Loss)
		}
	}
	return ls
}
