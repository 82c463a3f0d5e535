package cudastep

import (
	"fmt"
	"slices"
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
//
// A serving decoding (LowerServing) holds feeding programs instead (step.LowerFeed: rows
// of several sequences, each at its own position, prompt chunks beside decoding tokens),
// of several row counts over the same caches, fewest rows first: a step runs the
// smallest that holds its rows.
type Decoding struct {
	Prefill, Decode *Lowered // nil in a serving decoding
	Feeds           []*Lowered
}

// decodingProgram is one program of a Decoding with the name its host functions take.
type decodingProgram struct {
	name string
	l    *Lowered
}

// programs lists d's programs: the prefill and the decoding step, or the feeds.
func (d *Decoding) programs() []decodingProgram {
	var ps []decodingProgram
	if d.Prefill != nil {
		ps = append(ps, decodingProgram{"prefill", d.Prefill})
	}
	if d.Decode != nil {
		ps = append(ps, decodingProgram{"decode", d.Decode})
	}
	for i, f := range d.Feeds {
		ps = append(ps, decodingProgram{fmt.Sprintf("feed%d", i), f})
	}
	return ps
}

// Weights is the program whose buffers hold every weight and cache: the decoding step,
// or the first feed.
func (d *Decoding) Weights() *Lowered {
	if d.Decode != nil {
		return d.Decode
	}
	return d.Feeds[0]
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

// LowerServing lowers m's feeding programs (one rank; step.LowerFeed over the same
// sequences and positions, of different row counts) with o's choices for one host
// program, and checks that they share their persistent buffers.
func LowerServing(feeds []*step.Program, m *program.Model, o Options) (*Decoding, error) {
	if len(feeds) == 0 {
		return nil, fmt.Errorf("cudastep: a serving decoding without a feeding program")
	}
	dec := &Decoding{}
	for i, p := range feeds {
		l, err := LowerWith(p, m, o)
		if err != nil {
			return nil, fmt.Errorf("cudastep: the feeding program of %d rows: %w", p.Batch.MicroBatch, err)
		}
		if i > 0 && p.Batch.MicroBatch <= feeds[i-1].Batch.MicroBatch {
			return nil, fmt.Errorf("cudastep: feeding programs of %d then %d rows: want fewest rows first", feeds[i-1].Batch.MicroBatch, p.Batch.MicroBatch)
		}
		dec.Feeds = append(dec.Feeds, l)
	}
	if err := dec.check(); err != nil {
		return nil, err
	}
	return dec, nil
}

// check refuses programs one host program cannot run over one arena.
func (d *Decoding) check() error {
	ref, refName := d.Weights().Program, ""
	for _, pr := range d.programs() {
		if pr.l.Program == ref {
			refName = pr.name
		}
	}
	byName := map[string]*step.Buffer{}
	for _, b := range ref.Buffers {
		byName[b.Name] = b
	}
	for _, pr := range d.programs() {
		p := pr.l.Program
		if p == ref {
			continue
		}
		for i, b := range p.Buffers {
			if !b.Kind.Persistent() || p.Memory.Lifetime[i][0] < 0 {
				continue
			}
			o, ok := byName[b.Name]
			if !ok || o.Offset != b.Offset || o.Elements() != b.Elements() || o.Tier != b.Tier {
				return fmt.Errorf("cudastep: the %s's persistent buffer %s (at %d, %d values) is not the %s's", pr.name, b.Name, b.Offset, b.Elements(), refName)
			}
		}
	}
	for _, pr := range d.programs() {
		l, p := pr.l, pr.l.Program
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

// Memory is the device memory of the decoding host program: the largest of the programs'
// arenas (their persistent buffers in common), then each program's workspaces in turn
// (programs' order: the prefill's, the decoding step's, or the feeds'). work maps each
// program's workspace names to their offsets.
func (d *Decoding) Memory() (arena int64, work []map[string]int64, total int64) {
	ps := d.programs()
	type mem struct {
		arena, total int64
		work         []Workspace
	}
	ms := make([]mem, len(ps))
	for i, pr := range ps {
		ms[i].arena, ms[i].work, ms[i].total = pr.l.Memory()
		arena = max(arena, ms[i].arena)
	}
	at := arena
	for _, m := range ms {
		w := map[string]int64{}
		for _, ws := range m.work {
			w[ws.Name] = at + ws.Offset - m.arena
		}
		work = append(work, w)
		at += m.total - m.arena
	}
	return arena, work, alignUp(at, 256)
}

// KernelFiles are the kernel files whose kernels the two programs launch, in the
// library's order: the ones the decoding host program loads and compiles.
func (d *Decoding) KernelFiles() []KernelFile {
	used := map[string]bool{}
	for _, pr := range d.programs() {
		for _, ol := range pr.l.Ops {
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
	addNCCL(files)
	for _, f := range d.KernelFiles() {
		files[f.Name] = f.Source
		files[EmulationName(f)] = EmulationKernels(f)
	}
	return files, nil
}

// DecodingHostProgram is the C++ host program of d: one device arena laid out for every
// program, and the C ABI runtime/gpu's Decoder calls (packed functions, as HostProgram's):
//
//	moec_step_device, moec_step_open, moec_step_upload, moec_step_download, moec_step_close
//	    as HostProgram's
//	moec_decode_prefill(handle, tokens, lengths, logits, err, errn)
//	    tokens [sequences·prompt] (each prompt from position 0, right-padded), lengths
//	    [sequences]; logits [sequences, vocab] of each prompt's last position
//	moec_decode_step(handle, tokens, pos, logits, err, errn)
//	    one token per sequence at its position pos; logits [sequences, vocab]
//	moec_decode_feed(handle, which, tokens, pos, seq, last, logits, err, errn)
//	    feeding program which (of d.Feeds): each row's token, position and sequence, each
//	    sequence's last row; logits [sequences, vocab]
//
// An entry point whose program d does not hold fails, saying so.
func DecodingHostProgram(d *Decoding) (string, error) {
	progs := d.programs()
	both := &Lowered{}
	for _, pr := range progs {
		both.Ops = append(both.Ops, pr.l.Ops...)
	}
	idx, ks, err := both.kernelIndex()
	if err != nil {
		return "", err
	}
	arena, work, total := d.Memory()
	var w strings.Builder
	pf := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	ref := d.Weights().Program
	var what []string
	for _, pr := range progs {
		p := pr.l.Program
		switch {
		case pr.l == d.Prefill:
			what = append(what, fmt.Sprintf("a prefill of %d prompts of up to %d positions (%d ops)", p.Batch.MicroBatch, p.Batch.SeqLen, len(p.Ops)))
		case pr.l == d.Decode:
			what = append(what, fmt.Sprintf("a decoding step (%d ops)", len(p.Ops)))
		default:
			what = append(what, fmt.Sprintf("a feed of %d rows (%d ops)", p.Batch.MicroBatch, len(p.Ops)))
		}
	}
	pf("// Generated by moec: the CUDA decoding host program of %s/%s: %s\n", ref.Model, ref.Stage, strings.Join(what, ", "))
	pf("// over one device arena of %d bytes, whose KV caches they share.\n", arena)
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
static int __attribute__((unused)) moec_settle(moec_state *s, const double *, int *) {
  return moec_failf(s, "an inference program has no update to settle");
}
`)
	// The constant workspaces of every program, and their address tables.
	var fill strings.Builder
	if slices.ContainsFunc(progs, func(pr decodingProgram) bool { return len(pr.l.Ropes) > 0 }) {
		w.WriteString(hostRopeFill)
	}
	for i, pr := range progs {
		writeConstFills(&w, &fill, pr.l, pr.name+"_", func(n string) int64 { return work[i][n] }, "the "+pr.name+"'s workspace ")
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
	// The programs' ops: launches alone, as tables where they run to launchTableMin or
	// more (launch_table.go), written before the functions that run them.
	lt := &launchTables{idx: idx, opt: "NULL", dice: "NULL"}
	var runs strings.Builder
	for i, pr := range progs {
		p := pr.l.Program
		lt.p, lt.workAt = p, work[i]
		fmt.Fprintf(&runs, "\n// The %s's ops in program order.\nstatic int moec_run_%s(moec_state *s) {\n", pr.name, pr.name)
		var run launchRun
		for j := range p.Ops {
			op := &p.Ops[j]
			what := fmt.Sprintf("%s op %d (%s, layer %d)", pr.name, j, op.Kind, op.Layer)
			if err := lt.add(&runs, &run, pendingOp{head: "  // " + what + "\n", in: "  ", what: what, die: -1, launches: pr.l.Ops[j].Launches}, ""); err != nil {
				return "", err
			}
		}
		if err := lt.flush(&runs, &run); err != nil {
			return "", err
		}
		runs.WriteString("  return 1;\n}\n")
	}
	lt.writeTables(&w)
	w.WriteString(runs.String())
	w.WriteString(hostSession)
	w.WriteString(`
// moec_infer runs one inference program: its inputs in (n of them: a device offset, a host
// address and a size each), its ops, its logits out.
static void moec_infer(moec_state *s, const char *what, int n, const unsigned long long *at, void *const *from,
                       const size_t *bytes, unsigned long long logits_at, void *logits, size_t logits_bytes,
                       int (*run)(moec_state *)) {
  for (int i = 0; i < n; i++) {
    CUresult r = s->cu.cuMemcpyHtoD(s->base + at[i], from[i], bytes[i]);
    if (r != 0) {
      moec_cu_failed(s, r, "cuMemcpyHtoD", i == 0 ? "uploading the token ids" : "uploading the positions");
      return;
    }
  }
  if (!run(s)) return;
  CUresult r = s->cu.cuStreamSynchronize(s->stream);
  if (r != 0) {
    moec_cu_failed(s, r, "cuStreamSynchronize", what);
    return;
  }
  r = s->cu.cuMemcpyDtoH(logits, s->base + logits_at, logits_bytes);
  if (r != 0) moec_cu_failed(s, r, "cuMemcpyDtoH", "reading the logits");
}
`)
	// io is one program's call: its input buffers (by name) and its logits.
	io := func(l *Lowered, inputs ...string) (string, error) {
		bufs := map[string]*step.Buffer{}
		for i, b := range l.Program.Buffers {
			if l.Program.Memory.Lifetime[i][0] >= 0 {
				bufs[b.Name] = b
			}
		}
		var at, size []string
		for _, n := range append([]string{decodeTokens}, inputs...) {
			b := bufs[n]
			if b == nil || !b.Int {
				return "", fmt.Errorf("cudastep: %s/%s has no integer input %s: not a one-rank inference program", l.Program.Model, l.Program.Stage, n)
			}
			at, size = append(at, fmt.Sprintf("%dULL", b.Offset)), append(size, fmt.Sprint(b.Bytes()))
		}
		lg := bufs[decodeLogits]
		if lg == nil {
			return "", fmt.Errorf("cudastep: %s/%s has no %s: not a one-rank inference program", l.Program.Model, l.Program.Stage, decodeLogits)
		}
		return fmt.Sprintf("static const unsigned long long at[] = {%s};\n    static const size_t bytes[] = {%s};\n    const unsigned long long logits_at = %dULL;\n    const size_t logits_bytes = %d;\n",
			strings.Join(at, ", "), strings.Join(size, ", "), lg.Offset, lg.Bytes()), nil
	}
	entry := func(fn, args, doc string, l *Lowered, name, what string, inputs ...string) error {
		pf("\n// %s(%s)\nextern \"C\" void %s(void **a, long long, long long) {\n", fn, doc, fn)
		n := len(inputs) + 1
		pf("  moec_state *s = moec_handle(a[0]);\n  if (!moec_enter(s, a[%d], a[%d])) return;\n", n+2, n+3)
		if l == nil {
			pf("  moec_failf(s, \"this host program has no %s\");\n}\n", what)
			return nil
		}
		decl, err := io(l, inputs...)
		if err != nil {
			return err
		}
		pf("  {\n    %s", decl)
		pf("    void *const from[] = {%s};\n", args)
		pf("    moec_infer(s, \"finishing %s\", %d, at, from, bytes, logits_at, a[%d], logits_bytes, moec_run_%s);\n  }\n}\n", what, n, n+1, name)
		return nil
	}
	if err := entry("moec_decode_prefill", "a[1], a[2]", "handle, tokens, lengths, logits, err, errn", d.Prefill, "prefill", "the prefill", decodeLengths); err != nil {
		return "", err
	}
	if err := entry("moec_decode_step", "a[1], a[2]", "handle, tokens, pos, logits, err, errn", d.Decode, "decode", "a decoding step", decodePos); err != nil {
		return "", err
	}
	// The feeds: one entry point that picks the program.
	pf("\n// moec_decode_feed(handle, which, tokens, pos, seq, last, logits, err, errn)\nextern \"C\" void moec_decode_feed(void **a, long long, long long) {\n")
	pf("  moec_state *s = moec_handle(a[0]);\n  if (!moec_enter(s, a[7], a[8])) return;\n  long long which = *(long long *)a[1];\n  switch (which) {\n")
	for i, f := range d.Feeds {
		decl, err := io(f, decodePos, step.FeedSeq, step.FeedLast)
		if err != nil {
			return "", err
		}
		pf("  case %d: {\n    %s", i, decl)
		pf("    void *const from[] = {a[2], a[3], a[4], a[5]};\n")
		pf("    moec_infer(s, \"finishing a feed of %d rows\", 4, at, from, bytes, logits_at, a[6], logits_bytes, moec_run_feed%d);\n    return;\n  }\n", f.Program.Batch.MicroBatch, i)
	}
	pf("  default:\n    moec_failf(s, \"feeding program %%lld of %d\", which);\n  }\n}\n\n", len(d.Feeds))
	w.WriteString(hostClose)
	return w.String(), nil
}
