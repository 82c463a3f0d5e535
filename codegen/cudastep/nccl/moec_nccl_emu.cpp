// The NCCL table filled with CPU stand-ins: each rank is one emulated device, in this
// process (a thread each, OpenRanks) or in a process of its own (mpirun), and a
// communicator is the ranks' meeting point in shared memory (one per group of ranks: a
// rank holds a communicator for each group it communicates over, its NCCL rank its place
// in the group). ncclGetUniqueId creates a file under the temporary folder (TMPDIR, else
// /tmp) whose name the unique id carries; every member maps it MAP_SHARED in
// ncclCommInitRank, and the first member unlinks it once all have joined (the mapping
// outlives the name, so nothing is left behind once the communicator has formed; the
// memory goes when the last member unmaps it in ncclCommDestroy). The file holds a
// process-shared mutex and condition variable, a generation barrier, and one slot per rank.
//
// A collective is queued on its stream like a kernel; when the stream runs it, the rank
// copies its send data into its slot (peers cannot read each other's pointers), waits for
// every rank, computes its own result from all the slots, and waits again before the slots
// are written anew. A collective larger than a slot runs in chunks; the result is the
// same, element by element. The sums are runtime/exec's (exec.Kernels.AllReduce): each
// element summed in double over the ranks in the group's order, rounded once to float.
// Sends and receives between ncclGroupStart and ncclGroupEnd meet as one exchange: the
// k-th send from a rank to a peer fills the peer's k-th receive from it; a group whose
// sends outgrow the slot stops the process with a message. MOEC_EMU_NCCL_SLOT_BYTES sets
// a slot's size (default 64 MiB; the file is sparse, so only what a collective writes
// takes memory), read where the unique id is made. MOEC_EMU_NCCL_TIMEOUT (seconds, default
// 300) bounds a wait for the other ranks; past it the process stops with a message saying
// which rank waited.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <functional>
#include <vector>

#include "moec_step_nccl.h"

void moec_emu_enqueue(CUstream stream, std::function<void()> f);

namespace {

struct P2P {
  bool send;
  int peer;
  float *buf;
  size_t count;
};

// Shared is the head of the communicator's file, mapped by every member.
struct Shared {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int nranks;
  int joined;
  long long gen;
  int arrived;
  unsigned long long slot_bytes;
};

// The slots start a page after the head.
const size_t head_bytes = 4096;

// A p2p deposit: the ops, then the sends' data, in the rank's slot.
struct P2PHead {
  int send;
  int peer;
  unsigned long long count;
  unsigned long long at; // a send's data: its offset in the slot
};

struct Comm {
  Shared *sh;
  size_t mapped;
  int rank, nranks;
  std::vector<P2P> pending; // the open group's sends and receives
  CUstream group_stream;
};

thread_local int moec_nccl_group_depth;
thread_local std::vector<Comm *> moec_nccl_grouped;

char *slot(Comm *c, int r) { return (char *)c->sh + head_bytes + (size_t)r * c->sh->slot_bytes; }

// meet waits until every rank of c has called it (the same number of times).
void meet(Comm *c) {
  Shared *q = c->sh;
  pthread_mutex_lock(&q->mu);
  long long gen = q->gen;
  if (++q->arrived == q->nranks) {
    q->arrived = 0;
    q->gen++;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return;
  }
  long timeout = 300;
  if (const char *v = getenv("MOEC_EMU_NCCL_TIMEOUT")) timeout = atol(v);
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += timeout;
  while (q->gen == gen) {
    if (pthread_cond_timedwait(&q->cv, &q->mu, &until) == ETIMEDOUT && q->gen == gen) {
      fprintf(stderr, "moec emulated NCCL: rank %d waited %ld s for the other %d ranks of its communicator\n", c->rank,
              timeout, q->nranks - 1);
      abort();
    }
  }
  pthread_mutex_unlock(&q->mu);
}

// exchange runs one meeting in rounds: deposit(lo, n) writes rank c's part of elements
// [lo, lo+n) into its slot, and after every rank has, mine(lo, n) reads every slot; the
// rounds take per elements at a time (per ≥ 1: how many fit a slot).
void exchange(Comm *c, size_t count, size_t per, const std::function<void(size_t, size_t)> &deposit,
              const std::function<void(size_t, size_t)> &mine) {
  if (per == 0) {
    fprintf(stderr, "moec emulated NCCL: rank %d: a slot of %llu bytes holds no element of a collective; raise MOEC_EMU_NCCL_SLOT_BYTES\n",
            c->rank, c->sh->slot_bytes);
    abort();
  }
  size_t lo = 0;
  do {
    size_t n = count - lo < per ? count - lo : per;
    deposit(lo, n);
    meet(c);
    mine(lo, n);
    meet(c);
    lo += n;
  } while (lo < count);
}

ncclResult_t emu_unique_id(ncclUniqueId *id) {
  memset(id, 0, sizeof *id);
  const char *tmp = getenv("TMPDIR");
  if (!tmp || !*tmp) tmp = "/tmp";
  int n = snprintf(id->internal, sizeof id->internal, "%s/moec-nccl-XXXXXX", tmp);
  if (n <= 0 || n >= (int)sizeof id->internal) return MOEC_NCCL_INVALID_ARGUMENT;
  int fd = mkstemp(id->internal);
  if (fd < 0) {
    fprintf(stderr, "moec emulated NCCL: creating %s: %s\n", id->internal, strerror(errno));
    return MOEC_NCCL_INVALID_ARGUMENT;
  }
  unsigned long long slot_bytes = 64ull << 20;
  if (const char *v = getenv("MOEC_EMU_NCCL_SLOT_BYTES")) slot_bytes = strtoull(v, NULL, 10);
  if (ftruncate(fd, head_bytes) != 0) {
    close(fd);
    unlink(id->internal);
    return MOEC_NCCL_INVALID_ARGUMENT;
  }
  Shared *q = (Shared *)mmap(NULL, head_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (q == MAP_FAILED) {
    unlink(id->internal);
    return MOEC_NCCL_INVALID_ARGUMENT;
  }
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  pthread_mutex_init(&q->mu, &ma);
  pthread_mutexattr_destroy(&ma);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&q->cv, &ca);
  pthread_condattr_destroy(&ca);
  q->slot_bytes = slot_bytes;
  munmap(q, head_bytes);
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_init_rank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
  char path[sizeof id.internal + 1];
  memcpy(path, id.internal, sizeof id.internal);
  path[sizeof id.internal] = 0;
  if (!path[0] || nranks < 1 || rank < 0 || rank >= nranks) return MOEC_NCCL_INVALID_ARGUMENT;
  int fd = open(path, O_RDWR);
  if (fd < 0) {
    fprintf(stderr, "moec emulated NCCL: rank %d opening the communicator's file %s: %s\n", rank, path, strerror(errno));
    return MOEC_NCCL_INVALID_ARGUMENT;
  }
  Shared *head = (Shared *)mmap(NULL, head_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (head == MAP_FAILED) {
    close(fd);
    return MOEC_NCCL_INVALID_ARGUMENT;
  }
  size_t bytes = head_bytes + (size_t)nranks * head->slot_bytes;
  munmap(head, head_bytes);
  // Every member grows the file to the same size (the slots are sparse until written).
  struct stat st;
  if (fstat(fd, &st) != 0 || ((size_t)st.st_size < bytes && ftruncate(fd, (off_t)bytes) != 0)) {
    close(fd);
    return MOEC_NCCL_INVALID_ARGUMENT;
  }
  Shared *q = (Shared *)mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (q == MAP_FAILED) return MOEC_NCCL_INVALID_ARGUMENT;
  pthread_mutex_lock(&q->mu);
  if (q->nranks == 0) q->nranks = nranks;
  bool ok = q->nranks == nranks;
  if (ok) q->joined++;
  pthread_mutex_unlock(&q->mu);
  if (!ok) {
    munmap(q, bytes);
    return MOEC_NCCL_INVALID_ARGUMENT;
  }
  Comm *c = new Comm{q, bytes, rank, nranks, {}, NULL};
  meet(c); // ncclCommInitRank returns once every rank has joined (and mapped the file)
  if (rank == 0) unlink(path);
  *comm = (ncclComm_t)c;
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_destroy(ncclComm_t comm) {
  Comm *c = (Comm *)comm;
  munmap(c->sh, c->mapped);
  delete c;
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_all_reduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                            ncclComm_t comm, CUstream stream) {
  if (type != MOEC_NCCL_FLOAT32 || (op != MOEC_NCCL_SUM && op != MOEC_NCCL_MAX)) return MOEC_NCCL_INVALID_ARGUMENT;
  Comm *c = (Comm *)comm;
  moec_emu_enqueue(stream, [=] {
    const float *in = (const float *)send;
    float *out = (float *)recv;
    exchange(
        c, count, c->sh->slot_bytes / sizeof(float),
        [&](size_t lo, size_t n) { memcpy(slot(c, c->rank), in + lo, n * sizeof(float)); },
        [&](size_t lo, size_t n) {
          for (size_t i = 0; i < n; i++) {
            double acc = ((const float *)slot(c, 0))[i];
            for (int m = 1; m < c->nranks; m++) {
              double x = ((const float *)slot(c, m))[i];
              acc = op == MOEC_NCCL_MAX ? (x > acc ? x : acc) : acc + x;
            }
            out[lo + i] = (float)acc;
          }
        });
  });
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_reduce_scatter(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                                ncclComm_t comm, CUstream stream) {
  if (type != MOEC_NCCL_FLOAT32 || op != MOEC_NCCL_SUM) return MOEC_NCCL_INVALID_ARGUMENT;
  Comm *c = (Comm *)comm;
  moec_emu_enqueue(stream, [=] {
    const float *in = (const float *)send;
    float *out = (float *)recv;
    size_t N = (size_t)c->nranks;
    // A round's slot holds elements [lo, lo+n) of every rank's block, block by block.
    exchange(
        c, count, c->sh->slot_bytes / sizeof(float) / N,
        [&](size_t lo, size_t n) {
          float *s = (float *)slot(c, c->rank);
          for (size_t k = 0; k < N; k++) memcpy(s + k * n, in + k * count + lo, n * sizeof(float));
        },
        [&](size_t lo, size_t n) {
          size_t at = (size_t)c->rank * n;
          for (size_t i = 0; i < n; i++) {
            double acc = 0;
            for (int m = 0; m < c->nranks; m++) acc += ((const float *)slot(c, m))[at + i];
            out[lo + i] = (float)acc;
          }
        });
  });
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_all_gather(const void *send, void *recv, size_t count, ncclDataType_t type, ncclComm_t comm,
                            CUstream stream) {
  if (type != MOEC_NCCL_FLOAT32) return MOEC_NCCL_INVALID_ARGUMENT;
  Comm *c = (Comm *)comm;
  moec_emu_enqueue(stream, [=] {
    const float *in = (const float *)send;
    float *out = (float *)recv;
    exchange(
        c, count, c->sh->slot_bytes / sizeof(float),
        [&](size_t lo, size_t n) { memcpy(slot(c, c->rank), in + lo, n * sizeof(float)); },
        [&](size_t lo, size_t n) {
          for (int m = 0; m < c->nranks; m++) memcpy(out + (size_t)m * count + lo, slot(c, m), n * sizeof(float));
        });
  });
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_group_start(void) {
  moec_nccl_group_depth++;
  return MOEC_NCCL_SUCCESS;
}

// run_p2p is one rank's side of a group's sends and receives: its slot holds the count of
// its ops, the ops and then its sends' data, which its peers copy out.
void run_p2p(Comm *c, std::vector<P2P> ops) {
  exchange(
      c, 1, 1,
      [&](size_t, size_t) {
        char *s = slot(c, c->rank);
        unsigned long long nops = ops.size();
        size_t at = sizeof nops + ops.size() * sizeof(P2PHead);
        for (const P2P &o : ops)
          if (o.send) at += o.count * sizeof(float);
        if (at > c->sh->slot_bytes) {
          fprintf(stderr, "moec emulated NCCL: rank %d sends %zu bytes in one group, more than a slot's %llu; raise MOEC_EMU_NCCL_SLOT_BYTES\n",
                  c->rank, at, c->sh->slot_bytes);
          abort();
        }
        memcpy(s, &nops, sizeof nops);
        P2PHead *h = (P2PHead *)(s + sizeof nops);
        at = sizeof nops + ops.size() * sizeof(P2PHead);
        for (size_t i = 0; i < ops.size(); i++) {
          h[i] = P2PHead{ops[i].send, ops[i].peer, ops[i].count, at};
          if (!ops[i].send) continue;
          memcpy(s + at, ops[i].buf, ops[i].count * sizeof(float));
          at += ops[i].count * sizeof(float);
        }
      },
      [&](size_t, size_t) {
        std::vector<int> taken(c->nranks, 0); // sends from each peer already matched
        for (const P2P &r : ops) {
          if (r.send) continue;
          const char *s = slot(c, r.peer);
          unsigned long long nops;
          memcpy(&nops, s, sizeof nops);
          const P2PHead *h = (const P2PHead *)(s + sizeof nops), *match = NULL;
          int seen = 0;
          for (unsigned long long i = 0; i < nops; i++)
            if (h[i].send && h[i].peer == c->rank && seen++ == taken[r.peer]) {
              match = &h[i];
              break;
            }
          if (!match || match->count != r.count) {
            fprintf(stderr, "moec emulated NCCL: rank %d receives %zu floats from rank %d, which sends %s\n", c->rank,
                    r.count, r.peer, match ? "another count" : "nothing more");
            abort();
          }
          taken[r.peer]++;
          memcpy(r.buf, s + match->at, r.count * sizeof(float));
        }
      });
}

ncclResult_t emu_group_end(void) {
  if (moec_nccl_group_depth <= 0) return MOEC_NCCL_INVALID_ARGUMENT;
  if (--moec_nccl_group_depth > 0) return MOEC_NCCL_SUCCESS;
  std::vector<Comm *> comms;
  comms.swap(moec_nccl_grouped);
  for (Comm *c : comms) {
    std::vector<P2P> ops;
    ops.swap(c->pending);
    moec_emu_enqueue(c->group_stream, [c, ops] { run_p2p(c, ops); });
  }
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_p2p(P2P op, ncclDataType_t type, ncclComm_t comm, CUstream stream) {
  Comm *c = (Comm *)comm;
  if (type != MOEC_NCCL_FLOAT32 || op.peer < 0 || op.peer >= c->nranks) return MOEC_NCCL_INVALID_ARGUMENT;
  bool alone = moec_nccl_group_depth == 0;
  if (alone) emu_group_start();
  if (c->pending.empty()) {
    c->group_stream = stream;
    moec_nccl_grouped.push_back(c);
  }
  c->pending.push_back(op);
  return alone ? emu_group_end() : MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_send(const void *send, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      CUstream stream) {
  return emu_p2p(P2P{true, peer, (float *)send, count}, type, comm, stream);
}

ncclResult_t emu_recv(void *recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, CUstream stream) {
  return emu_p2p(P2P{false, peer, (float *)recv, count}, type, comm, stream);
}

const char *emu_error_string(ncclResult_t r) {
  switch (r) {
  case MOEC_NCCL_SUCCESS:
    return "no error";
  case MOEC_NCCL_INVALID_ARGUMENT:
    return "invalid argument";
  }
  return "unknown error";
}

} // namespace

extern "C" int moec_nccl_load(moec_nccl *d, char *, size_t) {
  memset(d, 0, sizeof *d);
  d->ncclGetUniqueId = emu_unique_id;
  d->ncclCommInitRank = emu_init_rank;
  d->ncclCommDestroy = emu_destroy;
  d->ncclAllReduce = emu_all_reduce;
  d->ncclReduceScatter = emu_reduce_scatter;
  d->ncclAllGather = emu_all_gather;
  d->ncclSend = emu_send;
  d->ncclRecv = emu_recv;
  d->ncclGroupStart = emu_group_start;
  d->ncclGroupEnd = emu_group_end;
  d->ncclGetErrorString = emu_error_string;
  return 1;
}

extern "C" void moec_nccl_unload(moec_nccl *) {}
