package cudastep

import (
	"fmt"
	"math"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	moeexec "github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/llvmrt"
	"github.com/moec-dev/moec/runtime/rng"
)

// hunyuanTiny is examples/hunyuan_tiny.moe's model at its eight-expert stage, made
// smaller for the emulation (two layers, the second MoE; d_model 48; expert width 80,
// which leaves edge tiles in the grouped products).
func hunyuanTiny(t *testing.T) *program.Model {
	t.Helper()
	src, err := os.ReadFile("../../examples/hunyuan_tiny.moe")
	if err != nil {
		t.Fatal(err)
	}
	prog, _, ds := check.Load("hunyuan_tiny.moe", func(string) ([]byte, error) { return src, nil })
	if ds.HasErrors() {
		t.Fatalf("%v", ds)
	}
	m := program.StageModel(prog.Models["hunyuan_tiny"], &program.Stage{Experts: 8})
	moe := *m.MoE
	m.MoE = &moe
	m.Layers = 2
	m.DModel = 48
	m.FFN.Hidden = 80
	m.MoE.ExpertHidden = 80
	return m
}

// moeVariants are the routing and expert features the MoE kernels are checked over.
var moeVariants = []struct {
	name  string
	micro int
	edit  func(m *program.Model)
	// drops says the variant's capacity must drop assignments (the test checks it does).
	drops bool
	// readPadding adds to the program a reader of every expert buffer that does not
	// follow the fills, so that the kernels writing them must clear their padding.
	readPadding bool
	recompute   program.Recompute
}{
	{"as shipped: token-embedding router, top-1, capacity 1.25, gelu", 1, func(*program.Model) {}, true, false, ""},
	{"hidden router, top-2 renormalised, swiglu, z-loss, biases, capacity 1.0", 1, func(m *program.Model) {
		m.MoE.Router = program.RouteHidden
		m.MoE.TopK = 2
		m.MoE.Normalize = true
		m.MoE.Activation = program.SwiGLU
		m.MoE.ZLoss = 0.001
		m.MoE.ExpertBias = true
		m.MoE.CapacityFactor = 1.0
	}, true, false, ""},
	{"the same, every expert buffer's padding read", 1, func(m *program.Model) {
		m.MoE.Router = program.RouteHidden
		m.MoE.TopK = 2
		m.MoE.Normalize = true
		m.MoE.Activation = program.SwiGLU
		m.MoE.ExpertBias = true
		m.MoE.CapacityFactor = 1.0
	}, true, true, ""},
	{"sigmoid top-2, dropless (packed), geglu, biases, two micro-batches", 2, func(m *program.Model) {
		m.MoE.Score = program.Sigmoid
		m.MoE.TopK = 2
		m.MoE.CapacityFactor = 0
		m.MoE.Activation = program.GeGLU
		m.MoE.ExpertBias = true
		m.MoE.ZLoss = 0.01
	}, false, false, ""},
	{"softmax top-1, dropless (packed), relu, d_model 42 (rows moved a float at a time)", 1, func(m *program.Model) {
		m.MoE.CapacityFactor = 0
		m.MoE.Activation = program.ReLU
		m.DModel, m.Attention.Heads, m.Attention.KVHeads = 42, 3, 3
	}, false, false, ""},
	{"DeepSeek-V3's routing: sigmoid top-2 within 2 of 4 groups by score + selection bias, renormalised, routed_scale 2.5, dropless", 1, func(m *program.Model) {
		m.MoE.Score = program.Sigmoid
		m.MoE.TopK = 2
		m.MoE.Normalize = true
		m.MoE.CapacityFactor = 0
		m.MoE.Activation = program.SwiGLU
		m.MoE.Groups, m.MoE.TopKGroups = 4, 2
		m.MoE.AuxFreeBias = 0.001
		m.MoE.RoutedScale = 2.5
	}, false, false, ""},
	{"node-limited softmax routing without a bias (a group scores its best expert), routed_scale 2.5, capacity 1.0", 1, func(m *program.Model) {
		m.MoE.Router = program.RouteHidden
		m.MoE.TopK = 2
		m.MoE.Groups, m.MoE.TopKGroups = 4, 2
		m.MoE.RoutedScale = 2.5
		m.MoE.CapacityFactor = 1.0
	}, true, false, ""},
	{"as shipped, recompute = full (each route run again, its statistics not added twice)", 1, func(*program.Model) {}, true, false, program.RecomputeFull},
}

// TestMoELaunchesMatchExec lowers small MoE training programs, runs every MoE op's
// launches (as lowerMoE builds them) under the CPU emulation through a driver that
// marshals the Launch values, and holds each op's outputs to runtime/exec's kernel on the
// same inputs: integers (routing indices, slots, kept and routed counts) exactly, floats
// within 1e-5 relative; and the step's routing statistics to exec's.
func TestMoELaunchesMatchExec(t *testing.T) {
	lib := buildMoEDriver(t)
	for _, v := range moeVariants {
		t.Run(v.name, func(t *testing.T) {
			m := hunyuanTiny(t)
			v.edit(m)
			progs, err := step.Lower(m, step.Batch{MicroBatch: 6, SeqLen: 48, Micro: v.micro}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: v.recompute})
			if err != nil {
				t.Fatal(err)
			}
			p := progs[0]
			if v.readPadding {
				readEveryExpertBuffer(p)
			}
			runMoEOps(t, lib, p, m, v.drops)
		})
	}
}

// readEveryExpertBuffer appends to p a copy of every expert buffer (ops the test does not
// run, which read the buffers' padding).
func readEveryExpertBuffer(p *step.Program) {
	fills := routeFills(p, len(p.Ops))
	for b := range p.Buffers {
		if _, ok := fills[b]; ok {
			p.Ops = append(p.Ops, step.Op{Kind: step.OpCopy, In: []int{b}, Out: []int{b}, Layer: -1, Micro: -1})
		}
	}
}

// moeDriver runs launches of kernels_moe.cu in the emulation over a host arena laid out
// by a program's memory plan.
type moeDriver struct {
	lib     *llvmrt.Library
	launch  *llvmrt.Func
	kernels map[string]int
	table   []Kernel
	p       *step.Program
	arena   []float32
	work    []float32
	workAt  map[string]int64 // each workspace's byte offset in work
}

// buildMoEDriver compiles kernels_moe.cu with a launch driver generated from the kernel
// table, for the emulation.
func buildMoEDriver(t *testing.T) *llvmrt.Library {
	t.Helper()
	return emulatedLibrary(t, map[string]string{
		"kernels_moe.cu": moeSource,
		"driver.cpp":     moeDriverSource(moeKernels()),
		DeviceHeaderName: deviceHeader,
	}, "-O1")
}

// The argument tags of a launch descriptor (moeDriverSource reads them).
const (
	tagArena = iota // a byte offset in the arena
	tagWork         // a byte offset in the workspace
	tagNull         // a null address
	tagTable        // a count, then that many arena byte offsets: a table of addresses
	tagInt          // an integer scalar
	tagFloat        // a float scalar's bits
)

// moeDriverSource is a C++ function that launches any kernel of table from a descriptor:
// kernel index, grid, block, shared bytes, the argument count, then each argument's tag
// and values.
func moeDriverSource(table []Kernel) string {
	var b strings.Builder
	b.WriteString(`#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_moe.cu"
`)
	b.WriteString(`
extern "C" void moe_t_launch(void **a, long long, long long) {
  char *arena = (char *)a[0], *work = (char *)a[1];
  const long long *d = (const long long *)a[2];
  int kernel = (int)d[0];
  dim3 g((unsigned)d[1], (unsigned)d[2], (unsigned)d[3]), b((unsigned)d[4], (unsigned)d[5], (unsigned)d[6]);
  size_t sh = (size_t)d[7];
  int nargs = (int)d[8];
  const long long *p = d + 9;
  void *ptr[32] = {0};
  long long ival[32] = {0};
  float fval[32] = {0};
  void **tables[32];
  int ntab = 0;
  for (int i = 0; i < nargs; i++) {
    switch (*p++) {
    case 0: ptr[i] = arena + *p++; break;
    case 1: ptr[i] = work + *p++; break;
    case 2: ptr[i] = 0; break;
    case 3: {
      long long n = *p++;
      void **t = (void **)malloc(sizeof(void *) * (n ? n : 1));
      for (long long j = 0; j < n; j++) t[j] = arena + *p++;
      tables[ntab++] = t;
      ptr[i] = t;
      break;
    }
    case 4: ival[i] = *p++; break;
    case 5: { uint32_t u = (uint32_t)*p++; memcpy(&fval[i], &u, 4); break; }
    }
  }
  switch (kernel) {
`)
	for ki, k := range table {
		fmt.Fprintf(&b, "  case %d: {\n", ki)
		var names []string
		for i, p := range k.Params {
			name := fmt.Sprintf("a%d", i)
			names = append(names, name)
			switch p {
			case I32:
				fmt.Fprintf(&b, "    int %s = (int)ival[%d];\n", name, i)
			case I64:
				fmt.Fprintf(&b, "    long long %s = ival[%d];\n", name, i)
			case F32:
				fmt.Fprintf(&b, "    float %s = fval[%d];\n", name, i)
			default:
				fmt.Fprintf(&b, "    %s %s = (%s)ptr[%d];\n", p.CType(), name, p.CType(), i)
			}
		}
		fmt.Fprintf(&b, "    moec_emu_launch3(g, b, sh, [=] { %s(%s); });\n    break;\n  }\n", k.Name, strings.Join(names, ", "))
	}
	b.WriteString("  }\n  for (int i = 0; i < ntab; i++) free(tables[i]);\n}\n")
	return b.String()
}

// newMoEDriver lays out p's arena and the workspaces the given launches name.
func newMoEDriver(t *testing.T, lib *llvmrt.Library, p *step.Program, launches [][]Launch) *moeDriver {
	t.Helper()
	f, err := lib.Func("moe_t_launch")
	if err != nil {
		t.Fatal(err)
	}
	dr := &moeDriver{lib: lib, launch: f, kernels: map[string]int{}, table: moeKernels(), p: p, workAt: map[string]int64{}}
	for i, k := range dr.table {
		dr.kernels[k.Name] = i
	}
	dr.arena = make([]float32, p.Memory.Arena[step.Device]/4+1)
	sizes := map[string]int64{}
	var names []string
	for _, ls := range launches {
		for _, l := range ls {
			for _, a := range l.Args {
				if a.Work == "" {
					continue
				}
				if _, ok := sizes[a.Work]; !ok {
					names = append(names, a.Work)
				}
				sizes[a.Work] = max(sizes[a.Work], a.WorkBytes)
			}
		}
	}
	var at int64
	for _, n := range names {
		dr.workAt[n] = at
		at += (sizes[n] + 255) / 256 * 256
	}
	dr.work = make([]float32, at/4+1)
	return dr
}

// run marshals one launch into a descriptor and runs it, checking it against the
// kernel's signature.
func (dr *moeDriver) run(l Launch) error {
	ki, ok := dr.kernels[l.Kernel]
	if !ok {
		return fmt.Errorf("launch of %s, which kernels_moe.cu's table lacks", l.Kernel)
	}
	if err := checkLaunch(l, map[string]Kernel{l.Kernel: dr.table[ki]}, dr.p); err != nil {
		return err
	}
	d := []int64{int64(ki), int64(l.Grid[0]), int64(l.Grid[1]), int64(l.Grid[2]), int64(l.Block[0]), int64(l.Block[1]), int64(l.Block[2]), int64(l.Shared), int64(len(l.Args))}
	for _, a := range l.Args {
		switch {
		case a.Kind.Pointer() && a.Buf >= 0:
			d = append(d, tagArena, dr.p.Buffers[a.Buf].Offset+4*a.Offset)
		case a.Kind.Pointer() && a.Work != "":
			d = append(d, tagWork, dr.workAt[a.Work])
		case a.Kind.Pointer() && a.Table != nil:
			d = append(d, tagTable, int64(len(a.Table)))
			for _, b := range a.Table {
				d = append(d, dr.p.Buffers[b].Offset)
			}
		case a.Kind.Pointer():
			d = append(d, tagNull)
		case a.Kind == F32:
			d = append(d, tagFloat, int64(math.Float32bits(a.Float)))
		default:
			d = append(d, tagInt, a.Int)
		}
	}
	return dr.launch.Call(0, 0, dr.arena, dr.work, int64Bytes(d))
}

func int64Bytes(d []int64) []byte {
	b := make([]byte, 8*len(d))
	for i, v := range d {
		for j := 0; j < 8; j++ {
			b[8*i+j] = byte(uint64(v) >> (8 * j))
		}
	}
	return b
}

// view is buffer b's values in the arena.
func (dr *moeDriver) view(b int) []float32 {
	buf := dr.p.Buffers[b]
	return dr.arena[buf.Offset/4 : buf.Offset/4+buf.Elements()]
}

// moeRef is runtime/exec's side of the comparison: each buffer's values as exec's
// kernels leave them.
type moeRef struct {
	p    *step.Program
	k    *moeexec.Kernels
	vals map[int][]float32 // int buffers as their bits (exec.Int32 views)
	rand *rng.Stream
	// logits are the routes' inputs.
	logits map[int]bool
}

// get is buffer b's values, random the first time: router logits are multiples of 1/8 in
// [−2, 2] (distinct ones differ by far more than the kernels' rounding, and equal ones
// tie), other values multiples of 1/256 in [−1/2, 1/2] (activations and weights of a
// trained model's size).
func (r *moeRef) get(t *testing.T, b int) []float32 {
	if v, ok := r.vals[b]; ok {
		return v
	}
	buf := r.p.Buffers[b]
	if buf.Int {
		t.Fatalf("int buffer %s read before any MoE op wrote it", buf.Name)
	}
	v := make([]float32, buf.Elements())
	for i := range v {
		if r.logits[b] {
			v[i] = float32(r.rand.Intn(33)-16) / 8
		} else {
			v[i] = float32(r.rand.Intn(257)-128) / 256
		}
	}
	r.vals[b] = v
	return v
}

func (r *moeRef) ints(t *testing.T, b int) []int32 {
	if _, ok := r.vals[b]; !ok {
		r.vals[b] = make([]float32, r.p.Buffers[b].Elements())
	}
	return moeexec.Int32(r.get(t, b))
}

// run is op's exec kernel on the reference values, as runtime/exec's executor calls it.
func (r *moeRef) run(t *testing.T, op *step.Op) {
	f := func(b int) []float32 { return r.get(t, b) }
	i := func(b int) []int32 { return r.ints(t, b) }
	in, out := op.In, op.Out
	shape := func(b int) []int { return r.p.Buffers[b].Shape }
	acc := op.Accumulates
	k := r.k
	opt := func(bufs []int, j int) []float32 {
		if j < len(bufs) {
			return f(bufs[j])
		}
		return nil
	}
	dims := func(s []int) (int, int) {
		if len(s) == 2 {
			return 0, s[1]
		}
		return s[1], s[2]
	}
	experts := func(s []int) int {
		if len(s) == 3 {
			return s[0]
		}
		return 1
	}
	split := func(bufs []int) (w, bs [][]float32, o, kk int) {
		for _, x := range bufs {
			buf := r.p.Buffers[x]
			if buf.Param != nil && buf.Param.Bias {
				bs[len(bs)-1] = f(x)
				continue
			}
			w = append(w, f(x))
			bs = append(bs, nil)
			o, kk = buf.Shape[0], buf.Shape[1]
		}
		return w, bs, o, kk
	}
	switch op.Kind {
	case step.OpRouter:
		if len(in) > 1 { // a selection bias (moe.aux_free_bias)
			k.RouteBiased(f(in[1]), f(in[0]), i(out[0]), f(out[1]), f(out[2]), f(out[3]), i(out[4]), i(out[5]), i(out[6]), f(out[7]), op.Slots, op.Packed, op.Recomputed)
			break
		}
		k.Route(f(in[0]), i(out[0]), f(out[1]), f(out[2]), f(out[3]), i(out[4]), i(out[5]), i(out[6]), f(out[7]), op.Slots, op.Packed, op.Recomputed)
	case step.OpRouterBwd:
		k.RouteBwd(f(in[0]), f(in[1]), i(in[2]), f(in[3]), f(in[4]), f(in[5]), i(in[8]), f(out[0]), acc(0))
	case step.OpPermute:
		C, D := dims(shape(out[0]))
		k.Permute(f(in[0]), i(in[1]), i(in[2]), f(out[0]), C, D, k.Fill(out[0]))
	case step.OpPermuteBwd:
		C, D := dims(shape(in[0]))
		k.PermuteBwd(f(in[0]), i(in[1]), i(in[2]), f(out[0]), C, D, acc(0))
	case step.OpGroupedMM:
		w, b, o, kk := split(in[1:])
		k.GroupedMM(f(in[0]), f(out[0]), w, b, o, kk, k.Fill(in[0]), k.Fill(out[0]), op.SkipEmptySlots)
	case step.OpGroupedMMDW:
		w, b, o, kk := split(out)
		k.GroupedMMDW(f(in[0]), f(in[1]), w, b, o, kk, acc(0), k.Fill(in[0]), k.Fill(in[1]))
	case step.OpGroupedMMDX:
		w, _, o, kk := split(in[1:])
		k.GroupedMMDX(f(in[0]), f(out[0]), w, o, kk, acc(0), k.Fill(in[0]), k.Fill(out[0]))
	case step.OpCombine:
		C, D := dims(shape(in[0]))
		k.Combine(f(in[0]), i(in[1]), i(in[2]), f(in[3]), f(out[0]), C, D)
	case step.OpCombineBwd:
		C, D := dims(shape(in[1]))
		k.CombineBwd(f(in[0]), f(in[1]), i(in[2]), i(in[3]), f(in[4]), f(out[0]), f(out[1]), C, D, acc(1), k.Fill(in[1]), k.Fill(out[0]))
	case step.OpAct:
		moeexec.Act(op.Activation, f(in[0]), opt(in, 1), f(out[0]), experts(shape(in[0])), k.Fill(in[0]), k.Fill(out[0]))
	case step.OpActBwd:
		var duFill *moeexec.RowFill
		if len(out) > 1 {
			duFill = k.Fill(out[1])
		}
		moeexec.ActBwd(op.Activation, f(in[0]), f(in[1]), opt(in, 2), f(out[0]), opt(out, 1), acc(0), len(out) > 1 && acc(1),
			experts(shape(in[1])), k.Fill(in[0]), k.Fill(in[1]), k.Fill(out[0]), duFill)
	default:
		t.Fatalf("no exec kernel for %s", op.Kind)
	}
}

// runMoEOps runs every MoE op of p in program order on both sides and compares.
func runMoEOps(t *testing.T, lib *llvmrt.Library, p *step.Program, m *program.Model, wantDrops bool) {
	t.Helper()
	var ops []int
	var launches [][]Launch
	kinds := map[step.OpKind]int{}
	for i := range p.Ops {
		if !isMoEOp(p, i) {
			continue
		}
		ls, err := lowerMoE(p, m, i)
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, i)
		launches = append(launches, ls)
		kinds[p.Ops[i].Kind]++
	}
	for _, k := range []step.OpKind{step.OpRouter, step.OpRouterBwd, step.OpPermute, step.OpPermuteBwd, step.OpGroupedMM, step.OpGroupedMMDX,
		step.OpGroupedMMDW, step.OpCombine, step.OpCombineBwd, step.OpAct, step.OpActBwd} {
		if kinds[k] == 0 {
			t.Fatalf("the program has no MoE op %s (ops lowered: %v)", k, kinds)
		}
	}
	dr := newMoEDriver(t, lib, p, launches)
	kern, err := moeexec.NewKernels(m, p.Batch, p.Layout, p.Coord)
	if err != nil {
		t.Fatal(err)
	}
	kern.MarkPaddingUnread(p)
	ref := &moeRef{p: p, k: kern, vals: map[int][]float32{}, rand: rng.New(rng.Key(7, 0, 0, rng.PurposeDataOrder)), logits: map[int]bool{}}
	for _, op := range p.Ops {
		if op.Kind == step.OpRouter {
			ref.logits[op.In[0]] = true
		}
	}
	ties, recomputed := 0, 0
	for n, i := range ops {
		op := &p.Ops[i]
		// The same inputs (and prior outputs, which padding left alone and accumulation
		// read) on both sides.
		for _, b := range append(append([]int{}, op.In...), op.Out...) {
			if !p.Buffers[b].Int || ref.vals[b] != nil {
				copy(dr.view(b), ref.get(t, b))
			}
		}
		ref.run(t, op)
		for _, l := range launches[n] {
			if err := dr.run(l); err != nil {
				t.Fatalf("op %d (%s): %v", i, op.Kind, err)
			}
		}
		if op.Kind == step.OpRouter {
			ties += routeTies(ref.ints(t, op.Out[0]), ref.vals[op.Out[2]], m.MoE.TopK)
			recomputed += btoi(op.Recomputed)
		}
		for _, b := range op.Out {
			compareBuffer(t, fmt.Sprintf("op %d (%s layer %d micro %d) output %s", i, op.Kind, op.Layer, op.Micro, p.Buffers[b].Name),
				p.Buffers[b].Int, dr.view(b), ref.vals[b])
		}
	}
	if ties == 0 {
		t.Error("no token's choice tied with an expert it did not choose: the test does not reach the tie rule")
	}
	if p.Layout.RecomputeFull() && recomputed == 0 {
		t.Error("recompute = full, but no route is a recomputation")
	}
	stats := kern.Stats()
	off := dr.workAt[moeStatsWork] / 4
	gotBal, gotZ, gotDropped := dr.work[off], dr.work[off+1], moeexec.Int32(dr.work[off+2 : off+3])[0]
	if int(gotDropped) != stats.Dropped {
		t.Errorf("dropped %d, exec %d", gotDropped, stats.Dropped)
	}
	if wantDrops != (stats.Dropped > 0) {
		t.Errorf("exec dropped %d assignments; the variant wants drops: %v", stats.Dropped, wantDrops)
	}
	for _, c := range []struct {
		what      string
		got, want float64
	}{{"balance", float64(gotBal), stats.Balance}, {"z-loss", float64(gotZ), stats.ZLoss}} {
		if math.Abs(c.got-c.want) > 1e-5*math.Abs(c.want) {
			t.Errorf("step %s %.9g, exec %.9g", c.what, c.got, c.want)
		}
	}
	t.Logf("%d MoE ops, %d launches; %d routes recomputed; %d tokens with a tie at their last choice; dropped %d, balance %.6g, z-loss %.6g",
		len(ops), countLaunches(launches), recomputed, ties, stats.Dropped, stats.Balance, stats.ZLoss)
}

// routeTies counts the tokens whose last choice's score equals that of an expert not
// chosen (a tie the lower index won).
func routeTies(idx []int32, scores []float32, K int) int {
	E := len(scores) / (len(idx) / K)
	ties := 0
	for t := 0; t < len(idx)/K; t++ {
		last := idx[t*K+K-1]
		for ex := 0; ex < E; ex++ {
			chosen := false
			for j := 0; j < K; j++ {
				chosen = chosen || idx[t*K+j] == int32(ex)
			}
			if !chosen && scores[t*E+ex] == scores[t*E+int(last)] {
				ties++
				break
			}
		}
	}
	return ties
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func countLaunches(ls [][]Launch) int {
	n := 0
	for _, l := range ls {
		n += len(l)
	}
	return n
}

// compareBuffer holds got to want: integers exactly; floats within 1e-5 relative to
// |want| plus the buffer's root mean square (a sum added in another order, as the GPU's
// tiles and warp reductions add them, errs by its terms' magnitudes, not its result's:
// a product's element near zero is as far off as its neighbours).
func compareBuffer(t *testing.T, what string, isInt bool, got, want []float32) {
	t.Helper()
	if isInt {
		g, w := moeexec.Int32(got), moeexec.Int32(want)
		for i := range w {
			if g[i] != w[i] {
				t.Fatalf("%s[%d] = %d, exec %d", what, i, g[i], w[i])
			}
		}
		return
	}
	var sq float64
	for _, v := range want {
		sq += float64(v) * float64(v)
	}
	rms := math.Sqrt(sq / float64(max(len(want), 1)))
	worst, at := 0.0, -1
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		tol := 1e-5 * (math.Abs(float64(want[i])) + rms)
		if d > tol && d/tol > worst {
			worst, at = d/tol, i
		}
	}
	if at >= 0 {
		t.Fatalf("%s[%d] = %.9g, exec %.9g (%.3g of the tolerance)", what, at, got[at], want[at], worst)
	}
}

// TestMoEKernelsPTX compiles kernels_moe.cu to PTX for sm_80 and sm_90, without a CUDA
// SDK, and finds every kernel of the table as an entry.
func TestMoEKernelsPTX(t *testing.T) {
	for _, arch := range []string{"sm_80", "sm_90"} {
		ptx := libraryPTX(t, "kernels_moe.cu", arch)
		for _, k := range moeKernels() {
			if !strings.Contains(ptx, ".entry "+k.Name+"(") {
				t.Errorf("%s: no entry %s in the PTX", arch, k.Name)
			}
		}
		if strings.Contains(ptx, ".local") {
			t.Errorf("%s: the PTX spills to local memory (the routing's scores should stay in registers)", arch)
		}
		for _, k := range []string{"moe_grouped_mm", "moe_grouped_mm_dx", "moe_grouped_mm_dw"} {
			at := strings.Index(ptx, ".entry "+k+"(")
			if at < 0 {
				continue // reported above
			}
			body := ptx[at:]
			if end := strings.Index(body, "\n}\n"); end >= 0 {
				body = body[:end]
			}
			if !strings.Contains(body, "ld.shared.v4.f32") {
				t.Errorf("%s: %s reads its shared tiles a float at a time (want ld.shared.v4.f32)", arch, k)
			}
		}
		for _, want := range []string{"shfl.sync.bfly", "shfl.sync.idx", "bar.sync"} {
			if !strings.Contains(ptx, want) {
				t.Errorf("%s: no %s in the PTX", arch, want)
			}
		}
	}
}

// TestMoEKernelTable holds the table to kernels_moe.cu's __global__ functions: every
// kernel is listed once, with its parameters' C types in order (const aside).
func TestMoEKernelTable(t *testing.T) {
	sig := regexp.MustCompile(`(?s)extern "C" __global__ void (?:__launch_bounds__\([^)]*\)\s*)?(\w+)\(([^)]*)\)`)
	found := map[string][]string{}
	for _, m := range sig.FindAllStringSubmatch(moeSource, -1) {
		var types []string
		for _, p := range strings.Split(m[2], ",") {
			p = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(p), "const "))
			fields := strings.Fields(p)
			typ := strings.Join(fields[:len(fields)-1], " ")
			if strings.HasPrefix(fields[len(fields)-1], "*") {
				typ += "*"
			}
			types = append(types, strings.ReplaceAll(typ, " *", "*"))
		}
		found[m[1]] = types
	}
	table := moeKernels()
	if len(found) != len(table) {
		t.Errorf("kernels_moe.cu has %d kernels, the table %d", len(found), len(table))
	}
	for _, k := range table {
		types, ok := found[k.Name]
		if !ok {
			t.Errorf("table kernel %s is not in kernels_moe.cu", k.Name)
			continue
		}
		var want []string
		for _, p := range k.Params {
			want = append(want, p.CType())
		}
		if strings.Join(types, ", ") != strings.Join(want, ", ") {
			t.Errorf("%s: source parameters (%s), table (%s)", k.Name, strings.Join(types, ", "), strings.Join(want, ", "))
		}
	}
}

// TestLowerMoERefuses: what the MoE kernels do not lower is an error naming it
// (node-limited routing over more groups than moe_route_topk's mask holds); expert, tensor
// and pipeline parallelism lower, alone, together and with sequence parallelism
// (TestPipelineMoELowering holds the pipeline's messages around them).
func TestLowerMoERefuses(t *testing.T) {
	m := hunyuanTiny(t)
	m.Attention.TalkingHeads = false // tensor parallelism splits the heads
	// Pipeline stages: no layer reuses another's attention weights, the router reads h.
	staged, moe := *m, *m.MoE
	staged.Attention.ShareWeights, moe.Router, staged.MoE = 1, program.RouteHidden, &moe
	// A pipeline stage routing 128 experts in 128 groups: more than moe_route_topk's mask.
	grouped, gmoe := staged, moe
	gmoe.Experts, gmoe.Groups, gmoe.TopKGroups, grouped.MoE = 128, 128, 1, &gmoe
	for _, c := range []struct {
		layout  step.Layout
		grouped bool   // the stage routing in 128 groups
		want    string // "": lowers
	}{
		{step.Layout{DP: 2, EP: 2, TP: 1, PP: 1}, false, ""},
		{step.Layout{DP: 1, EP: 1, TP: 2, PP: 1}, false, ""},
		{step.Layout{DP: 2, EP: 2, TP: 2, PP: 1}, false, ""},
		{step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true}, false, ""},
		{step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}, false, ""},
		{step.Layout{DP: 2, EP: 2, TP: 1, PP: 2}, false, ""},
		{step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}, true, "node-limited routing over 128 groups"},
	} {
		m := m
		switch {
		case c.grouped:
			m = &grouped
		case c.layout.PP > 1:
			m = &staged
		}
		progs, err := step.Lower(m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}, c.layout)
		if err != nil {
			t.Fatal(err)
		}
		p := progs[len(progs)-1] // under pp, the last stage holds an MoE layer
		routes := 0
		for i, op := range p.Ops {
			if op.Kind != step.OpRouter {
				continue
			}
			routes++
			_, err := lowerMoE(p, m, i)
			if c.want == "" && err != nil {
				t.Errorf("route of a %s program: %v", c.layout, err)
			}
			if c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("route of a %s program: %v, want a refusal naming %q", c.layout, err, c.want)
			}
		}
		if routes == 0 {
			t.Fatalf("%s: no route op", c.layout)
		}
	}
}
