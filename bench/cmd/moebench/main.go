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

	"github.com/moec-dev/moec/bench/internal/pythons"
	"github.com/moec-dev/moec/runtime/blas"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "moebench:", err)
		os.Exit(1)
	}
}

// options are moebench's flags.
type options struct {
	worker       string
	size         string
	reps         int
	seconds      float64
	largeReps    int
	largeSeconds float64
	large        bool
	coretypes    string
	pythons      string
	peer         string
	impls        string
	tune         bool
	jsonOut      string
	profile      string
	list         bool
	curveSteps   int
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("moebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.worker, "worker", "", "internal: measure one moec `mode` in this process and print a JSON line")
	fs.StringVar(&o.size, "size", sizeSmall, "with -worker: the model size, small or large")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of every measurement")
	fs.Float64Var(&o.seconds, "seconds", 4, "seconds per measurement (after one warm-up iteration)")
	fs.BoolVar(&o.large, "large", true, "also measure the large model (d_model 1024, experts of 2048, ~219M parameters)")
	fs.IntVar(&o.largeReps, "large-reps", 2, "repetitions of every measurement of the large model")
	fs.Float64Var(&o.largeSeconds, "large-seconds", 4, "seconds per measurement of the large model")
	fs.StringVar(&o.coretypes, "coretypes", "auto", "comma-separated OPENBLAS_CORETYPE settings to compare (default = unset); auto: default plus SkylakeX on AVX-512 CPUs, Haswell elsewhere")
	fs.StringVar(&o.pythons, "python", pythons.Default(), "comma-separated Python interpreters that import torch: each is a PyTorch peer, measured in the same run")
	fs.StringVar(&o.peer, "peer", "bench/peer/moe_peer.py", "the PyTorch peer script")
	fs.StringVar(&o.impls, "impls", strings.Join(peerImpls(), ","), "the peer's MoE formulations tuning tries (comma-separated; see moe_peer.py)")
	fs.BoolVar(&o.tune, "tune", true, "pick each peer's best thread setting and MoE formulation before measuring")
	fs.StringVar(&o.jsonOut, "json", "", "also write every raw measurement to this `file`")
	fs.BoolVar(&o.list, "list-coretypes", false, "print the OPENBLAS_CORETYPE settings -coretypes expands to, one a line, and exit")
	fs.StringVar(&o.profile, "cpuprofile", "", "with -worker: write a pprof CPU profile of the measurement to this `file`")
	fs.IntVar(&o.curveSteps, "curve-steps", 600, "steps of the float32 and bf16 loss curves (worker modes curve, curve-bf16), run once after the small model's repetitions; 0 leaves them out")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.curveSteps < 0 {
		return fmt.Errorf("-curve-steps %d: want a number of steps, or 0 for no loss curve", o.curveSteps)
	}
	if o.size != sizeSmall && o.size != sizeLarge {
		return fmt.Errorf("-size %q: want %s or %s", o.size, sizeSmall, sizeLarge)
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
		return runWorker(o.worker, o.size, o.seconds, o.curveSteps, stdout)
	}
	cpu := readCPU()
	if o.list {
		for _, ct := range coretypes(o.coretypes, cpu.AVX512()) {
			fmt.Fprintln(stdout, ct)
		}
		return nil
	}
	if o.reps < 1 || !(o.seconds > 0) || o.largeReps < 1 || !(o.largeSeconds > 0) {
		return fmt.Errorf("-reps and -large-reps must be at least 1, -seconds and -large-seconds positive")
	}
	var peers []*peer
	for _, py := range strings.Split(o.pythons, ",") {
		p, err := newPeer(py, o.peer)
		if err != nil {
			fmt.Fprintf(stderr, "moebench: skipping the peer %s: %v\n", py, err)
			continue
		}
		peers = append(peers, p)
	}
	if len(peers) == 0 {
		return fmt.Errorf("no interpreter in -python %q imports torch (Debian's python3-torch is for /usr/bin/python3)", o.pythons)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding moebench itself: %w", err)
	}
	d := &driver{o: o, self: self, log: stderr, peers: peers}
	fmt.Fprintf(stdout, "# moebench: moec vs PyTorch\n\ncpu: %s (%d logical CPUs); go %s\n\n", cpu.Name, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(stdout, "CPU features: %s\n\n", cpu.Features())
	fmt.Fprintf(stdout, "moec's products: %s (the few-row float32 A·Bᵀ products: its own streaming kernel)\n\n", blas.Describe())
	for _, p := range peers {
		fmt.Fprintf(stdout, "peer: PyTorch %s (%s), %s\n", p.Torch, p.Python, p.Backend)
	}
	fmt.Fprintln(stdout)
	for _, ct := range coretypes(o.coretypes, cpu.AVX512()) {
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
	Side, Mode, Coretype, Size string
	Setting                    string `json:",omitempty"`
	Result                     result
	MaxRSSKiB                  int64
}

type driver struct {
	o     options
	self  string
	log   io.Writer
	peers []*peer
	raw   []measurement
	// curved is set once the loss curves ran: they run once, in the first small table.
	curved bool
}

// job is one measurement to run in a child process: moec's worker when p is nil, else
// the peer p's script with its tuned thread setting unless setting overrides it.
type job struct {
	mode, coretype, size, impl string
	p                          *peer
	setting                    *torchSetting
	seconds                    float64
}

func (j job) side() string {
	if j.p == nil {
		return "moec"
	}
	return j.p.Name()
}

// child runs one measurement in its own process and returns its result and maxrss.
func (d *driver) child(j job) (measurement, error) {
	var cmd *exec.Cmd
	secs := strconv.FormatFloat(j.seconds, 'f', -1, 64)
	env := os.Environ()
	if j.coretype == "default" {
		env = withoutVar(env, "OPENBLAS_CORETYPE")
	} else {
		env = append(withoutVar(env, "OPENBLAS_CORETYPE"), "OPENBLAS_CORETYPE="+j.coretype)
	}
	size := j.size
	if size == "" {
		size = sizeSmall
	}
	m := measurement{Side: j.side(), Mode: j.mode, Coretype: j.coretype, Size: size}
	if j.p == nil {
		cmd = exec.Command(d.self, "-worker", j.mode, "-size", size, "-seconds", secs, "-curve-steps", strconv.Itoa(d.o.curveSteps))
	} else {
		ts := j.p.Setting
		if j.setting != nil {
			ts = *j.setting
		}
		args := []string{d.o.peer, j.mode, "--size", size, "--threads", strconv.Itoa(ts.Threads), "--seconds", secs,
			"--min-iters", strconv.Itoa(minIters(size))}
		if j.impl != "" {
			args = append(args, "--impl", j.impl)
		}
		if j.mode == "check" {
			args = []string{d.o.peer, "train", "--check", "--threads", strconv.Itoa(ts.Threads)}
		}
		cmd = exec.Command(j.p.Python, args...)
		env = append(env, ts.Env...)
		m.Setting = ts.String()
	}
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return m, fmt.Errorf("%s %s: %w\n%s%s", m.Side, j.mode, err, out.String(), errb.String())
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m.MaxRSSKiB = ru.Maxrss // Linux reports kilobytes
	}
	lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], &m.Result); err != nil {
		return m, fmt.Errorf("%s %s printed %q: %w", m.Side, j.mode, out.String(), err)
	}
	d.raw = append(d.raw, m)
	rate := fmt.Sprintf("%10.1f tok/s %8.1f GFLOP/s", m.Result.TokensPerS, m.Result.GFLOPS)
	if m.Result.GBps > 0 {
		rate = fmt.Sprintf("%10.1f GB/s (weights streamed)", m.Result.GBps)
	}
	if len(m.Result.Losses) > 0 {
		rate = fmt.Sprintf("loss %.4f -> %.4f over %d steps in %.0f s", m.Result.FirstLoss, m.Result.FinalLoss, len(m.Result.Losses), m.Result.Seconds)
	}
	fmt.Fprintf(d.log, "  %-13s %-7s %-5s %-8s %-7s %s %7.0f MiB %s\n", m.Side, j.mode, size, j.coretype,
		j.impl, rate, float64(m.MaxRSSKiB)/1024, m.Setting)
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
