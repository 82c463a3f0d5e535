package cudastep

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/golden"
)

// TestCollectiveStreamsAndEvents: on two data-parallel ranks the gradients' all_reduces
// run in buckets during the backward (compiler/step's bucket.go), each an ncclAllReduce on
// the communication stream after an event of the compute stream; the backward's later ops
// run beside them, and the compute stream waits for their events only before the first op
// that touches the gradients (the grad_norm op). testdata/collective_dp2.txtar holds the
// host program's lines from the last bucket's all_reduce to that op (go test -update
// rewrites it).
func TestCollectiveStreamsAndEvents(t *testing.T) {
	p, low, err := lowerOne(t, tinyStage(t, 2, 1), step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1})
	if err != nil {
		t.Fatal(err)
	}
	host, err := HostProgram(low)
	if err != nil {
		t.Fatal(err)
	}
	var reduces []int
	norm, lastBwd := -1, -1
	for i, op := range p.Ops {
		switch {
		case op.Kind.Collective() && len(reduces) == 0 && op.Phase != step.Reduce:
			t.Fatalf("op %d (%s %s) is a collective before the gradients' reduction: the done events below assume none", i, op.Phase, op.Kind)
		case op.Kind == step.OpAllReduce && op.Phase == step.Reduce:
			reduces = append(reduces, i)
		case op.Kind == step.OpGradNorm:
			norm = i
		case op.Phase == step.Backward:
			lastBwd = i
		}
	}
	if len(reduces) < 2 || reduces[0] > lastBwd || norm < reduces[len(reduces)-1] {
		t.Fatalf("the program has its gradient all_reduces at ops %v, its last backward op at %d and grad_norm at op %d: want buckets inside the backward", reduces, lastBwd, norm)
	}
	// Every bucket's wait comes after the backward's last op, once.
	backwardEnd := strings.Index(host, "  // op "+strconv.Itoa(lastBwd)+" (")
	for k, r := range reduces {
		wait := "cuStreamWaitEvent(s->stream, s->done[" + strconv.Itoa(k) + "], 0)"
		if n := strings.Count(host, wait); n != 1 {
			t.Errorf("the compute stream waits %d times for op %d's all_reduce", n, r)
		}
		if i := strings.Index(host, wait); i < backwardEnd {
			t.Errorf("the compute stream waits for op %d's all_reduce inside the backward", r)
		}
	}
	reduce := reduces[len(reduces)-1]
	start := strings.Index(host, "  // op "+strconv.Itoa(reduce)+" (")
	end := strings.Index(host, "  // op "+strconv.Itoa(norm+1)+" (")
	if start < 0 || end < start {
		t.Fatalf("no section for ops %d to %d in the host program", reduce, norm)
	}
	section := host[start:end]
	last := strconv.Itoa(len(reduces) - 1)
	order := []string{
		"cuEventRecord(s->ready, s->stream)",
		"cuStreamWaitEvent(s->comm_stream, s->ready, 0)",
		"ncclAllReduce(",
		"cuEventRecord(s->done[" + last + "], s->comm_stream)",
		"cuStreamWaitEvent(s->stream, s->done[0], 0)",
		"cuStreamWaitEvent(s->stream, s->done[" + last + "], 0)",
		"// op " + strconv.Itoa(norm) + " (",
		"moec_launch_run(s, opt, dice, moec_launches_", // its launches' table (launch_table.go), dense_sumsq's among them
		"moec_publish_norm(s)",
	}
	at := 0
	for _, want := range order {
		i := strings.Index(section[at:], want)
		if i < 0 {
			t.Fatalf("the host program from op %d to op %d has no %q after %q:\n%s", reduce, norm, want, section[:at], section)
		}
		at += i + len(want)
	}
	if !strings.Contains(host, "}, // dense_sumsq\n") {
		t.Errorf("no launch table holds the norm's dense_sumsq")
	}
	golden.Archive(t, "testdata/collective_dp2.txtar", &txtar.Archive{
		Comment: []byte("The host program of hunyuan_tiny's dense stage cut to two layers on two data-parallel ranks (rank 0),\nfrom the last bucket's gradient all_reduce to the grad_norm op.\nRegenerate with go test ./codegen/cudastep -run TestCollectiveStreamsAndEvents -update.\n"),
		Files:   []txtar.File{{Name: HostName, Data: []byte(section)}},
	}, *update)
}

// streamProbe is a host program of the emulated driver alone: a producer on the compute
// stream, a copy on the communication stream (a collective's place) that waits for it, and
// a consumer on the compute stream that waits for the copy. argv[1] drops a wait: 1 the
// communication stream's, 2 the compute stream's. It prints what the consumer read (1 when
// the order held).
const streamProbe = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moec_step_driver.h"

static void k_set(unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void **p) {
  **(float **)p[0] = *(float *)p[1];
}
static void k_copy(unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void **p) {
  **(float **)p[0] = **(float **)p[1];
}
static const unsigned char set_bytes[] = {8, 4}, copy_bytes[] = {8, 8};
static const moec_emu_kernel kernels[] = {{"set", k_set, 2, set_bytes}, {"copy", k_copy, 2, copy_bytes}};
extern "C" const moec_emu_kernel *moec_emu_find(const char *name) {
  for (const moec_emu_kernel &k : kernels)
    if (strcmp(k.name, name) == 0) return &k;
  return NULL;
}

#define CHECK(call) \
  if ((call) != 0) { fprintf(stderr, "%s failed\n", #call); return 1; }

int main(int argc, char **argv) {
  int drop = argc > 1 ? atoi(argv[1]) : 0;
  moec_cu cu;
  char err[256];
  if (!moec_cu_load(&cu, err, sizeof err)) return 1;
  CUdevice dev;
  CUcontext ctx;
  CUstream compute, comm;
  CUevent ready, done;
  CUmodule mod;
  CUfunction set, copy;
  CUdeviceptr x, y, z;
  CHECK(cu.cuInit(0));
  CHECK(cu.cuDeviceGet(&dev, 0));
  CHECK(cu.cuCtxCreate(&ctx, 0, dev));
  CHECK(cu.cuStreamCreate(&compute, 0));
  CHECK(cu.cuStreamCreate(&comm, 0));
  CHECK(cu.cuEventCreate(&ready, MOEC_CU_EVENT_DISABLE_TIMING));
  CHECK(cu.cuEventCreate(&done, MOEC_CU_EVENT_DISABLE_TIMING));
  CHECK(cu.cuModuleLoadData(&mod, NULL));
  CHECK(cu.cuModuleGetFunction(&set, mod, "set"));
  CHECK(cu.cuModuleGetFunction(&copy, mod, "copy"));
  CHECK(cu.cuMemAlloc(&x, 4));
  CHECK(cu.cuMemAlloc(&y, 4));
  CHECK(cu.cuMemAlloc(&z, 4));
  CHECK(cu.cuMemsetD8(x, 0, 4));
  CHECK(cu.cuMemsetD8(y, 0, 4));
  CHECK(cu.cuMemsetD8(z, 0, 4));
  {
    float one = 1;
    void *args[] = {&x, &one};
    CHECK(cu.cuLaunchKernel(set, 1, 1, 1, 1, 1, 1, 0, compute, args, NULL));
  }
  CHECK(cu.cuEventRecord(ready, compute));
  if (drop != 1) CHECK(cu.cuStreamWaitEvent(comm, ready, 0));
  {
    void *args[] = {&y, &x};
    CHECK(cu.cuLaunchKernel(copy, 1, 1, 1, 1, 1, 1, 0, comm, args, NULL));
  }
  CHECK(cu.cuEventRecord(done, comm));
  if (drop != 2) CHECK(cu.cuStreamWaitEvent(compute, done, 0));
  {
    void *args[] = {&z, &y};
    CHECK(cu.cuLaunchKernel(copy, 1, 1, 1, 1, 1, 1, 0, compute, args, NULL));
  }
  CHECK(cu.cuStreamSynchronize(compute));
  float got = -1;
  CHECK(cu.cuMemcpyDtoH(&got, z, 4));
  printf("%g\n", got);
  return 0;
}
`

// TestEmulatedStreamsHonourEvents: the emulated streams run their work as late as a GPU
// may (or, with MOEC_EMU_STREAMS=eager-comm, the communication stream's as early), so a
// dropped wait shows: without the compute stream's wait its consumer reads the copy's
// output before the copy ran; without the communication stream's wait (eager-comm) the
// copy reads its input before the producer ran. With both waits every policy reads 1.
func TestEmulatedStreamsHonourEvents(t *testing.T) {
	clang := cuda.FindClang()
	if clang == "" {
		t.Skip("no clang++ on PATH")
	}
	dir := t.TempDir()
	for name, text := range map[string]string{"probe.cpp": streamProbe, DriverHeaderName: driverHeader, DriverEmuName: driverEmu} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "probe")
	cmd := exec.Command(clang, "-std=c++17", "-O1", "-Wall", "-Werror", "-Wno-unused-parameter", "-I", ".", "probe.cpp", DriverEmuName, "-o", bin, "-lpthread")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, c := range []struct {
		policy, drop, want string
	}{
		{"", "0", "1"},
		{"eager-comm", "0", "1"},
		{"eager", "0", "1"},
		{"", "2", "0"},           // the consumer ran before the copy
		{"eager-comm", "1", "0"}, // the copy ran before the producer
	} {
		cmd := exec.Command(bin, c.drop)
		cmd.Env = append(os.Environ(), "MOEC_EMU_STREAMS="+c.policy)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("policy %q, drop %s: %v\n%s", c.policy, c.drop, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != c.want {
			t.Errorf("policy %q, dropping wait %s: the consumer read %s, want %s", c.policy, c.drop, got, c.want)
		}
	}
}
