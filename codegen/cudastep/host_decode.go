package cudastep

import (
	"fmt"
	"sort"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// Decoding is a model's two inference programs lowered together, for one host program
// that runs both over one device arena: the prefill (step.LowerPrefill: prompts of up to
// a fixed number of positions fill the KV caches) and the decoding step
// (step.LowerDecode: one token per sequence at its own position). Their persistent
// buffers, the weights and the KV caches, lie at the same arena offsets in both (the
// inference memory plan puts them first, in declaration order), so the caches the prefill
// writes are the ones the decoding steps read and extend, and the weights are uploaded
// once. Each program's other buffers lie above them, where the other's may too: the two
// never run at once. Each program keeps its own workspaces, after the arena.
type Decoding struct {
	Prefill, Decode *Lowered
}

// Decoding's inputs and output, by buffer name (compiler/step's inference programs).
const (
	decodeTokens  = "tokens@0"
	decodeLogits  = "logits@0"
	decodeLengths = "lengths" // prefill: each prompt's length
	decodePos     = "pos"     // decoding step: each sequence's position
)

// LowerDecoding lowers m's prefill and decoding-step programs (one rank) with o's choices
// and checks that they share their persistent buffers.
func LowerDecoding(prefill, decode *step.Program, m *program.Model, o Options) (*Decoding, error) {
	pl, err := LowerWith(prefill, m, o)
	if err != nil {
		return nil, fmt.Errorf("cudastep: the prefill: %w", err)
	}
	dl, err := LowerWith(decode, m, o)
	if err != nil {
		return nil, fmt.Errorf("cudastep: the decoding step: %w", err)
	}
	dec := &Decoding{Prefill: pl, Decode: dl}
	if err := dec.check(); err != nil {
		return nil, err
	}
	return dec, nil
}

// check refuses a pair of programs one host program cannot run over one arena.
func (d *Decoding) check() error {
	byName := map[string]*step.Buffer{}
	for _, b := range d.Decode.Program.Buffers {
		byName[b.Name] = b
	}
	for i, b := range d.Prefill.Program.Buffers {
		if !b.Kind.Persistent() || d.Prefill.Program.Memory.Lifetime[i][0] < 0 {
			continue
		}
		o, ok := byName[b.Name]
		if !ok || o.Offset != b.Offset || o.Elements() != b.Elements() || o.Tier != b.Tier {
			return fmt.Errorf("cudastep: the prefill's persistent buffer %s (at %d, %d values) is not the decoding step's", b.Name, b.Offset, b.Elements())
		}
	}
	for _, l := range []*Lowered{d.Prefill, d.Decode} {
		p := l.Program
		if l.NormSlots > 0 || l.LossSlots > 0 {
			return fmt.Errorf("cudastep: %s/%s has a loss or a gradient norm: not an inference program", p.Model, p.Stage)
		}
		for i, ol := range l.Ops {
			if ol.Conditional || ol.Settle {
				return fmt.Errorf("cudastep: op %d (%s) of an inference program depends on a die or an update", i, p.Ops[i].Kind)
			}
		}
	}
	return nil
}

// decodeIO is where one program's inputs and logits lie in the arena.
type decodeIO struct {
	tokens, at, logits *step.Buffer
}

func (l *Lowered) decodeIO(at string) (decodeIO, error) {
	var io decodeIO
	for i, b := range l.Program.Buffers {
		if l.Program.Memory.Lifetime[i][0] < 0 {
			continue
		}
		switch b.Name {
		case decodeTokens:
			io.tokens = b
		case at:
			io.at = b
		case decodeLogits:
			io.logits = b
		}
	}
	if io.tokens == nil || io.at == nil || io.logits == nil || !io.tokens.Int || !io.at.Int {
		return io, fmt.Errorf("cudastep: %s/%s has no %s, %s and %s: not a one-rank inference program", l.Program.Model, l.Program.Stage, decodeTokens, at, decodeLogits)
	}
	return io, nil
}

// Memory is the device memory of the decoding host program: the larger of the two
// programs' arenas (their persistent buffers in common), then the prefill's workspaces,
// then the decoding step's. work maps each program's workspace names to their offsets.
func (d *Decoding) Memory() (arena int64, work [2]map[string]int64, total int64) {
	pa, pw, pt := d.Prefill.Memory()
	da, dw, dt := d.Decode.Memory()
	arena = max(pa, da)
	work = [2]map[string]int64{{}, {}}
	for _, w := range pw {
		work[0][w.Name] = arena + w.Offset - pa
	}
	for _, w := range dw {
		work[1][w.Name] = arena + pt - pa + w.Offset - da
	}
	return arena, work, alignUp(arena+pt-pa+dt-da, 256)
}

// KernelFiles are the kernel files whose kernels the two programs launch, in the
// library's order: the ones the decoding host program loads and compiles.
func (d *Decoding) KernelFiles() []KernelFile {
	used := map[string]bool{}
	for _, l := range []*Lowered{d.Prefill, d.Decode} {
		for _, ol := range l.Ops {
			for _, ln := range ol.Launches {
				used[ln.Kernel] = true
			}
		}
	}
	var out []KernelFile
	for _, f := range Library() {
		for _, k := range f.Kernels {
			if used[k.Name] {
				out = append(out, f)
				break
			}
		}
	}
	return out
}

// DecodingSources are the C++ and CUDA files of the decoding host program, as Sources's
// for a training step, with the kernel files it launches (KernelFiles) alone.
func DecodingSources(d *Decoding) (map[string]string, error) {
	host, err := DecodingHostProgram(d)
	if err != nil {
		return nil, err
	}
	files := map[string]string{
		HostName:         host,
		DriverHeaderName: driverHeader,
		DeviceHeaderName: deviceHeader,
		DriverDlopenName: driverDlopen,
		DriverEmuName:    driverEmu,
		EmuRegistryName:  EmulationRegistry(d.KernelFiles()),
	}
	for _, f := range d.KernelFiles() {
		files[f.Name] = f.Source
		files[EmulationName(f)] = EmulationKernels(f)
	}
	return files, nil
}

// DecodingHostProgram is the C++ host program of d: one device arena laid out for both
// programs, and the C ABI runtime/gpu's Decoder calls (packed functions, as HostProgram's):
//
//	moec_step_device, moec_step_open, moec_step_upload, moec_step_download, moec_step_close
//	    as HostProgram's
//	moec_decode_prefill(handle, tokens, lengths, logits, err, errn)
//	    tokens [sequences·prompt] (each prompt from position 0, right-padded), lengths
//	    [sequences]; logits [sequences, vocab] of each prompt's last position
//	moec_decode_step(handle, tokens, pos, logits, err, errn)
//	    one token per sequence at its position pos; logits [sequences, vocab]
func DecodingHostProgram(d *Decoding) (string, error) {
	both := &Lowered{Ops: append(append([]OpLaunches{}, d.Prefill.Ops...), d.Decode.Ops...)}
	idx, ks, err := both.kernelIndex()
	if err != nil {
		return "", err
	}
	arena, work, total := d.Memory()
	pio, err := d.Prefill.decodeIO(decodeLengths)
	if err != nil {
		return "", err
	}
	dio, err := d.Decode.decodeIO(decodePos)
	if err != nil {
		return "", err
	}
	var w strings.Builder
	pf := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	pp, dp := d.Prefill.Program, d.Decode.Program
	pf("// Generated by moec: the CUDA decoding host program of %s/%s: a prefill of %d prompts of up to %d positions\n", pp.Model, pp.Stage, pp.Batch.MicroBatch, pp.Batch.SeqLen)
	pf("// (%d ops) and a decoding step (%d ops) over one device arena of %d bytes, whose KV caches they share.\n", len(pp.Ops), len(dp.Ops), arena)
	pf("\n#define MOEC_KERNELS %d\n#define MOEC_ARENA_BYTES %dULL\n#define MOEC_DEVICE_BYTES %dULL\n", max(len(ks), 1), arena, total)
	shared := make([]int, len(ks))
	for _, ol := range both.Ops {
		for _, ln := range ol.Launches {
			shared[idx[ln.Kernel]] = max(shared[idx[ln.Kernel]], ln.Shared)
		}
	}
	names, symbols, sizes := make([]string, len(ks)), make([]string, len(ks)), make([]string, len(ks))
	for i, k := range ks {
		names[i], symbols[i], sizes[i] = fmt.Sprintf("%q", k.Name), fmt.Sprintf("%q", MangledName(k)), fmt.Sprint(shared[i])
	}
	if len(ks) == 0 {
		names, symbols, sizes = []string{`""`}, []string{`""`}, []string{"0"}
	}
	pf("\nstatic const char *const moec_kernel_names[MOEC_KERNELS] = {%s};\n", strings.Join(names, ", "))
	pf("static const int moec_kernel_shared[MOEC_KERNELS] = {%s};\n", strings.Join(sizes, ", "))
	pf("static const char *const moec_kernel_symbols[MOEC_KERNELS] = {%s};\n", strings.Join(symbols, ", "))
	w.WriteString(hostPrelude)
	w.WriteString(`
// Inference programs have no update: the prelude's settle step never runs.
static int __attribute__((unused)) moec_settle(moec_state *s, const double *) {
  return moec_failf(s, "an inference program has no update to settle");
}
`)
	progs := []struct {
		name string
		l    *Lowered
	}{{"prefill", d.Prefill}, {"decode", d.Decode}}
	// The constant workspaces of both programs, and their address tables.
	var fill strings.Builder
	for i, pr := range progs {
		consts := make([]string, 0, len(pr.l.Consts))
		for n := range pr.l.Consts {
			consts = append(consts, n)
		}
		sort.Strings(consts)
		for _, n := range consts {
			c := pr.l.Consts[n]
			sym := fmt.Sprintf("moec_const_%s_%s", pr.name, n)
			pf("static const float %s[%d] = {", sym, len(c))
			for j, v := range c {
				if j%8 == 0 {
					pf("\n   ")
				}
				pf(" %s,", cFloat(v))
			}
			pf("\n};\n")
			fmt.Fprintf(&fill, "  MOEC_CU(s, s->cu.cuMemcpyHtoD(s->base + %dULL, %s, sizeof %s), \"filling the %s's workspace %s\");\n", work[i][n], sym, sym, pr.name, n)
		}
		tables := pr.l.tables()
		tnames := make([]string, 0, len(tables))
		for n := range tables {
			tnames = append(tnames, n)
		}
		sort.Strings(tnames)
		for _, n := range tnames {
			fill.WriteString("  {\n    CUdeviceptr t[] = {")
			for j, b := range tables[n] {
				if j > 0 {
					fill.WriteString(",")
				}
				fmt.Fprintf(&fill, " s->base + %dULL", pr.l.Program.Buffers[b].Offset)
			}
			fmt.Fprintf(&fill, " };\n    MOEC_CU(s, s->cu.cuMemcpyHtoD(s->base + %dULL, t, sizeof t), \"writing the %s's address table %s\");\n  }\n", work[i][n], pr.name, n)
		}
	}
	pf("\nstatic int moec_fill_consts(moec_state *s) {\n%s  return 1;\n}\n", fill.String())
	for i, pr := range progs {
		p := pr.l.Program
		pf("\n// The %s's ops in program order.\nstatic int moec_run_%s(moec_state *s) {\n", pr.name, pr.name)
		for j := range p.Ops {
			op := &p.Ops[j]
			what := fmt.Sprintf("%s op %d (%s, layer %d)", pr.name, j, op.Kind, op.Layer)
			pf("  // %s\n", what)
			for _, ln := range pr.l.Ops[j].Launches {
				if err := emitLaunch(&w, "  ", ln, idx[ln.Kernel], p, work[i], what); err != nil {
					return "", fmt.Errorf("cudastep: %s: %w", what, err)
				}
			}
		}
		pf("  return 1;\n}\n")
	}
	w.WriteString(hostSession)
	pf(`
// moec_infer runs one inference program: its token ids and positions (or lengths) in, its
// ops, its logits out.
static void moec_infer(void **a, const char *what, unsigned long long tokens_at, size_t tokens_bytes,
                       unsigned long long at_at, size_t at_bytes, unsigned long long logits_at, size_t logits_bytes,
                       int (*run)(moec_state *)) {
  moec_state *s = moec_handle(a[0]);
  if (!moec_enter(s, a[4], a[5])) return;
  CUresult r = s->cu.cuMemcpyHtoD(s->base + tokens_at, a[1], tokens_bytes);
  if (r != 0) {
    moec_cu_failed(s, r, "cuMemcpyHtoD", "uploading the token ids");
    return;
  }
  r = s->cu.cuMemcpyHtoD(s->base + at_at, a[2], at_bytes);
  if (r != 0) {
    moec_cu_failed(s, r, "cuMemcpyHtoD", "uploading the positions");
    return;
  }
  if (!run(s)) return;
  r = s->cu.cuStreamSynchronize(s->stream);
  if (r != 0) {
    moec_cu_failed(s, r, "cuStreamSynchronize", what);
    return;
  }
  r = s->cu.cuMemcpyDtoH(a[3], s->base + logits_at, logits_bytes);
  if (r != 0) moec_cu_failed(s, r, "cuMemcpyDtoH", "reading the logits");
}

// moec_decode_prefill(handle, tokens, lengths, logits, err, errn)
extern "C" void moec_decode_prefill(void **a, long long, long long) {
  moec_infer(a, "finishing the prefill", %dULL, %d, %dULL, %d, %dULL, %d, moec_run_prefill);
}

// moec_decode_step(handle, tokens, pos, logits, err, errn)
extern "C" void moec_decode_step(void **a, long long, long long) {
  moec_infer(a, "finishing the decoding step", %dULL, %d, %dULL, %d, %dULL, %d, moec_run_decode);
}

`, pio.tokens.Offset, pio.tokens.Bytes(), pio.at.Offset, pio.at.Bytes(), pio.logits.Offset, pio.logits.Bytes(),
		dio.tokens.Offset, dio.tokens.Bytes(), dio.at.Offset, dio.at.Bytes(), dio.logits.Offset, dio.logits.Bytes())
	w.WriteString(hostClose)
	return w.String(), nil
}
