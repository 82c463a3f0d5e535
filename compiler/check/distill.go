package check

import (
	"fmt"
	"math/big"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// distillKeys are the stage keys only a distill stage (`stage NAME distill from TEACHER`)
// reads.
var distillKeys = [...]string{"temperature", "soft_weight", "hard_weight", "model", "init"}

// linkStudent finds the model a distill stage's `model = NAME` names, before the stage is
// evaluated: the stage's experts default to the student's.
func (c *checker) linkStudent(st *stageInfo, d *decl) {
	e := st.scope.entries["model"]
	if st.block.Distill == nil || e == nil {
		return
	}
	id, isIdent := e.expr.(*ast.Ident)
	if !isIdent {
		return // the key's type check reports it
	}
	st.student = c.lookupDecl("model", id.Name, diag.CodeUnknownModel, d.file, id, st.scope.path+" model")
	if st.student != nil && st.student.scope != nil {
		st.scope.links["student"] = st.student.scope
	}
}

// modelExperts is a model's routed experts (1 for a dense model): a distill stage's
// default when it names its student's model.
func modelExperts(r *resolver, model *scope) (value, string, bool) {
	if moe := model.sections["moe"]; moe != nil {
		v, ok := r.get(moe, "experts")
		return v, model.path + ".moe.experts", ok
	}
	return numValue(big.NewRat(1, 1), dimNone), model.path + " (dense)", true
}

// checkDistill checks a stage that distills, or writes a distillation key: the teacher
// (a stage declared before it, so trained first), the loss's temperature and weights, and
// a student that predicts the teacher's vocabulary; it sets ps.Distill and counts the
// student. built holds the stages checked so far (every teacher comes before its
// student); before is the error count when the stage's checks began.
func (c *checker) checkDistill(st *stageInfo, ps *program.Stage, built map[string]*program.Stage, trainModel string, before int) {
	s := st.scope
	name := st.block.Name.Name
	if st.block.Distill == nil {
		for _, k := range distillKeys {
			if s.written(k) {
				dg := c.errorf(diag.CodeDistillMisplaced, s.rangeOf(k), "stage %s does not distill, so %s has nothing to weigh", name, k)
				dg.Suggestion = fmt.Sprintf("write `stage %s distill from TEACHER { ... }`, or drop %s", name, k)
			}
		}
		return
	}
	if st.block.From == nil {
		dg := c.errorf(diag.CodeDistillMisplaced, diag.RangeOf(s.file, st.block.Distill), "stage %s distills but names no teacher", name)
		dg.Suggestion = fmt.Sprintf("write `stage %s distill from TEACHER`, TEACHER an earlier stage", name)
		return
	}
	if s.written("grow") {
		dg := c.errorf(diag.CodeDistillMisplaced, s.rangeOf("grow"), "stage %s distills: its student starts from its own initialisation, and grow says how a stage continues the one it starts from", name)
		dg.Suggestion = "drop grow"
	}
	if st.from == nil || st.cyclic {
		return // reported: an unknown teacher, or a cycle
	}
	teacher := st.from.block.Name.Name
	if st.from.index > st.index {
		dg := c.errorf(diag.CodeDistillTeacherLater, diag.RangeOf(s.file, st.block.From), "stage %s distills from stage %s, which is declared after it", name, teacher)
		dg.Notes = append(dg.Notes, "the teacher's final checkpoint is what the student learns from: it is trained first")
		dg.Suggestion = fmt.Sprintf("declare stage %s before stage %s", teacher, name)
	}
	ps.Distill = &program.Distill{Temperature: program.DefaultDistillTemperature, SoftWeight: program.DefaultDistillSoftWeight, HardWeight: program.DefaultDistillHardWeight}
	if s.written("temperature") {
		ps.Distill.Temperature = s.f64("temperature")
	}
	if s.written("soft_weight") {
		ps.Distill.SoftWeight = s.f64("soft_weight")
	}
	if s.written("hard_weight") {
		ps.Distill.HardWeight = s.f64("hard_weight")
	}
	ps.Distill.InitFromTeacher = s.str("init") == "teacher"
	valid := func(k string) bool { return !s.written(k) || ok(s, k) } // an invalid weight is reported already
	if valid("soft_weight") && valid("hard_weight") && ps.Distill.SoftWeight == 0 && ps.Distill.HardWeight == 0 {
		dg := c.errorf(diag.CodeDistillWeights, diag.RangeOf(s.file, st.block.Name), "stage %s weighs both its losses zero: it would train nothing", name)
		dg.Suggestion = "give soft_weight (the teacher's targets) or hard_weight (the labels) a positive weight"
	}
	base := c.prog.Models[trainModel]
	if st.student != nil {
		ps.Distill.Student = c.prog.Models[st.student.name]
		if ps.Distill.Student == nil {
			return // the student's model has errors of its own
		}
	}
	from := built[teacher]
	if base == nil || from == nil {
		return
	}
	tm, sm := program.StageModel(base, from), program.StageModel(base, ps)
	if tm.Vocab != sm.Vocab {
		rng := diag.RangeOf(s.file, st.block.Name)
		if s.written("model") {
			rng = s.rangeOf("model")
		}
		dg := c.errorf(diag.CodeDistillVocab, rng, "stage %s's student (model %s) has vocab %d, but its teacher, stage %s (model %s), has vocab %d", name, sm.Name, sm.Vocab, teacher, tm.Name, tm.Vocab)
		dg.Notes = append(dg.Notes, "the soft targets are the teacher's distributions over its vocabulary: the student must predict the same tokens")
		dg.Suggestion = fmt.Sprintf("give model %s vocab = %d", sm.Name, tm.Vocab)
	}
	if c.errorCount() == before {
		c.countModel(sm, s.rangeOf("experts"), "stage "+name+"'s student (model "+sm.Name+")")
	}
}

// writesAny reports whether s writes one of keys.
func writesAny(s *scope, keys []string) bool {
	for _, k := range keys {
		if s.written(k) {
			return true
		}
	}
	return false
}
