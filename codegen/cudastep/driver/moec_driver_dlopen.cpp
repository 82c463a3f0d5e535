// The driver table filled from libcuda.so.1, opened at run time: the NVIDIA driver is all a
// machine needs (no CUDA SDK). The versioned symbols (_v2) are the ones the driver's own
// header selects.
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "moec_step_driver.h"

template <class F> static int moec_sym(void *lib, F *slot, const char *name, char *err, size_t n) {
  void *p = dlsym(lib, name);
  if (!p) {
    snprintf(err, n, "libcuda.so.1 has no %s: the NVIDIA driver is too old for moec", name);
    return 0;
  }
  memcpy(slot, &p, sizeof p);
  return 1;
}

extern "C" int moec_cu_load(moec_cu *d, char *err, size_t n) {
  memset(d, 0, sizeof *d);
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    snprintf(err, n,
             "cannot load libcuda.so.1, the NVIDIA driver's CUDA library (%s): install the NVIDIA driver "
             "(moec needs no CUDA SDK)",
             why ? why : "not found");
    return 0;
  }
  d->library = lib;
  int ok = moec_sym(lib, &d->cuInit, "cuInit", err, n) && moec_sym(lib, &d->cuDeviceGet, "cuDeviceGet", err, n) &&
           moec_sym(lib, &d->cuDeviceGetAttribute, "cuDeviceGetAttribute", err, n) &&
           moec_sym(lib, &d->cuCtxCreate, "cuCtxCreate_v2", err, n) &&
           moec_sym(lib, &d->cuCtxDestroy, "cuCtxDestroy_v2", err, n) &&
           moec_sym(lib, &d->cuCtxSetCurrent, "cuCtxSetCurrent", err, n) &&
           moec_sym(lib, &d->cuModuleLoadData, "cuModuleLoadData", err, n) &&
           moec_sym(lib, &d->cuModuleUnload, "cuModuleUnload", err, n) &&
           moec_sym(lib, &d->cuModuleGetFunction, "cuModuleGetFunction", err, n) &&
           moec_sym(lib, &d->cuFuncSetAttribute, "cuFuncSetAttribute", err, n) &&
           moec_sym(lib, &d->cuMemGetInfo, "cuMemGetInfo_v2", err, n) &&
           moec_sym(lib, &d->cuMemAlloc, "cuMemAlloc_v2", err, n) &&
           moec_sym(lib, &d->cuMemFree, "cuMemFree_v2", err, n) &&
           moec_sym(lib, &d->cuMemcpyHtoD, "cuMemcpyHtoD_v2", err, n) &&
           moec_sym(lib, &d->cuMemcpyDtoH, "cuMemcpyDtoH_v2", err, n) &&
           moec_sym(lib, &d->cuMemsetD8, "cuMemsetD8_v2", err, n) &&
           moec_sym(lib, &d->cuStreamCreate, "cuStreamCreate", err, n) &&
           moec_sym(lib, &d->cuStreamDestroy, "cuStreamDestroy_v2", err, n) &&
           moec_sym(lib, &d->cuStreamSynchronize, "cuStreamSynchronize", err, n) &&
           moec_sym(lib, &d->cuStreamWaitEvent, "cuStreamWaitEvent", err, n) &&
           moec_sym(lib, &d->cuEventCreate, "cuEventCreate", err, n) &&
           moec_sym(lib, &d->cuEventDestroy, "cuEventDestroy_v2", err, n) &&
           moec_sym(lib, &d->cuEventRecord, "cuEventRecord", err, n) &&
           moec_sym(lib, &d->cuLaunchKernel, "cuLaunchKernel", err, n) &&
           moec_sym(lib, &d->cuGetErrorString, "cuGetErrorString", err, n) &&
           moec_sym(lib, &d->cuMemAllocHost, "cuMemAllocHost_v2", err, n) &&
           moec_sym(lib, &d->cuMemFreeHost, "cuMemFreeHost", err, n) &&
           moec_sym(lib, &d->cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", err, n) &&
           moec_sym(lib, &d->cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", err, n) &&
           moec_sym(lib, &d->cuEventSynchronize, "cuEventSynchronize", err, n);
  if (!ok) {
    dlclose(lib);
    d->library = NULL;
  }
  return ok;
}

extern "C" void moec_cu_unload(moec_cu *d) {
  if (d->library) dlclose(d->library);
  d->library = NULL;
}
