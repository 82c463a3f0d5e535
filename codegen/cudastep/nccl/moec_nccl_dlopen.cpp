// The NCCL table filled from libnccl.so.2, opened at run time: the NCCL library is all a
// machine with several GPUs needs beyond the driver (no NCCL headers or SDK at build time).
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "moec_step_nccl.h"

template <class F> static int moec_nccl_sym(void *lib, F *slot, const char *name, char *err, size_t n) {
  void *p = dlsym(lib, name);
  if (!p) {
    snprintf(err, n, "libnccl.so.2 has no %s: NCCL is too old for moec (2.7 or newer has ncclSend and ncclRecv)", name);
    return 0;
  }
  memcpy(slot, &p, sizeof p);
  return 1;
}

extern "C" int moec_nccl_load(moec_nccl *d, char *err, size_t n) {
  memset(d, 0, sizeof *d);
  void *lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    snprintf(err, n,
             "cannot load libnccl.so.2, NVIDIA's collective library (%s): several ranks on GPUs need NCCL 2.7 or "
             "newer installed (moec needs no NCCL headers)",
             why ? why : "not found");
    return 0;
  }
  d->library = lib;
  int ok = moec_nccl_sym(lib, &d->ncclGetUniqueId, "ncclGetUniqueId", err, n) &&
           moec_nccl_sym(lib, &d->ncclCommInitRank, "ncclCommInitRank", err, n) &&
           moec_nccl_sym(lib, &d->ncclCommDestroy, "ncclCommDestroy", err, n) &&
           moec_nccl_sym(lib, &d->ncclAllReduce, "ncclAllReduce", err, n) &&
           moec_nccl_sym(lib, &d->ncclReduceScatter, "ncclReduceScatter", err, n) &&
           moec_nccl_sym(lib, &d->ncclAllGather, "ncclAllGather", err, n) &&
           moec_nccl_sym(lib, &d->ncclSend, "ncclSend", err, n) &&
           moec_nccl_sym(lib, &d->ncclRecv, "ncclRecv", err, n) &&
           moec_nccl_sym(lib, &d->ncclGroupStart, "ncclGroupStart", err, n) &&
           moec_nccl_sym(lib, &d->ncclGroupEnd, "ncclGroupEnd", err, n) &&
           moec_nccl_sym(lib, &d->ncclGetErrorString, "ncclGetErrorString", err, n);
  if (!ok) {
    dlclose(lib);
    d->library = NULL;
  }
  return ok;
}

extern "C" void moec_nccl_unload(moec_nccl *d) {
  if (d->library) dlclose(d->library);
  d->library = NULL;
}
