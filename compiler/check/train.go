package check

import (
	"fmt"
	"math/big"
	"sort"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// stageExpertsDefault: a stage keeps the experts of the stage it starts from; a first
// stage has the model's (1 for a dense model).
func stageExpertsDefault(r *resolver, s *scope) (value, string, bool) {
	if student := s.links["student"]; student != nil {
		return modelExperts(r, student) // a distill stage's own model: its experts
	}
	if prev := s.links["from"]; prev != nil {
		v, ok := r.get(prev, "experts")
		return v, prev.path + ".experts", ok
	}
	train := s.parent
	if train == nil || train.links["model"] == nil {
		return value{}, "", false
	}
	model := train.links["model"]
	if moe := model.sections["moe"]; moe != nil {
		v, ok := r.get(moe, "experts")
		return v, model.path + ".moe.experts", ok
	}
	return numValue(big.NewRat(1, 1), dimNone), model.path + " (dense)", true
}

// stageInfo is one stage while the curriculum is checked.
type stageInfo struct {
	block  *ast.Block
	scope  *scope
	from   *stageInfo
	cyclic bool
	leaf   bool
	// student is the model a distill stage's `model = NAME` names (nil: the train's).
	student *decl
	index   int // declaration order
}

// resolveTrains evaluates every train block and its curriculum.
func (c *checker) resolveTrains() {
	for _, d := range c.declsOf("train") {
		fb := newFlatBlock()
		path := "train " + d.name
		c.readBody(d.spec, path, d.block.Body, d.file, fb)
		s := newScope(path, d.spec, d.file, d.block.Name, fb.entries, nil)
		s.incomplete = d.block.Broken
		d.scope = s
		model := c.lookupDecl("model", d.name, diag.CodeUnknownModel, d.file, d.block.Name, path)
		if model != nil && model.scope != nil {
			s.links["model"] = model.scope
		}
		var cluster *decl
		if d.block.On != nil {
			cluster = c.lookupDecl("cluster", d.block.On.Name, diag.CodeUnknownCluster, d.file, d.block.On, path)
			if cluster != nil && cluster.scope != nil {
				s.links["cluster"] = cluster.scope
			}
		}
		c.r.evalAll(s)
		t := &program.Train{
			Name: d.name, Model: d.name,
			TokensPerBatch: s.i64("tokens_per_batch"), MicroBatch: s.int("micro_batch"), SeqLen: s.i64("seq_len"),
			Precision: program.Precision(s.str("precision")), Data: s.str("data"), ValData: s.str("val_data"),
			Seed: s.i64("seed"), CheckpointEvery: s.i64("checkpoint_every"), Decl: declSource(d.file, d.block),
		}
		if d.block.On != nil {
			t.Cluster = d.block.On.Name
		}
		if (t.Precision == program.BF16 || t.Precision == program.FP16) && s.entries["precision"] != nil {
			t.CPUProducts = t.Precision // written, not the default: the CPU runtime multiplies in bf16 or fp16
		}
		if s.entries["val_data"] != nil {
			r := s.rangeOf("val_data")
			t.ValDataDecl = program.Source{File: r.File, Start: r.Start, End: r.End}
		}
		c.resolveTokenizer(t, s)
		if o := s.call("optimizer"); o != nil {
			t.Optimizer = program.Optimizer{Kind: o.spec.kind, LR: o.f64("lr"), MinLR: o.f64("min_lr"),
				WeightDecay: o.f64("weight_decay"), Beta1: o.f64("beta1"), Beta2: o.f64("beta2"), Eps: o.f64("eps"),
				Warmup: o.i64("warmup"), Schedule: o.str("schedule"), ClipNorm: o.f64("clip")}
			if o.spec.kind == "sgd" {
				t.Optimizer.Beta1 = o.f64("momentum")
			}
		}
		if m := s.call("memory"); m != nil {
			t.Memory = program.MemoryStrategy{Kind: program.MemoryKind(m.spec.kind), ZeROStage: m.int("stage"), Offload: program.Offload(m.str("offload")),
				CachePage: m.i64("page"), Eviction: program.Eviction(m.str("eviction"))}
			if m.spec.kind == "zero" && m.written("bucket") {
				t.Memory.GradBucket = m.i64("bucket")
			}
			if m.spec.kind == "unified_cache" {
				// AngelPTM's unified cache pages every model state between GPU and CPU
				// memory: partitioned like ZeRO-3, with the CPU as the backing store.
				t.Memory.ZeROStage, t.Memory.Offload = 3, "cpu"
			}
			if t.Memory.Offload == "nvme" && cluster != nil && cluster.scope != nil && ok(cluster.scope, "nvme") &&
				cluster.scope.i64("nvme") == 0 {
				dg := c.errorf(diag.CodeBadMemory, s.rangeOf("memory"), "offload = nvme, but cluster %s has no nvme", cluster.name)
				dg.Suggestion = "add `nvme = 4TB` to the cluster, or offload = cpu"
			}
		}
		t.Memory.Recompute = program.Recompute(s.str("recompute"))
		if ok(s, "tokens_per_batch", "seq_len") && t.SeqLen > 0 && t.TokensPerBatch%t.SeqLen != 0 {
			n := t.TokensPerBatch / t.SeqLen
			dg := c.r.diags.Warnf(diag.CodePartialBatch, s.rangeOf("tokens_per_batch"), "tokens_per_batch (%d) is not a whole number of sequences of seq_len %d", t.TokensPerBatch, t.SeqLen)
			dg.Notes = append(dg.Notes, fmt.Sprintf("a batch holds whole sequences: %d x %d = %d tokens", n, t.SeqLen, n*t.SeqLen))
			dg.Suggestion = fmt.Sprintf("write %d * %d or %d * %d", n, t.SeqLen, n+1, t.SeqLen)
		}
		if seqs := t.TokensPerBatch / max(t.SeqLen, 1); ok(s, "micro_batch") && t.MicroBatch > 0 && t.SeqLen > 0 && seqs > 0 && seqs%int64(t.MicroBatch) != 0 {
			// grad_accum is whole micro-batches, so the step would run more sequences than
			// the batch holds: a different batch, tokens per step and schedule.
			m := int64(t.MicroBatch)
			accum := (seqs + m - 1) / m
			dg := c.r.diags.Warnf(diag.CodeRaggedMicroBatch, s.rangeOf("micro_batch"), "micro_batch (%d) does not divide the %d sequences of a batch", t.MicroBatch, seqs)
			dg.Notes = append(dg.Notes, fmt.Sprintf("a step runs whole micro-batches: %d x %d = %d sequences, not %d", accum, m, accum*m, seqs))
			dg.Suggestion = "use a micro_batch that divides " + fmt.Sprint(seqs) + divisorsNote(seqs)
		}
		if model != nil && model.scope != nil {
			c.checkLearnedLength(model, s, "seq_len", t.SeqLen)
		}
		d.prov = s.provenance(nil)
		t.Stages = c.resolveStages(d, s, fb.named, model)
		c.prog.Trains[d.name] = t
		c.prog.TrainOrder = append(c.prog.TrainOrder, d.name)
	}
}

// resolveStages checks a curriculum: names, the `from` graph (known stages, no cycle),
// expert counts that only grow (with a grow rule when they do), and budgets. It returns
// the stages parents first.
func (c *checker) resolveStages(d *decl, train *scope, blocks []*ast.Block, model *decl) []*program.Stage {
	spec := c.schema.blocks["stage"]
	var stages []*stageInfo
	byName := map[string]*stageInfo{}
	for _, b := range blocks {
		c.checkHeader(spec, b, d.file)
		if b.Name == nil {
			continue
		}
		if prev := byName[b.Name.Name]; prev != nil {
			dg := c.errorf(diag.CodeDuplicateDecl, diag.RangeOf(d.file, b.Name), "stage %s is declared twice in train %s", b.Name.Name, d.name)
			dg.Label(diag.RangeOf(d.file, prev.block.Name), "first declared here")
			continue
		}
		fb := newFlatBlock()
		path := train.path + ".stage " + b.Name.Name
		c.readBody(spec, path, b.Body, d.file, fb)
		st := &stageInfo{block: b, scope: newScope(path, spec, d.file, b.Name, fb.entries, train), leaf: true, index: len(stages)}
		c.linkStudent(st, d)
		byName[b.Name.Name] = st
		stages = append(stages, st)
	}
	var names []string
	for _, st := range stages {
		names = append(names, st.block.Name.Name)
	}
	for _, st := range stages {
		if f := st.block.From; f != nil {
			if st.from = byName[f.Name]; st.from == nil && st.block.Distill != nil {
				dg := c.errorf(diag.CodeDistillUnknownTeacher, diag.RangeOf(d.file, f), "stage %s distills from unknown stage `%s`", st.block.Name.Name, f.Name)
				dg.Suggestion = didYouMean(f.Name, names)
			} else if st.from == nil {
				dg := c.errorf(diag.CodeUnknownFromStage, diag.RangeOf(d.file, f), "stage %s starts from unknown stage `%s`", st.block.Name.Name, f.Name)
				dg.Suggestion = didYouMean(f.Name, names)
			}
		}
	}
	c.findStageCycles(d, stages)
	for _, st := range stages {
		if st.from != nil && !st.cyclic {
			st.scope.links["from"] = st.from.scope
			if st.block.Distill == nil { // a student is a model of its own, not the teacher's continuation
				st.from.leaf = false
			}
		}
	}
	ordered := topoStages(stages)
	var out []*program.Stage
	built := map[string]*program.Stage{}
	for _, st := range ordered {
		before := c.errorCount()
		c.r.evalAll(st.scope)
		d.prov = st.scope.provenance(d.prov)
		ps := c.checkStage(st, model)
		if st.block.Distill != nil || writesAny(st.scope, distillKeys[:]) {
			c.checkDistill(st, ps, built, d.name, before)
		}
		built[ps.Name] = ps
		out = append(out, ps)
		// A stage with more experts than the model's moe block is a model of its own size
		// (program.StageModel): it is counted, and planned, at that size.
		if m := c.prog.Models[d.name]; model != nil && model.counted && m != nil && m.MoE != nil && ps.Experts > m.MoE.Experts && c.errorCount() == before {
			c.countModel(program.StageModel(m, ps), st.scope.rangeOf("experts"), "stage "+ps.Name+" of model "+m.Name)
		}
	}
	if last := lastLeaf(ordered); last != nil && model != nil && model.scope != nil {
		if moe := model.scope.sections["moe"]; moe != nil && ok(moe, "experts") && ok(last.scope, "experts") &&
			moe.i64("experts") != last.scope.i64("experts") {
			dg := c.r.diags.Warnf(diag.CodeLastStageSize, diag.RangeOf(d.file, last.block.Name), "the last stage %s ends with %d experts, but model %s has moe.experts = %d",
				last.block.Name.Name, last.scope.i64("experts"), model.name, moe.i64("experts"))
			dg.Notes = append(dg.Notes, "the model's moe.experts is the size it is counted, planned and served at")
		}
	}
	return out
}

// findStageCycles marks stages whose `from` chain loops and reports each loop once. Each
// stage is walked once: a walk stops at a stage an earlier walk finished, and a loop is
// a stage met again on the walk still under way.
func (c *checker) findStageCycles(d *decl, stages []*stageInfo) {
	const (
		onWalk = 1
		walked = 2
	)
	state := make(map[*stageInfo]int, len(stages))
	walkIndex := make(map[*stageInfo]int)
	var walk []*stageInfo
	for _, st := range stages {
		walk = walk[:0]
		cur := st
		for cur != nil && state[cur] == 0 {
			state[cur], walkIndex[cur] = onWalk, len(walk)
			walk = append(walk, cur)
			cur = cur.from
		}
		if cur != nil && state[cur] == onWalk {
			loop := walk[walkIndex[cur]:]
			var names []string
			for _, l := range loop {
				l.cyclic = true
				names = append(names, l.block.Name.Name)
			}
			names = append(names, cur.block.Name.Name)
			dg := c.errorf(diag.CodeStageCycle, diag.RangeOf(d.file, loop[0].block.From), "stages start from each other in a cycle: %s", strings.Join(names, " from "))
			dg.Suggestion = "one stage must start the curriculum without `from`"
		}
		for _, w := range walk {
			state[w] = walked
		}
	}
}

// topoStages orders stages so each comes after the stage it starts from, keeping
// declaration order otherwise: the order of repeated passes over the declarations, each
// placing the stages whose `from` is already placed (cyclic stages and first stages are
// placed by the first pass). A stage is placed by its parent's pass when it is declared
// after its parent, else by the pass after, so every stage's pass is found in one walk
// up its chain and the order is a sort by (pass, declaration).
func topoStages(stages []*stageInfo) []*stageInfo {
	pass := make(map[*stageInfo]int, len(stages))
	index := make(map[*stageInfo]int, len(stages))
	for i, st := range stages {
		index[st] = i
	}
	var chain []*stageInfo
	for _, st := range stages {
		chain = chain[:0]
		cur := st
		for pass[cur] == 0 {
			if cur.cyclic || cur.from == nil {
				pass[cur] = 1
				break
			}
			chain = append(chain, cur)
			cur = cur.from
		}
		for i := len(chain) - 1; i >= 0; i-- {
			s := chain[i]
			pass[s] = pass[s.from]
			if index[s.from] > index[s] {
				pass[s]++
			}
		}
	}
	out := append([]*stageInfo(nil), stages...)
	sort.SliceStable(out, func(i, j int) bool { return pass[out[i]] < pass[out[j]] })
	return out
}

func lastLeaf(stages []*stageInfo) *stageInfo {
	for i := len(stages) - 1; i >= 0; i-- {
		if stages[i].leaf && !stages[i].cyclic && stages[i].block.Distill == nil {
			return stages[i]
		}
	}
	return nil
}

// checkStage builds a program.Stage and checks it against the stage it starts from.
func (c *checker) checkStage(st *stageInfo, model *decl) *program.Stage {
	s := st.scope
	out := &program.Stage{Name: st.block.Name.Name, Experts: s.int("experts"), TopK: s.int("top_k"),
		Tokens: s.i64("tokens"), Steps: s.i64("steps"), LR: s.f64("lr"), Decl: declSource(s.file, st.block)}
	if st.from != nil {
		out.From = st.from.block.Name.Name
	}
	if g := s.call("grow"); g != nil {
		out.Grow = program.Grow{Kind: g.spec.kind, Noise: g.f64("noise")}
	}
	nameRange := diag.RangeOf(s.file, st.block.Name)
	if st.from != nil && !st.cyclic && st.block.Distill == nil && ok(s, "experts") && ok(st.from.scope, "experts") {
		prev := st.from.scope.int("experts")
		switch {
		case out.Experts < prev:
			dg := c.errorf(diag.CodeExpertsShrink, s.rangeOf("experts"), "stage %s has %d experts, fewer than the %d of stage %s it starts from", out.Name, out.Experts, prev, out.From)
			dg.Suggestion = "experts can only grow along a curriculum"
		case out.Experts > prev && !s.written("grow"):
			dg := c.errorf(diag.CodeGrowMissing, nameRange, "stage %s grows experts from %d to %d but says not how", out.Name, prev, out.Experts)
			dg.Suggestion = "add `grow = copy(noise = 0.01)` or `grow = random`"
		}
	}
	if st.student != nil {
		model = st.student // a distill stage's experts are its student's
	}
	if model != nil && model.scope != nil && model.scope.sections["moe"] == nil && ok(s, "experts") && out.Experts > 1 {
		dg := c.errorf(diag.CodeStageExpertsOnDense, s.rangeOf("experts"), "stage %s has %d experts, but model %s has no moe block", out.Name, out.Experts, model.name)
		dg.Suggestion = "add a `moe { experts = ... }` block to the model"
	}
	if ok(s, "top_k", "experts") && out.TopK > out.Experts {
		dg := c.errorf(diag.CodeStageTopK, s.rangeOf("top_k"), "stage %s routes each token to %d experts but has only %d", out.Name, out.TopK, out.Experts)
		dg.Suggestion = fmt.Sprintf("use top_k <= %d", out.Experts)
	}
	// A stage cut short by a syntax error may have lost the budget it wrote.
	if ok(s, "tokens", "steps") && out.Tokens == 0 && out.Steps == 0 && !st.block.Broken {
		dg := c.errorf(diag.CodeNoBudget, nameRange, "stage %s has no budget", out.Name)
		dg.Suggestion = "add `tokens = 100M` (or `steps = ...`)"
	}
	return out
}

// checkLearnedLength: a learned position table has max_position rows, so a train or
// serve block may not run longer sequences than that. Only a length the block writes is
// checked: an unwritten one is the model's seq_len, and a model whose seq_len exceeds its
// own table is reported once, by the model (validateModel).
func (c *checker) checkLearnedLength(model *decl, s *scope, key string, length int64) {
	m := c.prog.Models[model.name]
	if m == nil || m.Position != program.Learned || !s.written(key) || !ok(model.scope, "max_position") || !ok(s, key) || length <= m.MaxPosition {
		return
	}
	dg := c.errorf(diag.CodeShortPositionTable, s.rangeOf(key), "%s %d exceeds model %s's learned position table (max_position = %d)", key, length, m.Name, m.MaxPosition)
	dg.Suggestion = fmt.Sprintf("use %s <= %d, or raise the model's max_position", key, m.MaxPosition)
}

// divisorsNote lists the small divisors of n, for a suggestion: " (1, 2, 4 or 8)".
func divisorsNote(n int64) string {
	var ds []string
	for d := int64(1); d <= n && d <= 64 && len(ds) < 8; d++ {
		if n%d == 0 {
			ds = append(ds, fmt.Sprint(d))
		}
	}
	if len(ds) < 2 {
		return ""
	}
	return " (" + strings.Join(ds[:len(ds)-1], ", ") + " or " + ds[len(ds)-1] + ")"
}
