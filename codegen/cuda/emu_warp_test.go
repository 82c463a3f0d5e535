package cuda_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/runtime/llvmrt"
)

// emuPrimitives exercises what the emulation adds beyond one-dimensional grids: warp
// shuffles and votes, barriers inside loops, three-dimensional grids and blocks, dynamic
// shared memory and atomics across blocks running on several OS threads.
const emuPrimitives = `
__global__ void warp_sums(const float *x, float *sums, unsigned *ballots, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = i < n ? x[i] : 0.f;
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  unsigned b = __ballot_sync(0xffffffffu, i < n && x[i] > 0.f);
  if ((threadIdx.x & 31) == 0) {
    sums[i / 32] = v;
    ballots[i / 32] = b;
  }
}

// Reverses each block's slice through dynamic shared memory, barriers in a loop.
__global__ void reverse_rounds(float *x, int rounds) {
  MOE_DYNAMIC_SHARED(float, tile);
  unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  unsigned n = blockDim.x * blockDim.y * blockDim.z;
  unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  for (int r = 0; r < rounds; r++) {
    tile[t] = x[b * n + t];
    __syncthreads();
    x[b * n + t] = tile[n - 1 - t];
    __syncthreads();
  }
}

__global__ void count_into(const int *keys, int *counts, float *total, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // exited threads do not hold a barrier
  atomicAdd(&counts[keys[i]], 1);
  atomicAdd(total, 0.5f);
}

extern "C" void t_warp_sums(void **a, long long, long long) {
  const float *x = (const float *)a[0];
  float *sums = (float *)a[1];
  unsigned *ballots = (unsigned *)a[2];
  int n = *(int *)a[3];
  moec_emu_launch3(dim3((n + 63) / 64), dim3(64), 0, [=] { warp_sums(x, sums, ballots, n); });
}
extern "C" void t_reverse(void **a, long long, long long) {
  float *x = (float *)a[0];
  int rounds = *(int *)a[1];
  moec_emu_launch3(dim3(2, 3, 1), dim3(4, 2, 3), 24 * sizeof(float), [=] { reverse_rounds(x, rounds); });
}
extern "C" void t_count(void **a, long long, long long) {
  const int *keys = (const int *)a[0];
  int *counts = (int *)a[1];
  float *total = (float *)a[2];
  int n = *(int *)a[3];
  moec_emu_launch3(dim3((n + 127) / 128), dim3(128), 0, [=] { count_into(keys, counts, total, n); });
}
`

func TestEmulationPrimitives(t *testing.T) {
	clang := cuda.FindClang()
	if clang == "" {
		t.Skip("no clang++ on PATH")
	}
	dir := t.TempDir()
	emu := filepath.Join(dir, "moec_cpu_emu.h")
	src := filepath.Join(dir, "prims.cpp")
	if err := os.WriteFile(emu, []byte(cuda.EmulationHeader()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, []byte(emuPrimitives), 0o644); err != nil {
		t.Fatal(err)
	}
	so := filepath.Join(dir, "libprims.so")
	cmd := exec.CommandContext(context.Background(), clang, "-std=c++17", "-O1", "-fPIC", "-shared", "-include", emu, src, "-o", so, "-lpthread")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("compile: %v\n%s", err, out)
	}
	lib, err := llvmrt.Open(so)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	call := func(name string, args ...any) {
		t.Helper()
		f, err := lib.Func(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Call(0, 0, args...); err != nil {
			t.Fatal(err)
		}
	}

	const n = 200
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(i%7) - 3
	}
	sums, ballots := make([]float32, 7), make([]int32, 7)
	call("t_warp_sums", x, sums, ballots, int32(n))
	for w := range sums {
		var want float32
		var bits uint32
		for l := 0; l < 32; l++ {
			if i := w*32 + l; i < n {
				want += x[i]
				if x[i] > 0 {
					bits |= 1 << l
				}
			}
		}
		if sums[w] != want || uint32(ballots[w]) != bits {
			t.Errorf("warp %d: sum %v ballot %#x, want %v %#x", w, sums[w], uint32(ballots[w]), want, bits)
		}
	}

	y := make([]float32, 6*24)
	for i := range y {
		y[i] = float32(i)
	}
	call("t_reverse", y, int32(3)) // an odd number of reversals: reversed
	for b := 0; b < 6; b++ {
		for i := 0; i < 24; i++ {
			if want := float32(b*24 + 23 - i); y[b*24+i] != want {
				t.Fatalf("block %d element %d: %v, want %v", b, i, y[b*24+i], want)
			}
		}
	}

	const m = 1000
	keys := make([]int32, m)
	for i := range keys {
		keys[i] = int32(i * 7 % 5)
	}
	counts, total := make([]int32, 5), make([]float32, 1)
	call("t_count", keys, counts, total, int32(m))
	for k, c := range counts {
		if c != m/5 {
			t.Errorf("count of key %d: %d, want %d", k, c, m/5)
		}
	}
	if total[0] != m/2 {
		t.Errorf("total %v, want %v", total[0], m/2)
	}
}
