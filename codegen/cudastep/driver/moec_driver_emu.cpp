// The driver table filled with CPU stand-ins: device memory is host memory, a module is
// the registry of the kernels compiled as C++ under moec's emulation (moec_emu_find, one
// trampoline per kernel written from the kernel tables), and a launch runs the kernel's
// blocks there before it returns. MOEC_EMU_DEVICE_BYTES sets the memory the emulated
// device reports free (default 80 GiB).
#include <stdlib.h>
#include <string.h>

#include "moec_step_driver.h"

extern "C" const moec_emu_kernel *moec_emu_find(const char *name);

namespace {

struct EmuModule {
  int unused;
};

CUresult emu_init(unsigned) { return MOEC_CU_SUCCESS; }
CUresult emu_device_get(CUdevice *d, int ordinal) {
  if (ordinal != 0) return MOEC_CU_ERROR_INVALID_VALUE;
  *d = 0;
  return MOEC_CU_SUCCESS;
}
CUresult emu_attribute(int *v, int attribute, CUdevice) {
  *v = attribute == MOEC_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR ? 8 : 0;
  return MOEC_CU_SUCCESS;
}
CUresult emu_ctx_create(CUcontext *c, unsigned, CUdevice) {
  *c = (CUcontext)calloc(1, 8);
  return *c ? MOEC_CU_SUCCESS : MOEC_CU_ERROR_OUT_OF_MEMORY;
}
CUresult emu_ctx_destroy(CUcontext c) {
  free(c);
  return MOEC_CU_SUCCESS;
}
CUresult emu_ctx_set_current(CUcontext) { return MOEC_CU_SUCCESS; }
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
  free((void *)(size_t)p);
  return MOEC_CU_SUCCESS;
}
CUresult emu_htod(CUdeviceptr d, const void *s, size_t n) {
  memcpy((void *)(size_t)d, s, n);
  return MOEC_CU_SUCCESS;
}
CUresult emu_dtoh(void *d, CUdeviceptr s, size_t n) {
  memcpy(d, (const void *)(size_t)s, n);
  return MOEC_CU_SUCCESS;
}
CUresult emu_memset(CUdeviceptr d, unsigned char v, size_t n) {
  memset((void *)(size_t)d, v, n);
  return MOEC_CU_SUCCESS;
}
CUresult emu_stream_create(CUstream *s, unsigned) {
  *s = (CUstream)calloc(1, 8);
  return *s ? MOEC_CU_SUCCESS : MOEC_CU_ERROR_OUT_OF_MEMORY;
}
CUresult emu_stream_destroy(CUstream s) {
  free(s);
  return MOEC_CU_SUCCESS;
}
CUresult emu_stream_sync(CUstream) { return MOEC_CU_SUCCESS; }
CUresult emu_launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                    unsigned shared, CUstream, void **params, void **) {
  if (!f || gx * gy * gz == 0 || bx * by * bz == 0 || bx * by * bz > 1024) return MOEC_CU_ERROR_INVALID_VALUE;
  ((const moec_emu_kernel *)f)->run(gx, gy, gz, bx, by, bz, shared, params);
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
  d->cuLaunchKernel = emu_launch;
  d->cuGetErrorString = emu_error_string;
  return 1;
}

extern "C" void moec_cu_unload(moec_cu *) {}
