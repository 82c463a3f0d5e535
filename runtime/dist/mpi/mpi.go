//go:build cgo

package mpi

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

// Open MPI's handles are pointers to the library's objects; the shim only passes them on.
typedef void *moe_mpi_h;

// The functions and predefined handles of libmpi, looked up once by moe_mpi_load.
typedef struct {
	int (*init_thread)(int *, char ***, int, int *);
	int (*initialized)(int *);
	int (*finalized)(int *);
	int (*finalize)(void);
	int (*comm_rank)(moe_mpi_h, int *);
	int (*comm_size)(moe_mpi_h, int *);
	int (*comm_set_errhandler)(moe_mpi_h, moe_mpi_h);
	int (*allreduce)(const void *, void *, int, moe_mpi_h, moe_mpi_h, moe_mpi_h);
	int (*allgather)(const void *, int, moe_mpi_h, void *, int, moe_mpi_h, moe_mpi_h);
	int (*alltoallv)(const void *, const int *, const int *, moe_mpi_h, void *, const int *, const int *, moe_mpi_h, moe_mpi_h);
	int (*barrier)(moe_mpi_h);
	int (*comm_split)(moe_mpi_h, int, int, moe_mpi_h *);
	int (*abort)(moe_mpi_h, int);
	int (*error_string)(int, char *, int *);
	int (*isend)(const void *, int, moe_mpi_h, int, int, moe_mpi_h, moe_mpi_h *);
	int (*recv)(void *, int, moe_mpi_h, int, int, moe_mpi_h, void *);
	int (*test)(moe_mpi_h *, int *, void *);
	int (*wait)(moe_mpi_h *, void *);
	int (*get_count)(const void *, moe_mpi_h, int *);
	moe_mpi_h world, comm_null, f32, f64, byte_, int_, sum, max, errors_return;
} moe_mpi_lib;

// One table per process: the library is loaded once (sync.Once on the Go side).
static moe_mpi_lib moe_mpi;
static char moe_mpi_err[1024];

enum { MOE_MPI_THREAD_FUNNELED = 1, MOE_MPI_THREAD_SERIALIZED = 2 };
enum { MOE_F32 = 0, MOE_F64 = 1, MOE_BYTE = 2 };

#define MOE_MPI_SYM(field, name) \
	if ((*(void **)&moe_mpi.field = dlsym(h, name)) == NULL) { \
		snprintf(moe_mpi_err, sizeof moe_mpi_err, "%s has no symbol %s: not Open MPI", lib, name); \
		return moe_mpi_err; \
	}

// moe_mpi_load opens libmpi and resolves what the package uses; NULL on success, else
// the reason. RTLD_GLOBAL: Open MPI's plugins (dlopened by libmpi) need its symbols.
static const char *moe_mpi_load(void) {
	static const char *names[] = {"libmpi.so.40", "libmpi.so", NULL};
	void *h = NULL;
	const char *lib = NULL;
	moe_mpi_err[0] = 0;
	for (int i = 0; names[i] != NULL && h == NULL; i++) {
		lib = names[i];
		h = dlopen(lib, RTLD_NOW | RTLD_GLOBAL);
		if (h == NULL && moe_mpi_err[0] == 0) {
			const char *e = dlerror();
			snprintf(moe_mpi_err, sizeof moe_mpi_err, "%s", e ? e : "dlopen failed");
		}
	}
	if (h == NULL) return moe_mpi_err;
	MOE_MPI_SYM(init_thread, "MPI_Init_thread")
	MOE_MPI_SYM(initialized, "MPI_Initialized")
	MOE_MPI_SYM(finalized, "MPI_Finalized")
	MOE_MPI_SYM(finalize, "MPI_Finalize")
	MOE_MPI_SYM(comm_rank, "MPI_Comm_rank")
	MOE_MPI_SYM(comm_size, "MPI_Comm_size")
	MOE_MPI_SYM(comm_set_errhandler, "MPI_Comm_set_errhandler")
	MOE_MPI_SYM(allreduce, "MPI_Allreduce")
	MOE_MPI_SYM(allgather, "MPI_Allgather")
	MOE_MPI_SYM(alltoallv, "MPI_Alltoallv")
	MOE_MPI_SYM(barrier, "MPI_Barrier")
	MOE_MPI_SYM(comm_split, "MPI_Comm_split")
	MOE_MPI_SYM(abort, "MPI_Abort")
	MOE_MPI_SYM(error_string, "MPI_Error_string")
	MOE_MPI_SYM(isend, "MPI_Isend")
	MOE_MPI_SYM(recv, "MPI_Recv")
	MOE_MPI_SYM(test, "MPI_Test")
	MOE_MPI_SYM(wait, "MPI_Wait")
	MOE_MPI_SYM(get_count, "MPI_Get_count")
	MOE_MPI_SYM(world, "ompi_mpi_comm_world")
	MOE_MPI_SYM(comm_null, "ompi_mpi_comm_null")
	MOE_MPI_SYM(f32, "ompi_mpi_float")
	MOE_MPI_SYM(f64, "ompi_mpi_double")
	MOE_MPI_SYM(byte_, "ompi_mpi_byte")
	MOE_MPI_SYM(int_, "ompi_mpi_int")
	MOE_MPI_SYM(sum, "ompi_mpi_op_sum")
	MOE_MPI_SYM(max, "ompi_mpi_op_max")
	MOE_MPI_SYM(errors_return, "ompi_mpi_errors_return")
	return NULL;
}

static moe_mpi_h moe_mpi_world(void) { return moe_mpi.world; }

// moe_mpi_init initialises MPI unless something already did (*already = 1), and makes
// the world communicator return errors instead of aborting on them.
static int moe_mpi_init(int *already, int *provided) {
	int rc = moe_mpi.initialized(already);
	if (rc != 0 || *already) return rc;
	rc = moe_mpi.init_thread(NULL, NULL, MOE_MPI_THREAD_SERIALIZED, provided);
	if (rc != 0) return rc;
	return moe_mpi.comm_set_errhandler(moe_mpi.world, moe_mpi.errors_return);
}

static int moe_mpi_finalize(void) { return moe_mpi.finalize(); }

static int moe_mpi_rank_size(moe_mpi_h c, int *rank, int *size) {
	int rc = moe_mpi.comm_rank(c, rank);
	return rc != 0 ? rc : moe_mpi.comm_size(c, size);
}

static moe_mpi_h moe_mpi_type(int t) {
	switch (t) {
	case MOE_F32: return moe_mpi.f32;
	case MOE_F64: return moe_mpi.f64;
	}
	return moe_mpi.byte_;
}

// In place: MPI_IN_PLACE is (void *)1 in Open MPI.
static int moe_mpi_allreduce_sum(moe_mpi_h c, void *buf, int count, int type) {
	return moe_mpi.allreduce((const void *)1, buf, count, moe_mpi_type(type), moe_mpi.sum, c);
}

static int moe_mpi_allreduce_max(moe_mpi_h c, void *buf, int count, int type) {
	return moe_mpi.allreduce((const void *)1, buf, count, moe_mpi_type(type), moe_mpi.max, c);
}

// moe_mpi_isend_f32 sends a copy of data (malloc'ed into *copy, which the caller frees
// once the request completes) without waiting for the receiver.
static int moe_mpi_isend_f32(moe_mpi_h c, const float *data, int count, int to, int tag, moe_mpi_h *req, void **copy) {
	*copy = malloc(count > 0 ? (size_t)count * sizeof(float) : 1);
	if (*copy == NULL) return -1;
	for (int i = 0; i < count; i++) ((float *)*copy)[i] = data[i];
	return moe_mpi.isend(*copy, count, moe_mpi.f32, to, tag, c, req);
}

// moe_mpi_recv_f32 receives up to count floats and reports how many came. The status
// lives here: Open MPI's MPI_Status is 24 bytes; 64 leave room. MPI_STATUS_IGNORE is
// NULL in Open MPI.
static int moe_mpi_recv_f32(moe_mpi_h c, float *buf, int count, int from, int tag, int *got) {
	long long status[8];
	int rc = moe_mpi.recv(buf, count, moe_mpi.f32, from, tag, c, status);
	if (rc != 0) return rc;
	return moe_mpi.get_count(status, moe_mpi.f32, got);
}

static int moe_mpi_test(moe_mpi_h *req, int *done) { return moe_mpi.test(req, done, NULL); }
static int moe_mpi_wait(moe_mpi_h *req) { return moe_mpi.wait(req, NULL); }

static int moe_mpi_allgather(moe_mpi_h c, const void *send, int count, void *recv) {
	return moe_mpi.allgather(send, count, moe_mpi.byte_, recv, count, moe_mpi.byte_, c);
}

static int moe_mpi_alltoallv(moe_mpi_h c, const void *send, const int *scount, const int *soff,
	void *recv, const int *rcount, const int *roff) {
	return moe_mpi.alltoallv(send, scount, soff, moe_mpi.byte_, recv, rcount, roff, moe_mpi.byte_, c);
}

static int moe_mpi_barrier(moe_mpi_h c) { return moe_mpi.barrier(c); }

// moe_mpi_split splits c and returns the new communicator's rank and size; *isnull is
// set when MPI gives back MPI_COMM_NULL.
static int moe_mpi_split(moe_mpi_h c, int color, int key, moe_mpi_h *out, int *rank, int *size, int *isnull) {
	int rc = moe_mpi.comm_split(c, color, key, out);
	if (rc != 0) return rc;
	*isnull = *out == moe_mpi.comm_null;
	if (*isnull) return 0;
	return moe_mpi_rank_size(*out, rank, size);
}

static void moe_mpi_abort(int code) { moe_mpi.abort(moe_mpi.world, code); }

static void moe_mpi_error_string(int code, char *buf, int cap) {
	char s[256 + 1];
	int n = 0;
	if (moe_mpi.error_string(code, s, &n) != 0 || n < 0 || n > 256) n = 0;
	s[n] = 0;
	snprintf(buf, cap, "%s", n > 0 ? s : "unknown MPI error");
}
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/moec-dev/moec/runtime/dist"
)

// loaded holds the outcome of loading libmpi, which happens at most once per process.
var loaded struct {
	once sync.Once
	err  error
}

// load opens libmpi and resolves its symbols.
func load() error {
	loaded.once.Do(func() {
		if e := C.moe_mpi_load(); e != nil {
			loaded.err = fmt.Errorf("mpi: cannot load Open MPI's library (libmpi.so.40): %s; install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin) and run under mpirun", C.GoString(e))
		}
	})
	return loaded.err
}

// initState is the MPI state MPI forces on the process: it can be initialised once, and
// its calls go to the one thread that initialised it.
var initState struct {
	mu     sync.Mutex
	called bool
	p      *proc
}

// abortGrace is how long a rank whose collective failed waits before MPI_Abort, so the
// caller can report the error in its own words (or call Abort itself) first.
const abortGrace = time.Second

// proc is this process's MPI: the worker thread every call runs on, the world's shape,
// and whether a collective has failed (after which MPI's state is undefined and the
// process is about to abort).
type proc struct {
	timeout   time.Duration
	calls     chan func()
	worldRank int
	worldSize int

	mu        sync.Mutex
	failed    error
	finalized bool

	// pending are the sends MPI has not completed yet, each with its copy of the data;
	// only the worker thread touches them.
	pending []pendingSend
}

// serve runs MPI calls one at a time on a dedicated OS thread: the thread that called
// MPI_Init_thread, which is what MPI's threading levels are defined against.
func (p *proc) serve() {
	runtime.LockOSThread() // never unlocked: the thread belongs to MPI for the process's life
	for f := range p.calls {
		f()
	}
}

// Init initialises MPI (MPI_Init_thread, MPI_THREAD_SERIALIZED) and returns this
// process's rank of the world. timeout bounds every collective (0: dist.DefaultTimeout).
// It may be called once per process, as MPI may be initialised once.
func Init(timeout time.Duration) (dist.Comm, error) {
	initState.mu.Lock()
	defer initState.mu.Unlock()
	if initState.called {
		return nil, errors.New("mpi: Init called twice; MPI can be initialised once per process")
	}
	initState.called = true
	if err := load(); err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = dist.DefaultTimeout
	}
	p := &proc{timeout: timeout, calls: make(chan func()), worldRank: -1}
	go p.serve()
	type result struct {
		rc, already, provided, rank, size C.int
	}
	done := make(chan result, 1)
	p.calls <- func() {
		var r result
		r.rc = C.moe_mpi_init(&r.already, &r.provided)
		if r.rc == 0 {
			r.rc = C.moe_mpi_rank_size(C.moe_mpi_world(), &r.rank, &r.size)
		}
		done <- r
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var r result
	select {
	case r = <-done:
	case <-timer.C:
		return nil, fmt.Errorf("mpi: MPI_Init_thread did not return within %s", timeout)
	}
	switch {
	case r.rc != 0:
		return nil, fmt.Errorf("mpi: initialising MPI: %s", p.errorString(r.rc))
	case r.already != 0:
		return nil, errors.New("mpi: MPI was already initialised by other code in this process")
	case r.provided < C.MOE_MPI_THREAD_FUNNELED:
		// Every call comes from the worker thread, so FUNNELED is all that is needed.
		return nil, fmt.Errorf("mpi: the MPI library gives thread level %d, moec needs at least MPI_THREAD_FUNNELED", int(r.provided))
	}
	p.worldRank, p.worldSize = int(r.rank), int(r.size)
	initState.p = p
	return &comm{p: p, h: C.moe_mpi_world(), name: "world", rank: p.worldRank, size: p.worldSize}, nil
}

// Finalize shuts MPI down (MPI_Finalize). Communicators must not be used afterwards.
// After a failed collective it returns that failure instead: MPI cannot be finalised
// cleanly then, and the process is being aborted.
func Finalize() error {
	initState.mu.Lock()
	p := initState.p
	initState.mu.Unlock()
	if p == nil {
		return errors.New("mpi: Finalize without a successful Init")
	}
	p.mu.Lock()
	failed, finalized := p.failed, p.finalized
	p.finalized = true
	p.mu.Unlock()
	switch {
	case finalized:
		return errors.New("mpi: Finalize called twice")
	case failed != nil:
		return fmt.Errorf("mpi: not finalising after a failed collective: %w", failed)
	}
	done := make(chan C.int, 1)
	p.calls <- func() {
		if rc := p.completeSends(); rc != 0 {
			done <- rc
			return
		}
		done <- C.moe_mpi_finalize()
	}
	timer := time.NewTimer(p.timeout)
	defer timer.Stop()
	select {
	case rc := <-done:
		if rc != 0 {
			return fmt.Errorf("mpi: MPI_Finalize on rank %d: %s", p.worldRank, p.errorString(rc))
		}
		return nil
	case <-timer.C:
		// Finalize waits for the other ranks; one that never finalises would hang the job.
		return p.fail(&dist.Error{Rank: p.worldRank, Op: "finalize", Group: "world", Timeout: p.timeout, Failed: -1,
			Err: errors.New("MPI_Finalize did not return")})
	}
}

// errorString is MPI's text for an error code (MPI_Error_string is callable from any
// thread, even after a failure).
func (p *proc) errorString(rc C.int) string {
	buf := (*C.char)(C.malloc(512))
	defer C.free(unsafe.Pointer(buf))
	C.moe_mpi_error_string(rc, buf, 512)
	return fmt.Sprintf("MPI error %d: %s", int(rc), C.GoString(buf))
}

// failure returns the collective failure that doomed the process, if any, or an error if
// MPI was finalised.
func (p *proc) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed != nil {
		return p.failed
	}
	if p.finalized {
		return errors.New("MPI is finalised")
	}
	return nil
}

// fail records a failed collective, prints it, and aborts the job after abortGrace: the
// MPI call may still be blocked on the worker, and the other ranks may be blocked in
// theirs, so only MPI_Abort can end the job.
func (p *proc) fail(err *dist.Error) error {
	p.mu.Lock()
	first := p.failed == nil
	if first {
		p.failed = err
	}
	p.mu.Unlock()
	if first {
		fmt.Fprintf(os.Stderr, "moec: MPI rank %d of %d: %v; aborting the job\n", p.worldRank, p.worldSize, err)
		go func() {
			time.Sleep(abortGrace)
			p.abort(1)
		}()
	}
	return err
}

// abort ends the job with MPI_Abort. It runs on the worker thread when the worker is
// free, and otherwise from this thread, since the worker may be stuck in a collective
// that will never complete. It does not return.
func (p *proc) abort(code int) {
	p.mu.Lock()
	finalized := p.finalized && p.failed == nil
	p.mu.Unlock()
	if !finalized {
		worker := time.NewTimer(100 * time.Millisecond)
		select {
		case p.calls <- func() { C.moe_mpi_abort(C.int(code)) }:
			// MPI_Abort does not return; if it ever did, fall through to exit below.
			<-worker.C
		case <-worker.C:
			C.moe_mpi_abort(C.int(code))
		}
	}
	os.Exit(code)
}

// comm is one group of MPI ranks: the world or a split of it.
type comm struct {
	p          *proc
	h          C.moe_mpi_h
	name       string
	rank, size int
}

func (c *comm) Rank() int    { return c.rank }
func (c *comm) Size() int    { return c.size }
func (c *comm) Name() string { return c.name }

// Abort prints err with this rank to stderr and aborts the MPI job; mpirun then stops
// every rank and names this one. It does not return.
func (c *comm) Abort(err error) {
	fmt.Fprintf(os.Stderr, "moec: MPI rank %d of %d (rank %d of group %s) failed: %v; aborting the job\n",
		c.p.worldRank, c.p.worldSize, c.rank, c.name, err)
	c.p.abort(1)
}

// argError is a call refused before reaching MPI.
func (c *comm) argError(op string, format string, args ...any) error {
	return &dist.Error{Rank: c.p.worldRank, Op: op, Group: c.name, Failed: -1, Err: fmt.Errorf(format, args...)}
}

// call runs f (one MPI call, returning its error code) on the worker, bounded by the
// timeout. A timeout or an MPI error dooms the process (see fail).
func (c *comm) call(op string, f func() C.int) error {
	p := c.p
	if err := p.failure(); err != nil {
		return &dist.Error{Rank: p.worldRank, Op: op, Group: c.name, Failed: -1, Err: fmt.Errorf("an earlier MPI call failed: %w", err)}
	}
	done := make(chan C.int, 1)
	timer := time.NewTimer(p.timeout)
	defer timer.Stop()
	timedOut := func() error {
		return p.fail(&dist.Error{Rank: p.worldRank, Op: op, Group: c.name, Timeout: p.timeout, Failed: -1,
			Err: errors.New("MPI cannot tell which ranks have not arrived")})
	}
	select {
	case p.calls <- func() { done <- f() }:
	case <-timer.C:
		return timedOut()
	}
	select {
	case rc := <-done:
		if rc != 0 {
			return p.fail(&dist.Error{Rank: p.worldRank, Op: op, Group: c.name, Failed: -1, Err: errors.New(p.errorString(rc))})
		}
		return nil
	case <-timer.C:
		return timedOut()
	}
}

// cInt checks that every value fits in a C int, as MPI's counts and offsets must.
func (c *comm) cInt(op, what string, vals ...int) error {
	for _, v := range vals {
		if v < 0 || v > math.MaxInt32 {
			return c.argError(op, "%s %d does not fit: MPI takes 0 to %d", what, v, math.MaxInt32)
		}
	}
	return nil
}

func (c *comm) AllReduceF32(x []float32) error {
	if err := c.cInt("all_reduce", "a length of", len(x)); err != nil {
		return err
	}
	if len(x) == 0 {
		return c.call("all_reduce", func() C.int { return C.moe_mpi_allreduce_sum(c.h, nil, 0, C.MOE_F32) })
	}
	return c.call("all_reduce", func() C.int {
		return C.moe_mpi_allreduce_sum(c.h, unsafe.Pointer(&x[0]), C.int(len(x)), C.MOE_F32)
	})
}

func (c *comm) AllReduceF64(x []float64) error {
	if err := c.cInt("all_reduce_f64", "a length of", len(x)); err != nil {
		return err
	}
	if len(x) == 0 {
		return c.call("all_reduce_f64", func() C.int { return C.moe_mpi_allreduce_sum(c.h, nil, 0, C.MOE_F64) })
	}
	return c.call("all_reduce_f64", func() C.int {
		return C.moe_mpi_allreduce_sum(c.h, unsafe.Pointer(&x[0]), C.int(len(x)), C.MOE_F64)
	})
}

// ptr is the address of b's first byte, or nil for an empty b (MPI accepts any address
// with a count of zero).
func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func (c *comm) AllGather(send, recv []byte) error {
	if err := c.cInt("all_gather", "a block of", len(send)); err != nil {
		return err
	}
	if len(recv) != c.size*len(send) {
		return c.argError("all_gather", "receive buffer of %d bytes for %d ranks × %d", len(recv), c.size, len(send))
	}
	return c.call("all_gather", func() C.int {
		return C.moe_mpi_allgather(c.h, ptr(send), C.int(len(send)), ptr(recv))
	})
}

// AllToAllV checks every block against its buffer before calling MPI, so a wrong count
// or offset is an error here rather than a write out of bounds in C. Counts that disagree
// between sender and receiver are caught by MPI only when the receiver expects less
// (a truncation error); the runtime exchanges the counts first.
func (c *comm) AllToAllV(send []byte, sendCount, sendOff []int, recv []byte, recvCount, recvOff []int) error {
	const op = "all_to_all"
	n := c.size
	if len(sendCount) != n || len(sendOff) != n || len(recvCount) != n || len(recvOff) != n {
		return c.argError(op, "counts and offsets must have one entry per rank (%d)", n)
	}
	sc, so := make([]C.int, n), make([]C.int, n)
	rc, ro := make([]C.int, n), make([]C.int, n)
	for p := range n {
		if err := c.cInt(op, fmt.Sprintf("rank %d's count or offset", p), sendCount[p], sendOff[p], recvCount[p], recvOff[p]); err != nil {
			return err
		}
		if sendOff[p]+sendCount[p] > len(send) {
			return c.argError(op, "block for rank %d (%d bytes at %d) is outside the %d-byte send buffer", p, sendCount[p], sendOff[p], len(send))
		}
		if recvOff[p]+recvCount[p] > len(recv) {
			return c.argError(op, "block from rank %d (%d bytes at %d) is outside the %d-byte receive buffer", p, recvCount[p], recvOff[p], len(recv))
		}
		sc[p], so[p] = C.int(sendCount[p]), C.int(sendOff[p])
		rc[p], ro[p] = C.int(recvCount[p]), C.int(recvOff[p])
	}
	return c.call(op, func() C.int {
		return C.moe_mpi_alltoallv(c.h, ptr(send), &sc[0], &so[0], ptr(recv), &rc[0], &ro[0])
	})
}

func (c *comm) Barrier() error {
	return c.call("barrier", func() C.int { return C.moe_mpi_barrier(c.h) })
}

// Split is MPI_Comm_split: same color, same group, ordered by key then by rank. MPI
// reserves negative colors (MPI_UNDEFINED), so they are refused.
func (c *comm) Split(color, key int, name string) (dist.Comm, error) {
	if err := c.cInt("split", "color", color); err != nil {
		return nil, err
	}
	if key < math.MinInt32 || key > math.MaxInt32 {
		return nil, c.argError("split", "key %d does not fit in a C int", key)
	}
	type result struct {
		h                  C.moe_mpi_h
		rank, size, isNull C.int
	}
	var r result
	err := c.call("split", func() C.int {
		var out result
		rc := C.moe_mpi_split(c.h, C.int(color), C.int(key), &out.h, &out.rank, &out.size, &out.isNull)
		r = out
		return rc
	})
	if err != nil {
		return nil, err
	}
	if r.isNull != 0 {
		return nil, c.argError("split", "MPI returned no communicator for color %d", color)
	}
	return &comm{p: c.p, h: r.h, name: name, rank: int(r.rank), size: int(r.size)}, nil
}

func (c *comm) AllReduceMaxF32(x []float32) error {
	const op = "all_reduce_max"
	if err := c.cInt(op, "a length of", len(x)); err != nil {
		return err
	}
	if len(x) == 0 {
		return c.call(op, func() C.int { return C.moe_mpi_allreduce_max(c.h, nil, 0, C.MOE_F32) })
	}
	return c.call(op, func() C.int {
		return C.moe_mpi_allreduce_max(c.h, unsafe.Pointer(&x[0]), C.int(len(x)), C.MOE_F32)
	})
}

// pendingSend is a send MPI may still be moving: its request and the C copy of the data,
// freed once the request completes.
type pendingSend struct {
	req C.moe_mpi_h
	buf unsafe.Pointer
}

// reapSends frees the copies of the sends that have completed (on the worker thread).
func (p *proc) reapSends() C.int {
	kept := p.pending[:0]
	for _, ps := range p.pending {
		var done C.int
		if rc := C.moe_mpi_test(&ps.req, &done); rc != 0 {
			return rc
		}
		if done != 0 {
			C.free(ps.buf)
			continue
		}
		kept = append(kept, ps)
	}
	clear(p.pending[len(kept):])
	p.pending = kept
	return 0
}

// completeSends waits for every pending send (on the worker thread, before MPI_Finalize).
func (p *proc) completeSends() C.int {
	for i := range p.pending {
		if rc := C.moe_mpi_wait(&p.pending[i].req); rc != 0 {
			return rc
		}
		C.free(p.pending[i].buf)
	}
	p.pending = nil
	return 0
}

// maxTag is the largest tag every MPI library must accept (MPI_TAG_UB is at least 32767).
const maxTag = 32767

// peerArgs checks a point-to-point call's peer, tag and length before it reaches MPI.
func (c *comm) peerArgs(op string, peer, tag, n int) error {
	if peer < 0 || peer >= c.size {
		return c.argError(op, "rank %d is not in the group of %d", peer, c.size)
	}
	if tag < 0 || tag > maxTag {
		return c.argError(op, "tag %d is outside 0..%d", tag, maxTag)
	}
	return c.cInt(op, "a length of", n)
}

// SendF32 is MPI_Isend of a copy of x: it returns once MPI has the copy, so two ranks that
// send to each other before receiving do not deadlock. The copy is freed when a later call
// finds the send complete, and every send completes before MPI_Finalize.
func (c *comm) SendF32(to, tag int, x []float32) error {
	if err := c.peerArgs("send", to, tag, len(x)); err != nil {
		return err
	}
	var data *C.float
	if len(x) > 0 {
		data = (*C.float)(unsafe.Pointer(&x[0]))
	}
	return c.call("send", func() C.int {
		if rc := c.p.reapSends(); rc != 0 {
			return rc
		}
		var ps pendingSend
		rc := C.moe_mpi_isend_f32(c.h, data, C.int(len(x)), C.int(to), C.int(tag), &ps.req, &ps.buf)
		if rc != 0 {
			C.free(ps.buf)
			return rc
		}
		c.p.pending = append(c.p.pending, ps)
		return 0
	})
}

// RecvF32 is MPI_Recv. A longer message than x is MPI's truncation error; a shorter one is
// caught here; both doom the job as a failed collective does.
func (c *comm) RecvF32(from, tag int, x []float32) error {
	if err := c.peerArgs("recv", from, tag, len(x)); err != nil {
		return err
	}
	var data *C.float
	if len(x) > 0 {
		data = (*C.float)(unsafe.Pointer(&x[0]))
	}
	var got C.int
	err := c.call("recv", func() C.int {
		rc := C.moe_mpi_recv_f32(c.h, data, C.int(len(x)), C.int(from), C.int(tag), &got)
		if rc != 0 {
			return rc
		}
		return c.p.reapSends()
	})
	if err != nil {
		return err
	}
	if int(got) != len(x) {
		return c.p.fail(&dist.Error{Rank: c.p.worldRank, Op: "recv", Group: c.name, Failed: -1,
			Err: fmt.Errorf("rank %d sent %d floats with tag %d, rank %d expects %d: the ranks' programs diverged", from, int(got), tag, c.rank, len(x))})
	}
	return nil
}
