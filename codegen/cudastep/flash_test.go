package cudastep

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/compiler/step"
	rexec "github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/llvmrt"
)

// flashEmu is kernels_flash.cu compiled as C++ under the CPU emulation, with one
// trampoline per kernel of FlashKernels: emu_NAME(grid x, y, z, block x, y, z, shared,
// the kernel's arguments...).
type flashEmu struct {
	lib *llvmrt.Library
}

// flashTrampolines writes the emulation's entry points from the kernel table: each unpacks
// its packed arguments by the table's C types, so a table that disagrees with the kernels'
// parameters does not compile.
func flashTrampolines(ks []Kernel) string {
	var w strings.Builder
	for _, k := range ks {
		fmt.Fprintf(&w, "extern \"C\" void emu_%s(void **a, long long, long long) {\n", k.Name)
		w.WriteString("  dim3 grid(*(int *)a[0], *(int *)a[1], *(int *)a[2]), block(*(int *)a[3], *(int *)a[4], *(int *)a[5]);\n")
		w.WriteString("  size_t shared = (size_t)*(long long *)a[6];\n")
		var names []string
		for i, p := range k.Params {
			name := fmt.Sprintf("p%d", i)
			if p.Pointer() {
				fmt.Fprintf(&w, "  %s %s = (%s)a[%d];\n", p.CType(), name, p.CType(), i+7)
			} else {
				fmt.Fprintf(&w, "  %s %s = *(%s *)a[%d];\n", p.CType(), name, p.CType(), i+7)
			}
			names = append(names, name)
		}
		fmt.Fprintf(&w, "  moec_emu_launch3(grid, block, shared, [=] { %s(%s); });\n}\n", k.Name, strings.Join(names, ", "))
	}
	return w.String()
}

func flashCompileEmu(t *testing.T) *flashEmu {
	t.Helper()
	return &flashEmu{lib: emulatedLibrary(t, map[string]string{
		"kernels_flash.cu":    FlashSource(),
		DeviceHeaderName:      deviceHeader,
		"flash_trampolines.h": flashTrampolines(FlashKernels()),
		"driver.cpp":          "#include \"kernels_flash.cu\"\n#include \"flash_trampolines.h\"\n",
	}, "-O1")}
}

// run runs launches in order: a buffer argument is bufs[Buf][Offset:], a workspace one
// work[Work] (allocated at its first use).
func (e *flashEmu) run(t *testing.T, launches []Launch, bufs [][]float32, work map[string][]float32) {
	t.Helper()
	for _, l := range launches {
		f, err := e.lib.Func("emu_" + l.Kernel)
		if err != nil {
			t.Fatal(err)
		}
		args := []any{int32(l.Grid[0]), int32(l.Grid[1]), int32(l.Grid[2]), int32(l.Block[0]), int32(l.Block[1]), int32(l.Block[2]), int64(l.Shared)}
		for _, a := range l.Args {
			switch {
			case a.Work != "":
				if len(work[a.Work])*4 < int(a.WorkBytes) {
					work[a.Work] = make([]float32, a.WorkBytes/4)
				}
				args = append(args, work[a.Work])
			case a.Kind.Pointer():
				args = append(args, bufs[a.Buf][a.Offset:])
			case a.Kind == I32:
				args = append(args, int32(a.Int))
			case a.Kind == I64:
				args = append(args, a.Int)
			default:
				args = append(args, a.Float)
			}
		}
		if err := f.Call(0, 0, args...); err != nil {
			t.Fatal(err)
		}
	}
}

// flashRef is float64 causal attention and its gradients, the test's reference.
type flashRef struct {
	o, lse, dq, dk, dv []float64
}

func flashReference(s FlashShape, q, k, v, do []float32) flashRef {
	B, T, H, KV, Dh := s.Batch, s.SeqLen, s.Heads, s.KVHeads, s.HeadDim
	qd, kd := H*Dh, KV*Dh
	scale := 1 / math.Sqrt(float64(Dh))
	r := flashRef{o: make([]float64, len(q)), lse: make([]float64, B*H*T), dq: make([]float64, len(q)),
		dk: make([]float64, len(k)), dv: make([]float64, len(v))}
	p, dp := make([]float64, T), make([]float64, T)
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			g := h / (H / KV)
			qi := func(i, d int) int { return (b*T+i)*qd + h*Dh + d }
			kj := func(j, d int) int { return (b*T+j)*kd + g*Dh + d }
			for i := 0; i < T; i++ {
				mx := math.Inf(-1)
				for j := 0; j <= i; j++ {
					var dot float64
					for d := 0; d < Dh; d++ {
						dot += float64(q[qi(i, d)]) * float64(k[kj(j, d)])
					}
					p[j] = dot * scale
					mx = math.Max(mx, p[j])
				}
				var sum float64
				for j := 0; j <= i; j++ {
					p[j] = math.Exp(p[j] - mx)
					sum += p[j]
				}
				r.lse[(b*H+h)*T+i] = mx + math.Log(sum)
				var delta float64
				for j := 0; j <= i; j++ {
					p[j] /= sum
					dp[j] = 0
					for d := 0; d < Dh; d++ {
						r.o[qi(i, d)] += p[j] * float64(v[kj(j, d)])
						dp[j] += float64(do[qi(i, d)]) * float64(v[kj(j, d)])
					}
					delta += p[j] * dp[j]
				}
				for j := 0; j <= i; j++ {
					ds := p[j] * (dp[j] - delta)
					for d := 0; d < Dh; d++ {
						r.dq[qi(i, d)] += ds * float64(k[kj(j, d)]) * scale
						r.dk[kj(j, d)] += ds * float64(q[qi(i, d)]) * scale
						r.dv[kj(j, d)] += p[j] * float64(do[qi(i, d)])
					}
				}
			}
		}
	}
	return r
}

// flashErr is the largest difference relative to the reference's largest magnitude.
func flashErr[T float32 | float64](got []float32, want []T) float64 {
	var diff, scale float64
	for i := range want {
		diff = math.Max(diff, math.Abs(float64(got[i])-float64(want[i])))
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	if scale == 0 {
		return diff
	}
	return diff / scale
}

func flashRandom(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// flashShapes cover every feature width (a padded one too), sequences that are not
// multiples of any tile, several query tiles, and grouped-query heads.
var flashShapes = []FlashShape{
	{Batch: 2, SeqLen: 100, Heads: 4, KVHeads: 2, HeadDim: 64},
	{Batch: 1, SeqLen: 70, Heads: 2, KVHeads: 1, HeadDim: 128},
	{Batch: 1, SeqLen: 130, Heads: 2, KVHeads: 2, HeadDim: 16},
	{Batch: 2, SeqLen: 65, Heads: 1, KVHeads: 1, HeadDim: 32},
	{Batch: 1, SeqLen: 33, Heads: 3, KVHeads: 1, HeadDim: 40},
}

const (
	flashQ = iota
	flashK
	flashV
	flashO
	flashDO
	flashDQ
	flashDK
	flashDV
	flashBuffers
)

// flashRunBoth runs the fused forward and backward on random inputs (dq, dk and dv
// holding prior, with acc, or garbage to be overwritten) and returns the buffers and the
// LSE. With keep, the forward keeps a copy of the output for the backward, and the output
// is overwritten with NaNs in between (restored after).
func flashRunBoth(t *testing.T, emu *flashEmu, s FlashShape, seed uint64, acc, keep bool) (bufs [][]float32, lse []float32) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	nq, nk := s.Batch*s.SeqLen*s.Heads*s.HeadDim, s.Batch*s.SeqLen*s.KVHeads*s.HeadDim
	bufs = [][]float32{flashRandom(r, nq), flashRandom(r, nk), flashRandom(r, nk), flashRandom(r, nq), flashRandom(r, nq),
		flashRandom(r, nq), flashRandom(r, nk), flashRandom(r, nk)}
	lseArg, keepArg := FlashLSE(s, 3, 1), BufArg(PtrF32, flashO)
	if keep {
		keepArg = FlashKeep(s, 3, 1)
	}
	fwd, err := FlashForward(s, BufArg(PtrF32, flashQ), BufArg(PtrF32, flashK), BufArg(PtrF32, flashV), BufArg(PtrF32, flashO), keepArg, lseArg)
	if err != nil {
		t.Fatal(err)
	}
	bwd, err := FlashBackward(s, FlashGrads{
		Q: BufArg(PtrF32, flashQ), K: BufArg(PtrF32, flashK), V: BufArg(PtrF32, flashV), O: keepArg, LSE: lseArg,
		DO: BufArg(PtrF32, flashDO), DQ: BufArg(PtrF32, flashDQ), DK: BufArg(PtrF32, flashDK), DV: BufArg(PtrF32, flashDV),
		Delta: FlashDelta(s), AccQ: acc, AccK: acc, AccV: acc,
	})
	if err != nil {
		t.Fatal(err)
	}
	work := map[string][]float32{}
	emu.run(t, fwd, bufs, work)
	o := append([]float32(nil), bufs[flashO]...)
	if keep {
		for i := range bufs[flashO] {
			bufs[flashO][i] = float32(math.NaN())
		}
	}
	emu.run(t, bwd, bufs, work)
	copy(bufs[flashO], o)
	return bufs, work[lseArg.Work]
}

// TestFlashEmulated runs the kernels under the CPU emulation (one library for both
// comparisons).
func TestFlashEmulated(t *testing.T) {
	emu := flashCompileEmu(t)
	t.Run("reference", func(t *testing.T) { flashMatchesReference(t, emu) })
	t.Run("executor", func(t *testing.T) { flashMatchesExecutor(t, emu) })
}

// flashMatchesReference: the fused forward's output and log-sum-exp and the fused
// backward's dq, dk and dv against float64 attention, for every shape; with acc the
// gradients are added to what the buffers held, with keep the backward reads the
// forward's copy of the output.
func flashMatchesReference(t *testing.T, emu *flashEmu) {
	for n, s := range flashShapes {
		acc, keep := n%2 == 1, n%3 == 0
		t.Run(fmt.Sprintf("B%d_T%d_H%d_KV%d_D%d_acc%v_keep%v", s.Batch, s.SeqLen, s.Heads, s.KVHeads, s.HeadDim, acc, keep), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(n), 7))
			nq, nk := s.Batch*s.SeqLen*s.Heads*s.HeadDim, s.Batch*s.SeqLen*s.KVHeads*s.HeadDim
			q, k, v := flashRandom(r, nq), flashRandom(r, nk), flashRandom(r, nk)
			_, do := flashRandom(r, nq), flashRandom(r, nq)
			priorQ, priorK, priorV := flashRandom(r, nq), flashRandom(r, nk), flashRandom(r, nk)
			bufs, lse := flashRunBoth(t, emu, s, uint64(n), acc, keep)
			for i, x := range [][]float32{q, k, v, do} {
				if flashErr(bufs[[]int{flashQ, flashK, flashV, flashDO}[i]], x) != 0 {
					t.Fatalf("the kernels changed input %d", i)
				}
			}
			want := flashReference(s, q, k, v, do)
			if acc {
				for i := range want.dq {
					want.dq[i] += float64(priorQ[i])
				}
				for i := range want.dk {
					want.dk[i] += float64(priorK[i])
					want.dv[i] += float64(priorV[i])
				}
			}
			for _, c := range []struct {
				name string
				got  []float32
				want []float64
			}{{"o", bufs[flashO], want.o}, {"lse", lse, want.lse}, {"dq", bufs[flashDQ], want.dq}, {"dk", bufs[flashDK], want.dk}, {"dv", bufs[flashDV], want.dv}} {
				e := flashErr(c.got, c.want)
				if e > 1e-5 || math.IsNaN(e) {
					t.Errorf("%s off by %.3g relative to its largest value", c.name, e)
				}
				t.Logf("%s: %.2g", c.name, e)
			}
		})
	}
}

// flashMatchesExecutor: the fused launches against runtime/exec's attn_scores →
// softmax → attn_av kernels and their backward (attn_av_bwd → softmax_bwd →
// attn_scores_bwd) on the same buffers: the replacement computes what the executor does.
func flashMatchesExecutor(t *testing.T, emu *flashEmu) {
	for n, s := range flashShapes[:2] {
		t.Run(fmt.Sprintf("H%d_KV%d_D%d", s.Heads, s.KVHeads, s.HeadDim), func(t *testing.T) {
			m := programtest.Model(t, "flash", fmt.Sprintf(`vocab = 8; d_model = %d; layers = 1; seq_len = %d; position = none
attention { heads = %d; kv_heads = %d; head_dim = %d }
ffn { hidden = 8; activation = gelu }`, s.Heads*s.HeadDim, s.SeqLen, s.Heads, s.KVHeads, s.HeadDim))
			kn, err := rexec.NewKernels(m, step.Batch{MicroBatch: s.Batch, SeqLen: s.SeqLen, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Coord{})
			if err != nil {
				t.Fatal(err)
			}
			bufs, _ := flashRunBoth(t, emu, s, uint64(100+n), false, false)
			r := rand.New(rand.NewPCG(uint64(100+n), 7))
			nq, nk := s.Batch*s.SeqLen*s.Heads*s.HeadDim, s.Batch*s.SeqLen*s.KVHeads*s.HeadDim
			q, k, v := flashRandom(r, nq), flashRandom(r, nk), flashRandom(r, nk)
			_, do := flashRandom(r, nq), flashRandom(r, nq)
			tt := s.Batch * s.Heads * s.SeqLen * s.SeqLen
			sc, p, dp, ds := make([]float32, tt), make([]float32, tt), make([]float32, tt), make([]float32, tt)
			o, dq, dk, dv := make([]float32, nq), make([]float32, nq), make([]float32, nk), make([]float32, nk)
			kn.Scores(q, k, sc)
			kn.Softmax(sc, p)
			kn.AttnAV(p, v, o)
			kn.AttnAVBwd(do, p, v, dp, dv, false, false)
			kn.SoftmaxBwd(dp, p, ds, false)
			kn.ScoresBwd(ds, q, k, dq, dk, false, false)
			for _, c := range []struct {
				name      string
				got, want []float32
			}{{"o", bufs[flashO], o}, {"dq", bufs[flashDQ], dq}, {"dk", bufs[flashDK], dk}, {"dv", bufs[flashDV], dv}} {
				e := flashErr(c.got, c.want)
				if e > 1e-5 || math.IsNaN(e) {
					t.Errorf("%s off the executor's by %.3g relative to its largest value", c.name, e)
				}
				t.Logf("%s: %.2g", c.name, e)
			}
		})
	}
}

// TestFlashSharedMemoryFixed: no launch's shared memory grows with the sequence length
// (no [T, T] tile anywhere), and every launch fits the 48 KiB a kernel gets without opting
// in. (The PTX test checks that the kernels declare no other shared memory.)
func TestFlashSharedMemoryFixed(t *testing.T) {
	for _, dh := range []int{16, 24, 32, 64, 80, 128} {
		var fwdShared, bwdShared []int
		for _, T := range []int{1, 64, 1000, 32768} {
			s := FlashShape{Batch: 2, SeqLen: T, Heads: 8, KVHeads: 2, HeadDim: dh}
			lse := FlashLSE(s, 0, 0)
			fwd, err := FlashForward(s, BufArg(PtrF32, 0), BufArg(PtrF32, 1), BufArg(PtrF32, 2), BufArg(PtrF32, 3), FlashKeep(s, 0, 0), lse)
			if err != nil {
				t.Fatal(err)
			}
			b := BufArg(PtrF32, 4)
			bwd, err := FlashBackward(s, FlashGrads{Q: b, K: b, V: b, O: b, LSE: lse, DO: b, DQ: b, DK: b, DV: b, Delta: FlashDelta(s)})
			if err != nil {
				t.Fatal(err)
			}
			fwdShared = append(fwdShared, fwd[0].Shared)
			bwdShared = append(bwdShared, bwd[0].Shared+bwd[1].Shared)
			for _, l := range append(fwd, bwd...) {
				if l.Shared > 48<<10 {
					t.Errorf("head_dim %d: %s takes %d bytes of shared memory, over 48 KiB", dh, l.Kernel, l.Shared)
				}
			}
		}
		for i := range fwdShared {
			if fwdShared[i] != fwdShared[0] || bwdShared[i] != bwdShared[0] {
				t.Errorf("head_dim %d: shared bytes change with the sequence length: forward %v, backward %v", dh, fwdShared, bwdShared)
				break
			}
		}
	}
}

// TestFlashRefuses: shapes the kernels cannot run are errors, not launches.
func TestFlashRefuses(t *testing.T) {
	b := BufArg(PtrF32, 0)
	for _, c := range []struct {
		s    FlashShape
		want string
	}{
		{FlashShape{Batch: 1, SeqLen: 8, Heads: 2, KVHeads: 1, HeadDim: 256}, "head_dim 256"},
		{FlashShape{Batch: 1, SeqLen: 8, Heads: 3, KVHeads: 2, HeadDim: 16}, "do not divide"},
		{FlashShape{Batch: 1, SeqLen: 0, Heads: 2, KVHeads: 2, HeadDim: 16}, "positive"},
	} {
		if _, err := FlashForward(c.s, b, b, b, b, b, b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %q", c.s, err, c.want)
		}
	}
	s := FlashShape{Batch: 1, SeqLen: 8, Heads: 2, KVHeads: 2, HeadDim: 16}
	if _, err := FlashForward(s, b, b, b, b, b, IntArg(I32, 3)); err == nil {
		t.Error("an int where the LSE's address goes: no error")
	}
}

var flashGlobal = regexp.MustCompile(`extern "C" __global__ void (\w+)\(([^)]*)\)`)

// TestFlashKernelTable: every __global__ of kernels_flash.cu is in FlashKernels with its
// parameters' C types in order, and nothing else is.
func TestFlashKernelTable(t *testing.T) {
	table := map[string]Kernel{}
	for _, k := range FlashKernels() {
		if !strings.HasPrefix(k.Name, "flash_") {
			t.Errorf("kernel %s lacks the file's prefix flash_", k.Name)
		}
		table[k.Name] = k
	}
	if n := strings.Count(FlashSource(), "__global__ void"); n != len(table) {
		t.Errorf("kernels_flash.cu has %d __global__ functions, the table %d", n, len(table))
	}
	for _, m := range flashGlobal.FindAllStringSubmatch(FlashSource(), -1) {
		k, ok := table[m[1]]
		if !ok {
			t.Errorf("%s is not in the table", m[1])
			continue
		}
		params := strings.Split(m[2], ",")
		if len(params) != len(k.Params) {
			t.Errorf("%s: %d parameters, the table %d", k.Name, len(params), len(k.Params))
			continue
		}
		for i, p := range params {
			f := strings.Fields(strings.TrimSpace(p))
			if got := strings.Join(f[:len(f)-1], " "); got != k.Params[i].CType() {
				t.Errorf("%s parameter %d: %s, the table %s", k.Name, i, got, k.Params[i].CType())
			}
		}
		delete(table, m[1])
	}
	for name := range table {
		t.Errorf("the table's %s is not in kernels_flash.cu", name)
	}
}

// TestFlashPTX compiles kernels_flash.cu for sm_80 and sm_90 with clang, no CUDA SDK: every
// table kernel is an entry with the table's parameter count, nothing is placed in local
// memory (the register tiles are fully unrolled), and the only shared memory is the
// launch's dynamic shared memory.
func TestFlashPTX(t *testing.T) {
	for _, arch := range []string{"sm_80", "sm_90"} {
		ptx := libraryPTX(t, "kernels_flash.cu", arch)
		for _, k := range FlashKernels() {
			at := strings.Index(ptx, ".entry "+k.Name+"(")
			if at < 0 {
				t.Errorf("%s: no entry %s", arch, k.Name)
				continue
			}
			head := ptx[at:]
			head = head[:strings.Index(head, ")")]
			if n := strings.Count(head, ".param "); n != len(k.Params) {
				t.Errorf("%s: %s has %d parameters in PTX, the table %d", arch, k.Name, n, len(k.Params))
			}
		}
		if strings.Contains(ptx, ".local") {
			t.Errorf("%s: the PTX uses local memory", arch)
		}
		for _, line := range strings.Split(ptx, "\n") {
			if strings.Contains(line, ".shared") && !strings.Contains(line, "ld.shared") && !strings.Contains(line, "st.shared") &&
				strings.TrimSpace(line) != ".extern .shared .align 16 .b8 smem[];" {
				t.Errorf("%s: shared memory besides the launch's dynamic shared memory: %s", arch, strings.TrimSpace(line))
			}
		}
	}
}

// flashModel is a small dense model with grouped-query heads for the chain tests.
func flashModel(edit func(m *program.Model)) *program.Model {
	m := programtest.MustModel("flash", `vocab = 64; vocab_pad_to = 1; d_model = 64; layers = 2; seq_len = 16
norm = rmsnorm; norm_placement = pre; final_norm = true; position = rotary; rope_base = 10000
attention { heads = 4; kv_heads = 2; head_dim = 16 }
ffn { hidden = 32; activation = gelu }`)
	if edit != nil {
		edit(m)
	}
	return m
}

func flashLower(t *testing.T, m *program.Model, recompute program.Recompute) *step.Program {
	t.Helper()
	p, err := step.LowerRank(m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 2}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: recompute}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFlashChains: in training programs without and with recompute, every layer's and
// micro-batch's attention core is found, with the buffers its ops pass along, and At runs
// the fused forward at attn_av, the fused backward at attn_av_bwd and nothing at the
// chain's other ops.
func TestFlashChains(t *testing.T) {
	m := flashModel(nil)
	for _, rc := range []program.Recompute{program.RecomputeNone, program.RecomputeSelective, program.RecomputeFull} {
		p := flashLower(t, m, rc)
		backward := map[int]bool{}
		for i, op := range p.Ops {
			if op.Kind != step.OpScores {
				continue
			}
			c, err := FindFlashChain(p, m, i)
			if err != nil {
				t.Fatalf("recompute %q: op %d: %v", rc, i, err)
			}
			if want := (FlashShape{Batch: 2, SeqLen: 16, Heads: 4, KVHeads: 2, HeadDim: 16}); c.Shape != want {
				t.Errorf("recompute %q: op %d: shape %+v, want %+v", rc, i, c.Shape, want)
			}
			if len(c.Softmax) != len(c.Scores) || (rc == program.RecomputeSelective) != (len(c.Scores) == 2) {
				t.Errorf("recompute %q: op %d: scores ops %v, softmax ops %v", rc, i, c.Scores, c.Softmax)
			}
			for _, av := range c.AV {
				if op := p.Ops[av]; op.In[1] != c.V || op.Out[0] != c.O {
					t.Errorf("recompute %q: attn_av op %d reads %v and writes %v, the chain says v %d and o %d", rc, av, op.In, op.Out, c.V, c.O)
				}
				ls, in, err := c.At(av)
				if err != nil || !in || len(ls) != 1 || ls[0].Kernel != "flash_fwd_d16" {
					t.Errorf("recompute %q: at attn_av op %d: %v, %v, %v", rc, av, ls, in, err)
				}
			}
			// Under full recompute the first forward's chain has no backward: the
			// backward reads the recomputed buffers, a chain of their own.
			if rc == program.RecomputeFull && !p.Ops[i].Recomputed {
				if c.AVBwd >= 0 {
					t.Errorf("recompute full: the first forward's chain at op %d has a backward", i)
				}
				continue
			}
			if c.AVBwd < 0 || c.SoftmaxBwd < 0 || c.ScoresBwd < 0 {
				t.Fatalf("recompute %q: op %d: no backward in %+v", rc, i, c)
			}
			backward[c.AVBwd] = true
			if sb := p.Ops[c.ScoresBwd]; sb.Out[0] != c.DQ || sb.Out[1] != c.DK || p.Ops[c.AVBwd].Out[1] != c.DV || p.Ops[c.AVBwd].In[0] != c.DO {
				t.Errorf("recompute %q: op %d: gradients dq %d dk %d dv %d do %d do not match the ops'", rc, i, c.DQ, c.DK, c.DV, c.DO)
			}
			ls, in, err := c.At(c.AVBwd)
			if err != nil || !in || len(ls) != 2 || ls[0].Kernel != "flash_bwd_prep" || ls[1].Kernel != "flash_bwd_d16" {
				t.Errorf("recompute %q: at attn_av_bwd op %d: %v, %v, %v", rc, c.AVBwd, ls, in, err)
			}
			if c.KeepO && ls[0].Args[0].Work == "" {
				t.Errorf("recompute %q: op %d: the output is overwritten before the backward, which reads the program's buffer", rc, i)
			}
			for _, j := range append(append([]int{c.SoftmaxBwd}, c.Scores...), c.Softmax...) {
				if ls, in, err := c.At(j); err != nil || !in || len(ls) != 0 {
					t.Errorf("recompute %q: chain op %d (%s) runs %v (%v, %v)", rc, j, p.Ops[j].Kind, ls, in, err)
				}
			}
			// attn_scores_bwd brings dq and dk from the fused backward's workspaces into
			// the program's buffers, at the op's own place in the memory plan.
			if ls, in, err := c.At(c.ScoresBwd); err != nil || !in || len(ls) != 2 || ls[0].Args[0].Buf != c.DQ || ls[1].Args[0].Buf != c.DK ||
				ls[0].Args[1].Work == "" || ls[1].Args[1].Work == "" {
				t.Errorf("recompute %q: attn_scores_bwd op %d runs %v (%v, %v)", rc, c.ScoresBwd, ls, in, err)
			}
			if ls, in, err := c.At(0); in || len(ls) != 0 || err != nil {
				t.Errorf("recompute %q: the program's first op (%s) is in the chain of op %d", rc, p.Ops[0].Kind, i)
			}
		}
		if want := m.Layers * 2; len(backward) != want {
			t.Errorf("recompute %q: %d backward chains found, want one per layer and micro-batch (%d)", rc, len(backward), want)
		}
	}
}

// TestFlashChainRefusals: attention the fused kernels do not compute, or whose weights
// something else reads, is refused with the reason.
func TestFlashChainRefusals(t *testing.T) {
	for _, c := range []struct {
		name        string
		lower, find func(m *program.Model)
		want        string
	}{
		{"talking heads", func(m *program.Model) { m.Attention.TalkingHeads = true }, nil, "talking heads"},
		{"sharing", func(m *program.Model) { m.Attention.ShareWeights = 0.5 }, nil, "sharing"},
		{"window", nil, func(m *program.Model) { m.Attention.Window = 4 }, "sliding window"},
		{"sinks", nil, func(m *program.Model) { m.Attention.Sinks = true }, "sinks"},
		{"head_dim", func(m *program.Model) { m.Attention.HeadDim, m.DModel = 160, 640 }, nil, "head_dim 160"},
	} {
		m := flashModel(c.lower)
		p := flashLower(t, m, program.RecomputeNone)
		if c.find != nil {
			c.find(m)
		}
		// Every chain is refused (under sharing, the first layer's because the second
		// reads its weights), at least one for the reason.
		reason := false
		for i, op := range p.Ops {
			if op.Kind != step.OpScores {
				continue
			}
			_, err := FindFlashChain(p, m, i)
			if err == nil {
				t.Errorf("%s: op %d: fused", c.name, i)
				continue
			}
			reason = reason || strings.Contains(err.Error(), c.want)
		}
		if !reason {
			t.Errorf("%s: no chain refused for %q", c.name, c.want)
		}
	}
}

// TestFlashChainKeepsOutput: where the memory plan reuses the attention output's memory
// before attn_av_bwd (as plans made for the unfused backward do), the forward keeps a
// copy for the backward; where the output lasts, the backward reads it in place.
func TestFlashChainKeepsOutput(t *testing.T) {
	m := flashModel(nil)
	p := flashLower(t, m, program.RecomputeNone)
	scores := -1
	for i, op := range p.Ops {
		if op.Kind == step.OpScores {
			scores = i
			break
		}
	}
	c, err := FindFlashChain(p, m, scores)
	if err != nil {
		t.Fatal(err)
	}
	fwd, _, _ := c.At(c.AV[0])
	bwd, _, _ := c.At(c.AVBwd)
	if !c.KeepO || fwd[0].Args[4].Work == "" || fwd[0].Args[4].Work != bwd[0].Args[0].Work {
		t.Fatalf("the plan reuses %s before the backward: keep %v, forward keeps %+v, backward reads %+v",
			p.Buffers[c.O].Name, c.KeepO, fwd[0].Args[4], bwd[0].Args[0])
	}
	p.Buffers[c.O].Offset = p.Memory.Arena[step.Device] // past every other buffer
	if c, err = FindFlashChain(p, m, scores); err != nil {
		t.Fatal(err)
	}
	fwd, _, _ = c.At(c.AV[0])
	bwd, _, _ = c.At(c.AVBwd)
	if c.KeepO || fwd[0].Args[4].Buf != c.O || bwd[0].Args[0].Buf != c.O {
		t.Errorf("the output lasts to the backward: keep %v, forward keeps %+v, backward reads %+v", c.KeepO, fwd[0].Args[4], bwd[0].Args[0])
	}
}

// TestFlashChainShapes: the chain's heads are the rank's (tensor parallelism splits them),
// and an inference prefill's attention is a chain without a backward.
func TestFlashChainShapes(t *testing.T) {
	m := flashModel(nil)
	tp, err := step.LowerRank(m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	prefill, err := step.LowerPrefill(m, 3, 8, 16)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		p        *step.Program
		want     FlashShape
		backward bool
	}{
		{"tp 2", tp, FlashShape{Batch: 2, SeqLen: 16, Heads: 2, KVHeads: 1, HeadDim: 16}, true},
		{"prefill", prefill, FlashShape{Batch: 3, SeqLen: 8, Heads: 4, KVHeads: 2, HeadDim: 16}, false},
	} {
		found := 0
		for i, op := range c.p.Ops {
			if op.Kind != step.OpScores {
				continue
			}
			ch, err := FindFlashChain(c.p, m, i)
			if err != nil {
				t.Fatalf("%s: op %d: %v", c.name, i, err)
			}
			found++
			if ch.Shape != c.want || (ch.AVBwd >= 0) != c.backward {
				t.Errorf("%s: op %d: shape %+v, backward op %d; want %+v, a backward %v", c.name, i, ch.Shape, ch.AVBwd, c.want, c.backward)
			}
		}
		if found != m.Layers {
			t.Errorf("%s: %d chains, want %d", c.name, found, m.Layers)
		}
	}
}
