// The NCCL table filled with CPU stand-ins: the ranks are threads of one process (one
// emulated device each) and a communicator is their meeting point, whose address the
// unique id carries (one per group of ranks: a rank holds a communicator for each group it
// communicates over, its NCCL rank its place in the group). A collective is queued on its
// stream like a kernel; when the stream runs it, the rank deposits its buffers, waits for
// every rank, computes its own result from all of theirs, and waits again before it writes
// it (so a rank never writes a buffer a peer still reads). The sums are runtime/exec's
// (exec.Kernels.AllReduce): each element summed in double over the ranks in the group's
// order, rounded once to float. Sends and receives
// between ncclGroupStart and ncclGroupEnd meet as one exchange: the k-th send from a rank
// to a peer fills the peer's k-th receive from it. MOEC_EMU_NCCL_TIMEOUT (seconds, default
// 300) bounds a wait for the other ranks; past it the process stops with a message saying
// which rank waited.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
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

// Deposit is what one rank brings to a meeting.
struct Deposit {
  const float *send;
  std::vector<P2P> p2p;
};

struct Clique {
  std::mutex mu;
  std::condition_variable cv;
  int nranks;
  int refs;
  long long gen;
  int arrived;
  std::vector<Deposit> deposits;
};

struct Comm {
  Clique *clique;
  int rank, nranks;
  std::vector<P2P> pending; // the open group's sends and receives
  CUstream group_stream;
};

thread_local int moec_nccl_group_depth;
thread_local std::vector<Comm *> moec_nccl_grouped;

// meet waits until every rank of c has called it (the same number of times).
void meet(Comm *c) {
  Clique *q = c->clique;
  std::unique_lock<std::mutex> lock(q->mu);
  long long gen = q->gen;
  if (++q->arrived == q->nranks) {
    q->arrived = 0;
    q->gen++;
    q->cv.notify_all();
    return;
  }
  long timeout = 300;
  if (const char *v = getenv("MOEC_EMU_NCCL_TIMEOUT")) timeout = atol(v);
  if (!q->cv.wait_for(lock, std::chrono::seconds(timeout), [&] { return q->gen != gen; })) {
    fprintf(stderr, "moec emulated NCCL: rank %d waited %ld s for the other %d ranks of its communicator\n", c->rank,
            timeout, q->nranks - 1);
    abort();
  }
}

// exchange deposits d for rank c, waits for every rank, runs mine (which reads the
// deposits) and waits again.
void exchange(Comm *c, Deposit d, const std::function<void(const std::vector<Deposit> &)> &mine) {
  {
    std::lock_guard<std::mutex> lock(c->clique->mu);
    c->clique->deposits[c->rank] = std::move(d);
  }
  meet(c);
  mine(c->clique->deposits);
  meet(c);
}

ncclResult_t emu_unique_id(ncclUniqueId *id) {
  memset(id, 0, sizeof *id);
  Clique *q = new Clique();
  q->nranks = 0;
  q->refs = 0;
  q->gen = 0;
  q->arrived = 0;
  memcpy(id->internal, &q, sizeof q);
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_init_rank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
  Clique *q;
  memcpy(&q, id.internal, sizeof q);
  if (!q || nranks < 1 || rank < 0 || rank >= nranks) return MOEC_NCCL_INVALID_ARGUMENT;
  {
    std::lock_guard<std::mutex> lock(q->mu);
    if (q->nranks == 0) {
      q->nranks = nranks;
      q->deposits.resize(nranks);
    }
    if (q->nranks != nranks) return MOEC_NCCL_INVALID_ARGUMENT;
    q->refs++;
  }
  Comm *c = new Comm{q, rank, nranks, {}, NULL};
  meet(c); // ncclCommInitRank returns once every rank has joined
  *comm = (ncclComm_t)c;
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_destroy(ncclComm_t comm) {
  Comm *c = (Comm *)comm;
  Clique *q = c->clique;
  bool last;
  {
    std::lock_guard<std::mutex> lock(q->mu);
    last = --q->refs == 0;
  }
  if (last) delete q;
  delete c;
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_all_reduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                            ncclComm_t comm, CUstream stream) {
  if (type != MOEC_NCCL_FLOAT32 || (op != MOEC_NCCL_SUM && op != MOEC_NCCL_MAX)) return MOEC_NCCL_INVALID_ARGUMENT;
  Comm *c = (Comm *)comm;
  moec_emu_enqueue(stream, [=] {
    std::vector<float> out(count);
    exchange(c, Deposit{(const float *)send, {}}, [&](const std::vector<Deposit> &all) {
      for (size_t i = 0; i < count; i++) {
        double acc = all[0].send[i];
        for (size_t m = 1; m < all.size(); m++) {
          double x = all[m].send[i];
          acc = op == MOEC_NCCL_MAX ? (x > acc ? x : acc) : acc + x;
        }
        out[i] = (float)acc;
      }
    });
    memcpy(recv, out.data(), count * sizeof(float));
  });
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_reduce_scatter(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                                ncclComm_t comm, CUstream stream) {
  if (type != MOEC_NCCL_FLOAT32 || op != MOEC_NCCL_SUM) return MOEC_NCCL_INVALID_ARGUMENT;
  Comm *c = (Comm *)comm;
  moec_emu_enqueue(stream, [=] {
    std::vector<float> out(count);
    exchange(c, Deposit{(const float *)send, {}}, [&](const std::vector<Deposit> &all) {
      size_t lo = (size_t)c->rank * count;
      for (size_t i = 0; i < count; i++) {
        double acc = 0;
        for (const Deposit &d : all) acc += d.send[lo + i];
        out[i] = (float)acc;
      }
    });
    memcpy(recv, out.data(), count * sizeof(float));
  });
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_all_gather(const void *send, void *recv, size_t count, ncclDataType_t type, ncclComm_t comm,
                            CUstream stream) {
  if (type != MOEC_NCCL_FLOAT32) return MOEC_NCCL_INVALID_ARGUMENT;
  Comm *c = (Comm *)comm;
  moec_emu_enqueue(stream, [=] {
    std::vector<float> out(count * (size_t)c->nranks);
    exchange(c, Deposit{(const float *)send, {}}, [&](const std::vector<Deposit> &all) {
      for (size_t m = 0; m < all.size(); m++) memcpy(&out[m * count], all[m].send, count * sizeof(float));
    });
    memcpy(recv, out.data(), out.size() * sizeof(float));
  });
  return MOEC_NCCL_SUCCESS;
}

ncclResult_t emu_group_start(void) {
  moec_nccl_group_depth++;
  return MOEC_NCCL_SUCCESS;
}

// run_p2p is one rank's side of a group's sends and receives.
void run_p2p(Comm *c, std::vector<P2P> ops) {
  std::vector<std::vector<float>> got;
  std::vector<P2P> recvs;
  exchange(c, Deposit{NULL, ops}, [&](const std::vector<Deposit> &all) {
    std::vector<int> taken(all.size(), 0); // sends from each peer already matched
    for (const P2P &r : ops) {
      if (r.send) continue;
      const P2P *match = NULL;
      int seen = 0;
      for (const P2P &s : all[r.peer].p2p)
        if (s.send && s.peer == c->rank && seen++ == taken[r.peer]) {
          match = &s;
          break;
        }
      if (!match || match->count != r.count) {
        fprintf(stderr, "moec emulated NCCL: rank %d receives %zu floats from rank %d, which sends %s\n", c->rank,
                r.count, r.peer, match ? "another count" : "nothing more");
        abort();
      }
      taken[r.peer]++;
      got.emplace_back(match->buf, match->buf + match->count);
      recvs.push_back(r);
    }
  });
  for (size_t i = 0; i < recvs.size(); i++) memcpy(recvs[i].buf, got[i].data(), got[i].size() * sizeof(float));
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
