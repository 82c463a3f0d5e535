// The CUDA driver API as moec's generated host programs call it: a table of entry points,
// filled either from libcuda.so.1 opened at run time (moec_driver_dlopen.cpp; no CUDA SDK
// at build or run time) or with CPU stand-ins that run the kernels under moec's emulation
// (moec_driver_emu.cpp). The types and numbers are the driver's ABI (cuda.h).
#ifndef MOEC_STEP_DRIVER_H
#define MOEC_STEP_DRIVER_H

#include <stddef.h>

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef unsigned long long CUdeviceptr;

#define MOEC_CU_SUCCESS 0
#define MOEC_CU_ERROR_INVALID_VALUE 1
#define MOEC_CU_ERROR_OUT_OF_MEMORY 2
#define MOEC_CU_ERROR_NOT_FOUND 500
#define MOEC_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define MOEC_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define MOEC_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES 8
#define MOEC_CU_EVENT_DISABLE_TIMING 2

// moec_cu is the driver's entry points the host program uses.
typedef struct moec_cu {
  void *library; // the dlopen handle (NULL for the stand-ins)
  CUresult (*cuInit)(unsigned flags);
  CUresult (*cuDeviceGet)(CUdevice *device, int ordinal);
  CUresult (*cuDeviceGetAttribute)(int *value, int attribute, CUdevice device);
  CUresult (*cuCtxCreate)(CUcontext *ctx, unsigned flags, CUdevice device);
  CUresult (*cuCtxDestroy)(CUcontext ctx);
  CUresult (*cuCtxSetCurrent)(CUcontext ctx);
  CUresult (*cuModuleLoadData)(CUmodule *module, const void *image);
  CUresult (*cuModuleUnload)(CUmodule module);
  CUresult (*cuModuleGetFunction)(CUfunction *fn, CUmodule module, const char *name);
  CUresult (*cuFuncSetAttribute)(CUfunction fn, int attribute, int value);
  CUresult (*cuMemGetInfo)(size_t *free, size_t *total);
  CUresult (*cuMemAlloc)(CUdeviceptr *ptr, size_t bytes);
  CUresult (*cuMemFree)(CUdeviceptr ptr);
  CUresult (*cuMemcpyHtoD)(CUdeviceptr dst, const void *src, size_t bytes);
  CUresult (*cuMemcpyDtoH)(void *dst, CUdeviceptr src, size_t bytes);
  CUresult (*cuMemsetD8)(CUdeviceptr dst, unsigned char value, size_t bytes);
  CUresult (*cuStreamCreate)(CUstream *stream, unsigned flags);
  CUresult (*cuStreamDestroy)(CUstream stream);
  CUresult (*cuStreamSynchronize)(CUstream stream);
  CUresult (*cuStreamWaitEvent)(CUstream stream, CUevent event, unsigned flags);
  CUresult (*cuEventCreate)(CUevent *event, unsigned flags);
  CUresult (*cuEventDestroy)(CUevent event);
  CUresult (*cuEventRecord)(CUevent event, CUstream stream);
  CUresult (*cuLaunchKernel)(CUfunction fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                             unsigned bz, unsigned shared, CUstream stream, void **params, void **extra);
  CUresult (*cuGetErrorString)(CUresult error, const char **text);
  // The offloaded optimizer's pinned host memory and its copies on a copy stream.
  CUresult (*cuMemAllocHost)(void **ptr, size_t bytes);
  CUresult (*cuMemFreeHost)(void *ptr);
  CUresult (*cuMemcpyDtoHAsync)(void *dst, CUdeviceptr src, size_t bytes, CUstream stream);
  CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr dst, const void *src, size_t bytes, CUstream stream);
  CUresult (*cuEventSynchronize)(CUevent event);
} moec_cu;

#ifdef __cplusplus
extern "C" {
#endif
// moec_cu_load fills d; on failure it writes why into err (n bytes) and returns 0.
int moec_cu_load(moec_cu *d, char *err, size_t n);
// moec_cu_unload releases what moec_cu_load opened.
void moec_cu_unload(moec_cu *d);
#ifdef __cplusplus
}
#endif

// The emulation's registry: a kernel's launch trampoline by name (moec_emu_*.cpp), and the
// bytes of each of its parameters, which a launch copies before the kernel runs (an
// emulated stream runs its work later, as a GPU's does).
typedef void (*moec_emu_run)(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                             unsigned shared, void **params);
typedef struct moec_emu_kernel {
  const char *name;
  moec_emu_run run;
  int nparams;
  const unsigned char *param_bytes;
} moec_emu_kernel;

#endif
