package megatron

// This file starts moec's launch lines the way a cluster does, with bash, and puts what
// torchrun and pretrain_gpt.py would receive through Megatron-LM's argument parser (the
// table of testdata/megatron_args_core_v0.15.0.txt) and through the checks Megatron applies
// before it trains (megatron_rules_test.go).

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
)

// argSpec is one row of Megatron-LM's argument table.
type argSpec struct {
	kind    string // int, float, str, switch, or another argparse action
	nargs   string // "" for one value; "*", "+" or a count as argparse reads them
	choices []string
}

// newerArgs are arguments moec writes that core_v0.15.0 lacks and later Megatron-LM
// releases have. --moe-shared-expert-gate is TransformerConfig.moe_shared_expert_gate,
// a switch since the releases that build MoE arguments from TransformerConfig; the launch
// notes say which release it needs.
var newerArgs = map[string]argSpec{
	"--moe-shared-expert-gate": {kind: "switch"},
}

// torchrunValued are torch.distributed.run's options that moec writes; all take a value.
var torchrunValued = map[string]bool{
	"--nnodes": true, "--node-rank": true, "--nproc-per-node": true,
	"--master-addr": true, "--master-port": true,
}

// megatronArgTable reads testdata/megatron_args_core_v0.15.0.txt.
func megatronArgTable(t testing.TB) map[string]argSpec {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "megatron_args_core_v0.15.0.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	table := map[string]argSpec{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		spec := argSpec{kind: fields[1]}
		for _, f := range fields[2:] {
			switch {
			case strings.HasPrefix(f, "nargs="):
				spec.nargs = strings.TrimPrefix(f, "nargs=")
			case strings.HasPrefix(f, "choices="):
				spec.choices = strings.Split(strings.TrimPrefix(f, "choices="), ",")
			}
		}
		table[fields[0]] = spec
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(table) < 500 {
		t.Fatalf("Megatron-LM argument table has %d rows, want the whole parser", len(table))
	}
	for k, v := range newerArgs {
		table[k] = v
	}
	return table
}

// userEnv is what a user sets before starting a launch line on a node.
var userEnv = []string{
	"MASTER_ADDR=10.0.0.1", "DATA_PATH=/data/corpus_text_document",
	"TOKENIZER_MODEL=/tokenizers/moe", "SAVE_DIR=/ckpt/stage", "FROM_CHECKPOINT=/ckpt/from",
}

// node is what torchrun receives on one node.
type node struct {
	env  map[string]string // the variables moec's line sets for torchrun
	argv []string          // torchrun's arguments
}

// startLaunch runs the launch text with bash on every node, NODE_RANK = 0 to --nnodes - 1,
// with torchrun replaced by a shell function that records its environment and arguments.
// It returns one record per node, or bash's error output when the line does not start.
func startLaunch(t testing.TB, text string, env []string) ([]node, error) {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is needed to start the launch lines")
	}
	// Only the command runs: the comments above it are comments to bash too.
	const script = `
torchrun() {
  printf 'NODE\n'
  printf 'ENV CUDA_DEVICE_MAX_CONNECTIONS=%s\n' "${CUDA_DEVICE_MAX_CONNECTIONS-}"
  for a in "$@"; do printf 'ARG %s\n' "$a"; done
}
NODE_RANK=0
eval "$LAUNCH" > "$RECORD"
nodes=$(awk '$1 == "ARG" && prev == "--nnodes" { print $2; exit } { prev = $2 }' "$RECORD")
for ((NODE_RANK = 1; NODE_RANK < nodes; NODE_RANK++)); do eval "$LAUNCH" >> "$RECORD"; done
`
	record := filepath.Join(t.TempDir(), "record")
	cmd := exec.Command(bash, "-c", script)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LAUNCH=" + text, "RECORD=" + record}, env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bash: %v: %s", err, out)
	}
	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []node
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		kind, rest, _ := strings.Cut(line, " ")
		switch kind {
		case "NODE":
			nodes = append(nodes, node{env: map[string]string{}})
		case "ENV":
			k, v, _ := strings.Cut(rest, "=")
			if v != "" {
				nodes[len(nodes)-1].env[k] = v
			}
		case "ARG":
			nodes[len(nodes)-1].argv = append(nodes[len(nodes)-1].argv, rest)
		}
	}
	return nodes, nil
}

// job is the job torchrun starts from the nodes' records: its world size and the
// arguments every rank of pretrain_gpt.py parses.
type job struct {
	world int
	env   map[string]string
	args  map[string][]string // flag → values; a switch maps to nil
}

// torchrunJob reads the nodes as torchrun does: each node runs --nproc-per-node processes,
// numbered after those of the lower node ranks (the elastic agent's rank assignment), so
// the world size is their sum. Every node must run the same script with the same
// arguments, and each node rank must appear once.
func torchrunJob(nodes []node, table map[string]argSpec) (job, []string) {
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	var j job
	var script []string
	ranks := map[string]bool{}
	nnodes := 0
	for i, n := range nodes {
		opts := map[string]string{}
		k := 0
		for ; k < len(n.argv) && strings.HasPrefix(n.argv[k], "--"); k += 2 {
			if !torchrunValued[n.argv[k]] || k+1 >= len(n.argv) {
				bad("torchrun: unknown option or missing value at %q", n.argv[k])
				return j, problems
			}
			opts[n.argv[k]] = n.argv[k+1]
		}
		if k >= len(n.argv) || n.argv[k] != "pretrain_gpt.py" {
			bad("torchrun: the script is not pretrain_gpt.py: %q", n.argv[k:])
			return j, problems
		}
		rest := n.argv[k+1:]
		if i == 0 {
			script, j.env = rest, n.env
			var err error
			if nnodes, err = strconv.Atoi(opts["--nnodes"]); err != nil || nnodes < 1 {
				bad("torchrun: --nnodes %q", opts["--nnodes"])
				return j, problems
			}
		} else if !slices.Equal(rest, script) || !mapsEqual(n.env, j.env) {
			bad("node %d runs other arguments or another environment than node 0", i)
		}
		procs, err := strconv.Atoi(opts["--nproc-per-node"])
		if err != nil || procs < 1 {
			bad("node %d: --nproc-per-node %q", i, opts["--nproc-per-node"])
			continue
		}
		j.world += procs
		rank := opts["--node-rank"]
		if nnodes > 1 {
			if ranks[rank] {
				bad("node rank %s appears twice", rank)
			}
			if opts["--master-addr"] == "" {
				bad("a multi-node launch without --master-addr: every node would wait for its own rendezvous")
			}
		}
		ranks[rank] = true
	}
	if len(nodes) != nnodes {
		bad("--nnodes %d, but the line started %d nodes", nnodes, len(nodes))
	}
	j.args = parseMegatronArgs(script, table, bad)
	return j, slices.Compact(problems) // one line for what every node does wrong
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// parseMegatronArgs parses argv as Megatron-LM's ArgumentParser (allow_abbrev=False) does:
// every flag must be in its table, take the number of values its nargs says, of its type
// and among its choices; a flag given twice keeps the last values.
func parseMegatronArgs(argv []string, table map[string]argSpec, bad func(string, ...any)) map[string][]string {
	args := map[string][]string{}
	for i := 0; i < len(argv); {
		flag := argv[i]
		spec, ok := table[flag]
		if !ok {
			bad("pretrain_gpt.py: error: unrecognized arguments: %s", flag)
			i++
			continue
		}
		i++
		var vals []string
		for i < len(argv) && !strings.HasPrefix(argv[i], "--") {
			vals = append(vals, argv[i])
			i++
		}
		switch n := spec.nargs; {
		case spec.kind == "switch":
			if len(vals) != 0 {
				bad("pretrain_gpt.py: error: %s takes no value, given %q", flag, vals)
			}
		case n == "*":
		case n == "+":
			if len(vals) == 0 {
				bad("pretrain_gpt.py: error: %s expects at least one argument", flag)
			}
		case n == "":
			if len(vals) != 1 {
				bad("pretrain_gpt.py: error: %s expects one argument, given %q", flag, vals)
			}
		default:
			if c, _ := strconv.Atoi(n); len(vals) != c {
				bad("pretrain_gpt.py: error: %s expects %s arguments, given %q", flag, n, vals)
			}
		}
		for _, v := range vals {
			switch spec.kind {
			case "int":
				if _, err := strconv.Atoi(v); err != nil {
					bad("pretrain_gpt.py: error: argument %s: invalid int value: %q", flag, v)
				}
			case "float":
				// Python's float() also reads what ParseFloat reads here.
				if _, err := strconv.ParseFloat(v, 64); err != nil {
					bad("pretrain_gpt.py: error: argument %s: invalid float value: %q", flag, v)
				}
			}
			if len(spec.choices) > 0 && !slices.Contains(spec.choices, v) {
				bad("pretrain_gpt.py: error: argument %s: invalid choice: %q (choose from %s)", flag, v, strings.Join(spec.choices, ", "))
			}
		}
		args[flag] = vals
	}
	return args
}

// has reports whether the job passes flag.
func (j job) has(flag string) bool { _, ok := j.args[flag]; return ok }

// num is flag's integer value, def when absent (Megatron's default).
func (j job) num(flag string, def int) int {
	v, ok := j.args[flag]
	if !ok || len(v) == 0 {
		return def
	}
	n, _ := strconv.Atoi(v[0])
	return n
}

func (j job) str(flag, def string) string {
	if v, ok := j.args[flag]; ok && len(v) > 0 {
		return v[0]
	}
	return def
}

func (j job) float(flag string, def float64) float64 {
	if v, ok := j.args[flag]; ok && len(v) > 0 {
		f, _ := strconv.ParseFloat(v[0], 64)
		return f
	}
	return def
}

// shippedTrains lists every train block moec ships a launch for: those of models/ and
// examples/, and those of testdata/ that train the models/ files which have none. A
// models/ file no train block trains fails the test: its launch would go unchecked.
func shippedTrains(t *testing.T) []*program.Program {
	t.Helper()
	var files []string
	for _, dir := range []string{"../../models", "../../examples", "testdata"} {
		m, err := filepath.Glob(filepath.Join(dir, "*.moe"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	var progs []*program.Program
	trained := map[string]bool{}
	var models []string
	for _, f := range files {
		prog := load(t, f)
		progs = append(progs, prog)
		for _, tr := range prog.Trains {
			trained[tr.Model] = true
		}
		if strings.HasPrefix(f, filepath.Join("..", "..", "models")) {
			for name := range prog.Models {
				models = append(models, name)
			}
		}
	}
	for _, m := range models {
		if !trained[m] {
			t.Errorf("model %s (models/) has no train block here or in testdata/: its Megatron launch is not checked", m)
		}
	}
	return progs
}

// TestShippedLaunchesStartMegatron starts the launch line of every stage of every shipped
// train block under bash and checks what torchrun and pretrain_gpt.py receive against
// Megatron-LM's parser and its checks.
func TestShippedLaunchesStartMegatron(t *testing.T) {
	table := megatronArgTable(t)
	checked := 0
	for _, prog := range shippedTrains(t) {
		for _, tr := range prog.Trains {
			for _, st := range tr.Stages {
				t.Run(tr.Name+"/"+st.Name, func(t *testing.T) {
					text := launchText(t, prog, tr, st)
					nodes, err := startLaunch(t, text, append([]string{"MASTER_PORT=29500"}, userEnv...))
					if err != nil {
						t.Fatalf("the line does not start: %v\n%s", err, text)
					}
					j, problems := torchrunJob(nodes, table)
					problems = append(problems, megatronRules(j)...)
					problems = append(problems, matchesPlan(t, prog, tr, st, j)...)
					for _, p := range problems {
						t.Errorf("%s", p)
					}
					if t.Failed() {
						t.Logf("launch:\n%s", text)
					}
					checked++
				})
			}
		}
	}
	if checked < 12 {
		t.Errorf("checked %d launches, want every stage of the shipped trains (at least 12)", checked)
	}
}

// matchesPlan says where the job differs from the plan moec makes for st: the launch must
// start the plan's world size and state each of its parallel sizes and its batch, so that
// neither Megatron's defaults nor a missing flag decide them (ep and the dispatcher
// included for an MoE model at ep = 1).
func matchesPlan(t *testing.T, prog *program.Program, tr *program.Train, st *program.Stage, j job) []string {
	t.Helper()
	p, ds := plan.ForStage(prog, tr, st, plan.Options{})
	if ds.HasErrors() {
		t.Fatal(ds.Err())
	}
	ly := p.Layout
	var problems []string
	if j.world != ly.World() {
		problems = append(problems, fmt.Sprintf("the line starts %d ranks, the plan's layout needs %d", j.world, ly.World()))
	}
	want := map[string]int{
		"--tensor-model-parallel-size": ly.TP, "--pipeline-model-parallel-size": ly.PP,
		"--micro-batch-size": ly.MicroBatch, "--global-batch-size": ly.Batch,
	}
	if program.StageModel(prog.Models[tr.Model], st).MoE != nil {
		want["--expert-model-parallel-size"] = ly.EP
		if got := j.str("--moe-token-dispatcher-type", ""); got != "alltoall" {
			problems = append(problems, fmt.Sprintf("--moe-token-dispatcher-type %q, want alltoall (the plan times an all-to-all)", got))
		}
	}
	for flag, v := range want {
		if !j.has(flag) || j.num(flag, -1) != v {
			problems = append(problems, fmt.Sprintf("%s %q, the plan's %d", flag, j.args[flag], v))
		}
	}
	return problems
}

// launchText plans st as `moec export megatron` does and returns the printed launch.
func launchText(t *testing.T, prog *program.Program, tr *program.Train, st *program.Stage) string {
	t.Helper()
	p, ds := plan.ForStage(prog, tr, st, plan.Options{})
	if ds.HasErrors() {
		t.Fatal(ds.Err())
	}
	l, err := ForStage(prog, tr, st, p)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := l.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestMegatronChecksRefuse holds that the checks above refuse what Megatron refuses: each
// case breaks a launch that passes in one way, among them the ways moec's launches were
// refused before (no CUDA_DEVICE_MAX_CONNECTIONS, 31 nodes × 7 ranks for 244, upcycling
// without --save).
func TestMegatronChecksRefuse(t *testing.T) {
	table := megatronArgTable(t)
	models := load(t, filepath.Join("testdata", "models.moe"))
	hunyuan := load(t, filepath.Join("..", "..", "models", "hunyuan1t.moe"))
	ds32 := load(t, filepath.Join("testdata", "deepseek_v3_32_nodes.moe"))
	stage := func(prog *program.Program, train, name string) string {
		tr := prog.Trains[train]
		for _, st := range tr.Stages {
			if st.Name == name {
				return launchText(t, prog, tr, st)
			}
		}
		t.Fatalf("no stage %s", name)
		return ""
	}
	mixtral := stage(models, "mixtral_8x7b", "main")
	upcycle := stage(hunyuan, "hunyuan_1t", "hundred_billion")
	uneven := stage(ds32, "deepseek_v3", "main")
	cases := []struct {
		name       string
		launch     string
		old, new   string      // the launch with old replaced by new (once)
		more       [][2]string // further replacements, each once
		env        []string
		wantRefuse string // a fragment of a problem, or of bash's error
	}{
		{name: "no CUDA_DEVICE_MAX_CONNECTIONS with tp 2", launch: mixtral,
			old: "CUDA_DEVICE_MAX_CONNECTIONS=1 ", new: "", wantRefuse: "CUDA_DEVICE_MAX_CONNECTIONS"},
		{name: "every node as full as the first (31 × 8 for 244)", launch: uneven,
			old: `"$((NODE_RANK < 30 ? 8 : 4))"`, new: "8", wantRefuse: "world size 248 is not divisible"},
		{name: "nodes × (GPUs / nodes) for 244 (31 × 7)", launch: uneven,
			old: `"$((NODE_RANK < 30 ? 8 : 4))"`, new: "7", wantRefuse: "world size 217 is not divisible"},
		{name: "upcycling without --save", launch: upcycle,
			old: "--save ", new: "--no-save-optim ", wantRefuse: "--moe-use-upcycling without --save"},
		{name: "a flag Megatron lacks", launch: mixtral,
			old: "--moe-grouped-gemm", new: "--moe-grouped-gem", wantRefuse: "unrecognized arguments: --moe-grouped-gem"},
		{name: "a value that does not parse", launch: mixtral,
			old: "--num-layers 32", new: "--num-layers 32.5", wantRefuse: "invalid int value"},
		{name: "a choice Megatron lacks", launch: mixtral,
			old: "--moe-token-dispatcher-type alltoall", new: "--moe-token-dispatcher-type all2all", wantRefuse: "invalid choice"},
		{name: "layers not divisible by pp", launch: uneven,
			old: "--num-layers 61", new: "--num-layers 60", wantRefuse: "60 layers on pp 61"},
		{name: "heads not divisible by tp", launch: mixtral,
			old: "--num-attention-heads 32", new: "--num-attention-heads 31 --kv-channels 128", wantRefuse: "31 heads on tp 2"},
		{name: "query groups not divisible by tp", launch: mixtral,
			old: "--num-query-groups 8", new: "--num-query-groups 7", wantRefuse: "7 query groups on tp 2"},
		{name: "hidden not divisible by heads", launch: mixtral,
			old: "--hidden-size 4096", new: "--hidden-size 4100", wantRefuse: "hidden 4100 is not divisible by 32 heads"},
		{name: "ep not dividing the experts", launch: mixtral, // ep 4 whatever layout the plan picked
			old: "--num-experts 8", new: "--num-experts 6", more: [][2]string{{"--expert-model-parallel-size 1", "--expert-model-parallel-size 4"}},
			wantRefuse: "6 experts on ep"},
		{name: "no --moe-ffn-hidden-size", launch: mixtral,
			old: "--moe-ffn-hidden-size 14336", new: "", wantRefuse: "without --moe-ffn-hidden-size"},
		{name: "sequence parallelism without tp", launch: mixtral,
			old: "--tensor-model-parallel-size 2", new: "--tensor-model-parallel-size 1", wantRefuse: "--sequence-parallel with tp 1"},
		{name: "global batch not divisible by micro-batch × dp", launch: mixtral,
			old: "--global-batch-size 1024", new: "--global-batch-size 1000", wantRefuse: "global batch 1000"},
		{name: "top-1 softmax after top-k", launch: upcycle,
			old: "--moe-router-pre-softmax", new: "", wantRefuse: "without --moe-router-pre-softmax"},
		{name: "no data", launch: mixtral,
			old: "--data-path", new: "--data-cache-path", wantRefuse: "no --data-path"},
		{name: "an unset placeholder stops the line", launch: mixtral,
			env:        slices.DeleteFunc(slices.Clone(userEnv), func(v string) bool { return strings.HasPrefix(v, "DATA_PATH=") }),
			wantRefuse: "DATA_PATH: set DATA_PATH"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Break the command, not the comments above it.
			at := strings.Index(c.launch, "\ntorchrun")
			if i := strings.Index(c.launch, "\nCUDA_DEVICE_MAX_CONNECTIONS"); i >= 0 {
				at = i
			}
			comments, command := c.launch[:at], c.launch[at:]
			if c.old != "" {
				if !strings.Contains(command, c.old) {
					t.Fatalf("the launch lacks %q:\n%s", c.old, command)
				}
				command = strings.Replace(command, c.old, c.new, 1)
			}
			for _, r := range c.more {
				if !strings.Contains(command, r[0]) {
					t.Fatalf("the launch lacks %q:\n%s", r[0], command)
				}
				command = strings.Replace(command, r[0], r[1], 1)
			}
			text := comments + command
			env := c.env
			if env == nil {
				env = userEnv
			}
			var problems []string
			nodes, err := startLaunch(t, text, env)
			if err != nil {
				problems = []string{err.Error()}
			} else {
				j, ps := torchrunJob(nodes, table)
				problems = append(ps, megatronRules(j)...)
			}
			if !strings.Contains(strings.Join(problems, "\n"), c.wantRefuse) {
				t.Errorf("want a refusal with %q, got %q", c.wantRefuse, problems)
			}
		})
	}
}
