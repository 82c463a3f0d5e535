package gogen

import (
	"errors"
	"fmt"

	"github.com/moec-dev/moec/codegen"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/data"
)

// Config is everything the generated program bakes in: one stage of one train block.
type Config struct {
	Name       string         // codegen.Ident(model, stage): the only spelling of the names in generated code
	Model      *program.Model // the stage's model (program.StageModel)
	Optimizer  program.Optimizer
	StageLR    float64 // the stage's own learning rate (0 = the optimizer's)
	Data       string  // training text glob, as written in the train block
	ValData    string  // validation text glob ("" = held out from Data)
	Seed       int64
	Steps      int64
	SeqLen     int
	MicroBatch int // sequences per micro-batch
	Accum      int // micro-batches per optimizer step
	// Grow is the stage's growth rule and FromStage the sanitised name of the stage it
	// grows from ("" for a first stage); the program then starts from -from CHECKPOINT.
	Grow      program.Grow
	FromStage string
	// TeacherStage is, for a distillation stage, the sanitised name of the stage it
	// distills from (FromStage is then ""): the step program's teacher, whose final
	// checkpoint the program takes from -from. InitFromTeacher marks a student started from
	// the teacher's tensors (init = teacher), which the Go form does not write.
	TeacherStage    string
	InitFromTeacher bool
	// SourceDir is the .moe file's folder as seen from the generated go/ folder (slash-
	// separated; absolute only when no relative path exists), which the program takes
	// relative data globs from unless -base says otherwise, as `moec run` takes them from
	// the .moe file's folder. "" (ConfigFor leaves it so; Emit sets it from
	// Options.SourceDir) makes the working directory the default base.
	SourceDir string
	// Products is the precision of the weight products (the train block's CPUProducts):
	// "" float32, BF16 bfloat16 products with float32 sums, FP16 half products with the
	// dynamic loss scale (Megatron-Core's, runtime/optim.LossScale), which only the step
	// program's Go form runs.
	Products program.Precision
}

// ConfigFor resolves a stage as `moec run` does (runtime/train): sequence length, micro-
// batch (the train block's, else at most 8 sequences), accumulation to reach
// tokens_per_batch, and steps (the stage's, else its tokens over tokens per step).
// TestConfigMatchesRun holds it to train.Run's run.json.
func ConfigFor(prog *program.Program, tr *program.Train, st *program.Stage) (Config, error) {
	if prog == nil || tr == nil || st == nil {
		return Config{}, errors.New("gogen: nil program, train or stage")
	}
	base, ok := prog.Models[tr.Model]
	if !ok {
		return Config{}, fmt.Errorf("gogen: train %s trains an undeclared model", codegen.Ident(tr.Name, ""))
	}
	m := program.StageModel(base, st)
	c := Config{Name: codegen.Ident(tr.Model, st.Name), Model: m, Optimizer: tr.Optimizer, StageLR: st.LR,
		Data: tr.Data, ValData: tr.ValData, Seed: tr.Seed, Grow: st.Grow, Products: tr.CPUProducts}
	switch {
	case st.Distill != nil:
		c.TeacherStage, c.InitFromTeacher = codegen.SanitizePath(st.From), st.Distill.InitFromTeacher
	case st.From != "":
		c.FromStage = codegen.SanitizePath(st.From)
	}
	if m.Vocab < data.Vocab {
		return c, fmt.Errorf("gogen: model %s has vocab %d; byte-level training data needs at least %d", c.Name, m.Vocab, data.Vocab)
	}
	c.SeqLen = int(tr.SeqLen)
	if c.SeqLen <= 0 {
		c.SeqLen = int(m.SeqLen)
	}
	if c.SeqLen <= 0 {
		return c, fmt.Errorf("gogen: train %s has no sequence length", c.Name)
	}
	c.MicroBatch = tr.MicroBatch
	seqs := max(tr.TokensPerBatch/int64(c.SeqLen), 1)
	if c.MicroBatch <= 0 {
		c.MicroBatch = int(min(seqs, 8))
	}
	c.Accum = int(max((seqs+int64(c.MicroBatch)-1)/int64(c.MicroBatch), 1))
	c.Steps = st.Steps
	if c.Steps <= 0 {
		c.Steps = program.StepsFor(st.Tokens, int64(c.SeqLen)*int64(c.MicroBatch)*int64(c.Accum))
	}
	if c.Steps <= 0 {
		return c, fmt.Errorf("gogen: stage %s sets neither steps nor tokens", c.Name)
	}
	return c, nil
}
