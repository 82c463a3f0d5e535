// The driver table filled with CPU stand-ins: device memory is host memory, a module is
// the registry of the kernels compiled as C++ under moec's emulation (moec_emu_find, one
// trampoline per kernel written from the kernel tables), and a launch queues the kernel's
// blocks on its stream. MOEC_EMU_DEVICE_BYTES sets the memory the emulated device reports
// free (default 80 GiB); MOEC_EMU_DEVICES how many devices there are (default 8, one a
// rank).
//
// An emulated stream runs its work in order but only when something needs it, as late as
// a GPU may: when the host synchronizes with it (cuStreamSynchronize, or a blocking copy
// or memset, which wait for every stream of the context as the legacy default stream
// does), or when work of another stream reaches a wait on an event recorded on it (which
// runs it up to that record). So a reader that does not wait for the stream writing its
// input reads it before it is written, and the tests see it. MOEC_EMU_STREAMS=eager-comm
// runs the streams a context creates after its first (the communication stream) as soon
// as work is queued on them, their waits first: a collective that does not wait for its
// input's producer then reads it too early. MOEC_EMU_STREAMS=eager runs every stream's
// work as it is queued.
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "moec_step_driver.h"

extern "C" const moec_emu_kernel *moec_emu_find(const char *name);

struct EmuStream;

// EmuCtx is a context: the streams it created, which a blocking copy waits for.
struct EmuCtx {
  int device;
  std::vector<EmuStream *> streams;
};

struct EmuStream {
  EmuCtx *ctx;
  bool eager;
  bool running;
  long long queued, done; // items queued and run so far
  std::deque<std::function<void()>> work;
};

// EmuEvent is the place of its last record: the stream and how many items were queued on
// it then.
struct EmuEvent {
  EmuStream *stream;
  long long at;
};

static thread_local EmuCtx *moec_emu_current;

// moec_emu_run_until runs s's work up to item at. A stream already running (a wait that
// leads back to it) has run everything before the wait, which is all a valid program needs.
static void moec_emu_run_until(EmuStream *s, long long at) {
  if (s->running) return;
  s->running = true;
  while (s->done < at && !s->work.empty()) {
    std::function<void()> f = std::move(s->work.front());
    s->work.pop_front();
    f();
    s->done++;
  }
  s->running = false;
}

static void moec_emu_flush(EmuCtx *c) {
  if (!c) return;
  for (EmuStream *s : c->streams) moec_emu_run_until(s, s->queued);
}

// moec_emu_enqueue queues f on stream s (the legacy default stream, 0: run now, after
// every stream of the current context). moec_nccl_emu.cpp queues its collectives with it.
void moec_emu_enqueue(CUstream stream, std::function<void()> f) {
  EmuStream *s = (EmuStream *)stream;
  if (!s) {
    moec_emu_flush(moec_emu_current);
    f();
    return;
  }
  s->work.push_back(std::move(f));
  s->queued++;
  if (s->eager) moec_emu_run_until(s, s->queued);
}

namespace {

struct EmuModule {
  int unused;
};

CUresult emu_init(unsigned) { return MOEC_CU_SUCCESS; }
CUresult emu_device_get(CUdevice *d, int ordinal) {
  int devices = 8;
  if (const char *v = getenv("MOEC_EMU_DEVICES")) devices = atoi(v);
  if (ordinal < 0 || ordinal >= devices) return MOEC_CU_ERROR_INVALID_VALUE;
  *d = ordinal;
  return MOEC_CU_SUCCESS;
}
CUresult emu_attribute(int *v, int attribute, CUdevice) {
  *v = attribute == MOEC_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR ? 8 : 0;
  return MOEC_CU_SUCCESS;
}
CUresult emu_ctx_create(CUcontext *c, unsigned, CUdevice device) {
  EmuCtx *ctx = new EmuCtx{device, {}};
  moec_emu_current = ctx;
  *c = (CUcontext)ctx;
  return MOEC_CU_SUCCESS;
}
CUresult emu_ctx_destroy(CUcontext c) {
  EmuCtx *ctx = (EmuCtx *)c;
  moec_emu_flush(ctx);
  if (moec_emu_current == ctx) moec_emu_current = NULL;
  delete ctx;
  return MOEC_CU_SUCCESS;
}
CUresult emu_ctx_set_current(CUcontext c) {
  moec_emu_current = (EmuCtx *)c;
  return MOEC_CU_SUCCESS;
}
CUresult emu_module_load(CUmodule *m, const void *) {
  *m = (CUmodule) new EmuModule{};
  return MOEC_CU_SUCCESS;
}
CUresult emu_module_unload(CUmodule m) {
  delete (EmuModule *)m;
  return MOEC_CU_SUCCESS;
}
CUresult emu_get_function(CUfunction *f, CUmodule, const char *name) {
  const moec_emu_kernel *k = moec_emu_find(name);
  if (!k) return MOEC_CU_ERROR_NOT_FOUND;
  *f = (CUfunction)k;
  return MOEC_CU_SUCCESS;
}
CUresult emu_func_attribute(CUfunction, int, int) { return MOEC_CU_SUCCESS; }
CUresult emu_mem_info(size_t *free_bytes, size_t *total) {
  size_t bytes = (size_t)80 << 30;
  if (const char *v = getenv("MOEC_EMU_DEVICE_BYTES")) bytes = (size_t)strtoull(v, NULL, 10);
  *free_bytes = bytes;
  *total = bytes;
  return MOEC_CU_SUCCESS;
}
CUresult emu_alloc(CUdeviceptr *p, size_t n) {
  void *m = calloc(1, n ? n : 1);
  if (!m) return MOEC_CU_ERROR_OUT_OF_MEMORY;
  *p = (CUdeviceptr)(size_t)m;
  return MOEC_CU_SUCCESS;
}
CUresult emu_free(CUdeviceptr p) {
  moec_emu_flush(moec_emu_current);
  free((void *)(size_t)p);
  return MOEC_CU_SUCCESS;
}
CUresult emu_htod(CUdeviceptr d, const void *s, size_t n) {
  moec_emu_flush(moec_emu_current);
  memcpy((void *)(size_t)d, s, n);
  return MOEC_CU_SUCCESS;
}
CUresult emu_dtoh(void *d, CUdeviceptr s, size_t n) {
  moec_emu_flush(moec_emu_current);
  memcpy(d, (const void *)(size_t)s, n);
  return MOEC_CU_SUCCESS;
}
CUresult emu_memset(CUdeviceptr d, unsigned char v, size_t n) {
  moec_emu_flush(moec_emu_current);
  memset((void *)(size_t)d, v, n);
  return MOEC_CU_SUCCESS;
}
CUresult emu_stream_create(CUstream *stream, unsigned) {
  EmuCtx *c = moec_emu_current;
  if (!c) return MOEC_CU_ERROR_INVALID_VALUE;
  const char *policy = getenv("MOEC_EMU_STREAMS");
  bool eager = policy && (strcmp(policy, "eager") == 0 || (strcmp(policy, "eager-comm") == 0 && !c->streams.empty()));
  EmuStream *s = new EmuStream{c, eager, false, 0, 0, {}};
  c->streams.push_back(s);
  *stream = (CUstream)s;
  return MOEC_CU_SUCCESS;
}
CUresult emu_stream_destroy(CUstream stream) {
  EmuStream *s = (EmuStream *)stream;
  moec_emu_run_until(s, s->queued);
  std::vector<EmuStream *> &all = s->ctx->streams;
  all.erase(std::remove(all.begin(), all.end(), s), all.end());
  delete s;
  return MOEC_CU_SUCCESS;
}
CUresult emu_stream_sync(CUstream stream) {
  EmuStream *s = (EmuStream *)stream;
  if (!s) {
    moec_emu_flush(moec_emu_current);
    return MOEC_CU_SUCCESS;
  }
  moec_emu_run_until(s, s->queued);
  return MOEC_CU_SUCCESS;
}
CUresult emu_event_create(CUevent *e, unsigned) {
  *e = (CUevent) new EmuEvent{NULL, 0};
  return MOEC_CU_SUCCESS;
}
CUresult emu_event_destroy(CUevent e) {
  delete (EmuEvent *)e;
  return MOEC_CU_SUCCESS;
}
CUresult emu_event_record(CUevent e, CUstream stream) {
  EmuEvent *ev = (EmuEvent *)e;
  if (!ev || !stream) return MOEC_CU_ERROR_INVALID_VALUE;
  ev->stream = (EmuStream *)stream;
  ev->at = ev->stream->queued;
  return MOEC_CU_SUCCESS;
}
// The wait is for the event's record as it stands when the wait is queued (an event never
// recorded is complete).
CUresult emu_stream_wait_event(CUstream stream, CUevent e, unsigned) {
  EmuEvent *ev = (EmuEvent *)e;
  if (!ev || !stream) return MOEC_CU_ERROR_INVALID_VALUE;
  EmuEvent at = *ev;
  moec_emu_enqueue(stream, [at] {
    if (at.stream) moec_emu_run_until(at.stream, at.at);
  });
  return MOEC_CU_SUCCESS;
}
// A launch copies its parameters (the host program's locals are gone when the stream runs
// the kernel) and queues the kernel's grid.
CUresult emu_launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                    unsigned shared, CUstream stream, void **params, void **) {
  if (!f || gx * gy * gz == 0 || bx * by * bz == 0 || bx * by * bz > 1024) return MOEC_CU_ERROR_INVALID_VALUE;
  const moec_emu_kernel *k = (const moec_emu_kernel *)f;
  struct Bound {
    std::vector<unsigned char> bytes;
    std::vector<void *> ptrs;
  };
  std::shared_ptr<Bound> b = std::make_shared<Bound>();
  b->bytes.resize(8 * (size_t)(k->nparams + 1));
  for (int i = 0; i < k->nparams; i++) {
    memcpy(&b->bytes[8 * i], params[i], k->param_bytes[i]);
    b->ptrs.push_back(&b->bytes[8 * i]);
  }
  b->ptrs.push_back(NULL);
  moec_emu_enqueue(stream, [k, b, gx, gy, gz, bx, by, bz, shared] {
    k->run(gx, gy, gz, bx, by, bz, shared, b->ptrs.data());
  });
  return MOEC_CU_SUCCESS;
}
// Pinned host memory is host memory; an asynchronous copy is queued on its stream and
// copies when the stream runs it, so a reader that does not wait for the copy's stream
// (an event or the stream) reads what was there before.
CUresult emu_alloc_host(void **p, size_t n) {
  void *m = calloc(1, n ? n : 1);
  if (!m) return MOEC_CU_ERROR_OUT_OF_MEMORY;
  *p = m;
  return MOEC_CU_SUCCESS;
}
CUresult emu_free_host(void *p) {
  moec_emu_flush(moec_emu_current);
  free(p);
  return MOEC_CU_SUCCESS;
}
CUresult emu_dtoh_async(void *d, CUdeviceptr s, size_t n, CUstream stream) {
  moec_emu_enqueue(stream, [d, s, n] { memcpy(d, (const void *)(size_t)s, n); });
  return MOEC_CU_SUCCESS;
}
CUresult emu_htod_async(CUdeviceptr d, const void *s, size_t n, CUstream stream) {
  moec_emu_enqueue(stream, [d, s, n] { memcpy((void *)(size_t)d, s, n); });
  return MOEC_CU_SUCCESS;
}
// cuEventSynchronize runs the event's stream up to its record.
CUresult emu_event_sync(CUevent e) {
  EmuEvent *ev = (EmuEvent *)e;
  if (!ev) return MOEC_CU_ERROR_INVALID_VALUE;
  if (ev->stream) moec_emu_run_until(ev->stream, ev->at);
  return MOEC_CU_SUCCESS;
}
CUresult emu_error_string(CUresult e, const char **text) {
  switch (e) {
  case MOEC_CU_SUCCESS:
    *text = "no error";
    break;
  case MOEC_CU_ERROR_INVALID_VALUE:
    *text = "invalid argument";
    break;
  case MOEC_CU_ERROR_OUT_OF_MEMORY:
    *text = "out of memory";
    break;
  case MOEC_CU_ERROR_NOT_FOUND:
    *text = "named symbol not found";
    break;
  default:
    *text = "unknown error";
  }
  return MOEC_CU_SUCCESS;
}

} // namespace

extern "C" int moec_cu_load(moec_cu *d, char *, size_t) {
  memset(d, 0, sizeof *d);
  d->cuInit = emu_init;
  d->cuDeviceGet = emu_device_get;
  d->cuDeviceGetAttribute = emu_attribute;
  d->cuCtxCreate = emu_ctx_create;
  d->cuCtxDestroy = emu_ctx_destroy;
  d->cuCtxSetCurrent = emu_ctx_set_current;
  d->cuModuleLoadData = emu_module_load;
  d->cuModuleUnload = emu_module_unload;
  d->cuModuleGetFunction = emu_get_function;
  d->cuFuncSetAttribute = emu_func_attribute;
  d->cuMemGetInfo = emu_mem_info;
  d->cuMemAlloc = emu_alloc;
  d->cuMemFree = emu_free;
  d->cuMemcpyHtoD = emu_htod;
  d->cuMemcpyDtoH = emu_dtoh;
  d->cuMemsetD8 = emu_memset;
  d->cuStreamCreate = emu_stream_create;
  d->cuStreamDestroy = emu_stream_destroy;
  d->cuStreamSynchronize = emu_stream_sync;
  d->cuStreamWaitEvent = emu_stream_wait_event;
  d->cuEventCreate = emu_event_create;
  d->cuEventDestroy = emu_event_destroy;
  d->cuEventRecord = emu_event_record;
  d->cuLaunchKernel = emu_launch;
  d->cuGetErrorString = emu_error_string;
  d->cuMemAllocHost = emu_alloc_host;
  d->cuMemFreeHost = emu_free_host;
  d->cuMemcpyDtoHAsync = emu_dtoh_async;
  d->cuMemcpyHtoDAsync = emu_htod_async;
  d->cuEventSynchronize = emu_event_sync;
  return 1;
}

extern "C" void moec_cu_unload(moec_cu *) {}
