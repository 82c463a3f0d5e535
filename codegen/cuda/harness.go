package cuda

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/kernels"
)

// Case is one kernel run of the GPU check: the kernel, the scalar arguments and the
// element count of every buffer parameter (0 for scalars), both in Param order.
type Case struct {
	Kernel  *kernels.Kernel
	Scalars map[string]float64
	Sizes   []int64
	// Tol is the comparison tolerance relative to max(1, |want|).
	Tol float64
}

// NewCase fills Sizes and Scalars of k from env.
func NewCase(k *kernels.Kernel, env kernels.Env, tol float64) (Case, error) {
	c := Case{Kernel: k, Scalars: map[string]float64{}, Tol: tol}
	for _, p := range k.Params {
		if !p.Buffer {
			s, ok := env.S[p.Name]
			if !ok {
				return c, fmt.Errorf("case %s: scalar %s not set", k.Name, p.Name)
			}
			c.Scalars[p.Name] = s
			c.Sizes = append(c.Sizes, 0)
			continue
		}
		n, err := k.Size(p, env)
		if err != nil {
			return c, fmt.Errorf("case %s: %w", k.Name, err)
		}
		c.Sizes = append(c.Sizes, n)
	}
	return c, nil
}

// Harness writes the host program of the GPU check (moe_check.cu). For each check case
// it reads DIR/<kernel>.in (every buffer in Param order, little-endian f32/i32), runs
// the kernel through its launcher, and compares the output buffers with DIR/<kernel>.want
// (the outputs in Param order, from the Go references). The bench cases run in order
// as one pipeline on DIR/bench.in, reps times, timed with CUDA events. It prints one
// line per kernel and exits non-zero when any check fails.
func Harness(check, bench []Case, reps int) (string, error) {
	var w strings.Builder
	w.WriteString(Header + "\n")
	w.WriteString(`// GPU check harness: compares the generated kernels with the Go references and times them.
#include "moe_kernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_CUDA(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
  fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); exit(2); } } while (0)

static inline void *read_all(const char *dir, const char *name, size_t bytes) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
  void *buf = malloc(bytes ? bytes : 1);
  if (fread(buf, 1, bytes, f) != bytes) { fprintf(stderr, "%s: short read\n", path); exit(2); }
  fclose(f);
  return buf;
}

static inline void *to_device(const void *host, size_t bytes) {
  void *dev = 0;
  CHECK_CUDA(cudaMalloc(&dev, bytes ? bytes : 4));
  if (bytes) CHECK_CUDA(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
  return dev;
}

__attribute__((unused)) static int compare_f32(const char *kernel, const char *buf, const float *got, const float *want, size_t n, double tol) {
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)got[i] - (double)want[i];
    if (d < 0) d = -d;
    double scale = want[i] < 0 ? -want[i] : want[i];
    if (scale < 1) scale = 1;
    if (!(d / scale <= worst)) { worst = d / scale; at = i; }
  }
  if (!(worst <= tol)) {
    printf("FAIL %s.%s[%zu] = %g, want %g (relative error %g > %g)\n", kernel, buf, at, got[at], want[at], worst, tol);
    return 1;
  }
  return 0;
}

__attribute__((unused)) static int compare_i32(const char *kernel, const char *buf, const int *got, const int *want, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (got[i] != want[i]) {
      printf("FAIL %s.%s[%zu] = %d, want %d\n", kernel, buf, i, got[i], want[i]);
      return 1;
    }
  }
  return 0;
}
`)
	for _, c := range check {
		if err := harnessCase(&w, c); err != nil {
			return "", err
		}
	}
	if err := harnessBench(&w, bench, reps); err != nil {
		return "", err
	}
	w.WriteString("\nint main(int argc, char **argv) {\n  const char *dir = argc > 1 ? argv[1] : \".\";\n  int fails = 0;\n")
	for _, c := range check {
		fmt.Fprintf(&w, "  fails += check_%s(dir);\n", c.Kernel.Name)
	}
	if len(bench) > 0 {
		w.WriteString("  bench(dir);\n")
	}
	w.WriteString("  printf(\"%d kernel(s) failed\\n\", fails);\n  return fails ? 1 : 0;\n}\n")
	return w.String(), nil
}

// scalarLit is the C literal of a scalar argument.
func scalarLit(p kernels.Param, v float64) string {
	if p.Elem == kernels.F32 {
		return cfloat(float32(v))
	}
	return strconv.FormatInt(int64(v), 10) + "LL"
}

// launchArgs is the argument list of moe_launch_<kernel> over dev[i] buffers.
func launchArgs(c Case, dev string) []string {
	var args []string
	for i, p := range c.Kernel.Params {
		if !p.Buffer {
			args = append(args, scalarLit(p, c.Scalars[p.Name]))
			continue
		}
		args = append(args, fmt.Sprintf("(%s%s*)%s[%d]", constPrefix(p), ctype(p.Elem), dev, i))
	}
	return append(args, "0")
}

func harnessCase(w *strings.Builder, c Case) error {
	k := c.Kernel
	if len(c.Sizes) != len(k.Params) {
		return fmt.Errorf("harness: case %s has %d sizes for %d params", k.Name, len(c.Sizes), len(k.Params))
	}
	np := len(k.Params)
	fmt.Fprintf(w, "\n// %s\nstatic int check_%s(const char *dir) {\n", k.Name, k.Name)
	var sizes []string
	for _, s := range c.Sizes {
		sizes = append(sizes, strconv.FormatInt(s, 10))
	}
	fmt.Fprintf(w, "  const size_t n[%d] = {%s};\n", np, strings.Join(sizes, ", "))
	fmt.Fprintf(w, "  size_t in_bytes = 0, want_bytes = 0;\n")
	for i, p := range k.Params {
		if !p.Buffer {
			continue
		}
		fmt.Fprintf(w, "  in_bytes += 4 * n[%d];\n", i)
		if p.Access != kernels.In {
			fmt.Fprintf(w, "  want_bytes += 4 * n[%d];\n", i)
		}
	}
	fmt.Fprintf(w, "  char *in = (char *)read_all(dir, \"%s.in\", in_bytes);\n", k.Name)
	fmt.Fprintf(w, "  char *want = (char *)read_all(dir, \"%s.want\", want_bytes);\n", k.Name)
	fmt.Fprintf(w, "  void *dev[%d] = {0};\n  size_t off = 0;\n", np)
	for i, p := range k.Params {
		if p.Buffer {
			fmt.Fprintf(w, "  dev[%d] = to_device(in + off, 4 * n[%d]); off += 4 * n[%d];\n", i, i, i)
		}
	}
	fmt.Fprintf(w, "  CHECK_CUDA(moe_launch_%s(%s));\n", k.Name, strings.Join(launchArgs(c, "dev"), ", "))
	w.WriteString("  CHECK_CUDA(cudaDeviceSynchronize());\n  int fails = 0;\n  off = 0;\n")
	for i, p := range k.Params {
		if !p.Buffer || p.Access == kernels.In {
			continue
		}
		fmt.Fprintf(w, "  {\n    void *got = malloc(4 * n[%d] + 4);\n", i)
		fmt.Fprintf(w, "    CHECK_CUDA(cudaMemcpy(got, dev[%d], 4 * n[%d], cudaMemcpyDeviceToHost));\n", i, i)
		if p.Elem == kernels.I32 {
			fmt.Fprintf(w, "    fails += compare_i32(\"%s\", \"%s\", (const int *)got, (const int *)(want + off), n[%d]);\n", k.Name, p.Name, i)
		} else {
			fmt.Fprintf(w, "    fails += compare_f32(\"%s\", \"%s\", (const float *)got, (const float *)(want + off), n[%d], %g);\n",
				k.Name, p.Name, i, c.Tol)
		}
		fmt.Fprintf(w, "    off += 4 * n[%d];\n    free(got);\n  }\n", i)
	}
	fmt.Fprintf(w, "  for (int i = 0; i < %d; i++) if (dev[i]) cudaFree(dev[i]);\n", np)
	fmt.Fprintf(w, "  free(in);\n  free(want);\n  printf(\"%%s %s\\n\", fails ? \"FAIL\" : \"ok  \");\n  return fails ? 1 : 0;\n}\n", k.Name)
	return nil
}

// harnessBench runs the bench cases as one pipeline over shared named buffers: a buffer
// name used by several kernels is one device allocation, so the router's outputs feed
// the permutation and so on, as in a training step.
func harnessBench(w *strings.Builder, bench []Case, reps int) error {
	if len(bench) == 0 {
		return nil
	}
	type buf struct {
		name string
		elem kernels.Type
		size int64
	}
	var bufs []buf
	index := map[string]int{}
	for _, c := range bench {
		for i, p := range c.Kernel.Params {
			if !p.Buffer {
				continue
			}
			if j, ok := index[p.Name]; ok {
				if bufs[j].size < c.Sizes[i] {
					bufs[j].size = c.Sizes[i]
				}
				continue
			}
			index[p.Name] = len(bufs)
			bufs = append(bufs, buf{p.Name, p.Elem, c.Sizes[i]})
		}
	}
	fmt.Fprintf(w, "\n// The timed pipeline: bench.in holds the %d buffers below in this order.\nstatic void bench(const char *dir) {\n", len(bufs))
	var sizes []string
	for _, b := range bufs {
		sizes = append(sizes, strconv.FormatInt(b.size, 10))
	}
	fmt.Fprintf(w, "  const size_t n[%d] = {%s};\n  size_t bytes = 0;\n", len(bufs), strings.Join(sizes, ", "))
	fmt.Fprintf(w, "  for (int i = 0; i < %d; i++) bytes += 4 * n[i];\n", len(bufs))
	w.WriteString("  char *in = (char *)read_all(dir, \"bench.in\", bytes);\n")
	fmt.Fprintf(w, "  void *buf[%d];\n  size_t off = 0;\n", len(bufs))
	fmt.Fprintf(w, "  for (int i = 0; i < %d; i++) { buf[i] = to_device(in + off, 4 * n[i]); off += 4 * n[i]; }\n", len(bufs))
	w.WriteString("  cudaEvent_t ev[2 * 16];\n")
	fmt.Fprintf(w, "  for (int i = 0; i < %d; i++) CHECK_CUDA(cudaEventCreate(&ev[i]));\n", 2*len(bench))
	fmt.Fprintf(w, "  float total[%d] = {0};\n", len(bench))
	if len(bench) > 16 {
		return fmt.Errorf("harness: at most 16 bench kernels")
	}
	fmt.Fprintf(w, "  for (int rep = 0; rep < %d + 1; rep++) { // the first repetition warms up\n", reps)
	for i, c := range bench {
		var args []string
		for _, p := range c.Kernel.Params {
			if !p.Buffer {
				args = append(args, scalarLit(p, c.Scalars[p.Name]))
				continue
			}
			args = append(args, fmt.Sprintf("(%s%s*)buf[%d]", constPrefix(p), ctype(p.Elem), index[p.Name]))
		}
		args = append(args, "0")
		fmt.Fprintf(w, "    CHECK_CUDA(cudaEventRecord(ev[%d], 0));\n", 2*i)
		fmt.Fprintf(w, "    CHECK_CUDA(moe_launch_%s(%s));\n", c.Kernel.Name, strings.Join(args, ", "))
		fmt.Fprintf(w, "    CHECK_CUDA(cudaEventRecord(ev[%d], 0));\n", 2*i+1)
	}
	w.WriteString("    CHECK_CUDA(cudaDeviceSynchronize());\n")
	fmt.Fprintf(w, "    if (rep == 0) continue;\n    for (int i = 0; i < %d; i++) { float ms; CHECK_CUDA(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1])); total[i] += ms; }\n  }\n", len(bench))
	w.WriteString("  float sum = 0;\n")
	for i, c := range bench {
		fmt.Fprintf(w, "  printf(\"bench moec %-18s %%9.3f ms\\n\", total[%d] / %d); sum += total[%d] / %d;\n", c.Kernel.Name, i, reps, i, reps)
	}
	w.WriteString("  printf(\"bench moec %-18s %9.3f ms\\n\", \"moe_layer_total\", sum);\n")
	fmt.Fprintf(w, "  for (int i = 0; i < %d; i++) cudaFree(buf[i]);\n  free(in);\n}\n", len(bufs))
	return nil
}
