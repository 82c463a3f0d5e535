package features

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
)

// Backend is one thing moec lowers a model to.
type Backend string

const (
	Runtime  Backend = "runtime"   // the CPU runtime (runtime/nn): `moec run`, `moec run --llvm`, generate, serve
	Step     Backend = "step"      // the step program (compiler/step): program.txt
	CUDAStep Backend = "cuda-step" // the step programs lowered to CUDA (codegen/cudastep): `moec run`, `generate` and `serve --device cuda`
	CUDA     Backend = "cuda"      // the generated CUDA kernels (codegen/cuda)
	LLVM     Backend = "llvm"      // the generated LLVM IR kernels (codegen/llvm)
	GoProg   Backend = "go"        // the generated Go program (codegen/gogen)
	Megatron Backend = "megatron"  // the Megatron-Core launch (interop/megatron)
	HF       Backend = "hf"        // the Hugging Face export (interop/hf)
)

// Backends lists every backend, in the table's column order.
func Backends() []Backend {
	return []Backend{Runtime, Step, CUDAStep, CUDA, LLVM, GoProg, Megatron, HF}
}

// Title is the backend's name for people (the table's column heading).
func (b Backend) Title() string {
	switch b {
	case Runtime:
		return "CPU runtime"
	case Step:
		return "step program"
	case CUDAStep:
		return "CUDA step"
	case CUDA:
		return "CUDA kernels"
	case LLVM:
		return "LLVM kernels"
	case GoProg:
		return "Go program"
	case Megatron:
		return "Megatron-Core"
	case HF:
		return "Hugging Face"
	}
	return string(b)
}

// Status is what a backend does with a feature.
type Status int

const (
	// Honoured: the backend computes the feature as moec's model defines it.
	Honoured Status = iota
	// Approximated: the backend computes something close to the feature but not the same
	// (a tanh GELU for an erf one, another choice of dropped tokens).
	Approximated
	// Refused: the backend cannot honour the feature. Where it still produces output
	// (generated kernels, an export), that output lacks the feature.
	Refused
	// Outside: the backend computes nothing the feature changes (the generated kernels do
	// not compute the attention products, so grouped-query attention is none of theirs).
	Outside
)

func (s Status) String() string {
	switch s {
	case Honoured:
		return "honoured"
	case Approximated:
		return "approximated"
	case Refused:
		return "refused"
	case Outside:
		return "outside"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// MarshalText writes the status as its name (report.json).
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Verdict is one cell: a status and, for anything but Honoured, why.
type Verdict struct {
	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// Layout is what a cell may depend on besides the model: the parallel sizes the step
// program lowers under. Zero sizes mean 1.
type Layout struct {
	TP, PP int
}

func (l Layout) tp() int { return max(l.TP, 1) }
func (l Layout) pp() int { return max(l.PP, 1) }

// Cell computes a verdict for a model that uses the feature.
type Cell func(m *program.Model, l Layout) Verdict

// Feature is one row of the table.
type Feature struct {
	Key  string // stable identifier (report.json, tests): "groups"
	Name string // in the language's words: "node-limited routing (moe.groups)"
	// Uses reports whether m uses the feature.
	Uses  func(m *program.Model) bool
	cells map[Backend]Cell
}

// On is the feature's cell for backend b, evaluated for m (which uses the feature) under l.
func (f Feature) On(b Backend, m *program.Model, l Layout) Verdict {
	c, ok := f.cells[b]
	if !ok {
		return Verdict{Refused, "the table has no cell for this backend"}
	}
	return c(m, l)
}

// Gap is a feature a model uses that a backend refuses or approximates.
type Gap struct {
	Feature Feature
	Backend Backend
	Verdict Verdict
}

// String names the feature, the backend and why: "node-limited routing (moe.groups,
// topk_groups) is not honoured by the CUDA kernels: router_fwd takes ...".
func (g Gap) String() string {
	how := "not honoured"
	if g.Verdict.Status == Approximated {
		how = "approximated"
	}
	return fmt.Sprintf("%s is %s by the %s: %s", g.Feature.Name, how, g.Backend.Title(), g.Verdict.Reason)
}

// Check returns, in table order, every feature m uses that backend b refuses or
// approximates under l. A nil model has no features.
func Check(m *program.Model, b Backend, l Layout) []Gap {
	if m == nil {
		return nil
	}
	var out []Gap
	for _, f := range Table() {
		if !f.Uses(m) {
			continue
		}
		if v := f.On(b, m, l); v.Status == Refused || v.Status == Approximated {
			out = append(out, Gap{Feature: f, Backend: b, Verdict: v})
		}
	}
	return out
}

// Refusals is Check's Refused gaps alone.
func Refusals(m *program.Model, b Backend, l Layout) []Gap {
	var out []Gap
	for _, g := range Check(m, b, l) {
		if g.Verdict.Status == Refused {
			out = append(out, g)
		}
	}
	return out
}

// CUDAStepInferenceRefusals is Refusals(m, CUDAStep, l) for the inference programs alone
// (the prefill and decoding steps of `moec generate --device`, the feeding programs of
// `moec serve --device`): less the refusals of training alone (CUDAStepTrainingOnly).
func CUDAStepInferenceRefusals(m *program.Model, l Layout) []Gap {
	var out []Gap
	for _, g := range Refusals(m, CUDAStep, l) {
		if !strings.HasPrefix(g.Verdict.Reason, CUDAStepTrainingOnly) {
			out = append(out, g)
		}
	}
	return out
}

// Used returns the rows m uses, in table order.
func Used(m *program.Model) []Feature {
	if m == nil {
		return nil
	}
	var out []Feature
	for _, f := range Table() {
		if f.Uses(m) {
			out = append(out, f)
		}
	}
	return out
}

// Lookup returns the row with key.
func Lookup(key string) (Feature, bool) {
	for _, f := range Table() {
		if f.Key == key {
			return f, true
		}
	}
	return Feature{}, false
}

// Messages describes gaps for people, one message per feature and reason: backends that
// fail a feature for the same reason (the CUDA and LLVM kernels, which lower the same
// kernel descriptions) share a message that names them all. Order is the gaps' first
// appearance.
func Messages(gaps []Gap) []string {
	type key struct {
		feature string
		verdict Verdict
	}
	var order []key
	backends := map[key][]string{}
	names := map[key]string{}
	for _, g := range gaps {
		k := key{g.Feature.Key, g.Verdict}
		if _, ok := backends[k]; !ok {
			order = append(order, k)
			names[k] = g.Feature.Name
		}
		backends[k] = append(backends[k], "the "+g.Backend.Title())
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		how := "not honoured"
		if k.verdict.Status == Approximated {
			how = "approximated"
		}
		out = append(out, fmt.Sprintf("%s is %s by %s: %s", names[k], how, strings.Join(backends[k], " and "), k.verdict.Reason))
	}
	return out
}
