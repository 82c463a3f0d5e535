package driver

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moec-dev/moec/codegen"
	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/report"
	reporthtml "github.com/moec-dev/moec/compiler/report/html"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/atomicfile"
	"github.com/moec-dev/moec/lang/diag"
)

// BuildOptions configure `moec build`.
type BuildOptions struct {
	OutRoot string // default "out"
	NoCode  bool   // skip code generation
}

// BuildResult lists what a build wrote.
type BuildResult struct {
	OutDir string
	Report string   // report.md
	Files  []string // every file written
	Notes  []string // things a person should know (e.g. clang not found)
	// Seed is the seed's figures beside moec's, one table per train block on a cluster of
	// several devices (the report's section; SeedResult.Summary for a terminal).
	Seed []plan.SeedResult
}

// Build checks the file at path, counts, plans every train stage and serve block, generates
// code for every stage and writes the report. Diagnostics (including plans that do not fit)
// come back in the list; files are written only for what succeeded. The error is for
// failures that are not the input's fault (a file that cannot be written).
func Build(l *Loaded, opt BuildOptions) (*BuildResult, diag.List, error) {
	var diags diag.List
	if l.Diags.HasErrors() {
		return nil, nil, fmt.Errorf("build: %s has errors", l.Path)
	}
	root := opt.OutRoot
	if root == "" {
		root = "out"
	}
	name := strings.TrimSuffix(filepath.Base(l.Path), filepath.Ext(l.Path))
	outDir := filepath.Join(root, codegen.SanitizePath(name))
	res := &BuildResult{OutDir: outDir}
	prog := l.Program

	var sections []report.Section
	for _, tn := range prog.TrainOrder {
		tr := prog.Trains[tn]
		warned := map[string]bool{} // kernel gaps already reported for an earlier stage of tr
		for _, st := range tr.Stages {
			p, pd := plan.ForStage(prog, tr, st, plan.Options{Alternatives: 3})
			diags = append(diags, pd...)
			if p == nil {
				continue
			}
			stageDir := filepath.Join(outDir, codegen.SanitizePath(st.Name))
			if err := writePlan(stageDir, p, res); err != nil {
				return res, diags, err
			}
			sections = append(sections, report.Section{
				Title:    fmt.Sprintf("Plan: %s, stage %s", tr.Name, st.Name),
				Markdown: p.Markdown(),
				Plan:     p,
			})
			if !opt.NoCode {
				m := program.StageModel(prog.Models[tr.Model], st)
				cg, err := codegen.Emit(stageDir, tr.Model, st.Name, m, codegen.Options{})
				if err != nil {
					return res, diags, fmt.Errorf("code generation for stage %s: %w", st.Name, err)
				}
				res.Files = append(res.Files, cg.Files...)
				res.Files = append(res.Files, cg.Compiled...)
				sp, note, err := writeStepProgram(stageDir, m, tr, st, p, res)
				if err != nil {
					return res, diags, fmt.Errorf("the step program of stage %s: %w", st.Name, err)
				}
				if note != "" {
					res.Notes = appendOnce(res.Notes, note)
				}
				if note, err = writeCUDAStep(stageDir, sp, m, tr, res); err != nil {
					return res, diags, fmt.Errorf("the CUDA step program of stage %s: %w", st.Name, err)
				} else if note != "" {
					res.Notes = appendOnce(res.Notes, note)
				}
				if err := emitGo(prog, tr, st, filepath.Dir(l.Path), stageDir, sp, res); err != nil {
					return res, diags, fmt.Errorf("generating the Go program for stage %s: %w", st.Name, err)
				}
				for _, n := range cg.Notes {
					res.Notes = appendOnce(res.Notes, n)
				}
				diags = append(diags, kernelGapWarnings(st, cg.Gaps, warned)...)
			}
		}
		if cl, ok := prog.Clusters[tr.Cluster]; ok && cl.GPUs() > 1 {
			seed, err := plan.SeedTable(prog, tr, cl)
			if err != nil {
				return res, diags, fmt.Errorf("seed table: %w", err)
			}
			sections = append(sections, report.Section{Title: "The seed's figures: memory, GPU count, cost and speed", Markdown: seed.Markdown()})
			res.Seed = append(res.Seed, seed)
		}
	}
	for _, sn := range prog.ServeOrder {
		sv := prog.Serves[sn]
		p, pd := plan.ForServe(prog, sv, plan.Options{Alternatives: 3})
		diags = append(diags, pd...)
		if p == nil {
			continue
		}
		dir := filepath.Join(outDir, "serve-"+codegen.SanitizePath(sv.Name))
		if err := writePlan(dir, p, res); err != nil {
			return res, diags, err
		}
		sections = append(sections, report.Section{Title: "Serving plan: " + sv.Name, Markdown: p.Markdown()})
	}
	if err := report.Write(outDir, prog, l.Path, sections); err != nil {
		return res, diags, err
	}
	if err := reporthtml.Write(outDir, prog, l.Path); err != nil {
		return res, diags, err
	}
	res.Report = filepath.Join(outDir, "report.md")
	// The three reports: report.Write writes the Markdown and JSON, reporthtml.Write the HTML.
	res.Files = append(res.Files, res.Report, filepath.Join(outDir, "report.json"), filepath.Join(outDir, "report.html"))
	return res, diags, nil
}

// kernelGapWarnings turns the features the generated kernels of stage st do not honour
// into W9501 warnings at the stage's declaration, one per feature and reason; a message
// already given for an earlier stage of the same train (in warned) is not repeated.
func kernelGapWarnings(st *program.Stage, gaps []features.Gap, warned map[string]bool) diag.List {
	var ds diag.List
	r := diag.Range{File: st.Decl.File, Start: st.Decl.Start, End: st.Decl.End}
	for _, msg := range features.Messages(gaps) {
		if warned[msg] {
			continue
		}
		warned[msg] = true
		d := ds.Warnf(diag.CodeBackendGap, r, "stage %s: %s", st.Name, msg)
		d.Notes = append(d.Notes, "the kernels are written all the same; report.md's features table says what every backend does with each feature of the model")
	}
	return ds
}

func appendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func writePlan(dir string, p *plan.Plan, res *BuildResult) error {
	js, err := p.JSON()
	if err != nil {
		return fmt.Errorf("encoding plan: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, "plan.json")
	if err := atomicfile.WriteFile(path, js, 0o644); err != nil {
		return err
	}
	res.Files = append(res.Files, path)
	return nil
}

// writeStepProgram lowers the plan's layout for stage st to the step program of rank 0
// and writes its listing (program.txt), and with pipeline parallelism the listing of the
// first rank of every other pipeline stage (program.ppS.txt). A layout or feature the step
// program does not lower yet is a note saying why, not a failed build.
func writeStepProgram(dir string, m *program.Model, tr *program.Train, st *program.Stage, p *plan.Plan, res *BuildResult) (*step.Program, string, error) {
	seq := tr.SeqLen
	if seq <= 0 {
		seq = m.SeqLen
	}
	pl := p.Layout
	l := planStepLayout(p, tr.Memory.CachePage)
	// The train block's zero(bucket = …).
	l.GradBucket = tr.Memory.GradBucket
	if d := st.Distill; d != nil { // the student's loss reads its teacher's logits
		l.Distill = step.Distill{Temperature: d.Temperature, SoftWeight: d.SoftWeight, HardWeight: d.HardWeight}
	}
	b := step.Batch{MicroBatch: pl.MicroBatch, SeqLen: int(seq), Micro: max(pl.GradAccum, 1)}
	prog, err := step.LowerRank(m, b, l, 0)
	var note string
	var le *step.LayoutError
	if errors.As(err, &le) && le.Budget != nil {
		// The step program's device buffers (fp32 values where the plan counts the train
		// precision's, the dispatch buffers' static sizes) need more than the plan's
		// memory model counts. First the same layout with more recompute (the
		// activations are what the fp32 program holds more of), then the same
		// partitioning without the cache, the optimizer offloaded; the note says why.
		why := le.Budget
		for _, rc := range strongerRecompute(l.Recompute) {
			lr := l
			lr.Recompute = rc
			if rp, rerr := step.LowerRank(m, b, lr, 0); rerr == nil {
				note = fmt.Sprintf("the unified cache does not fit the plan's device in the step program with recompute = %s (%s); program.txt lists the layout with recompute = %s, which fits", cmp.Or(l.Recompute, program.RecomputeNone), why, rc)
				prog, err, l = rp, nil, lr
				break
			}
		}
		if note == "" {
			note = fmt.Sprintf("the unified cache does not fit the plan's device in the step program (%s); program.txt lists the layout without the cache, the optimizer offloaded", why)
			l.Cache, l.OffloadOpt = step.Cache{}, true
			prog, err = step.LowerRank(m, b, l, 0)
		}
	}
	if err != nil {
		return nil, fmt.Sprintf("stage %s: no program.txt: %v", st.Name, err), nil
	}
	prog.Stage = st.Name
	if note != "" {
		note = fmt.Sprintf("stage %s: %s", st.Name, note)
	}
	if err := writeListing(filepath.Join(dir, "program.txt"), prog, note, res); err != nil {
		return nil, "", err
	}
	// Pipeline stages run different layers (and the last the head and loss): each
	// stage's first rank gets its own listing. Ranks within a stage differ only in which
	// shard of each tensor they hold.
	for s := 1; s < l.PP; s++ {
		rank := l.RankOf(step.Coord{PP: s})
		ps, err := step.LowerRank(m, b, l, rank)
		if err != nil {
			return nil, fmt.Sprintf("stage %s: no listing for pipeline stage %d: %v", st.Name, s, err), nil
		}
		ps.Stage = st.Name
		if err := writeListing(filepath.Join(dir, fmt.Sprintf("program.pp%d.txt", s)), ps, note, res); err != nil {
			return nil, "", err
		}
	}
	return prog, note, nil
}

// strongerRecompute are the recompute modes that keep fewer activations than rc (the
// empty mode is none), least recompute first.
func strongerRecompute(rc program.Recompute) []program.Recompute {
	modes := program.RecomputeModes()
	return modes[slices.Index(modes, cmp.Or(rc, program.RecomputeNone))+1:]
}

// writeListing writes p's listing to path atomically and records the file; a note (why
// the listing's layout is not quite the plan's) heads it.
func writeListing(path string, p *step.Program, note string, res *BuildResult) error {
	var buf bytes.Buffer
	if note != "" {
		fmt.Fprintf(&buf, "# note: %s\n", note)
	}
	if err := step.Format(&buf, p); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return err
	}
	res.Files = append(res.Files, path)
	return nil
}

// planStepLayout is the step program's layout for the plan's: its recompute mode,
// sequence parallelism where the plan assumed it (with tp > 1), and the unified cache with
// the device's memory (less the plan's reserve) as its budget, in pages of page bytes
// (0: the language's default).
func planStepLayout(p *plan.Plan, page int64) step.Layout {
	pl := p.Layout
	l := step.Layout{DP: pl.DP, EP: max(pl.EP, 1), TP: pl.TP, PP: pl.PP, ZeRO: pl.ZeRO, OffloadOpt: pl.Offload == program.OffloadCPU,
		Recompute: pl.Recompute, SequenceParallel: assumes(p, "sequence_parallel")}
	if pl.Memory == program.MemoryUnifiedCache {
		l.Cache = step.Cache{Budget: deviceBudget(p), Page: page}
	}
	return l
}

// deviceBudget is the plan's memory per device less its reserve (CUDA context, allocator
// slack): what the unified cache's device arena may fill.
func deviceBudget(p *plan.Plan) int64 {
	for _, t := range p.Memory {
		if t.Tier != "gpu" {
			continue
		}
		budget := t.Capacity
		for _, c := range t.Components {
			if c.Name == "reserve" {
				budget -= c.Bytes
			}
		}
		return budget
	}
	return p.Cluster.GPUMemory
}

// assumes reports whether the plan's assumption name is true (sequence_parallel: the plan
// counted the tp ranks' activations split by token, so the step program splits them).
func assumes(p *plan.Plan, name string) bool {
	for _, a := range p.Assumptions {
		if a.Name == name {
			return a.Value == "true"
		}
	}
	return false
}
