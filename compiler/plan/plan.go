package plan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// Schema is the version of the plan format. A change that a reader of an older plan
// could misread gets a new version.
const Schema = "moec.plan/v1"

// Options are what-if settings of `moec plan`; the zero value plans what the program says
// on the whole cluster.
type Options struct {
	GPUs         int       // most devices to use (0 = the cluster's); more than the cluster has plans for more nodes of the same kind
	Nodes        int       // nodes to plan for (0 = the cluster's); may exceed the cluster for a what-if
	Memory       string    // "" = as declared; "auto" = search all; zero0..zero3, zero2-offload, zero3-offload, zero3-nvme, unified_cache
	Objective    Objective // "time" (train default), "gpus" (serve default) or "cost"
	Alternatives int       // runners-up to keep (0 = 3)
	// DelayedUpdate asks for ZeRO-Offload's one-step-delayed parameter update (DPU): the
	// host update of a step runs during the next step, whose forward and backward use
	// weights one update old. It changes the training algorithm, so it is never chosen by
	// the planner; a strategy without host-held states cannot use it (E0504).
	DelayedUpdate bool
}

// Plan is a chosen layout with everything predicted about it. Its JSON form is the
// contract with the runtime and the code generators; every field is plain data a CPU
// process can read.
type Plan struct {
	Schema       string         `json:"schema"`
	Kind         string         `json:"kind"` // "train", "serve" or "local"
	Model        string         `json:"model"`
	Train        string         `json:"train,omitempty"`
	Stage        string         `json:"stage,omitempty"`
	Serve        string         `json:"serve,omitempty"`
	Objective    Objective      `json:"objective"`
	Cluster      ClusterInfo    `json:"cluster"`
	Workload     WorkloadInfo   `json:"workload"`
	GPUs         int            `json:"gpus"`
	Nodes        int            `json:"nodes"`
	Layout       ParallelLayout `json:"layout"`
	Memory       []Tier         `json:"memory"`
	Comm         []Comm         `json:"comm"`
	Time         Timing         `json:"time"`
	Totals       Totals         `json:"totals"`
	Placement    *Placement     `json:"placement,omitempty"`
	Alternatives []Alternative  `json:"alternatives"`
	Searched     int            `json:"searched"` // layouts evaluated
	Assumptions  []Assumption   `json:"assumptions"`
	Notes        []string       `json:"notes,omitempty"`
}

// ClusterInfo is the hardware the plan was made for, after catalog and overrides.
type ClusterInfo struct {
	Name        string  `json:"name"`
	Device      string  `json:"device"`
	Nodes       int     `json:"nodes"`
	GPUsPerNode int     `json:"gpus_per_node"`
	GPUMemory   int64   `json:"gpu_memory"`
	PeakFLOPs   float64 `json:"peak_flops"` // at the plan's precision
	HBM         float64 `json:"hbm_bandwidth"`
	IntraLink   float64 `json:"intra_link"`
	IntraName   string  `json:"intra_link_name"`
	HostLink    float64 `json:"host_link"`
	HostMemory  int64   `json:"host_memory"`
	Network     float64 `json:"network"`
	NVMe        int64   `json:"nvme"`
	PricePerGPU float64 `json:"price_per_gpu_hour"`
}

// WorkloadInfo is what is being run.
type WorkloadInfo struct {
	Precision string `json:"precision"`
	// Compression, for a compressed serve, is what its compress block does to the weights.
	Compression    string  `json:"compression,omitempty"`
	Params         int64   `json:"params"`
	ActiveParams   int64   `json:"active_params"`
	ExpertParams   int64   `json:"expert_params"`
	Experts        int     `json:"experts"`
	TopK           int     `json:"top_k"`
	SeqLen         int64   `json:"seq_len"`
	TokensPerBatch int64   `json:"tokens_per_batch"` // as written
	BatchTokens    int64   `json:"batch_tokens"`     // as the layout runs it (dp × micro_batch × grad_accum × seq_len)
	Tokens         int64   `json:"tokens"`           // the stage's budget
	TrainFLOPs     float64 `json:"train_flops_per_token"`
}

// Tier is the memory of one device (GPU) or one node (host, NVMe), worst case over the
// devices of the layout.
type Tier struct {
	Tier       string  `json:"tier"` // "gpu", "host", "nvme"
	Per        string  `json:"per"`  // "device" or "node"
	Capacity   int64   `json:"capacity"`
	Used       int64   `json:"used"`
	Components []Bytes `json:"components"`
}

// Bytes is one named size.
type Bytes struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
}

// Totals are the stage's whole-budget figures.
type Totals struct {
	Steps    int64   `json:"steps"`
	Days     float64 `json:"days"`
	GPUHours float64 `json:"gpu_hours"`
	Cost     float64 `json:"cost"` // GPU-hours × price (0 when no price is declared)
}

// Alternative is a runner-up and why it lost to the chosen layout.
type Alternative struct {
	Layout      ParallelLayout `json:"layout"`
	GPUs        int            `json:"gpus"`
	Fits        bool           `json:"fits"`
	StepSeconds float64        `json:"step_seconds"`
	Why         string         `json:"why"`
}

// JSON returns the plan as indented JSON: struct fields in declaration order, no maps,
// floats rounded to 9 significant digits so that output is the same byte for byte on
// every machine.
func (p *Plan) JSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(p); err != nil {
		return nil, fmt.Errorf("plan: encoding %s plan: %w", p.Kind, err)
	}
	return buf.Bytes(), nil
}

// round9 keeps 9 significant digits: the model is far coarser, and it keeps the JSON
// stable where fused multiply-adds differ between architectures.
func round9(v float64) float64 {
	if v == 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return v
	}
	e := math.Pow(10, 8-math.Floor(math.Log10(math.Abs(v))))
	return math.Round(v*e) / e
}

func roundTiming(t Timing) Timing {
	for _, f := range []*float64{&t.ComputeSeconds, &t.TeacherSeconds, &t.BubbleFraction, &t.TPSeconds, &t.EPSeconds, &t.PPSeconds,
		&t.DPSeconds, &t.DPExposed, &t.OffloadSeconds, &t.OffloadExposed, &t.OptimizerSeconds, &t.OptimizerExposed, &t.HostOverlapped, &t.StepSeconds,
		&t.TokensPerSecond, &t.MFU} {
		*f = round9(*f)
	}
	return t
}

// tiers turns a memory evaluation into the plan's table. A host tier that is the devices'
// own memory (sharedHost: CPU ranks) is shown only when it holds something.
func tiers(m *memoryUse, sharedHost bool) []Tier {
	mk := func(name, per string, capacity float64, b *tierBytes) Tier {
		t := Tier{Tier: name, Per: per, Capacity: int64(capacity), Used: int64(math.Ceil(b.sum()))}
		for c := component(0); c < nComp; c++ {
			if shown(c, b[c]) {
				t.Components = append(t.Components, Bytes{componentNames[c], int64(math.Ceil(b[c]))})
			}
		}
		return t
	}
	out := []Tier{mk("gpu", "device", m.gpuCap, &m.gpu)}
	if m.host.sum() > 0 || m.hostCap > 0 && !sharedHost {
		out = append(out, mk("host", "node", m.hostCap, &m.host))
	}
	if m.nvme.sum() > 0 || m.nvmeCap > 0 {
		out = append(out, mk("nvme", "node", m.nvmeCap, &m.nvme))
	}
	return out
}

// namedStrategies are the values of Options.Memory (`moec plan --memory`) that name one
// strategy, in the order help and diagnostics list them. With "auto" (see MemoryOptions)
// they are every value strategies accepts: one list, so that what is listed is what is
// accepted.
func namedStrategies() []struct {
	name string
	s    strategy
} {
	return []struct {
		name string
		s    strategy
	}{
		{"zero0", strategy{"zero", 0, "none"}},
		{"zero1", strategy{"zero", 1, "none"}},
		{"zero2", strategy{"zero", 2, "none"}},
		{"zero3", strategy{"zero", 3, "none"}},
		{"zero1-offload", strategy{"zero", 1, "cpu"}},
		{"zero2-offload", strategy{"zero", 2, "cpu"}},
		{"zero3-offload", strategy{"zero", 3, "cpu"}},
		{"zero3-nvme", strategy{"zero", 3, "nvme"}},
		{"unified_cache", strategy{"unified_cache", 3, "none"}},
	}
}

// MemoryOptions lists every value Options.Memory accepts besides "" (as declared): for
// `moec plan --help` and the diagnostic of an unknown value.
func MemoryOptions() []string {
	out := []string{"auto"}
	for _, n := range namedStrategies() {
		out = append(out, n.name)
	}
	return out
}

// strategies parses Options.Memory against the declared strategy.
func strategies(opt string, declared program.MemoryStrategy, nvme bool) ([]strategy, error) {
	name := strings.ReplaceAll(strings.ToLower(opt), "unified-cache", "unified_cache")
	switch name {
	case "":
		if declared.Kind == "unified_cache" {
			return []strategy{{"unified_cache", 3, "none"}}, nil
		}
		off := declared.Offload
		if off == "" {
			off = "none"
		}
		return []strategy{{"zero", declared.ZeROStage, off}}, nil
	case "auto":
		s := []strategy{{"zero", 0, "none"}, {"zero", 1, "none"}, {"zero", 2, "none"}, {"zero", 3, "none"},
			{"zero", 2, "cpu"}, {"zero", 3, "cpu"}, {"unified_cache", 3, "none"}}
		if nvme {
			s = append(s, strategy{"zero", 3, "nvme"})
		}
		return s, nil
	}
	for _, n := range namedStrategies() {
		if n.name == name {
			return []strategy{n.s}, nil
		}
	}
	return nil, fmt.Errorf("unknown memory strategy %q", opt)
}

// Objective is what the search minimises.
type Objective string

const (
	MinTime Objective = "time" // step time
	MinGPUs Objective = "gpus" // devices
	MinCost Objective = "cost" // device-hours
)

func objectiveOf(opt, def Objective) (Objective, error) {
	switch opt {
	case "":
		return def, nil
	case MinTime, MinGPUs, MinCost:
		return opt, nil
	}
	return "", fmt.Errorf("unknown objective %q", opt)
}

// recomputeWritten reports whether the train block's recompute was written by the user
// (then it is honoured) rather than defaulted (then the planner chooses).
func recomputeWritten(prog *program.Program, train *program.Train) bool {
	for _, p := range prog.Explain {
		if p.Source == program.Written && strings.HasSuffix(p.Path, ".recompute") &&
			strings.Contains(p.Path, "train") && strings.Contains(p.Path, train.Name) {
			return true
		}
	}
	return false
}

func clusterInfo(c *program.Cluster, prec program.Precision, peak float64) ClusterInfo {
	return ClusterInfo{
		Name: c.Name, Device: c.Device.Name, Nodes: c.Nodes, GPUsPerNode: c.GPUsPerNode,
		GPUMemory: c.Device.Memory, PeakFLOPs: peak, HBM: c.Device.HBMBandwidth,
		IntraLink: c.Device.IntraLink, IntraName: c.Device.IntraLinkName, HostLink: c.Device.HostLink,
		HostMemory: c.HostMemory, Network: c.Network, NVMe: c.NVMe, PricePerGPU: c.PricePerGPUHour,
	}
}

// rangeOf is where a declaration is, for diagnostics.
func rangeOf(s program.Source) diag.Range {
	return diag.Range{File: s.File, Start: s.Start, End: s.End}
}

// budgetCluster applies Options.GPUs/Nodes to a copy of the cluster.
func budgetCluster(c *program.Cluster, opt Options) (*program.Cluster, int, error) {
	cc := *c
	if cc.GPUsPerNode <= 0 {
		cc.GPUsPerNode = 1
	}
	if cc.Nodes <= 0 {
		cc.Nodes = 1
	}
	if opt.Nodes < 0 || opt.GPUs < 0 {
		return nil, 0, fmt.Errorf("device counts must be positive")
	}
	if opt.Nodes > 0 {
		cc.Nodes = opt.Nodes
	}
	budget := cc.GPUs()
	if opt.GPUs > 0 {
		if opt.Nodes == 0 && opt.GPUs > budget {
			cc.Nodes = (opt.GPUs + cc.GPUsPerNode - 1) / cc.GPUsPerNode
		} else if opt.GPUs > budget {
			return nil, 0, fmt.Errorf("--gpus %d is more than the %d devices of %d nodes", opt.GPUs, budget, cc.Nodes)
		}
		budget = opt.GPUs
	}
	return &cc, budget, nil
}
