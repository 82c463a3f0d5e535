package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "moebench:", err)
		os.Exit(1)
	}
}

// options are moebench's flags.
type options struct {
	worker    string
	reps      int
	seconds   float64
	coretypes string
	python    string
	peer      string
	tune      bool
	jsonOut   string
	profile   string
	list      bool
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("moebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.worker, "worker", "", "internal: measure one moec `mode` in this process and print a JSON line")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of every measurement")
	fs.Float64Var(&o.seconds, "seconds", 4, "seconds per measurement (after one warm-up iteration)")
	fs.StringVar(&o.coretypes, "coretypes", "auto", "comma-separated OPENBLAS_CORETYPE settings to compare (default = unset); auto: default plus SkylakeX on AVX-512 CPUs, Haswell elsewhere")
	fs.StringVar(&o.python, "python", defaultPython(), "Python interpreter that imports torch")
	fs.StringVar(&o.peer, "peer", "bench/peer/moe_peer.py", "the PyTorch peer script")
	fs.BoolVar(&o.tune, "tune", true, "pick PyTorch's best thread setting before measuring")
	fs.StringVar(&o.jsonOut, "json", "", "also write every raw measurement to this `file`")
	fs.BoolVar(&o.list, "list-coretypes", false, "print the OPENBLAS_CORETYPE settings -coretypes expands to, one a line, and exit")
	fs.StringVar(&o.profile, "cpuprofile", "", "with -worker: write a pprof CPU profile of the measurement to this `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.worker != "" {
		if o.profile != "" {
			f, err := os.Create(o.profile)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return fmt.Errorf("starting the profile: %w", err)
			}
			defer pprof.StopCPUProfile()
		}
		return runWorker(o.worker, o.seconds, stdout)
	}
	if o.list {
		_, avx512 := cpuInfo()
		for _, ct := range coretypes(o.coretypes, avx512) {
			fmt.Fprintln(stdout, ct)
		}
		return nil
	}
	if o.reps < 1 || !(o.seconds > 0) {
		return fmt.Errorf("-reps must be at least 1 and -seconds positive")
	}
	if err := exec.Command(o.python, "-c", "import torch").Run(); err != nil {
		return fmt.Errorf("%s cannot import torch (set -python to Debian's python3): %w", o.python, err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding moebench itself: %w", err)
	}
	d := &driver{o: o, self: self, log: stderr}
	cpu, avx512 := cpuInfo()
	fmt.Fprintf(stdout, "# moebench: moec vs PyTorch\n\ncpu: %s (%d logical CPUs, AVX-512: %v); go %s\n\n", cpu, runtime.NumCPU(), avx512, runtime.Version())
	for _, ct := range coretypes(o.coretypes, avx512) {
		if err := d.compare(ct, stdout); err != nil {
			return fmt.Errorf("OPENBLAS_CORETYPE=%s: %w", ct, err)
		}
	}
	if o.jsonOut != "" {
		data, err := json.MarshalIndent(d.raw, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, data, 0o644); err != nil {
			return fmt.Errorf("writing raw results: %w", err)
		}
	}
	return nil
}

func defaultPython() string {
	// Debian's torch is installed for Debian's python, which another python3 earlier on
	// the PATH would not see.
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return "python3"
}

// cpuInfo returns the CPU's model name and whether it has AVX-512F (OpenBLAS's SkylakeX
// kernels die with SIGILL without it).
func cpuInfo() (string, bool) {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH, false
	}
	name := runtime.GOARCH
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			name = strings.TrimSpace(v)
			break
		}
	}
	return name, bytes.Contains(data, []byte(" avx512f"))
}

// coretypes expands -coretypes.
func coretypes(flagValue string, avx512 bool) []string {
	if flagValue != "auto" {
		return strings.Split(flagValue, ",")
	}
	if avx512 {
		return []string{"default", "SkylakeX"}
	}
	return []string{"default", "Haswell"}
}

func gomaxprocs() string { return strconv.Itoa(runtime.GOMAXPROCS(0)) }

// torchSetting is one way to thread PyTorch: torch's own threads plus environment.
type torchSetting struct {
	Threads int
	Env     []string
}

func (s torchSetting) String() string {
	return strings.TrimSpace(fmt.Sprintf("torch.set_num_threads(%d) %s", s.Threads, strings.Join(s.Env, " ")))
}

// torchSettings are the candidates tuning tries: on a few cores torch's OpenMP threads and
// OpenBLAS's threads compete, so one torch thread with OpenBLAS threads, or passive OpenMP
// waiting, can beat the plain setting by several times.
func torchSettings(cores int) []torchSetting {
	n := strconv.Itoa(cores)
	return []torchSetting{
		{Threads: 1, Env: []string{"OPENBLAS_NUM_THREADS=" + n}},
		{Threads: cores, Env: []string{"OMP_WAIT_POLICY=PASSIVE"}},
		{Threads: cores, Env: []string{"OMP_WAIT_POLICY=PASSIVE", "OPENBLAS_NUM_THREADS=1"}},
		{Threads: cores},
	}
}

// measurement is one child's result with its peak memory.
type measurement struct {
	Side, Mode, Coretype string
	Setting              string `json:",omitempty"`
	Result               result
	MaxRSSKiB            int64
}

type driver struct {
	o    options
	self string
	log  io.Writer
	raw  []measurement
}

// child runs one measurement in its own process and returns its result and maxrss.
func (d *driver) child(side, mode, coretype string, ts torchSetting, seconds float64) (measurement, error) {
	var cmd *exec.Cmd
	secs := strconv.FormatFloat(seconds, 'f', -1, 64)
	env := os.Environ()
	if coretype == "default" {
		env = withoutVar(env, "OPENBLAS_CORETYPE")
	} else {
		env = append(withoutVar(env, "OPENBLAS_CORETYPE"), "OPENBLAS_CORETYPE="+coretype)
	}
	m := measurement{Side: side, Mode: mode, Coretype: coretype}
	if side == "moec" {
		cmd = exec.Command(d.self, "-worker", mode, "-seconds", secs)
	} else {
		args := []string{d.o.peer, mode, "--threads", strconv.Itoa(ts.Threads), "--seconds", secs}
		if mode == "check" {
			args = []string{d.o.peer, "train", "--check", "--threads", strconv.Itoa(ts.Threads)}
		}
		cmd = exec.Command(d.o.python, args...)
		env = append(env, ts.Env...)
		m.Setting = ts.String()
	}
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return m, fmt.Errorf("%s %s: %w\n%s", side, mode, err, errb.String())
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m.MaxRSSKiB = ru.Maxrss // Linux reports kilobytes
	}
	lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], &m.Result); err != nil {
		return m, fmt.Errorf("%s %s printed %q: %w", side, mode, out.String(), err)
	}
	d.raw = append(d.raw, m)
	fmt.Fprintf(d.log, "  %-5s %-7s %-8s %10.1f tok/s %8.1f GFLOP/s %7.0f MiB %s\n", side, mode, coretype,
		m.Result.TokensPerS, m.Result.GFLOPS, float64(m.MaxRSSKiB)/1024, m.Setting)
	return m, nil
}

func withoutVar(env []string, name string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// tuneTorch measures the training step under every candidate setting and keeps the fastest.
func (d *driver) tuneTorch(coretype string, stdout io.Writer) (torchSetting, error) {
	cands := torchSettings(runtime.GOMAXPROCS(0))
	if !d.o.tune {
		return cands[0], nil
	}
	best, bestTPS := cands[0], 0.0
	fmt.Fprintln(stdout, "PyTorch thread tuning (training step, one run each):")
	fmt.Fprintln(stdout)
	for _, c := range cands {
		m, err := d.child("torch", "train", coretype, c, d.o.seconds/2)
		if err != nil {
			return best, err
		}
		fmt.Fprintf(stdout, "- %s: %.0f tokens/s\n", c, m.Result.TokensPerS)
		if m.Result.TokensPerS > bestTPS {
			best, bestTPS = c, m.Result.TokensPerS
		}
	}
	fmt.Fprintf(stdout, "\nchosen: %s\n\n", best)
	return best, nil
}

// modes are measured on both sides; moec's train and forward run through step programs
// (the engine `moec run` trains with). The -nn modes are moec's hand-written model, the
// step programs' oracle, measured on the moec side only.
var modes = []string{"train", "forward", "train-nn", "forward-nn", "gen1", "gen16", "sgemm"}

// moecOnly reports whether mode has no PyTorch counterpart of its own.
func moecOnly(mode string) bool { return strings.HasSuffix(mode, "-nn") }

// compare measures both sides under one OpenBLAS setting and prints its table.
func (d *driver) compare(coretype string, stdout io.Writer) error {
	fmt.Fprintf(stdout, "## OPENBLAS_CORETYPE=%s\n\n", coretype)
	load := loadAverage()
	ts, err := d.tuneTorch(coretype, stdout)
	if err != nil {
		return err
	}
	// Correctness under this setting: 8 AdamW steps on one batch must lower the loss.
	for _, side := range []string{"moec", "torch"} {
		m, err := d.child(side, "check", coretype, ts, 0)
		if err != nil {
			return err
		}
		if !(m.Result.Loss < m.Result.FirstLoss) {
			return fmt.Errorf("%s did not train under this setting: loss %.4f -> %.4f", side, m.Result.FirstLoss, m.Result.Loss)
		}
		fmt.Fprintf(stdout, "correctness (%s): loss %.4f -> %.4f after 8 AdamW steps on one batch\n", side, m.Result.FirstLoss, m.Result.Loss)
	}
	fmt.Fprintln(stdout)
	vals := map[string]map[string][]float64{"moec": {}, "torch": {}}
	rss, cpuRate := map[string][]float64{}, map[string][]float64{}
	for rep := range d.o.reps {
		sides := []string{"moec", "torch"}
		if rep%2 == 1 { // alternate who goes first so neither always meets the same load
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, mode := range modes {
			for _, side := range sides {
				if side == "torch" && moecOnly(mode) {
					continue
				}
				m, err := d.child(side, mode, coretype, ts, d.o.seconds)
				if err != nil {
					return err
				}
				v := m.Result.TokensPerS
				if mode == "sgemm" {
					v = m.Result.GFLOPS
				}
				vals[side][mode] = append(vals[side][mode], v)
				if mode == "train" {
					cpuRate[side] = append(cpuRate[side], float64(benchBatch*benchSeq*m.Result.Iters)/m.Result.CPUSeconds)
					rss[side] = append(rss[side], float64(m.MaxRSSKiB)/1024)
				}
			}
		}
	}
	flops := trainFLOPsPerToken(benchModel())
	var frac []float64
	for i, tps := range vals["moec"]["train"] {
		frac = append(frac, tps*flops/1e9/vals["moec"]["sgemm"][i])
	}
	rows := []row{
		{Name: "training step, fwd+bwd+AdamW (step programs)", Unit: "tokens/s", Moec: vals["moec"]["train"], Torch: vals["torch"]["train"], Target: 2},
		{Name: "training step per CPU-second (load-independent)", Unit: "tokens/CPU-s", Moec: cpuRate["moec"], Torch: cpuRate["torch"]},
		{Name: "training step, hand-written model", Unit: "tokens/s", Moec: vals["moec"]["train-nn"], Torch: vals["torch"]["train"]},
		{Name: "inference forward (step programs)", Unit: "tokens/s", Moec: vals["moec"]["forward"], Torch: vals["torch"]["forward"], Target: 2},
		{Name: "inference forward, hand-written model", Unit: "tokens/s", Moec: vals["moec"]["forward-nn"], Torch: vals["torch"]["forward"]},
		{Name: "generation, KV cache, batch 1", Unit: "tokens/s", Moec: vals["moec"]["gen1"], Torch: vals["torch"]["gen1"], Target: 3},
		{Name: "generation, KV cache, batch 16", Unit: "tokens/s", Moec: vals["moec"]["gen16"], Torch: vals["torch"]["gen16"]},
		{Name: "peak resident memory, training process", Unit: "MiB", Moec: rss["moec"], Torch: rss["torch"], Target: 1, Ceiling: true},
		{Name: "sgemm peak, 1024³", Unit: "GFLOP/s", Moec: vals["moec"]["sgemm"], Torch: vals["torch"]["sgemm"]},
		{Name: fmt.Sprintf("moec training step as a fraction of its sgemm peak (%.1f MFLOP/token)", flops/1e6), Unit: "%", Moec: frac, Target: 0.6, Single: true},
	}
	fmt.Fprintln(stdout, tableCaption(coretype, d.o.reps, d.o.seconds, ts, load))
	fmt.Fprintln(stdout)
	writeTable(stdout, rows)
	fmt.Fprintf(stdout, "\nload average after: %s\n\n", loadAverage())
	return nil
}

// loadAverage is the 1/5/15-minute load, which says how much the neighbours took.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
