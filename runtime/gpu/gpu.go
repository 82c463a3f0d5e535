package gpu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/codegen/cudastep"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/atomicfile"
	"github.com/moec-dev/moec/internal/compilecache"
	moexec "github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/llvmrt"
	"github.com/moec-dev/moec/runtime/optim"
)

// Mode says where the generated step runs.
type Mode uint8

const (
	Device   Mode = iota // a GPU through libcuda.so.1
	Emulated             // the CPU, through the emulated driver and kernels
)

func (m Mode) String() string {
	if m == Emulated {
		return "cuda-emulated"
	}
	return "cuda"
}

// ParseMode reads a --device value: "cuda" or "cuda-emulated".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "cuda":
		return Device, nil
	case "cuda-emulated":
		return Emulated, nil
	}
	return 0, fmt.Errorf("device %q: want cuda or cuda-emulated", s)
}

// Options say how a session is built.
type Options struct {
	Mode Mode
	// Dir receives the sources and the compiled library; empty: a temporary folder,
	// removed once the library is loaded.
	Dir string
	// Clang is the clang++ to compile with; empty: codegen/cuda's FindClang.
	Clang string
	// Arch is the GPU architecture of the PTX (Device mode, e.g. "sm_90"); empty: device
	// 0's, from its compute capability (at most sm_90, clang 16's newest: the driver
	// compiles that PTX for a newer GPU when it loads it).
	Arch string
	// BF16 runs the weight products on the tensor cores in bfloat16 with fp32 sums
	// (cudastep.Options.BF16: a train block's precision = bf16).
	BF16 bool
	// FP16 runs them in IEEE half, with the loss scaled (cudastep.Options.FP16: a train
	// block's precision = fp16; StepOptions.LossScale).
	FP16 bool
	// objects, under the emulation, are the emulated kernels, driver and NCCL already
	// compiled (another rank's, OpenRanks), one object per emulation source in
	// cudastep.EmulationSources' order: the host program links them.
	objects []string
	// device, when set, is the ordinal of the device the session opens (OpenRank: the
	// process's node-local rank); nil: the program's rank.
	device *int
}

// errBytes is the size of the buffer the host program writes its errors into.
const errBytes = 1024

// Session is one rank's generated step, compiled and opened.
type Session struct {
	p       *step.Program
	m       *program.Model
	low     *cudastep.Lowered
	lib     *llvmrt.Library
	fns     map[string]*llvmrt.Func
	handle  int64
	tmp     string
	objects []string // under the emulation, the objects the host program linked
	dice    *moexec.Kernels
	cfg     *optim.Config
	updates int64
}

// Stats are a step's loss terms as runtime/exec reports them.
type Stats struct {
	Loss, CE, GradNorm, LR float64
	// Balance and ZLoss are the routes' load-balance and z-loss terms, Dropped the
	// assignments over capacity (zero without routing).
	Balance, ZLoss float64
	Dropped        int
	// Skipped says the step's loss-scaled gradients overflowed (StepOptions.LossScale):
	// its update was skipped, weights, moments and schedule untouched.
	Skipped bool
	// Distill is a distillation stage's soft loss, the mean T²·KL(teacher ‖ student) over
	// the step's tokens (as runtime/exec's Stats.Distill); Loss is then hard·CE +
	// soft·Distill + the routing terms.
	Distill float64
}

// stepLoss is the step's loss from its terms under the program's distillation d and the
// model's routing: hard·CE + soft·Distill when it distills, else CE, plus the routes'
// weighted balance and z-loss terms.
func stepLoss(st Stats, d step.Distill, m *program.Model) float64 {
	loss := st.CE
	if d.On() {
		loss = d.HardWeight*st.CE + d.SoftWeight*st.Distill
	}
	if e := m.MoE; e != nil {
		loss += e.BalanceLoss*st.Balance + e.ZLoss*st.ZLoss
	}
	return loss
}

// FusedAttention is how many attention cores the step runs as fused FlashAttention-2
// kernels (cudastep.Lowered.FusedAttention).
func (s *Session) FusedAttention() int { return s.low.FusedAttention }

// CheckDriver reports why a GPU step cannot run on this machine: libcuda.so.1 (the NVIDIA
// driver's CUDA library) cannot be loaded. No CUDA SDK is needed.
func CheckDriver() error {
	lib, err := llvmrt.Open("libcuda.so.1")
	if err != nil {
		return fmt.Errorf("no NVIDIA driver: cannot load libcuda.so.1 (%v); install the NVIDIA driver: moec needs only it and clang to run on a GPU, no CUDA SDK; --device cuda-emulated runs the same generated step on the CPU", err)
	}
	return lib.Close()
}

// Open lowers p (one rank's program of m's stage), writes and compiles its sources, and
// opens the step on the device (or the emulation).
func Open(ctx context.Context, p *step.Program, m *program.Model, o Options) (*Session, error) {
	low, err := cudastep.LowerWith(p, m, cudastep.Options{BF16: o.BF16, FP16: o.FP16, Compact: true})
	if err != nil {
		return nil, err
	}
	if o.Mode == Device {
		if err := CheckDriver(); err != nil {
			return nil, err
		}
	}
	clang := o.Clang
	if clang == "" {
		clang = cuda.FindClang()
	}
	if clang == "" {
		return nil, errors.New("gpu: no clang++ on PATH: moec compiles its CUDA with clang (16 or newer)")
	}
	s := &Session{p: low.Program, m: m, low: low} // the lowered copy: its arena without what the fused kernels never hold
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "moec-gpu-*"); err != nil {
			return nil, fmt.Errorf("gpu: %w", err)
		}
		s.tmp = dir
	}
	fail := func(err error) (*Session, error) {
		if s.tmp != "" {
			os.RemoveAll(s.tmp)
		}
		return nil, err
	}
	if err := writeSources(low, dir); err != nil {
		return fail(err)
	}
	so, objects, err := compileHostReusing(ctx, dir, clang, o.Mode, cudastep.Library(), o.objects)
	if err != nil {
		return fail(err)
	}
	s.objects = objects
	if s.lib, err = llvmrt.Open(so); err != nil {
		return fail(fmt.Errorf("gpu: loading the host program: %w", err))
	}
	s.fns = map[string]*llvmrt.Func{}
	for _, name := range []string{"moec_step_device", "moec_step_open", "moec_step_upload", "moec_step_download", "moec_step_train", "moec_step_close"} {
		f, err := s.lib.Func(name)
		if err != nil {
			s.lib.Close()
			return fail(fmt.Errorf("gpu: %w", err))
		}
		s.fns[name] = f
	}
	if p.Layout.OffloadOpt || p.Layout.Cache.On() { // offload.go: the host arena's entry points (the unified cache's host tier too)
		for _, name := range hostFuncs {
			f, err := s.lib.Func(name)
			if err != nil {
				s.lib.Close()
				return fail(fmt.Errorf("gpu: %w", err))
			}
			s.fns[name] = f
		}
	}
	var ptx []string
	if o.Mode == Device {
		arch := o.Arch
		if arch == "" {
			if arch, err = s.deviceArch(); err != nil {
				s.lib.Close()
				return fail(err)
			}
		}
		if ptx, err = compilePTX(ctx, dir, clang, arch); err != nil {
			s.lib.Close()
			return fail(err)
		}
	}
	if s.tmp != "" {
		// The loaded library stays mapped: the temporary folder is not needed any more.
		os.RemoveAll(s.tmp)
		s.tmp = ""
	}
	device := p.Rank
	if o.device != nil {
		device = *o.device
	}
	if s.handle, err = openHandle(s.fns["moec_step_open"], ptx, p.Model+"/"+p.Stage, o.Mode, device); err != nil {
		s.lib.Close()
		return fail(err)
	}
	if s.dice, err = moexec.NewKernels(m, p.Batch, p.Layout, p.Coord); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// openHandle calls a host program's moec_step_open with the PTX modules (none under the
// emulation: the kernels are compiled into the library) and returns the handle of its
// device state on device ordinal device; what names the program in an error the host
// program reports.
func openHandle(open *llvmrt.Func, ptx []string, what string, mode Mode, device int) (int64, error) {
	var blob []byte
	for _, t := range ptx {
		blob = append(append(blob, t...), 0)
	}
	if len(blob) == 0 {
		blob = []byte{0}
	}
	handle := make([]byte, 8)
	msg := make([]byte, errBytes)
	if err := open.Call(0, 0, blob, int64(len(ptx)), handle, msg, int64(errBytes), int64(device)); err != nil {
		return 0, err
	}
	if e := cString(msg); e != "" {
		return 0, fmt.Errorf("gpu: opening %s on %s: %s", what, mode, e)
	}
	return int64(binary.LittleEndian.Uint64(handle)), nil
}

// writeSources writes the sources of low, the emulation header and the clang prelude into
// dir.
func writeSources(low *cudastep.Lowered, dir string) error {
	files, err := cudastep.Sources(low)
	if err != nil {
		return err
	}
	files["moec_cpu_emu.h"] = cuda.EmulationHeader()
	files[cuda.PreludeName] = cuda.Prelude()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := writeFile(filepath.Join(dir, n), files[n]); err != nil {
			return err
		}
	}
	return nil
}

// clangIn runs clang++ with args in dir.
func clangIn(ctx context.Context, dir, clang string, args ...string) error {
	cmd := exec.CommandContext(ctx, clang, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gpu: clang++ %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// compileHost compiles the host program into a shared library: with the emulated driver
// and the kernels under the emulation, or with the libcuda.so.1 filling of the driver
// table.
func compileHost(ctx context.Context, dir, clang string, mode Mode) (string, error) {
	return compileHostOf(ctx, dir, clang, mode, cudastep.Library())
}

// compileHostOf is compileHost with the kernel files kernels alone (a decoding host
// program's, cudastep.Decoding.KernelFiles).
func compileHostOf(ctx context.Context, dir, clang string, mode Mode, kernels []cudastep.KernelFile) (string, error) {
	so, _, err := compileHostReusing(ctx, dir, clang, mode, kernels, nil)
	return so, err
}

// compileHostReusing is compileHostOf; under the emulation the kernels, the driver and
// NCCL are compiled to objects first (another rank's build's objects where given, else
// emulationObjects') and linked with the host program; it returns the shared library and
// the objects it linked (nil on a GPU), which another rank's build can take.
func compileHostReusing(ctx context.Context, dir, clang string, mode Mode, kernels []cudastep.KernelFile, objects []string) (string, []string, error) {
	if mode == Emulated {
		flags, sources := cudastep.EmulationFlags(), cudastep.EmulationSources(kernels)
		if len(objects) != len(sources) {
			var err error
			if objects, err = emulationObjects(ctx, dir, clang, flags, sources); err != nil {
				return "", nil, err
			}
		}
		so := filepath.Join(dir, cudastep.EmulatedLibrary)
		args := slices.Concat(flags, []string{"-shared", cudastep.HostName}, objects)
		return so, objects, clangIn(ctx, dir, clang, append(args, "-o", so, "-lpthread", "-lm")...)
	}
	so := filepath.Join(dir, cudastep.HostLibrary)
	return so, nil, clangIn(ctx, dir, clang, cudastep.DeviceHostArgs(so)...)
}

// emulationObjects returns the objects of the emulation's sources in dir (compiled with
// flags), one per source in order: each the compile cache's entry for that source and the
// headers beside it, compiled into it on a miss (or into dir when there is no cache), as
// many clangs at once as the machine has CPUs. One entry per source, not per set of
// sources: programs that launch different kernel files (a dense stage, an MoE stage, latent
// attention) share the objects they have in common, so each is compiled once.
func emulationObjects(ctx context.Context, dir, clang string, flags, sources []string) ([]string, error) {
	headers, err := filepath.Glob(filepath.Join(dir, "*.h"))
	if err != nil {
		return nil, fmt.Errorf("gpu: %w", err)
	}
	for i, h := range headers {
		headers[i] = filepath.Base(h)
	}
	cache := compilecache.Open()
	objects := make([]string, len(sources))
	err = compilecache.Parallel(len(sources), runtime.NumCPU(), func(i int) error {
		src := sources[i]
		inputs, err := withIncludes(dir, src, headers)
		if err != nil {
			return err
		}
		key, err := compilecache.Key(clang, flags, dir, inputs)
		if err != nil {
			return fmt.Errorf("gpu: %w", err)
		}
		entry, err := cache.Build(key, dir, func(out string) error {
			return compilecache.CompileEach(ctx, dir, out, clang, flags, []string{src}, 1)
		})
		if err != nil {
			return err
		}
		objects[i] = filepath.Join(entry, strings.TrimSuffix(src, filepath.Ext(src))+".o")
		return nil
	})
	if err != nil {
		return nil, err
	}
	return objects, nil
}

// withIncludes is the compile cache's inputs for source src of dir: src, the headers and
// every other file of dir src includes by a quoted name (a kernel file an emulation
// trampoline includes), so that an edit to an included kernel's body, which leaves the
// trampoline's text alone, is a new key.
func withIncludes(dir, src string, headers []string) ([]string, error) {
	text, err := os.ReadFile(filepath.Join(dir, src))
	if err != nil {
		return nil, fmt.Errorf("gpu: %w", err)
	}
	inputs := append([]string{src}, headers...)
	for _, line := range strings.Split(string(text), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "#include \"")
		if !ok {
			continue
		}
		name, _, ok := strings.Cut(rest, "\"")
		if !ok || slices.Contains(inputs, name) {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			inputs = append(inputs, name)
		}
	}
	return inputs, nil
}

// compilePTX compiles each kernel file to PTX for arch.
func compilePTX(ctx context.Context, dir, clang, arch string) ([]string, error) {
	return compilePTXOf(ctx, dir, clang, arch, cudastep.Library())
}

// compilePTXOf is compilePTX of the kernel files kernels alone.
func compilePTXOf(ctx context.Context, dir, clang, arch string, kernels []cudastep.KernelFile) ([]string, error) {
	cache := compilecache.Open()
	headers, err := filepath.Glob(filepath.Join(dir, "*.h"))
	if err != nil {
		return nil, fmt.Errorf("gpu: %w", err)
	}
	var ptx []string
	for _, f := range kernels {
		out := strings.TrimSuffix(f.Name, ".cu") + "." + arch + ".ptx"
		inputs := []string{f.Name}
		for _, h := range headers {
			inputs = append(inputs, filepath.Base(h))
		}
		key, err := compilecache.Key(clang, cudastep.PTXArgs(arch, f.Name, out), dir, inputs)
		if err != nil {
			return nil, fmt.Errorf("gpu: %w", err)
		}
		folder, err := cache.Build(key, dir, func(into string) error {
			return clangIn(ctx, dir, clang, cudastep.PTXArgs(arch, f.Name, filepath.Join(into, out))...)
		})
		if err != nil {
			return nil, err
		}
		text, err := os.ReadFile(filepath.Join(folder, out))
		if err != nil {
			return nil, fmt.Errorf("gpu: %w", err)
		}
		ptx = append(ptx, string(text))
	}
	return ptx, nil
}

// newestArch is the newest GPU architecture clang 16 compiles PTX for: a newer GPU loads
// its PTX, which the driver compiles for it.
const newestArch = 90

// deviceArch is device 0's architecture (sm_XY from its compute capability), at most
// newestArch.
func (s *Session) deviceArch() (string, error) {
	cc := make([]int32, 2)
	msg := make([]byte, errBytes)
	if err := s.fns["moec_step_device"].Call(0, 0, cc, msg, int64(errBytes)); err != nil {
		return "", err
	}
	if e := cString(msg); e != "" {
		return "", fmt.Errorf("gpu: %s", e)
	}
	sm := min(int(cc[0])*10+int(cc[1]), newestArch)
	if sm < 70 {
		return "", fmt.Errorf("gpu: device 0 has compute capability %d.%d; moec's kernels need 7.0 or newer", cc[0], cc[1])
	}
	return fmt.Sprintf("sm_%d", sm), nil
}

// cString is the NUL-terminated text at the start of b.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Close releases the device memory and the library.
func (s *Session) Close() error {
	var err error
	if s.lib != nil {
		if s.handle != 0 {
			err = s.fns["moec_step_close"].Call(0, 0, s.handle)
			s.handle = 0
		}
		err = errors.Join(err, s.lib.Close())
		s.lib = nil
	}
	if s.tmp != "" {
		err = errors.Join(err, os.RemoveAll(s.tmp))
		s.tmp = ""
	}
	return err
}

// Upload copies values into the device arena at byte offset at.
func (s *Session) Upload(at int64, values []float32) error {
	return s.move("moec_step_upload", at, values)
}

// Download copies values out of the device arena from byte offset at.
func (s *Session) Download(at int64, values []float32) error {
	return s.move("moec_step_download", at, values)
}

func (s *Session) move(fn string, at int64, values []float32) error {
	if len(values) == 0 {
		return nil
	}
	msg := make([]byte, errBytes)
	if err := s.fns[fn].Call(0, 0, s.handle, at, values, int64(4*len(values)), msg, int64(errBytes)); err != nil {
		return err
	}
	if e := cString(msg); e != "" {
		return fmt.Errorf("gpu: %s", e)
	}
	return nil
}

// LoadParams uploads every parameter buffer of the program from get (an executor's
// Param, a model's weights), and under ZeRO 3 this rank's shard of each sharded group's
// weights; a parameter get has no values for is an error.
func (s *Session) LoadParams(get func(id params.ID) []float32) error {
	for _, b := range s.p.Buffers {
		if b.Kind != step.KindParam || b.Param == nil {
			continue
		}
		id := *b.Param
		id.Shard = params.Shard{}
		w := get(id)
		if int64(len(w)) != b.Elements() {
			return fmt.Errorf("gpu: parameter %s: %d values, the buffer holds %d", id, len(w), b.Elements())
		}
		if err := s.UploadBuffer(b, w); err != nil { // the unified cache keeps the weights in host memory
			return fmt.Errorf("gpu: uploading %s: %w", id, err)
		}
	}
	if err := s.loadShards(get); err != nil { // zero3.go: ZeRO 3's weight shards
		return err
	}
	return s.loadHostMasters(get) // offload.go: the offloaded optimizer's master weights
}

// Param downloads parameter id's values (nil, nil when the program has no buffer for it).
func (s *Session) Param(id params.ID) ([]float32, error) {
	for _, b := range s.p.Buffers {
		if b.Kind != step.KindParam || b.Param == nil {
			continue
		}
		bid := *b.Param
		bid.Shard = params.Shard{}
		if bid == id {
			w := make([]float32, b.Elements())
			return w, s.DownloadBuffer(b, w)
		}
	}
	return nil, nil
}

// Updates is the number of updates the optimizer has applied.
func (s *Session) Updates() int64 { return s.updates }

// SetUpdates sets the update count (a resumed run's: the schedule and bias corrections
// continue from it).
func (s *Session) SetUpdates(n int64) { s.updates = n }

// Buffers are the program's buffers, whose Offset is their place in the device arena.
func (s *Session) Buffers() []*step.Buffer { return s.p.Buffers }

// SetOptimizer makes Step run the update ops with AdamW under cfg (runtime/optim's
// schedule, clipping and decay rule, as runtime/exec applies them).
func (s *Session) SetOptimizer(cfg optim.Config) { s.cfg = &cfg }

// StepOptions are what a step needs beyond its tokens: the seed and step number that throw
// the attention-sharing dice (runtime/exec's BeginStep).
type StepOptions struct {
	Seed, Step int64
	// LossScale, when positive, is the step's dynamic loss scale (fp16 training, as
	// runtime/exec's Options.LossScale): the loss gradients are seeded with it, the update
	// unscales them, and an overflow skips the update (Stats.Skipped). 0: no scaling.
	LossScale float64
}

// Step runs one training step over the micro-batches (each B sequences of T+1 tokens, as
// runtime/exec's Run takes them), with the update when an optimizer is set.
func (s *Session) Step(micro [][]int32, o StepOptions) (Stats, error) {
	p := s.p
	if len(micro) != p.Batch.Micro {
		return Stats{}, fmt.Errorf("gpu: %d micro-batches, the program takes %d", len(micro), p.Batch.Micro)
	}
	d, err := s.m.Dims()
	if err != nil {
		return Stats{}, fmt.Errorf("gpu: %w", err)
	}
	n := p.Batch.Tokens()
	tokens, targets := make([]int32, n*len(micro)), make([]int32, n*len(micro))
	for i, seqs := range micro {
		if err := moexec.SplitTokens(tokens[i*n:(i+1)*n], targets[i*n:(i+1)*n], seqs, p.Batch.MicroBatch, p.Batch.SeqLen, d.V); err != nil {
			return Stats{}, fmt.Errorf("gpu: micro-batch %d: %w", i, err)
		}
	}
	s.dice.BeginStep(o.Seed, o.Step)
	dice := make([]int32, max(d.L, 1))
	for l := 0; l < d.L; l++ {
		if s.dice.Recompute(l) {
			dice[l] = 1
		}
	}
	opt := make([]float64, 10)
	var lr float64
	if s.cfg != nil {
		lr = s.cfg.LRAt(s.updates)
		opt = []float64{1, lr, s.cfg.Beta1, s.cfg.Beta2, s.cfg.Eps, s.cfg.WeightDecay, s.cfg.ClipNorm, float64(s.updates + 1), 1, 0}
	}
	opt[9] = max(o.LossScale, 0) // the host program's loss scale (cudastep's fp16.go)
	optBytes := make([]byte, 8*len(opt))
	for i, v := range opt {
		binary.LittleEndian.PutUint64(optBytes[8*i:], math.Float64bits(v))
	}
	out := make([]byte, 56)
	msg := make([]byte, errBytes)
	if err := s.fns["moec_step_train"].Call(0, 0, s.handle, tokens, targets, dice, optBytes, out, msg, int64(errBytes)); err != nil {
		return Stats{}, err
	}
	if e := cString(msg); e != "" {
		return Stats{}, fmt.Errorf("gpu: step %d: %s", o.Step, e)
	}
	f := func(i int) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(out[8*i:])) }
	st := Stats{CE: f(0), GradNorm: f(1), Balance: f(2), ZLoss: f(3), Dropped: int(f(4)), Skipped: f(5) != 0, Distill: f(6)}
	st.Loss = stepLoss(st, p.Layout.Distill, s.m)
	if s.cfg != nil {
		if !st.Skipped {
			s.updates++
		}
		st.LR = lr
	}
	return st, nil
}

// writeFile writes a generated source.
func writeFile(path, text string) error {
	if err := atomicfile.WriteFile(path, []byte(text), 0o644); err != nil {
		return fmt.Errorf("gpu: %w", err)
	}
	return nil
}

// CheckNCCL reports why several ranks cannot run on this machine's GPUs: libnccl.so.2
// (NVIDIA's collective library) cannot be loaded. No NCCL headers or SDK are needed.
func CheckNCCL() error {
	lib, err := llvmrt.Open("libnccl.so.2")
	if err != nil {
		return fmt.Errorf("no NCCL: cannot load libnccl.so.2 (%v); several ranks on GPUs need NVIDIA's NCCL 2.7 or newer installed (no headers or SDK); --device cuda-emulated runs the same ranks on the CPU", err)
	}
	return lib.Close()
}
