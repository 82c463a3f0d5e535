package cudastep

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/golden"
)

// TestOffloadedOptimizerHostProgram: under the offloaded optimizer the host program keeps
// the master weights, the gradients' host copies and the moments in one pinned host arena
// (the memory plan's host tier), copies each group's gradients to it on the copy stream
// after an event of the compute stream, waits for that copy's event before the CPU update
// (settled first: the clip scale from the device's norm), copies the weights back and
// makes the compute stream wait for them; no update kernel runs on the device. The part
// from the first to_host op to the end of the step is held to
// testdata/offload_tiny.txtar.
func TestOffloadedOptimizerHostProgram(t *testing.T) {
	for _, zero := range []int{0, 1, 2} {
		l := step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, OffloadOpt: true, ZeRO: zero}
		if zero > 0 {
			l.DP = 2
		}
		p, low, err := lowerOne(t, tinyStage(t, 2, 1), step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, l)
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		host, err := HostProgram(low)
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		var toHost, toDevice, adamw int
		for i, op := range p.Ops {
			o := low.Ops[i].Offload
			switch {
			case op.Kind == step.OpToHost:
				toHost++
			case op.Kind == step.OpToDevice:
				toDevice++
			case op.Kind == step.OpAdamW:
				adamw++
				if o == nil || len(o.Update) == 0 || len(low.Ops[i].Launches) != 0 {
					t.Errorf("%s: op %d: the host adamw lowers to %v and %d launches", l, i, o, len(low.Ops[i].Launches))
				}
			}
			if (op.Kind == step.OpToHost || op.Kind == step.OpToDevice) && (o == nil || len(o.Copies) == 0) {
				t.Errorf("%s: op %d (%s) copies nothing", l, i, op.Kind)
			}
		}
		if toHost == 0 || toHost != toDevice || toHost != adamw {
			t.Errorf("%s: %d to_host, %d to_device, %d host adamw ops", l, toHost, toDevice, adamw)
		}
		for _, want := range []string{"cuMemAllocHost(", "cuMemFreeHost(", "cuMemcpyDtoHAsync(s->host + ", "cuStreamWaitEvent(s->copy_stream, s->grads_ready, 0)",
			"cuEventSynchronize(s->to_host[0])", "moec_host_adamw((float *)(s->host + ", "cuMemcpyHtoDAsync(s->base + ",
			"cuStreamWaitEvent(s->stream, s->params_back, 0)", "moec_settle(s, opt, &update)", "moec_step_host_download"} {
			if !strings.Contains(host, want) {
				t.Errorf("%s: the host program has no %q", l, want)
			}
		}
		if strings.Contains(host, "\"dense_adamw\"") {
			t.Errorf("%s: the host program launches the device's AdamW", l)
		}
		// The copies move exactly the host part of each group: every byte of the
		// gradients' and the master weights' host buffers once.
		for i, op := range p.Ops {
			o := low.Ops[i].Offload
			if o == nil || op.Kind == step.OpAdamW {
				continue
			}
			host := op.Out[0]
			if op.Kind == step.OpToDevice {
				host = op.In[0]
			}
			var bytes int64
			for _, c := range o.Copies {
				bytes += c.Bytes
			}
			if want := p.Buffers[host].Bytes(); bytes != want {
				t.Errorf("%s: op %d (%s) copies %d bytes, %s holds %d", l, i, op.Kind, bytes, p.Buffers[host].Name, want)
			}
		}
		if zero != 0 {
			continue
		}
		at := strings.Index(host, "(update to_host")
		if at < 0 {
			t.Fatalf("the host program has no to_host op")
		}
		at = strings.LastIndex(host[:at], "\n") + 1
		end := at + strings.Index(host[at:], "\n}\n") + 3 // the end of moec_run_ops
		golden.Archive(t, "testdata/offload_tiny.txtar", &txtar.Archive{
			Comment: []byte("The host program of hunyuan_tiny's dense stage cut to two layers with the offloaded optimizer,\nfrom the first to_host op to the end of the step's ops.\nRegenerate with go test ./codegen/cudastep -run TestOffloadedOptimizerHostProgram -update.\n"),
			Files:   []txtar.File{{Name: HostName, Data: []byte(host[at:end])}},
		}, *update)
	}
}

// TestOffloadRefusesHostOpsItDoesNotLower: an op other than the offloaded optimizer's
// copies and update that touches host memory is refused with a message naming it, never
// lowered against the device arena: aux-free balancing's bias update of the host master
// copy (a MoE stage with a selection bias), and a grad_norm made to read that copy.
func TestOffloadRefusesHostOpsItDoesNotLower(t *testing.T) {
	b := step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}
	l := step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, OffloadOpt: true}
	m := tinyStage(t, 2, 4)
	moe := *m.MoE
	moe.Router = program.RouteHidden
	moe.Score, moe.TopK, moe.Normalize, moe.CapacityFactor = program.Sigmoid, 2, true, 0
	moe.AuxFreeBias = 0.001
	m.MoE = &moe
	if _, _, err := lowerOne(t, m, b, l); err == nil || !strings.Contains(err.Error(), "host memory") || !strings.Contains(err.Error(), "host master copy") {
		t.Errorf("aux-free balancing's bias update under offload: %v", err)
	}
	p, _, err := lowerOne(t, tinyStage(t, 2, 1), b, l)
	if err != nil {
		t.Fatal(err)
	}
	norm, hostW := -1, -1
	for i, op := range p.Ops {
		if op.Kind == step.OpGradNorm {
			norm = i
		}
	}
	for i, buf := range p.Buffers {
		if buf.Tier == step.Host && strings.HasPrefix(buf.Name, "params[") {
			hostW = i
		}
	}
	if norm < 0 || hostW < 0 {
		t.Fatalf("the program has no grad_norm (%d) or no host master copy (%d)", norm, hostW)
	}
	p.Ops[norm].In = append(p.Ops[norm].In, hostW)
	if _, err := Lower(p, tinyStage(t, 2, 1)); err == nil || !strings.Contains(err.Error(), "host memory") {
		t.Errorf("a grad_norm over a host buffer: %v", err)
	}
}

// hostAdamWProbe runs hostAdamW's update over the same values on one thread and on
// several, and prints each result that differs by a bit from one thread's (n values, a
// count that does not divide into whole spans, decay on and off), then the same for
// hostNormSums' sums of squares of 23 gradients of uneven sizes, then
// moec_host_threads' reading of some settings, then "done".
const hostAdamWProbe = `#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
` + hostAdamW + hostNormSums + `
static float *moec_fill(long long n, unsigned *seed, float lo, float span) {
  float *x = (float *)malloc(n * sizeof(float));
  for (long long i = 0; i < n; i++) {
    *seed = *seed * 1664525u + 1013904223u;
    x[i] = lo + span * (float)(*seed >> 8) / (float)(1u << 24);
  }
  return x;
}

int main() {
  const long long sizes[] = {1000, 2 * MOEC_HOST_ADAMW_GRAIN - 1, 5 * MOEC_HOST_ADAMW_GRAIN + 77};
  const float c[9] = {0.5f, 0.9f, 0.1f, 0.999f, 0.001f, 1.0f / (1.0f - 0.998f), 1e-8f, 1e-4f, 1e-3f / (1.0f - 0.81f)};
  for (long long n : sizes) {
    unsigned seed = (unsigned)n;
    float *g = moec_fill(n, &seed, -1, 2), *w0 = moec_fill(n, &seed, -1, 2), *m0 = moec_fill(n, &seed, -0.1f, 0.2f), *v0 = moec_fill(n, &seed, 0, 0.01f);
    for (int decay = 0; decay < 2; decay++) {
      float *want[3] = {NULL, NULL, NULL};
      const int counts[] = {1, 2, 3, 8};
      for (int threads : counts) {
        float *x[3] = {(float *)malloc(n * 4), (float *)malloc(n * 4), (float *)malloc(n * 4)};
        memcpy(x[0], w0, n * 4);
        memcpy(x[1], m0, n * 4);
        memcpy(x[2], v0, n * 4);
        for (int step = 0; step < 3; step++) moec_host_adamw(x[0], g, x[1], x[2], n, c, decay, threads);
        if (threads == 1) {
          memcpy(want, x, sizeof want);
          continue;
        }
        for (int k = 0; k < 3; k++)
          if (memcmp(x[k], want[k], n * 4) != 0) printf("n %lld, decay %d, %d threads: %s differs\n", n, decay, threads, k == 0 ? "w" : k == 1 ? "m" : "v");
        for (int k = 0; k < 3; k++) free(x[k]);
      }
      for (int k = 0; k < 3; k++) free(want[k]);
    }
    free(g), free(w0), free(m0), free(v0);
  }
  {
    const int n = 23;
    long long at[n], count[n], total = 0;
    for (int k = 0; k < n; k++) {
      count[k] = k % 5 == 0 ? 3 * MOEC_HOST_ADAMW_GRAIN + k : k % 3 == 0 ? 16 : 1000 * k + 7;
      at[k] = 4 * total;
      total += count[k];
    }
    unsigned seed = 7;
    float *g = moec_fill(total, &seed, -1, 2);
    double want[n], got[n];
    moec_host_sumsqs((const unsigned char *)g, at, count, n, want, 1);
    const int counts[] = {2, 3, 8, 64};
    for (int threads : counts) {
      memset(got, 0, sizeof got);
      moec_host_sumsqs((const unsigned char *)g, at, count, n, got, threads);
      if (memcmp(got, want, sizeof got) != 0) printf("sums of squares, %d threads: differ\n", threads);
    }
    free(g);
  }
  int hw = moec_host_threads(NULL);
  printf("threads: unset %s, \"\" %s, 4 %d, 256 %d, 0 %d, 257 %d, 2x %d, -3 %d\n", hw >= 1 && hw <= MOEC_HOST_THREADS_CAP ? "ok" : "out of range",
         moec_host_threads("") == hw ? "ok" : "differs", moec_host_threads("4"), moec_host_threads("256"), moec_host_threads("0"),
         moec_host_threads("257"), moec_host_threads("2x"), moec_host_threads("-3"));
  printf("done\n");
  return 0;
}
`

// TestHostAdamWThreadsBitwise: the host AdamW split over 2, 3 and 8 CPU threads writes
// the same bits as on one thread (three steps over 1000 values, one value short of the
// split's threshold, and five grains and a ragged tail), so do the unified cache's
// gradients' sums of squares split over 2, 3, 8 and 64, and MOEC_HOST_THREADS takes a
// count from 1 to 256 and nothing else.
func TestHostAdamWThreadsBitwise(t *testing.T) {
	clang := cuda.FindClang()
	if clang == "" {
		t.Skip("no clang++ on PATH")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "probe.cpp"), []byte(hostAdamWProbe), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "probe")
	cmd := exec.Command(clang, "-std=c++17", "-O2", "-Wall", "-Werror", "probe.cpp", "-o", bin, "-pthread")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := "threads: unset ok, \"\" ok, 4 4, 256 256, 0 -1, 257 -1, 2x -1, -3 -1\ndone\n"
	if string(out) != want {
		t.Errorf("the probe printed\n%s\nwant\n%s", out, want)
	}
}
