package report

import (
	"fmt"
	"sort"
	"strings"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
)

// Section is a part of the report a later phase contributes: Markdown goes into report.md
// under "## Title", JSON (any value encoding/json accepts deterministically: structs,
// slices, maps with string keys) into report.json's "sections".
type Section struct {
	Title    string
	Markdown string
	JSON     any
	// Plan is the plan the section shows, if any. A train stage's plan gives the train
	// table the batch the stage runs at and so its steps: one step count per stage.
	Plan *plan.Plan
}

// Report is everything report.json holds. Field names are a contract: add, never rename.
type Report struct {
	Source   string          `json:"source"`
	Models   []ModelReport   `json:"models"`
	Trains   []TrainReport   `json:"trains"`
	Serves   []ServeReport   `json:"serves"`
	Sections []SectionReport `json:"sections"`
	// Compresses are the compress blocks with the weights they count (added after
	// sections; absent when the file has none).
	Compresses []CompressReport `json:"compresses,omitempty"`
}

// CompressReport is one compress block: each kind of matrix's format, the experts kept
// and the served weights before and after (0 when the model's parameters cannot be listed).
type CompressReport struct {
	Model       string `json:"model"`
	Experts     string `json:"experts"`
	Dense       string `json:"dense"`
	Embed       string `json:"embed"`
	Head        string `json:"head"`
	Group       int    `json:"group"`
	KeepExperts int    `json:"keep_experts"` // 0: every expert
	FP32Bytes   int64  `json:"fp32_weight_bytes"`
	Bytes       int64  `json:"weight_bytes"`
}

// ModelReport is one model's counts.
type ModelReport struct {
	Name        string       `json:"name"`
	Extends     string       `json:"extends,omitempty"`
	Conventions []Convention `json:"conventions"`
	Components  []Component  `json:"components"`
	Layers      []LayerGroup `json:"layers"`
	Notes       []string     `json:"notes"` // conventions that apply to this model in particular
	MTP         int64        `json:"mtp_params"`
	MTPActive   int64        `json:"mtp_active_params"`
	Buffers     int64        `json:"buffers"`
	FLOPs       FLOPsReport  `json:"flops"`
	// Features are the model features it uses with what each backend does with them
	// (compiler/features), the step program's cells for one rank.
	Features []features.Row `json:"features"`
}

// Convention is a headline number with the convention it follows.
type Convention struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Total       int64  `json:"total"`
	Active      int64  `json:"active"`
}

// Component is one row of the parameter table.
type Component struct {
	Name   string `json:"name"`
	Total  int64  `json:"total"`
	Active int64  `json:"active"`
}

// LayerGroup is a set of identical layers of one stack.
type LayerGroup struct {
	Stack     string `json:"stack"` // "decoder", "encoder" or "mtp"
	Indices   []int  `json:"-"`
	Runs      []Run  `json:"runs"`  // Indices as evenly spaced runs
	Range     string `json:"range"` // Indices for people: "0-2", "1-31 step 2"
	Kind      string `json:"kind"`  // "dense" or "moe"
	Cross     bool   `json:"cross_attention"`
	OwnsKV    bool   `json:"owns_kv"`
	Total     int64  `json:"total_per_layer"`
	Active    int64  `json:"active_per_layer"`
	Attention int64  `json:"attention"`
	DenseFFN  int64  `json:"dense_ffn"`
	PerExpert int64  `json:"per_expert"`
	Experts   int64  `json:"experts"`
	Shared    int64  `json:"shared"`
	Router    int64  `json:"router"`
	Norms     int64  `json:"norms"`
	TopK      int    `json:"top_k"`
}

// Run is the layer indices first, first+step, ..., last.
type Run struct {
	First int `json:"first"`
	Last  int `json:"last"`
	Step  int `json:"step"`
}

// FLOPsReport is FLOPs per token at a sequence length (conventions: analysis.FLOPs).
type FLOPsReport struct {
	SeqLen    int64   `json:"seq_len"`
	Forward   float64 `json:"forward_per_token"`
	Train     float64 `json:"train_per_token"`
	Matmul    float64 `json:"matmul_per_token"`
	Attention float64 `json:"attention_per_token"`
	Router    float64 `json:"router_per_token"`
	Head      float64 `json:"head_per_token"`
	MTP       float64 `json:"mtp_per_token"`
}

// TrainReport is one train block's curriculum.
type TrainReport struct {
	Model          string        `json:"model"`
	Cluster        string        `json:"cluster"`
	SeqLen         int64         `json:"seq_len"`
	TokensPerBatch int64         `json:"tokens_per_batch"`
	Stages         []StageReport `json:"stages"`
	Tokens         int64         `json:"tokens"`
	TrainFLOPs     float64       `json:"train_flops"`
}

// StageReport is one curriculum stage's model and compute.
type StageReport struct {
	Name          string  `json:"name"`
	From          string  `json:"from,omitempty"`
	Experts       int     `json:"experts"`
	TopK          int     `json:"top_k"`
	Total         int64   `json:"total"`
	Active        int64   `json:"active"`
	Tokens        int64   `json:"tokens"`
	Steps         int64   `json:"steps"` // program.Stage.StepsAt(BatchTokens)
	FLOPsPerToken float64 `json:"train_flops_per_token"`
	TrainFLOPs    float64 `json:"train_flops"`
	BatchTokens   int64   `json:"batch_tokens"` // the batch Steps are counted at: the stage plan's (dp × micro_batch × grad_accum sequences) when Planned, else tokens_per_batch
	Planned       bool    `json:"planned"`
}

// ServeReport is one serve block's weights.
type ServeReport struct {
	Model        string  `json:"model"`
	Cluster      string  `json:"cluster"`
	Stage        string  `json:"stage,omitempty"`
	Precision    string  `json:"precision"`
	Params       int64   `json:"params"`
	WeightBytes  float64 `json:"weight_bytes"`
	ActiveParams int64   `json:"active_params"`
	// Compressed: the weights are as the model's compress block leaves them (the kept
	// experts, quantised matrices with their scales).
	Compressed bool `json:"compressed,omitempty"`
}

// SectionReport is an extra section in report.json.
type SectionReport struct {
	Title string `json:"title"`
	Data  any    `json:"data"`
}

// Build computes the report's numbers. Declarations that name something the program does
// not hold (which a checked program never does) are reported by name with zero counts
// rather than dropped, so nothing vanishes silently.
func Build(prog *program.Program, srcName string, extra []Section) *Report {
	var plans []*plan.Plan
	for _, s := range extra {
		if s.Plan != nil {
			plans = append(plans, s.Plan)
		}
	}
	return build(prog, srcName, extra, plans)
}

// BuildPlanned is Build for a report without sections whose train stages were planned:
// the train tables count each planned stage's steps at its plan's batch.
func BuildPlanned(prog *program.Program, srcName string, plans []*plan.Plan) *Report {
	return build(prog, srcName, nil, plans)
}

func build(prog *program.Program, srcName string, extra []Section, plans []*plan.Plan) *Report {
	r := &Report{Source: srcName, Models: []ModelReport{}, Trains: []TrainReport{}, Serves: []ServeReport{}, Sections: []SectionReport{}}
	if prog == nil {
		prog = &program.Program{}
	}
	for _, name := range ordered(prog.ModelOrder, prog.Models) {
		r.Models = append(r.Models, modelReport(prog.Models[name]))
	}
	for _, name := range ordered(prog.TrainOrder, prog.Trains) {
		r.Trains = append(r.Trains, trainReport(prog, prog.Trains[name], plans))
	}
	for _, name := range ordered(prog.ServeOrder, prog.Serves) {
		r.Serves = append(r.Serves, serveReport(prog, prog.Serves[name]))
	}
	for _, s := range extra {
		r.Sections = append(r.Sections, SectionReport{Title: s.Title, Data: s.JSON})
	}
	for _, name := range ordered(prog.CompressOrder, prog.Compresses) {
		c := prog.Compresses[name]
		r.Compresses = append(r.Compresses, CompressReport{Model: c.Model, Experts: c.Experts, Dense: c.Dense, Embed: c.Embed,
			Head: c.Head, Group: c.Group, KeepExperts: c.KeepExperts, FP32Bytes: c.FP32Bytes, Bytes: c.Bytes})
	}
	return r
}

// ordered returns the names in declaration order, then any name the order misses (a
// Program built in Go may leave the *Order slices empty) sorted, so output stays
// deterministic either way.
func ordered[T any](order []string, m map[string]T) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range order {
		if _, ok := m[n]; ok && !seen[n] {
			out = append(out, n)
			seen[n] = true
		}
	}
	var rest []string
	for n := range m {
		if !seen[n] {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

func modelReport(m *program.Model) ModelReport {
	c := analysis.Count(m)
	f := analysis.CountFLOPs(m, 0)
	mr := ModelReport{Name: m.Name, Extends: m.Extends, MTP: c.MTP, MTPActive: c.MTPActive, Buffers: c.Buffers}
	for _, cv := range c.Conventions() {
		mr.Conventions = append(mr.Conventions, Convention(cv))
	}
	rows := []struct {
		name          string
		total, active int64
	}{
		{"embedding", c.Total.Embedding, c.Active.Embedding},
		{"position", c.Total.Position, c.Active.Position},
		{"attention", c.Total.Attention, c.Active.Attention},
		{"dense_ffn", c.Total.DenseFFN, c.Active.DenseFFN},
		{"routed_experts", c.Total.RoutedExperts, c.Active.RoutedExperts},
		{"shared_experts", c.Total.SharedExperts, c.Active.SharedExperts},
		{"router", c.Total.Router, c.Active.Router},
		{"router_embedding", c.Total.RouterEmbedding, c.Active.RouterEmbedding},
		{"norms", c.Total.Norms, c.Active.Norms},
		{"head", c.Total.Head, c.Active.Head},
	}
	for _, row := range rows {
		if row.total != 0 {
			mr.Components = append(mr.Components, Component{Name: row.name, Total: row.total, Active: row.active})
		}
	}
	mr.Layers = groupLayers(c)
	mr.Notes = modelNotes(m)
	mr.Features = features.Rows(m, features.Layout{})
	mr.FLOPs = FLOPsReport{
		SeqLen: f.SeqLen, Forward: f.ForwardPerToken, Train: f.TrainPerToken, Matmul: f.MatmulPerToken,
		Attention: f.AttentionPerToken, Router: f.RouterPerToken, Head: f.HeadPerToken, MTP: f.MTPPerToken,
	}
	return mr
}

// groupLayers compresses the layer list: layers of one stack with identical counts form one
// group, whether adjacent ("0-2") or interleaved ("1-31 step 2").
func groupLayers(c analysis.Counts) []LayerGroup {
	var groups []LayerGroup
	add := func(stack string, layers []analysis.LayerCounts) {
		byShape := map[analysis.LayerCounts]int{}
		for _, l := range layers {
			key := l
			key.Index = 0
			gi, ok := byShape[key]
			if !ok {
				kind := "dense"
				if l.MoE {
					kind = "moe"
				}
				gi = len(groups)
				byShape[key] = gi
				groups = append(groups, LayerGroup{
					Stack: stack, Kind: kind, Cross: l.Cross, OwnsKV: l.OwnsKV,
					Total: l.Total, Active: l.Active, Attention: l.Attention, DenseFFN: l.DenseFFN,
					PerExpert: l.PerExpert, Experts: l.Experts, Shared: l.Shared, Router: l.Router,
					Norms: l.Norms, TopK: l.TopK,
				})
			}
			groups[gi].Indices = append(groups[gi].Indices, l.Index)
		}
	}
	add("encoder", c.Layers[:c.EncoderCount])
	add("decoder", c.Layers[c.EncoderCount:])
	add("mtp", c.MTPLayers)
	for i := range groups {
		groups[i].Runs = runs(groups[i].Indices)
		groups[i].Range = describeRuns(groups[i].Runs)
	}
	return groups
}

// runs splits sorted indices into maximal evenly spaced runs: consecutive indices form one
// run, an evenly spaced stretch of three or more another, anything else stands alone.
func runs(idx []int) []Run {
	var out []Run
	for i := 0; i < len(idx); {
		if i+1 == len(idx) {
			out = append(out, Run{First: idx[i], Last: idx[i], Step: 1})
			break
		}
		step := idx[i+1] - idx[i]
		j := i + 1
		for j+1 < len(idx) && idx[j+1]-idx[j] == step {
			j++
		}
		if step != 1 && j-i < 2 {
			j = i // two indices with a gap are not a run
			step = 1
		}
		out = append(out, Run{First: idx[i], Last: idx[j], Step: step})
		i = j + 1
	}
	return out
}

// describeRuns writes runs for people: "0-2", "1-31 step 2", "0, 2-4, 9".
func describeRuns(rs []Run) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		switch {
		case r.First == r.Last:
			parts[i] = fmt.Sprint(r.First)
		case r.Step == 1:
			parts[i] = fmt.Sprintf("%d-%d", r.First, r.Last)
		default:
			parts[i] = fmt.Sprintf("%d-%d step %d", r.First, r.Last, r.Step)
		}
	}
	return strings.Join(parts, ", ")
}

// describeIndices writes sorted layer indices compactly (see runs).
func describeIndices(idx []int) string { return describeRuns(runs(idx)) }

func trainReport(prog *program.Program, t *program.Train, plans []*plan.Plan) TrainReport {
	tr := TrainReport{Model: t.Model, Cluster: t.Cluster, SeqLen: t.SeqLen, TokensPerBatch: t.TokensPerBatch, Stages: []StageReport{}}
	base := prog.Models[t.Model]
	if base == nil {
		return tr
	}
	if tr.SeqLen <= 0 {
		tr.SeqLen = base.SeqLen
	}
	stages := t.Stages
	if len(stages) == 0 {
		// A train block without stages trains the model as declared.
		stages = []*program.Stage{{Name: "main"}}
	}
	for _, st := range stages {
		sm := program.StageModel(base, st)
		c := analysis.Count(sm)
		f := analysis.CountFLOPs(sm, tr.SeqLen)
		sr := StageReport{
			Name: st.Name, From: st.From, Total: c.TotalAll, Active: c.ActiveAll,
			Tokens: st.Tokens, Steps: st.Steps, FLOPsPerToken: f.TrainPerToken,
		}
		sr.Experts, sr.TopK = 1, 1
		if sm.MoE != nil {
			sr.Experts, sr.TopK = sm.MoE.Experts, sm.MoE.TopK
		}
		sr.BatchTokens = t.TokensPerBatch
		for _, p := range plans {
			if p.Kind == "train" && p.Train == t.Name && p.Stage == st.Name && p.Workload.BatchTokens > 0 {
				sr.BatchTokens, sr.Planned = p.Workload.BatchTokens, true
			}
		}
		sr.Steps, sr.Tokens = st.StepsAt(sr.BatchTokens), st.TokensAt(sr.BatchTokens)
		sr.TrainFLOPs = sr.FLOPsPerToken * float64(sr.Tokens)
		tr.Tokens += sr.Tokens
		tr.TrainFLOPs += sr.TrainFLOPs
		tr.Stages = append(tr.Stages, sr)
	}
	return tr
}

func serveReport(prog *program.Program, s *program.Serve) ServeReport {
	sr := ServeReport{Model: s.Model, Cluster: s.Cluster, Stage: s.Stage, Precision: string(s.Precision)}
	m := prog.Models[s.Model]
	if m == nil {
		return sr
	}
	if s.Stage != "" {
		if t := prog.Trains[s.Model]; t != nil {
			for _, st := range t.Stages {
				if st.Name == s.Stage {
					m = program.StageModel(m, st)
				}
			}
		}
	}
	c := analysis.Count(m)
	sr.Params, sr.ActiveParams = c.TotalAll, c.ActiveAll
	sr.WeightBytes = float64(c.TotalAll) * s.Precision.Bytes()
	if cp := prog.Compresses[s.Model]; s.Compressed && cp != nil {
		if cw, err := plan.CompressedWeights(m, cp, s.Precision.Bytes()); err == nil {
			sr.Compressed, sr.WeightBytes = true, cw.Bytes()
			sr.Params = int64(cw.ExpertParams + cw.OtherParams)
		}
	}
	return sr
}

// modelNotes states the conventions that only some models need.
func modelNotes(m *program.Model) []string {
	notes := []string{}
	a := m.Attention
	if a.SharesWeights() {
		notes = append(notes, fmt.Sprintf("attention-weight sharing: each layer after the first recomputes its attention weights with probability %g, else reuses the layer below's; the query/key projections, QK^T and talking-heads mixers are counted at that expected cost, and their parameters in full", a.RecomputeProbability()))
	}
	if a.Window > 0 {
		notes = append(notes, fmt.Sprintf("sliding window of %d: causal attention reads min(position+1, %d) keys", a.Window, a.Window))
	}
	if m.Encoder > 0 {
		notes = append(notes, "encoder-decoder: FLOPs per token are one encoder position plus one decoder position; encoder self-attention and cross-attention read all seq_len positions")
	}
	if m.MoE != nil && m.MoE.Experts > 0 && m.MoE.Router == program.RouteTokenEmbedding {
		notes = append(notes, "token-embedding routing: one router table (vocab × router_dim) for the model, counted whole in the active parameters like the embedding; each MoE layer has its own experts × router_dim projection")
	}
	if m.MTPDepth > 0 {
		notes = append(notes, "multi-token prediction: each module is one transformer layer of the model's kind, eh_proj (2·d_model → d_model), norms over the embedding and the hidden state and, with final_norm, its own norm before the shared head; training FLOPs include the modules")
	}
	if m.MoE != nil && m.MoE.Experts > 0 && m.MoE.AuxFreeBias > 0 {
		notes = append(notes, "auxiliary-loss-free balancing: one bias per expert per MoE layer, updated by a rule, not by gradients: a buffer, not a parameter")
	}
	return notes
}
