// CPU emulation of the CUDA subset moec generates, so that tests can run the generated
// CUDA code without a GPU and compare it with the Go references.
//
// A launch runs its blocks on a few OS threads (one block at a time each); the CUDA
// threads of a block are fibers on that OS thread (on x86-64 a six-register stack switch,
// elsewhere ucontext, whose every switch is a system call), run in turn until each
// finishes or waits at a barrier: __syncthreads waits for every live thread of the block,
// __syncwarp and the warp primitives (__shfl*_sync, __ballot_sync, __any_sync, __all_sync)
// for every live thread of the warp (32 consecutive linear thread ids). A barrier that can
// never be released (threads of one block waiting at different barriers) aborts with a
// message instead of hanging. __shared__ variables are static thread_local: shared by the
// fibers of the one block an OS thread runs. Atomics are real atomics (blocks run in
// parallel). Device math uses libm here (the GPU uses the approximate instructions).
#ifndef MOEC_CPU_EMU_H
#define MOEC_CPU_EMU_H
#define MOEC_CPU_EMULATION 1

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __shared__ static thread_local
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
// Go slices are not always 16-byte aligned; the GPU's allocations are.
#define __builtin_assume_aligned(p, a) (p)

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#if defined(__x86_64__) && !defined(MOEC_EMU_UCONTEXT)
#define MOEC_EMU_FAST_SWITCH 1
// moec_emu_switch saves the callee-saved registers on the running stack, stores its stack
// pointer in *from and resumes the stack to (whose top holds the same six registers and a
// return address): what the System V ABI asks a call to preserve, with no signal-mask
// system call (glibc's swapcontext makes one per switch). Weak: every translation unit
// that includes this header defines the same bytes.
extern "C" void moec_emu_switch(void **from, void *to);
__asm__(
    ".text\n"
    ".weak moec_emu_switch\n"
    ".type moec_emu_switch,@function\n"
    "moec_emu_switch:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size moec_emu_switch,.-moec_emu_switch\n");
#else
#define MOEC_EMU_FAST_SWITCH 0
#endif

namespace moec_emu {

enum State { Runnable, AtBlockBarrier, AtWarpBarrier, Done };

// Block is what one OS thread needs to run a block's threads as fibers.
struct Block {
#if MOEC_EMU_FAST_SWITCH
  std::vector<void *> sp;  // each parked fiber's stack pointer
  void *scheduler_sp = nullptr;
#else
  std::vector<ucontext_t> ctx;
  ucontext_t scheduler;
#endif
  std::vector<State> state;
  std::vector<char *> stacks;
  unsigned threads = 0, current = 0;
  const void *body = nullptr;
  void (*run)(const void *) = nullptr;
  // One 8-byte slot per thread for the warp primitives' exchanges.
  std::vector<uint64_t> lanes;
  std::vector<unsigned char> shared;  // the launch's dynamic shared memory
};
inline thread_local Block *current_block;
static const size_t stack_bytes = 256 * 1024;

inline void fail(const char *what) {
  fprintf(stderr, "moec CUDA emulation: %s\n", what);
  abort();
}

// Parks the running fiber in state s and returns to the scheduler.
inline void park(State s) {
  Block *b = current_block;
  unsigned me = b->current;
  b->state[me] = s;
#if MOEC_EMU_FAST_SWITCH
  moec_emu_switch(&b->sp[me], b->scheduler_sp);
#else
  swapcontext(&b->ctx[me], &b->scheduler);
#endif
}

inline void fiber_main() {
  Block *b = current_block;
  b->run(b->body);
  b->state[b->current] = Done;
#if MOEC_EMU_FAST_SWITCH
  // A finished fiber is never resumed: switch to the scheduler for good.
  moec_emu_switch(&b->sp[b->current], b->scheduler_sp);
  fail("a finished fiber was resumed");
#endif
  // (ucontext) returning resumes uc_link: the scheduler
}

#if MOEC_EMU_FAST_SWITCH
// start_fiber lays out a new fiber's stack for moec_emu_switch: six zero registers, then
// fiber_main as the return address, over one empty slot so that fiber_main starts with
// the stack alignment a call gives (rsp ≡ 8 mod 16).
inline void *start_fiber(char *stack, size_t bytes) {
  uintptr_t top = ((uintptr_t)(stack + bytes)) & ~(uintptr_t)15;
  void **sp = (void **)top;
  *--sp = nullptr;                // fiber_main's own return slot: never used
  *--sp = (void *)&fiber_main;    // where moec_emu_switch's ret goes
  for (int i = 0; i < 6; i++) *--sp = nullptr;  // rbp, rbx, r12–r15
  return sp;
}
#endif

inline void set_thread(unsigned i) {
  threadIdx.x = i % blockDim.x;
  threadIdx.y = i / blockDim.x % blockDim.y;
  threadIdx.z = i / (blockDim.x * blockDim.y);
}

// Releases the threads a barrier holds once every live thread it waits for has arrived;
// reports whether any was released.
inline bool release(Block *b) {
  bool any = false;
  for (unsigned w = 0; w < b->threads; w += 32) {
    unsigned end = w + 32 < b->threads ? w + 32 : b->threads;
    bool all = true, some = false;
    for (unsigned i = w; i < end; i++) {
      if (b->state[i] == AtWarpBarrier) some = true;
      else if (b->state[i] != Done) all = false;
    }
    if (some && all) {
      for (unsigned i = w; i < end; i++)
        if (b->state[i] == AtWarpBarrier) b->state[i] = Runnable;
      any = true;
    }
  }
  if (any) return true;
  bool all = true, some = false;
  for (unsigned i = 0; i < b->threads; i++) {
    if (b->state[i] == AtBlockBarrier) some = true;
    else if (b->state[i] != Done) all = false;
  }
  if (some && all) {
    for (unsigned i = 0; i < b->threads; i++)
      if (b->state[i] == AtBlockBarrier) b->state[i] = Runnable;
    return true;
  }
  return false;
}

inline void run_block(Block *b) {
  for (unsigned i = 0; i < b->threads; i++) {
#if MOEC_EMU_FAST_SWITCH
    b->sp[i] = start_fiber(b->stacks[i], stack_bytes);
#else
    getcontext(&b->ctx[i]);
    b->ctx[i].uc_stack.ss_sp = b->stacks[i];
    b->ctx[i].uc_stack.ss_size = stack_bytes;
    b->ctx[i].uc_link = &b->scheduler;
    makecontext(&b->ctx[i], (void (*)())fiber_main, 0);
#endif
    b->state[i] = Runnable;
  }
  for (;;) {
    bool ran = false;
    for (unsigned i = 0; i < b->threads; i++) {
      if (b->state[i] != Runnable) continue;
      b->current = i;
      set_thread(i);
#if MOEC_EMU_FAST_SWITCH
      moec_emu_switch(&b->scheduler_sp, b->sp[i]);
#else
      swapcontext(&b->scheduler, &b->ctx[i]);
#endif
      ran = true;
    }
    if (release(b)) continue;
    bool done = true;
    for (unsigned i = 0; i < b->threads; i++) done = done && b->state[i] == Done;
    if (done) return;
    if (!ran) fail("deadlock: threads of one block wait at different barriers");
  }
}

// StackPool keeps the fibers' stack mappings of finished launches for the next ones: a
// fresh mapping per launch costs a page fault per fiber stack on first touch, launch after
// launch. At most eight mappings wait; the rest are unmapped.
struct StackPool {
  std::mutex mu;
  std::vector<std::pair<char *, size_t>> free;
};
inline StackPool stack_pool;

inline char *take_stacks(size_t bytes) {
  {
    std::lock_guard<std::mutex> hold(stack_pool.mu);
    for (size_t i = 0; i < stack_pool.free.size(); i++) {
      if (stack_pool.free[i].second == bytes) {
        char *mem = stack_pool.free[i].first;
        stack_pool.free.erase(stack_pool.free.begin() + i);
        return mem;
      }
    }
  }
  char *mem = (char *)mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) fail("cannot map the fibers' stacks");
  return mem;
}

inline void give_stacks(char *mem, size_t bytes) {
  {
    std::lock_guard<std::mutex> hold(stack_pool.mu);
    if (stack_pool.free.size() < 8) {
      stack_pool.free.push_back({mem, bytes});
      return;
    }
  }
  munmap(mem, bytes);
}

template <class F> void call(const void *f) { (*(const F *)f)(); }

// launch runs kernel for every thread of every block of grid.
template <class F> void launch(dim3 grid, dim3 block, size_t shared, const F &kernel) {
  unsigned threads = block.x * block.y * block.z;
  unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
  if (threads == 0 || blocks == 0) return;
  if (threads > 1024) fail("more than 1024 threads in a block");
  unsigned workers = std::thread::hardware_concurrency();
  if (const char *w = getenv("MOEC_EMU_WORKERS")) workers = (unsigned)atoi(w);
  if (workers < 1) workers = 1;
  if (workers > blocks) workers = (unsigned)blocks;
  std::atomic<unsigned long long> next{0};
  auto work = [&] {
    Block b;
    b.threads = threads;
#if MOEC_EMU_FAST_SWITCH
    b.sp.resize(threads);
#else
    b.ctx.resize(threads);
#endif
    b.state.resize(threads);
    b.lanes.resize(threads);
    b.shared.assign(shared ? shared : 1, 0);
    b.body = &kernel;
    b.run = call<F>;
    size_t all = stack_bytes * threads;
    char *mem = take_stacks(all);
    for (unsigned i = 0; i < threads; i++) b.stacks.push_back(mem + i * stack_bytes);
    current_block = &b;
    blockDim = block;
    gridDim = grid;
    for (unsigned long long id; (id = next.fetch_add(1)) < blocks;) {
      blockIdx.x = (unsigned)(id % grid.x);
      blockIdx.y = (unsigned)(id / grid.x % grid.y);
      blockIdx.z = (unsigned)(id / ((unsigned long long)grid.x * grid.y));
      run_block(&b);
    }
    current_block = nullptr;
    give_stacks(mem, all);
  };
  if (workers == 1) {
    work();
    return;
  }
  std::vector<std::thread> pool;
  for (unsigned w = 0; w < workers; w++) pool.emplace_back(work);
  for (auto &t : pool) t.join();
}

inline unsigned me() { return current_block->current; }

// exchange publishes v for the warp and returns lane src's value (src within the warp).
template <class T> T exchange(T v, unsigned src) {
  static_assert(sizeof(T) <= 8, "warp exchange of a value wider than 8 bytes");
  Block *b = current_block;
  unsigned i = b->current;
  memcpy(&b->lanes[i], &v, sizeof(T));
  park(AtWarpBarrier);
  T r;
  unsigned base = i & ~31u;
  if (base + src >= b->threads) src = i - base;  // a lane the block lacks: own value
  memcpy(&r, &b->lanes[base + src], sizeof(T));
  park(AtWarpBarrier);
  return r;
}

}  // namespace moec_emu

inline void __syncthreads() { moec_emu::park(moec_emu::AtBlockBarrier); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)mask; moec_emu::park(moec_emu::AtWarpBarrier); }
inline unsigned moec_emu_lane() { return moec_emu::me() & 31u; }

template <class T> T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  (void)mask;
  unsigned lane = moec_emu_lane();
  return moec_emu::exchange(v, (lane / width) * width + ((unsigned)src % width));
}
template <class T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  (void)mask;
  unsigned lane = moec_emu_lane();
  unsigned src = lane ^ (unsigned)lane_mask;
  if (src / width != lane / width) src = lane;
  return moec_emu::exchange(v, src);
}
template <class T> T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  (void)mask;
  unsigned lane = moec_emu_lane();
  unsigned src = lane + delta;
  if (src / width != lane / width) src = lane;
  return moec_emu::exchange(v, src);
}
template <class T> T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  (void)mask;
  unsigned lane = moec_emu_lane();
  unsigned src = lane % width >= delta ? lane - delta : lane;
  return moec_emu::exchange(v, src);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  (void)mask;
  unsigned bits = 0;
  for (unsigned l = 0; l < 32; l++) {
    // Every lane publishes its predicate and reads lane l's; the block's missing lanes read
    // their own, which a full warp never does.
    int p = moec_emu::exchange(pred ? 1 : 0, l);
    if (p) bits |= 1u << l;
  }
  return bits;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, !pred) == 0; }

inline float atomicAdd(float *p, float v) {
  uint32_t *bits = (uint32_t *)p;
  uint32_t old = __atomic_load_n(bits, __ATOMIC_RELAXED);
  for (;;) {
    float was, now;
    memcpy(&was, &old, 4);
    now = was + v;
    uint32_t want;
    memcpy(&want, &now, 4);
    if (__atomic_compare_exchange_n(bits, &old, want, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return was;
  }
}
inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline int atomicMax(int *p, int v) {
  int old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}

// MOE_DYNAMIC_SHARED(T, name) declares name, a T* to the launch's dynamic shared memory
// (extern __shared__ T name[] on the GPU).
#define MOE_DYNAMIC_SHARED(T, name) T *name = (T *)moec_emu::current_block->shared.data()

typedef int cudaError_t;
typedef struct CUstream_st *cudaStream_t;
#define cudaSuccess 0

// Runs a kernel over a one-dimensional grid (the form codegen/cuda's kernels use).
template <class F> void moec_emu_launch(unsigned blocks, unsigned threads, F kernel) {
  moec_emu::launch(dim3(blocks), dim3(threads), 0, kernel);
}

// Runs a kernel over grid × block with shared bytes of dynamic shared memory.
template <class F> void moec_emu_launch3(dim3 grid, dim3 block, size_t shared, F kernel) {
  moec_emu::launch(grid, block, shared, kernel);
}

// The runtime API the harness uses, on host memory.
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
typedef struct { int unused; } *cudaEvent_t;
static inline cudaError_t cudaMalloc(void **p, size_t n) { *p = calloc(1, n ? n : 1); return *p ? 0 : 2; }
static inline cudaError_t cudaFree(void *p) { free(p); return 0; }
static inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind) { memcpy(d, s, n); return 0; }
static inline cudaError_t cudaDeviceSynchronize(void) { return 0; }
static inline cudaError_t cudaGetLastError(void) { return 0; }
static inline const char *cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }
static inline cudaError_t cudaEventCreate(cudaEvent_t *e) { *e = 0; return 0; }
static inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return 0; }
static inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t, cudaEvent_t) { *ms = 0; return 0; }

static inline float moe_ex2f_(float x) { return exp2f(x); }
static inline float moe_lg2f_(float x) { return log2f(x); }
static inline float moe_sqrtf_(float x) { return sqrtf(x); }
static inline float moe_fmaxf_(float a, float b) { return fmaxf(a, b); }
static inline float moe_fminf_(float a, float b) { return fminf(a, b); }
#endif
