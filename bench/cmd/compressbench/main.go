// Command compressbench measures moec compress in one run: validation perplexity, weight
// bytes in memory (and the live heap the loaded model adds: weights, the gradient buffers
// float32 matrices keep, activation buffers) and on disk, and generation tokens/s at batch 1 and 16, of a checkpoint
// in float32 and compressed as int8, as int4 in groups of 128, and with half its experts
// pruned by routing over a calibration text.
//
// Usage (after `go run ./cmd/moec run --all-stages examples/hunyuan_tiny.moe`):
//
//	go run ./bench/cmd/compressbench [--checkpoint out/hunyuan_tiny/eight/run] [--calibration FILE] [--reps 5] [--out docs/results] [--python PY]
//
// With --out, the table is also written to DIR/compression.md, under a plot of perplexity
// against the weights' bytes (DIR/compression-ppl-vs-size.png). --student NAME=RUN adds a
// distilled student's checkpoint as a row: scripts/distill.sh trains the tiny HunYuan's
// eight experts into a dense student (out/distill), whose eight-expert stage is then the
// --checkpoint to compare it with.
//
// Generation is greedy decoding of --tokens tokens after a one-byte prompt; each cell is
// the median over --reps repetitions, the variants interleaved within a repetition. The
// floors of the issue (int8 perplexity within 1% of float32, int4 g128 within 5%, int8
// generation at batch 1 at least 1.5× float32, int4 weights at most 30% of float32) are
// checked and printed beside the table. Timings on a shared machine are noisy: the table
// gives the best repetition's ratio beside the median's.
//
// The PyTorch peer (bench/peer/hunyuan_peer.py) is the same model in PyTorch, float32 and
// after torch.ao.quantization.quantize_dynamic of its linear layers, decoding greedily with a
// KV cache. It runs under every interpreter of --python (comma-separated; by default Debian's
// python3 with its torch 1.13 and, when present, .venv-bench's with PyPI's current torch, as
// moebench's peers; "" none) whose torch imports. Each peer's logits are checked against
// moec's float32 decoder (within 1e-4) before it is timed; each is tuned once (threads 1 or
// GOMAXPROCS, inference_mode or no_grad, every quantised engine its torch has: x86 and
// fbgemm too on torch 2.x) and then run once per repetition beside moec's variants, the
// order of the sides alternating. Each workload (fp32 and int8 at batch 1 and 16) is held
// against the strongest peer, as moebench does: in each repetition the fastest peer's rate,
// named by the peer (torch version and setting) whose median is best. The floor int8
// generation at batch 1 ≥ 2× the PyTorch int8 peer is checked against the strongest.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/moec-dev/moec/bench/internal/pythons"
	"github.com/moec-dev/moec/bench/internal/timing"
	"github.com/moec-dev/moec/internal/atomicfile"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/compress"
	"github.com/moec-dev/moec/runtime/generate"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/plot"
	"github.com/moec-dev/moec/runtime/quant"
	"github.com/moec-dev/moec/runtime/train"
)

type variant struct {
	name  string
	opt   *compress.Options // nil: the float32 source
	dir   string
	m     *nn.Model
	ppl   float64
	file  int64
	heap  uint64 // live heap the loaded model adds
	tps1  []float64
	tps16 []float64
}

func main() {
	ckpt := flag.String("checkpoint", "out/hunyuan_tiny/eight/run", "the trained checkpoint or run folder")
	calib := flag.String("calibration", "runtime/nn/moe.go", "text whose routing chooses the experts kept (Go source, as the tiny HunYuan trained on)")
	reps := flag.Int("reps", 5, "repetitions of each generation measurement")
	tokens := flag.Int("tokens", 127, "tokens generated per generation")
	seconds := flag.Float64("seconds", 0.5, "least time of each measurement: after one generation to warm up, generations are repeated until it has passed (moec's and the peer's alike)")
	out := flag.String("out", "", "folder to write compression.md and its plot to (none: standard output only)")
	python := flag.String("python", pythons.Default(), "comma-separated interpreters of the PyTorch peer, each measured (\"\": no peer; one whose torch does not import is skipped)")
	peerScript := flag.String("peer", "bench/peer/hunyuan_peer.py", "the PyTorch peer's script")
	var students []string
	flag.Func("student", "NAME=RUN: also measure a distilled student's checkpoint (repeatable; scripts/distill.sh trains them)", func(v string) error {
		if name, dir, ok := strings.Cut(v, "="); !ok || name == "" || dir == "" {
			return fmt.Errorf("want NAME=RUN, got %q", v)
		}
		students = append(students, v)
		return nil
	})
	flag.Parse()
	if err := run(*ckpt, *calib, *reps, *tokens, *seconds, *out, students, pythons.List(*python), *peerScript); err != nil {
		fmt.Fprintln(os.Stderr, "compressbench:", err)
		os.Exit(1)
	}
}

func run(ckpt, calibPath string, reps, tokens int, seconds float64, outDir string, students, interpreters []string, peerScript string) error {
	src, err := train.ResolveCheckpoint(ckpt)
	if err != nil {
		return err
	}
	calib, err := os.ReadFile(calibPath)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "compressbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	all := func(s compress.Scheme) *compress.Options {
		return &compress.Options{Experts: s, Dense: s, Embed: s, Head: s, Group: 128}
	}
	vs := []*variant{
		{name: "fp32", dir: src},
		{name: "int8", opt: all(compress.Int8)},
		{name: "int4 g128", opt: all(compress.Int4)},
		{name: "pruned to half the experts (fp32)", opt: &compress.Options{KeepFraction: 0.5, Calibration: calib, CalibrationName: calibPath}},
		{name: "pruned to half + int8", opt: &compress.Options{Experts: compress.Int8, Dense: compress.Int8, Embed: compress.Int8, Head: compress.Int8, KeepFraction: 0.5, Calibration: calib, CalibrationName: calibPath}},
	}
	for _, st := range students {
		name, dir, _ := strings.Cut(st, "=")
		run, err := train.ResolveCheckpoint(dir)
		if err != nil {
			return fmt.Errorf("student %s: %w", name, err)
		}
		vs = append(vs, &variant{name: name, dir: run})
	}
	for i, v := range vs {
		if v.opt != nil {
			v.dir = filepath.Join(tmp, fmt.Sprint(i))
			if _, err := compress.Compress(src, v.dir, *v.opt); err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
		}
		ev, err := train.Eval(context.Background(), train.EvalOptions{Checkpoint: v.dir})
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		v.ppl = ev.PPL
		before := liveHeap()
		net, _, err := train.LoadNet(v.dir, nil)
		if err != nil {
			return err
		}
		v.m = net.(*nn.Model)
		v.heap = liveHeap() - before
		st, err := os.Stat(filepath.Join(v.dir, checkpoint.ModelFile))
		if err != nil {
			return err
		}
		v.file = st.Size()
	}
	peers, err := startPeers(interpreters, peerScript, src, vs[0].m, calib, tmp)
	if err != nil {
		return err
	}
	s := generate.Sampler{Temperature: 0}
	for r := 0; r < reps; r++ {
		// nil is moec's variants; the order of the sides alternates so that no side always
		// meets the same load.
		sides := append([]*torchPeer{nil}, peers...)
		if r%2 == 1 {
			slices.Reverse(sides)
		}
		for _, p := range sides {
			if p != nil {
				if err := p.measure(tokens, seconds); err != nil {
					return err
				}
				continue
			}
			for _, v := range vs {
				// One generation of the tiny model lasts a few milliseconds, too short to
				// time alone: each measurement repeats them for at least seconds.
				n, dt, err := timing.Repeat(seconds, 1, func() error {
					return generate.Generate(context.Background(), v.m, []byte("\n"), tokens, s, func(byte) error { return nil })
				})
				if err != nil {
					return err
				}
				v.tps1 = append(v.tps1, float64(n*tokens)/dt)
				if n, dt, err = timing.Repeat(seconds, 1, func() error { return batch16(v.m, tokens) }); err != nil {
					return err
				}
				v.tps16 = append(v.tps16, float64(n*wideBatch*tokens)/dt)
			}
		}
	}
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	var w strings.Builder
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&w, "checkpoint %s; kernel %s; %s; GOMAXPROCS %d; load %s\n", src, quant.ISA(), cpu, runtime.GOMAXPROCS(0), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(&w, "generation: greedy, %d tokens after a 1-byte prompt (batch 16: from 16 different bytes), each measurement one generation to warm up and then generations repeated for at least %.2g s (the peers' alike); median (min-max) of %d repetitions\n\n", tokens, seconds, reps)
	base := vs[0]
	fmt.Fprintln(&w, "| model | perplexity | vs fp32 | weights in memory | vs fp32 | live heap of the loaded model | model.safetensors | gen tokens/s, batch 1 | vs fp32 (median, best) | gen tokens/s, batch 16 | vs fp32 (median, best) |")
	fmt.Fprintln(&w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, v := range vs {
		fmt.Fprintf(&w, "| %s | %.3f | %+.2f%% | %.2f MiB | %.1f%% | %.2f MiB | %.2f MiB | %s | %.2f×, %.2f× | %s | %.2f×, %.2f× |\n", v.name, v.ppl, 100*(v.ppl/base.ppl-1),
			mib(v.m.WeightBytes()), 100*float64(v.m.WeightBytes())/float64(base.m.WeightBytes()), mib(int64(v.heap)), mib(v.file),
			cell(v.tps1), median(v.tps1)/median(base.tps1), slices.Max(v.tps1)/slices.Max(base.tps1),
			cell(v.tps16), median(v.tps16)/median(base.tps16), slices.Max(v.tps16)/slices.Max(base.tps16))
	}
	for _, peer := range peers {
		for _, k := range []string{"fp32", "int8"} {
			p1, p16 := peer.tps[k+"_1"], peer.tps[k+"_16"]
			name := "PyTorch " + peer.torch + " " + k
			if k == "int8" {
				name += " (quantize_dynamic)"
			}
			fmt.Fprintf(&w, "| %s | | | | | | | %s | %.2f×, %.2f× | %s | %.2f×, %.2f× |\n", name,
				cell(p1), median(p1)/median(base.tps1), slices.Max(p1)/slices.Max(base.tps1),
				cell(p16), median(p16)/median(base.tps16), slices.Max(p16)/slices.Max(base.tps16))
		}
	}
	i8, i4 := vs[1], vs[2]
	if len(peers) > 0 {
		writeAgainstStrongest(&w, peers, base, i8)
		fmt.Fprintln(&w)
		for _, peer := range peers {
			fmt.Fprintln(&w, peer.describe())
		}
	}
	fmt.Fprintln(&w)
	floor := func(name string, ok bool, got string) {
		mark := "met"
		if !ok {
			mark = "MISSED"
		}
		fmt.Fprintf(&w, "floor %-42s %s (%s)\n", name, mark, got)
	}
	floor("int8 perplexity within 1% of fp32", i8.ppl <= base.ppl*1.01, fmt.Sprintf("%+.2f%%", 100*(i8.ppl/base.ppl-1)))
	floor("int4 g128 perplexity within 5% of fp32", i4.ppl <= base.ppl*1.05, fmt.Sprintf("%+.2f%%", 100*(i4.ppl/base.ppl-1)))
	floor("int8 generation at batch 1 >= 1.5x fp32", median(i8.tps1) >= 1.5*median(base.tps1),
		fmt.Sprintf("median %.2f×, best %.2f×", median(i8.tps1)/median(base.tps1), slices.Max(i8.tps1)/slices.Max(base.tps1)))
	if st := strongestPeer(peers, "int8_1"); st.peer != nil {
		p := st.tps
		floor("int8 generation at batch 1 >= 2x PyTorch int8", median(i8.tps1) >= 2*median(p),
			fmt.Sprintf("median %.2f×, best %.2f×, against %s", median(i8.tps1)/median(p), slices.Max(i8.tps1)/slices.Max(p), st.label()))
	}
	floor("int4 weights <= 30% of fp32", i4.m.WeightBytes()*10 <= 3*base.m.WeightBytes(), fmt.Sprintf("%.1f%%", 100*float64(i4.m.WeightBytes())/float64(base.m.WeightBytes())))
	fmt.Print(w.String())
	if outDir == "" {
		return nil
	}
	return writePage(outDir, w.String(), vs)
}

// startPeers starts the PyTorch peer under each interpreter whose torch imports (saying so
// of the others), checks its logits against m's and tunes it.
func startPeers(interpreters []string, script, ckpt string, m *nn.Model, calib []byte, tmp string) ([]*torchPeer, error) {
	var peers []*torchPeer
	var ref peerReference
	for _, py := range interpreters {
		if out, err := exec.Command(py, "-c", "import torch").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "compressbench: no PyTorch peer under %s: it cannot import torch (%v: %s)\n", py, err, lastLines(string(out), 1))
			continue
		}
		if ref.tokens == "" {
			var err error
			if ref, err = writePeerReference(m, calib, tmp); err != nil {
				return nil, err
			}
		}
		p := newTorchPeer(py, script, ckpt)
		if err := p.check(ref); err != nil {
			return nil, err
		}
		if err := p.tune(runtime.GOMAXPROCS(0)); err != nil {
			return nil, err
		}
		peers = append(peers, p)
	}
	return peers, nil
}

// writePage writes the results page and its plot of perplexity against weight bytes.
func writePage(dir, table string, vs []*variant) error {
	const plotName = "compression-ppl-vs-size.png"
	c := plot.Chart{Title: "Compression: perplexity against weight bytes", XLabel: "weights in memory (MiB)", YLabel: "validation perplexity"}
	for _, v := range vs {
		c.Series = append(c.Series, plot.Series{Name: v.name, X: []float64{mib(v.m.WeightBytes())}, Y: []float64{v.ppl}, Points: true})
	}
	if err := plot.WriteFile(filepath.Join(dir, plotName), c); err != nil {
		return err
	}
	page := "# Compression for serving: measured\n\n" +
		"Written by `go run ./bench/cmd/compressbench --out docs/results` on the tiny HunYuan's eight-expert stage (the checkpoint named below:\n" +
		"`make run` trains it, and so does `scripts/distill.sh` with the dense students):\n" +
		"each variant compressed by `moec compress`, evaluated on the run's validation text, loaded as `moec generate` loads it and timed generating.\n\n" +
		"![perplexity against weight bytes](" + plotName + ")\n\n" + table
	if len(vs) > 5 {
		page += "\nThe dense rows are students of the same file (`examples/hunyuan_tiny_distill.moe`, trained by `scripts/distill.sh`):\n" +
			"a dense model with the eight-expert teacher's active parameters (top-1), trained 450 steps on the labels alone, distilled from the teacher\n" +
			"(temperature 2, soft and hard weights 0.5), and distilled starting from the teacher's tensors (`init = teacher`). The last one's\n" +
			"attention and embeddings had seen the curriculum's 1,500 steps before it started, so its perplexity is not distillation's alone.\n"
	}
	return atomicfile.WriteFile(filepath.Join(dir, "compression.md"), []byte(page), 0o644)
}

// wideBatch is the sequences batch16 decodes together.
const wideBatch = 16

// batch16 decodes n steps of wideBatch sequences greedily.
func batch16(m *nn.Model, n int) error {
	const b = wideBatch
	dec := m.NewDecoder(b, n+1)
	vocab := int(m.Config().PaddedVocab())
	toks := make([]int32, b)
	for i := range toks {
		toks[i] = int32('a' + i)
	}
	for step := 0; step < n; step++ {
		logits, err := dec.Step(toks)
		if err != nil {
			return err
		}
		for i := range toks {
			row := logits[i*vocab : i*vocab+256]
			toks[i] = int32(slices.Index(row, slices.Max(row)))
		}
	}
	return nil
}

// liveHeap is the live heap after collections: two, since a sync.Pool (each quantised
// matrix keeps its activation scratch in one) frees what it holds a collection late.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func cell(v []float64) string {
	return fmt.Sprintf("%.0f (%.0f-%.0f)", median(v), slices.Min(v), slices.Max(v))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
