// NCCL as moec's generated host programs call it: a table of entry points, filled either
// from libnccl.so.2 opened at run time (moec_nccl_dlopen.cpp; no NCCL headers or SDK at
// build time) or with CPU stand-ins in which the ranks, threads of one process or
// processes, meet in shared memory (moec_nccl_emu.cpp). The types and numbers are NCCL's
// ABI (nccl.h).
#ifndef MOEC_STEP_NCCL_H
#define MOEC_STEP_NCCL_H

#include <stddef.h>

#include "moec_step_driver.h"

typedef int ncclResult_t;
typedef struct ncclComm *ncclComm_t;
typedef struct {
  char internal[128];
} ncclUniqueId;
typedef int ncclDataType_t;
typedef int ncclRedOp_t;

#define MOEC_NCCL_SUCCESS 0
#define MOEC_NCCL_INVALID_ARGUMENT 4
#define MOEC_NCCL_FLOAT32 7 // ncclFloat32
#define MOEC_NCCL_SUM 0     // ncclSum
#define MOEC_NCCL_MAX 2     // ncclMax

// moec_nccl is the entry points the host program uses. A stream is the driver's CUstream
// (NCCL's cudaStream_t is the same handle).
typedef struct moec_nccl {
  void *library; // the dlopen handle (NULL for the stand-ins)
  ncclResult_t (*ncclGetUniqueId)(ncclUniqueId *id);
  ncclResult_t (*ncclCommInitRank)(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
  ncclResult_t (*ncclCommDestroy)(ncclComm_t comm);
  ncclResult_t (*ncclAllReduce)(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                                ncclComm_t comm, CUstream stream);
  ncclResult_t (*ncclReduceScatter)(const void *send, void *recv, size_t recvcount, ncclDataType_t type,
                                    ncclRedOp_t op, ncclComm_t comm, CUstream stream);
  ncclResult_t (*ncclAllGather)(const void *send, void *recv, size_t sendcount, ncclDataType_t type,
                                ncclComm_t comm, CUstream stream);
  ncclResult_t (*ncclSend)(const void *send, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                           CUstream stream);
  ncclResult_t (*ncclRecv)(void *recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, CUstream stream);
  ncclResult_t (*ncclGroupStart)(void);
  ncclResult_t (*ncclGroupEnd)(void);
  const char *(*ncclGetErrorString)(ncclResult_t result);
} moec_nccl;

#ifdef __cplusplus
extern "C" {
#endif
// moec_nccl_load fills n; on failure it writes why into err (errn bytes) and returns 0.
int moec_nccl_load(moec_nccl *n, char *err, size_t errn);
// moec_nccl_unload releases what moec_nccl_load opened.
void moec_nccl_unload(moec_nccl *n);
#ifdef __cplusplus
}
#endif

#endif
