package cudastep

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/step"
)

// The offloaded optimizer (step.Layout.OffloadOpt, ZeRO-Offload's and AngelPTM's memory
// story): the fp32 master weights, the gradients' host copies and the AdamW moments live
// in pinned host memory (the memory plan's host tier, one cuMemAllocHost arena), and the
// host program runs the update on the CPU:
//
//   - to_host: the compute stream records an event after the gradients are final, the
//     copy stream waits for it and copies them (cuMemcpyDtoHAsync), then records the
//     group's own event;
//   - adamw (on the host): the CPU waits for that event (cuEventSynchronize) and updates
//     the group's pieces with the coefficients moec_settle computed from the global norm
//     the device summed (the clip scale included), dense_adamw's float arithmetic
//     element by element (a large piece split over CPU threads, hostAdamW: bitwise the
//     same);
//   - to_device: the updated weights go back on the copy stream (cuMemcpyHtoDAsync) and
//     the compute stream waits for them before anything later reads them.
//
// Group g+1's gradients copy while the CPU updates group g (the program's order: every
// to_host, then every adamw, then every to_device).

// HostCopy is one contiguous copy between the device arena and the host arena: bytes at
// byte offset Device of the device arena and Host of the host arena.
type HostCopy struct {
	Device, Host, Bytes int64
	What                string // the tensor or shard it moves
}

// HostUpdate is one piece of the host AdamW: N floats of the master weights, gradients
// and moments at the host arena's byte offsets W, G, M, V, with weight decay or not.
type HostUpdate struct {
	W, G, M, V, N int64
	Decay         bool
}

// Offload is the host program's part of an offloaded optimizer op.
type Offload struct {
	Kind step.OpKind // to_host, to_device or adamw
	// Copies are a to_host's or to_device's copies.
	Copies []HostCopy
	// Event is the copy-stream event a to_host records and its group's adamw waits for.
	Event int
	// Update is a host adamw's pieces.
	Update []HostUpdate
}

// offloadGroup is the parameter group an offloaded op moves or updates, by its host
// buffer's name ("params[dense]@host", "grads[dense]@host"), as runtime/exec finds it.
func offloadGroup(p *step.Program, b int) (int, error) {
	name := p.Buffers[b].Name
	for gi, g := range p.Groups {
		if strings.HasPrefix(name, "params["+g.Name+"]") || strings.HasPrefix(name, "grads["+g.Name+"]") {
			return gi, nil
		}
	}
	return -1, fmt.Errorf("host buffer %s names no parameter group", name)
}

// hostBase is the first element of a group's flat vector its host copies hold: 0 under
// ZeRO 0 (the whole vector), else the rank's shard's start.
func hostBase(g step.Group) int64 {
	if g.ZeRO == 0 {
		return 0
	}
	return int64(g.Index) * g.Shard
}

// offloadCopies are the copies between the host buffer host (a group's flat part from
// hostBase) and the device buffers dev: a shard buffer (no parameter) whole, else each
// tensor's part inside the host range at its flat offset (runtime/exec's MoveFlat).
func offloadCopies(p *step.Program, host int, dev []int) ([]HostCopy, error) {
	gi, err := offloadGroup(p, host)
	if err != nil {
		return nil, err
	}
	hb := p.Buffers[host]
	if hb.Tier != step.Host {
		return nil, fmt.Errorf("%s is not in host memory", hb.Name)
	}
	if len(dev) == 1 && p.Buffers[dev[0]].Param == nil {
		db := p.Buffers[dev[0]]
		if db.Tier != step.Device || db.Elements() != hb.Elements() {
			return nil, fmt.Errorf("%s (%d values) does not match %s (%d)", db.Name, db.Elements(), hb.Name, hb.Elements())
		}
		return []HostCopy{{Device: db.Offset, Host: hb.Offset, Bytes: 4 * db.Elements(), What: db.Name}}, nil
	}
	base, n := hostBase(p.Groups[gi]), hb.Elements()
	var out []HostCopy
	for _, d := range dev {
		db := p.Buffers[d]
		if db.Tier != step.Device || db.Flat < 0 {
			return nil, fmt.Errorf("%s has no place in group %s's flat vector", db.Name, p.Groups[gi].Name)
		}
		a, z := max(base, db.Flat), min(base+n, db.Flat+db.Elements())
		if a >= z {
			continue
		}
		out = append(out, HostCopy{Device: db.Offset + 4*(a-db.Flat), Host: hb.Offset + 4*(a-base), Bytes: 4 * (z - a), What: db.Name})
	}
	return out, nil
}

// offload lowers an offloaded optimizer op: a to_host's or to_device's copies, or a host
// adamw's pieces of its group (the first host adamw also settles the coefficients).
func (lw *opLowerer) offload(op *step.Op, ol *OpLaunches, events map[int]int) error {
	p := lw.p
	switch op.Kind {
	case step.OpToHost:
		cs, err := offloadCopies(p, op.Out[0], op.In)
		if err != nil {
			return err
		}
		gi, _ := offloadGroup(p, op.Out[0])
		if _, dup := events[gi]; dup {
			return fmt.Errorf("group %s's gradients go to the host twice", p.Groups[gi].Name)
		}
		events[gi] = len(events)
		ol.Offload = &Offload{Kind: op.Kind, Copies: cs, Event: events[gi]}
		lw.out.HostEvents = len(events)
	case step.OpToDevice:
		cs, err := offloadCopies(p, op.In[0], op.Out)
		if err != nil {
			return err
		}
		ol.Offload = &Offload{Kind: op.Kind, Copies: cs}
	case step.OpAdamW:
		if len(op.In) < 4 {
			return fmt.Errorf("a host adamw with %d inputs", len(op.In))
		}
		hostW, hostG := op.In[0], op.In[1]
		gi, err := offloadGroup(p, hostW)
		if err != nil {
			return err
		}
		ev, ok := events[gi]
		if !ok {
			return fmt.Errorf("group %s updates on the host before its gradients go there", p.Groups[gi].Name)
		}
		pieces, err := lw.pieces()
		if err != nil {
			return err
		}
		var ups []HostUpdate
		for _, pc := range pieces {
			if pc.group != gi {
				continue
			}
			_, _, m, v, n, ok := lw.zeroPiece(pc) // the piece's place in the group's part
			if !ok || n <= 0 {
				continue
			}
			at := m.Offset * 4
			for _, b := range []int{hostW, hostG, m.Buf, v.Buf} {
				if buf := p.Buffers[b]; buf.Tier != step.Host || 4*buf.Elements() < at+4*n {
					return fmt.Errorf("%s: not a host buffer holding the piece at %d (%d values)", buf.Name, m.Offset, n)
				}
			}
			ups = append(ups, HostUpdate{W: p.Buffers[hostW].Offset + at, G: p.Buffers[hostG].Offset + at,
				M: p.Buffers[m.Buf].Offset + at, V: p.Buffers[v.Buf].Offset + at, N: n, Decay: pc.decay})
		}
		ol.Offload = &Offload{Kind: op.Kind, Event: ev, Update: ups}
	default:
		return fmt.Errorf("%s is not an offloaded optimizer op", op.Kind)
	}
	return nil
}

// onHost reports whether op reads or writes a buffer in host memory.
func onHost(p *step.Program, op *step.Op) bool {
	for _, bufs := range [][]int{op.In, op.Out} {
		for _, b := range bufs {
			if p.Buffers[b].Tier == step.Host {
				return true
			}
		}
	}
	return false
}

// hostOffloadFields are the state's fields of an offloaded optimizer.
const hostOffloadFields = `  unsigned char *host;     // the offloaded optimizer's pinned host arena (the memory plan's host tier)
  CUstream copy_stream;    // its copies between the arenas
  CUevent grads_ready;     // recorded on the compute stream before a to_host
  CUevent params_back;     // recorded on the copy stream after a to_device
  CUevent to_host[MOEC_HOST_EVENTS]; // recorded on the copy stream after each group's to_host
  int host_threads;        // the most CPU threads a host AdamW runs on (moec_host_threads)
`

// hostOffloadOpen allocates the host arena, the copy stream and its events when the
// program opens (called from moec_fill_consts), and hostOffloadClose releases them.
const hostOffloadOpen = hostAdamW + `
// moec_offload_open allocates the pinned host arena (cleared), the copy stream and its events.
static int moec_offload_open(moec_state *s) {
  s->host_threads = moec_host_threads(getenv("MOEC_HOST_THREADS"));
  if (s->host_threads < 0)
    return moec_failf(s, "MOEC_HOST_THREADS=%s is not a count of CPU threads from 1 to %d", getenv("MOEC_HOST_THREADS"), MOEC_HOST_THREADS_MAX);
  MOEC_CU(s, s->cu.cuMemAllocHost((void **)&s->host, MOEC_HOST_BYTES), "allocating the pinned host arena");
  memset(s->host, 0, MOEC_HOST_BYTES);
  MOEC_CU(s, s->cu.cuStreamCreate(&s->copy_stream, 0), "creating the copy stream");
  MOEC_CU(s, s->cu.cuEventCreate(&s->grads_ready, MOEC_CU_EVENT_DISABLE_TIMING), "creating an event");
  MOEC_CU(s, s->cu.cuEventCreate(&s->params_back, MOEC_CU_EVENT_DISABLE_TIMING), "creating an event");
  for (int i = 0; i < MOEC_HOST_EVENTS; i++)
    MOEC_CU(s, s->cu.cuEventCreate(&s->to_host[i], MOEC_CU_EVENT_DISABLE_TIMING), "creating an event");
  return 1;
}

// moec_offload_close waits for the copies and releases the host arena, stream and events.
static void moec_offload_close(moec_state *s) {
  if (s->copy_stream) s->cu.cuStreamSynchronize(s->copy_stream);
  for (int i = 0; i < MOEC_HOST_EVENTS; i++)
    if (s->to_host[i]) s->cu.cuEventDestroy(s->to_host[i]);
  if (s->params_back) s->cu.cuEventDestroy(s->params_back);
  if (s->grads_ready) s->cu.cuEventDestroy(s->grads_ready);
  if (s->copy_stream) s->cu.cuStreamDestroy(s->copy_stream);
  if (s->host) s->cu.cuMemFreeHost(s->host);
  s->host = NULL;
}
`

// hostAdamW is the host update: dense_adamw on the CPU over a piece of the host arena,
// split over CPU threads above a size (the unified cache's update runs it too).
const hostAdamW = `
#include <thread>

// A host AdamW over at least 2·MOEC_HOST_ADAMW_GRAIN values splits them over CPU threads,
// MOEC_HOST_ADAMW_GRAIN values a thread at least; the threads are the hardware's, at most
// MOEC_HOST_THREADS_CAP, unless the environment's MOEC_HOST_THREADS (1 to
// MOEC_HOST_THREADS_MAX) says how many (1: one thread, as before).
#define MOEC_HOST_ADAMW_GRAIN (1LL << 16)
#define MOEC_HOST_THREADS_CAP 8
#define MOEC_HOST_THREADS_MAX 256

// moec_host_threads is the most CPU threads a host AdamW runs on, given the environment's
// MOEC_HOST_THREADS (env; NULL or empty: unset): −1 when it is not a count from 1 to
// MOEC_HOST_THREADS_MAX.
static int moec_host_threads(const char *env) {
  if (env && *env) {
    char *end = NULL;
    long n = strtol(env, &end, 10);
    return *end == 0 && n >= 1 && n <= MOEC_HOST_THREADS_MAX ? (int)n : -1;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw < 1 ? 1 : hw > MOEC_HOST_THREADS_CAP ? MOEC_HOST_THREADS_CAP : (int)hw;
}

// moec_host_adamw_span is dense_adamw on the CPU over values [lo, hi) of one piece of
// the host arena, float for float (no contraction into fused multiply-adds), with the
// coefficients moec_settle computed: c = {scale, b1, 1-b1, b2, 1-b2, 1/bc2, eps, lr·wd, lr/bc1}.
static void moec_host_adamw_span(float *w, const float *g, float *m, float *v, long long lo, long long hi, const float *c, int decay) {
#pragma clang fp contract(off)
  const float scale = c[0], b1 = c[1], c1 = c[2], b2 = c[3], c2 = c[4], invbc2 = c[5], eps = c[6], lrbc1 = c[8];
  const float dec = decay ? c[7] : 0.0f;
  for (long long i = lo; i < hi; i++) {
    float gj = g[i] * scale;
    float mj = b1 * m[i] + c1 * gj;
    float vj = b2 * v[i] + c2 * (gj * gj);
    m[i] = mj;
    v[i] = vj;
    float d = sqrtf(vj * invbc2) + eps;
    float wj = w[i];
    wj = wj - dec * wj;
    w[i] = wj - (lrbc1 * mj) / d;
  }
}

// moec_host_adamw updates n values of one piece of the host arena on up to threads CPU
// threads: each value's update reads and writes that value alone, so the split changes no
// bit of the result. Below 2·MOEC_HOST_ADAMW_GRAIN values (or where a thread cannot be
// started) the calling thread updates them.
static void moec_host_adamw(float *w, const float *g, float *m, float *v, long long n, const float *c, int decay, int threads) {
  long long parts = n / MOEC_HOST_ADAMW_GRAIN;
  if (parts > threads) parts = threads;
  if (parts < 2) {
    moec_host_adamw_span(w, g, m, v, 0, n, c, decay);
    return;
  }
  long long per = (n / parts + 63) / 64 * 64; // whole cache lines a thread
  std::thread pool[MOEC_HOST_THREADS_MAX];
  long long done = per; // the calling thread's span is [0, per)
  int started = 0;
  for (long long lo = per; lo < n; lo += per) {
    long long hi = lo + per < n ? lo + per : n;
    try {
      pool[started] = std::thread(moec_host_adamw_span, w, g, m, v, lo, hi, c, decay);
      started++;
      done = hi;
    } catch (...) {
      break; // no thread: the calling thread updates the rest
    }
  }
  moec_host_adamw_span(w, g, m, v, 0, per, c, decay);
  if (done < n) moec_host_adamw_span(w, g, m, v, done, n, c, decay);
  for (int i = 0; i < started; i++) pool[i].join();
}
`

// hostOffloadABI moves bytes in and out of the host arena (checkpoints, loads): after the
// copy stream's pending copies.
const hostOffloadABI = `
// moec_step_host_upload(handle, offset, bytes, n, err, errn): into the pinned host arena.
extern "C" void moec_step_host_upload(void **a, long long, long long) {
  moec_state *s = moec_handle(a[0]);
  if (!moec_enter(s, a[4], a[5])) return;
  long long at = *(long long *)a[1], n = *(long long *)a[3];
  if (at < 0 || n < 0 || (unsigned long long)(at + n) > MOEC_HOST_BYTES) {
    moec_failf(s, "upload of %lld bytes at %lld outside the %llu bytes of the host arena", n, at, MOEC_HOST_BYTES);
    return;
  }
  CUresult r = s->cu.cuStreamSynchronize(s->copy_stream);
  if (r != 0) {
    moec_cu_failed(s, r, "cuStreamSynchronize", "uploading to the host arena");
    return;
  }
  memcpy(s->host + at, a[2], (size_t)n);
}

// moec_step_host_download(handle, offset, bytes, n, err, errn): out of the pinned host arena.
extern "C" void moec_step_host_download(void **a, long long, long long) {
  moec_state *s = moec_handle(a[0]);
  if (!moec_enter(s, a[4], a[5])) return;
  long long at = *(long long *)a[1], n = *(long long *)a[3];
  if (at < 0 || n < 0 || (unsigned long long)(at + n) > MOEC_HOST_BYTES) {
    moec_failf(s, "download of %lld bytes at %lld outside the %llu bytes of the host arena", n, at, MOEC_HOST_BYTES);
    return;
  }
  CUresult r = s->cu.cuStreamSynchronize(s->copy_stream);
  if (r != 0) {
    moec_cu_failed(s, r, "cuStreamSynchronize", "downloading from the host arena");
    return;
  }
  memcpy(a[2], s->host + at, (size_t)n);
}
`

// emitOffload writes an offloaded optimizer op's host code (see Offload) at indent in.
func emitOffload(w *strings.Builder, in string, o *Offload, what string) {
	q := fmt.Sprintf("%q", what)
	switch o.Kind {
	case step.OpToHost:
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuEventRecord(s->grads_ready, s->stream), %s);\n", in, q)
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuStreamWaitEvent(s->copy_stream, s->grads_ready, 0), %s);\n", in, q)
		for _, c := range o.Copies {
			fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuMemcpyDtoHAsync(s->host + %dULL, s->base + %dULL, %d, s->copy_stream), %s); // %s\n",
				in, c.Host, c.Device, c.Bytes, q, c.What)
		}
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuEventRecord(s->to_host[%d], s->copy_stream), %s);\n", in, o.Event, q)
	case step.OpToDevice:
		for _, c := range o.Copies {
			fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuMemcpyHtoDAsync(s->base + %dULL, s->host + %dULL, %d, s->copy_stream), %s); // %s\n",
				in, c.Device, c.Host, c.Bytes, q, c.What)
		}
		// What reads the weights next (the allgather of ZeRO 1/2, the next step) waits.
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuEventRecord(s->params_back, s->copy_stream), %s);\n", in, q)
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuStreamWaitEvent(s->stream, s->params_back, 0), %s);\n", in, q)
	case step.OpAdamW:
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuEventSynchronize(s->to_host[%d]), %s);\n", in, o.Event, q)
		for _, u := range o.Update {
			fmt.Fprintf(w, "%smoec_host_adamw((float *)(s->host + %dULL), (const float *)(s->host + %dULL), (float *)(s->host + %dULL), (float *)(s->host + %dULL), %dLL, s->adam, %d, s->host_threads);\n",
				in, u.W, u.G, u.M, u.V, u.N, boolInt(u.Decay))
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
