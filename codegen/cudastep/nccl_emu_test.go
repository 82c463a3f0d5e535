package cudastep

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
)

// ncclProbe runs every emulated NCCL collective between two ranks in two processes (the
// second forked after the unique id is made, as mpirun's ranks get it over MPI) and checks
// each result against the same arithmetic done here: sums in double over the ranks in
// order, rounded once. The collectives are larger than a slot (MOEC_EMU_NCCL_SLOT_BYTES),
// so they run in rounds.
const ncclProbe = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "moec_step_nccl.h"

extern "C" const moec_emu_kernel *moec_emu_find(const char *) { return NULL; }

#define N 1000
#define CHECK(call) \
  if ((call) != 0) { fprintf(stderr, "%s failed\n", #call); exit(1); }

static float input(int rank, int i) { return (float)((i * 7 + rank * 3) % 11) * 0.1f + (float)rank / 3.0f; }

static int run(int rank, ncclUniqueId id) {
  moec_cu cu;
  moec_nccl nccl;
  char err[256];
  if (!moec_cu_load(&cu, err, sizeof err) || !moec_nccl_load(&nccl, err, sizeof err)) return 1;
  CUdevice dev;
  CUcontext ctx;
  CUstream stream;
  CHECK(cu.cuInit(0));
  CHECK(cu.cuDeviceGet(&dev, rank));
  CHECK(cu.cuCtxCreate(&ctx, 0, dev));
  CHECK(cu.cuStreamCreate(&stream, 0));
  ncclComm_t comm;
  CHECK(nccl.ncclCommInitRank(&comm, 2, id, rank));
  CUdeviceptr send, recv, gather, p2p;
  CHECK(cu.cuMemAlloc(&send, 2 * N * 4));
  CHECK(cu.cuMemAlloc(&recv, 2 * N * 4));
  CHECK(cu.cuMemAlloc(&gather, 2 * N * 4));
  CHECK(cu.cuMemAlloc(&p2p, 16 * 4));
  float host[2 * N], got[2 * N];
  for (int i = 0; i < 2 * N; i++) host[i] = input(rank, i);
  CHECK(cu.cuMemcpyHtoD(send, host, sizeof host));
  CHECK(nccl.ncclAllReduce((void *)send, (void *)recv, 2 * N, MOEC_NCCL_FLOAT32, MOEC_NCCL_SUM, comm, stream));
  CHECK(cu.cuStreamSynchronize(stream));
  CHECK(cu.cuMemcpyDtoH(got, recv, sizeof got));
  int bad = 0;
  for (int i = 0; i < 2 * N; i++) bad += got[i] != (float)((double)input(0, i) + (double)input(1, i));
  CHECK(nccl.ncclAllReduce((void *)send, (void *)recv, 2 * N, MOEC_NCCL_FLOAT32, MOEC_NCCL_MAX, comm, stream));
  CHECK(cu.cuStreamSynchronize(stream));
  CHECK(cu.cuMemcpyDtoH(got, recv, sizeof got));
  for (int i = 0; i < 2 * N; i++) bad += got[i] != (input(0, i) > input(1, i) ? input(0, i) : input(1, i));
  CHECK(nccl.ncclReduceScatter((void *)send, (void *)recv, N, MOEC_NCCL_FLOAT32, MOEC_NCCL_SUM, comm, stream));
  CHECK(cu.cuStreamSynchronize(stream));
  CHECK(cu.cuMemcpyDtoH(got, recv, N * 4));
  for (int i = 0; i < N; i++)
    bad += got[i] != (float)((double)input(0, rank * N + i) + (double)input(1, rank * N + i));
  CHECK(nccl.ncclAllGather((void *)send, (void *)gather, N, MOEC_NCCL_FLOAT32, comm, stream));
  CHECK(cu.cuStreamSynchronize(stream));
  CHECK(cu.cuMemcpyDtoH(got, gather, sizeof got));
  for (int i = 0; i < 2 * N; i++) bad += got[i] != input(i / N, i % N);
  // Two sends each way in one group: the k-th send fills the peer's k-th receive.
  CHECK(nccl.ncclGroupStart());
  CHECK(nccl.ncclSend((void *)send, 8, MOEC_NCCL_FLOAT32, 1 - rank, comm, stream));
  CHECK(nccl.ncclSend((void *)(send + 32 * 4), 8, MOEC_NCCL_FLOAT32, 1 - rank, comm, stream));
  CHECK(nccl.ncclRecv((void *)p2p, 8, MOEC_NCCL_FLOAT32, 1 - rank, comm, stream));
  CHECK(nccl.ncclRecv((void *)(p2p + 8 * 4), 8, MOEC_NCCL_FLOAT32, 1 - rank, comm, stream));
  CHECK(nccl.ncclGroupEnd());
  CHECK(cu.cuStreamSynchronize(stream));
  CHECK(cu.cuMemcpyDtoH(got, p2p, 16 * 4));
  for (int i = 0; i < 16; i++) bad += got[i] != input(1 - rank, i < 8 ? i : 32 + i - 8);
  CHECK(nccl.ncclCommDestroy(comm));
  printf("rank %d: %d wrong\n", rank, bad);
  return bad != 0;
}

int main() {
  moec_nccl nccl;
  char err[256];
  if (!moec_nccl_load(&nccl, err, sizeof err)) return 1;
  ncclUniqueId id;
  CHECK(nccl.ncclGetUniqueId(&id));
  fflush(stdout);
  pid_t child = fork();
  if (child == 0) exit(run(1, id));
  int rc = run(0, id), status = 0;
  waitpid(child, &status, 0);
  return rc || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}
`

// TestEmulatedNCCLAcrossProcesses: the emulated NCCL's ranks meet in shared memory, so two
// processes (as under mpirun) run every collective, in rounds where it outgrows a slot,
// with runtime/exec's arithmetic, and the communicator's file is gone afterwards.
func TestEmulatedNCCLAcrossProcesses(t *testing.T) {
	clang := cuda.FindClang()
	if clang == "" {
		t.Skip("no clang++ on PATH")
	}
	dir := t.TempDir()
	for name, text := range map[string]string{"probe.cpp": ncclProbe, DriverHeaderName: driverHeader, DriverEmuName: driverEmu,
		NCCLHeaderName: ncclHeader, NCCLEmuName: ncclEmu} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "probe")
	cmd := exec.Command(clang, "-std=c++17", "-O1", "-Wall", "-Werror", "-Wno-unused-parameter", "-I", ".", "probe.cpp", DriverEmuName, NCCLEmuName, "-o", bin, "-lpthread")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	tmp := t.TempDir()
	run := exec.Command(bin)
	// 1 KiB slots: the 2000-float collectives take 8 rounds, the reduce-scatter 16.
	run.Env = append(os.Environ(), "TMPDIR="+tmp, "MOEC_EMU_NCCL_SLOT_BYTES=1024", "MOEC_EMU_NCCL_TIMEOUT=60")
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"rank 0: 0 wrong", "rank 1: 0 wrong"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the probe printed\n%s\nwant a line %q", out, want)
		}
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("the communicator left %s behind", e.Name())
	}
}
