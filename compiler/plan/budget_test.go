package plan

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/human"
	"github.com/moec-dev/moec/lang/diag"
)

// loadSource checks one .moe source held in memory.
func loadSource(t *testing.T, src string) *program.Program {
	t.Helper()
	prog, _, ds := check.Load("input.moe", func(name string) ([]byte, error) {
		if name == "input.moe" {
			return []byte(src), nil
		}
		return nil, fmt.Errorf("%s: not here", name)
	})
	if ds.HasErrors() {
		t.Fatalf("input does not check:\n%v", ds.Err())
	}
	return prog
}

// tinyCPU is a small MoE on a CPU host: 8 sequences of 32 tokens per step, 10k tokens
// (39.06 batches), the host memory given.
func tinyCPU(hostMemory string) string {
	return `model tiny {
  vocab = 256
  d_model = 64
  layers = 2
  seq_len = 32
  attention { heads = 4 }
  ffn { hidden = 4 * d_model; activation = gelu }
  moe { experts = 4; top_k = 1; every = 2 }
}
cluster local {
  gpu = cpu
  ranks = 1
  host_memory = ` + hostMemory + `
}
train tiny on local {
  tokens_per_batch = 8 * 32
  precision = fp32
  optimizer = adamw { lr = 1e-3 }
  data = "*.txt"
  stage dense { experts = 1; tokens = 10k }
  stage four from dense { experts = 4; grow = copy(noise = 0.01); tokens = 10k }
}
serve tiny on local { precision = fp32 }
`
}

// TestStepsAtTheRealisedBatch: every step count of a stage is the token budget over the
// batch the plan runs, rounded down, and the plan says plainly when that batch is not the
// one written.
func TestStepsAtTheRealisedBatch(t *testing.T) {
	src, err := os.ReadFile("../../models/hunyuan1t.moe")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		prog *program.Program
	}{
		{"hunyuan1t", loadSource(t, string(src))},
		{"tiny cpu", loadSource(t, tinyCPU("16GiB"))},
	}
	realised := 0
	for _, c := range cases {
		for _, tn := range c.prog.TrainOrder {
			tr := c.prog.Trains[tn]
			for _, st := range tr.Stages {
				p, ds := ForStage(c.prog, tr, st, Options{})
				if p == nil {
					t.Fatalf("%s %s: %v", c.name, st.Name, ds.Err())
				}
				wl := p.Workload
				want := max(st.Tokens/wl.BatchTokens, 1)
				if p.Totals.Steps != want || program.StepsFor(st.Tokens, wl.BatchTokens) != want {
					t.Errorf("%s %s: %d steps (StepsFor %d), want floor(%d / %d) = %d", c.name, st.Name,
						p.Totals.Steps, program.StepsFor(st.Tokens, wl.BatchTokens), st.Tokens, wl.BatchTokens, want)
				}
				md := p.Markdown()
				line := fmt.Sprintf("at %s tokens per step", human.Exact(wl.BatchTokens))
				if wl.BatchTokens != tr.TokensPerBatch {
					realised++
					line += fmt.Sprintf(" (realised; requested %s, ", human.Exact(tr.TokensPerBatch))
				}
				if !strings.Contains(md, line) || !strings.Contains(md, ": "+human.Exact(want)+" steps") {
					t.Errorf("%s %s: the plan should say %q and %s steps:\n%s", c.name, st.Name, line, human.Exact(want), md)
				}
			}
		}
	}
	if realised == 0 {
		t.Error("no stage realised a batch other than the one written: the test checks nothing about it")
	}
	if got := program.StepsFor(10_000, 256); got != 39 {
		t.Errorf("StepsFor(10000, 256) = %d, want 39 (rounded down, as the run counts)", got)
	}
}

// TestCPUHostMemory: a gpu = cpu cluster keeps its host_memory, offload to the host
// fits in it, and the device and host tiers share it rather than each counting it whole.
func TestCPUHostMemory(t *testing.T) {
	prog := loadSource(t, tinyCPU("16GiB"))
	tr := prog.Trains["tiny"]
	p, ds := ForStage(prog, tr, tr.Stages[1], Options{Memory: "zero1-offload"})
	if p == nil {
		t.Fatalf("zero1-offload on a 16 GiB host: %v", ds.Err())
	}
	if p.Cluster.HostMemory != 16<<30 {
		t.Errorf("plan's host memory %d, want the declared 16 GiB", p.Cluster.HostMemory)
	}
	if md := p.Markdown(); !strings.Contains(md, "host 16 GiB per node") || !strings.Contains(md, "1 CPU rank on 1 node —") {
		t.Errorf("plan text lacks the host memory or counts devices wrongly:\n%s", md)
	}
	var dev, host *Tier
	for i := range p.Memory {
		switch p.Memory[i].Tier {
		case "gpu":
			dev = &p.Memory[i]
		case "host":
			host = &p.Memory[i]
		}
	}
	if dev == nil || host == nil || host.Used == 0 {
		t.Fatalf("offload plan should use a host tier: %+v", p.Memory)
	}
	usable := int64(16<<30) * 8 / 10
	if dev.Capacity+host.Used > usable+1 {
		t.Errorf("device capacity %d + host use %d exceed the usable host %d: the same memory counted twice", dev.Capacity, host.Used, usable)
	}

	// Without offload nothing is in the host tier, and it is not shown as a second memory.
	p, ds = ForStage(prog, tr, tr.Stages[1], Options{})
	if p == nil {
		t.Fatal(ds.Err())
	}
	for _, tier := range p.Memory {
		if tier.Tier == "host" {
			t.Errorf("an unused host tier on CPU ranks is their own memory, shown twice: %+v", tier)
		}
	}
}

// TestNoFitSuggestionsAgree: each suggested layout runs on the devices the suggestion
// names, and a strategy that fits on the nodes there are is not also offered on more.
func TestNoFitSuggestionsAgree(t *testing.T) {
	// 8 MiB of host: zero3 fits the one rank's share; the offload strategy's host
	// buffers, which come out of the same memory, do not.
	prog := loadSource(t, tinyCPU("8MiB"))
	tr := prog.Trains["tiny"]
	p, ds := ForStage(prog, tr, tr.Stages[1], Options{Memory: "zero1-offload"})
	if p != nil || len(ds) == 0 {
		t.Fatalf("expected no fit, got a plan: %+v", p)
	}
	d := ds[0]
	all := append([]string{d.Summary, d.Suggestion}, d.Notes...)
	text := strings.Join(all, "\n")
	if regexp.MustCompile(`over by \d+ bytes`).MatchString(text) {
		t.Errorf("overflow in raw bytes next to human sizes: %s", text)
	}
	onNodes := regexp.MustCompile(`on (\d+) nodes? \((\d+) (?:GPU|CPU rank)s?; dp=(\d+) ep=\d+ tp=(\d+) pp=(\d+)`)
	sameNodes := map[string]bool{}
	for _, s := range all {
		if m := onNodes.FindStringSubmatch(s); m != nil {
			n := make([]int, 6)
			for i := 1; i < 6; i++ {
				n[i], _ = strconv.Atoi(m[i])
			}
			if n[2] != n[3]*n[4]*n[5] {
				t.Errorf("suggestion names %d devices but its layout uses %d: %s", n[2], n[3]*n[4]*n[5], s)
			}
			strat, _, _ := strings.Cut(strings.TrimPrefix(s, "also fits: "), " on ")
			if sameNodes[strat] {
				t.Errorf("%q already fits on the nodes there are, yet is offered on more: %s", strat, s)
			}
		} else if strat, _, ok := strings.Cut(strings.TrimPrefix(s, "also fits: "), " ("); ok && strings.HasPrefix(strat, "memory = ") {
			sameNodes[strat] = true
		}
	}
	if len(sameNodes) == 0 {
		t.Errorf("no same-node strategy suggested: the test checks nothing:\n%s", text)
	}
}

// TestMemoryOptions: every value listed is accepted, and an unknown one is answered with
// the whole list.
func TestMemoryOptions(t *testing.T) {
	opts := MemoryOptions()
	for _, want := range []string{"auto", "zero0", "zero1-offload", "zero3-nvme", "unified_cache"} {
		if !strings.Contains(" "+strings.Join(opts, " ")+" ", " "+want+" ") {
			t.Errorf("MemoryOptions() = %v lacks %s", opts, want)
		}
	}
	for _, o := range opts {
		if _, err := strategies(o, program.MemoryStrategy{}, true); err != nil {
			t.Errorf("listed option %q is refused: %v", o, err)
		}
	}
	prog := loadSource(t, tinyCPU("16GiB"))
	tr := prog.Trains["tiny"]
	_, ds := ForStage(prog, tr, tr.Stages[0], Options{Memory: "zero9"})
	if len(ds) != 1 || ds[0].Code != diag.CodePlanOptions || !ds[0].Subject.Start.IsValid() {
		t.Fatalf("zero9: want one positioned %s, got %v", diag.CodePlanOptions, ds)
	}
	if want := "use one of " + strings.Join(opts, ", "); ds[0].Suggestion != want {
		t.Errorf("suggestion %q, want %q", ds[0].Suggestion, want)
	}
}

// TestPlanWording: counts agree in number, the serving plan claims no backward pass,
// host transfers have no communicator size, micro-batches name their units.
func TestPlanWording(t *testing.T) {
	prog := hunyuanProgram(t, 24)
	tr := prog.Trains["hunyuan"]
	for _, st := range tr.Stages[:2] {
		p, ds := ForStage(prog, tr, st, Options{Memory: "zero3-offload"})
		if p == nil {
			t.Fatalf("%s: %v", st.Name, ds.Err())
		}
		md := p.Markdown()
		if strings.Contains(md, "| 0 | pcie |") || !strings.Contains(md, "| - | pcie |") {
			t.Errorf("%s: the PCIe row should have no group:\n%s", st.Name, md)
		}
		if !regexp.MustCompile(`micro-batch \d+ sequences? × grad_accum \d+`).MatchString(md) {
			t.Errorf("%s: micro-batch without units:\n%s", st.Name, md)
		}
	}
	sv, ds := ForServe(prog, prog.Serves["hunyuan"], Options{})
	if sv == nil {
		t.Fatal(ds.Err())
	}
	md := sv.Markdown()
	if strings.Contains(md, "backward pass") || !strings.Contains(md, "Overlap: none") {
		t.Errorf("serving plan speaks of a backward pass:\n%s", md)
	}
	for _, c := range []struct {
		n          int
		noun, want string
	}{{1, "node", "1 node"}, {2, "node", "2 nodes"}} {
		if got := plural(c.n, c.noun); got != c.want {
			t.Errorf("plural(%d, %q) = %q, want %q", c.n, c.noun, got, c.want)
		}
	}
	if got := devices(1, "cpu"); got != "1 CPU rank" {
		t.Errorf("devices(1, cpu) = %q", got)
	}
	if got := devices(192, "a100_40gb"); got != "192 GPUs" {
		t.Errorf("devices(192, a100_40gb) = %q", got)
	}
}
