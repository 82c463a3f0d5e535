package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/data"
)

// Spec is a run's resolved configuration, saved as run.json so that a run can be resumed
// from its directory alone.
type Spec struct {
	Format          int            `json:"format"`
	Train           *program.Train `json:"train"`
	Stage           string         `json:"stage"`
	Model           *program.Model `json:"model"` // the stage's model
	Steps           int64          `json:"steps"`
	Seed            int64          `json:"seed"`
	SeqLen          int            `json:"seq_len"`
	MicroBatch      int            `json:"micro_batch"` // sequences per micro-batch
	Accum           int            `json:"accum"`       // micro-batches per step
	CheckpointEvery int64          `json:"checkpoint_every"`
	Keep            int            `json:"keep"`
	ValWindows      int            `json:"val_windows"`
	BaseDir         string         `json:"base_dir"`
	// OutRoot is the root of the conventional run folders; a stage with `from` finds its
	// from stage's checkpoint there, also when this run's own folder was chosen with --out.
	OutRoot string `json:"out_root"`
	OutDir  string `json:"out_dir,omitempty"` // the run folder --out chose ("" = the conventional one)
	From    string `json:"from,omitempty"`    // Options.From
	// GrownFrom is the checkpoint the stage's weights were grown from (set whether it came
	// from --from or from the from stage's conventional folder).
	GrownFrom string `json:"grown_from,omitempty"`
	// Teacher is a distillation stage's teacher checkpoint: its from stage's final one (or
	// --from's), which a resumed run loads again.
	Teacher string `json:"teacher,omitempty"`
	// Cluster is the train block's cluster, so the memory plan can be made again on resume
	// from the run folder alone.
	Cluster *program.Cluster `json:"cluster,omitempty"`
	// Layout is how the run was last sharded; a resume without layout flags runs it again.
	Layout *LayoutSpec `json:"layout,omitempty"`
}

// LayoutSpec records a run's layout and kernels in run.json. It is not part of the
// config hash: checkpoints are written in the single-rank layout and load under any.
type LayoutSpec struct {
	Ranks         int    `json:"ranks"`
	EP            int    `json:"ep"`
	ZeRO          int    `json:"zero"`
	Offload       bool   `json:"offload,omitempty"`
	CacheBudget   int64  `json:"cache_budget,omitempty"` // unified cache device bytes per rank (0 = no cache)
	CachePage     int64  `json:"cache_page,omitempty"`
	CacheEviction string `json:"cache_eviction,omitempty"`
	LLVM          string `json:"llvm,omitempty"` // the LLVM kernel library (--llvm), "" = Go kernels
	TP            int    `json:"tp,omitempty"`
	PP            int    `json:"pp,omitempty"`
	Program       bool   `json:"step_programs,omitempty"` // trained through step programs
	SP            bool   `json:"sequence_parallel,omitempty"`
}

// layoutSpec describes the layout a run uses: l (nil = one rank) with comm's world size
// when every rank is its own process.
func layoutSpec(l *Sharding, comm interface{ Size() int }, llvm string) *LayoutSpec {
	ls := &LayoutSpec{Ranks: 1, EP: 1, LLVM: llvm}
	if l != nil {
		ls.Ranks, ls.EP, ls.ZeRO, ls.Offload = max(l.Ranks, 1), max(l.EP, 1), l.ZeRO, l.Offload
		ls.TP, ls.PP, ls.Program, ls.SP = l.TP, l.PP, l.StepPrograms(), l.SP
		if l.Cache != nil {
			ls.CacheBudget, ls.CachePage, ls.CacheEviction = l.Cache.Budget, l.Cache.Page, l.Cache.Eviction
		}
	}
	if comm != nil {
		ls.Ranks = comm.Size()
	}
	return ls
}

// Layout returns the recorded layout (nil for a plain single-rank run or none recorded).
func (ls *LayoutSpec) Layout() *Sharding {
	if ls == nil || ls.Ranks <= 1 && ls.EP <= 1 && ls.ZeRO == 0 && !ls.Offload && ls.CacheBudget == 0 && !ls.Program {
		return nil
	}
	l := &Sharding{Ranks: max(ls.Ranks, 1), EP: max(ls.EP, 1), ZeRO: ls.ZeRO, Offload: ls.Offload, TP: ls.TP, PP: ls.PP, Program: ls.Program, SP: ls.SP}
	if ls.CacheBudget > 0 {
		l.Cache = &CacheConfig{Budget: ls.CacheBudget, Page: ls.CachePage, Eviction: ls.CacheEviction}
	}
	return l
}

// Program rebuilds, from run.json alone, a program holding the run's train block, its
// stage model and cluster: enough to plan the stage again (the memory prediction of a
// resumed run). The stage model is its own base: growing it by the stage changes nothing.
func (s *Spec) Program() (*program.Program, *program.Train, *program.Stage, error) {
	st, err := s.Train.LookupStage(s.Stage)
	if err != nil {
		return nil, nil, nil, err
	}
	p := &program.Program{
		Models:     map[string]*program.Model{s.Train.Model: s.Model},
		Clusters:   map[string]*program.Cluster{},
		Trains:     map[string]*program.Train{s.Train.Name: s.Train},
		ModelOrder: []string{s.Train.Model}, TrainOrder: []string{s.Train.Name},
	}
	if s.Cluster != nil {
		p.Clusters[s.Train.Cluster] = s.Cluster
		p.ClusterOrder = []string{s.Train.Cluster}
	}
	return p, s.Train, st, nil
}

// TokensPerStep is the training tokens of one optimizer step.
func (s *Spec) TokensPerStep() int64 { return int64(s.SeqLen) * int64(s.MicroBatch) * int64(s.Accum) }

// Hash covers everything that determines the numbers a run computes, and not where it
// writes or where its declarations are in the source (so a run resumes with the .moe file
// edited elsewhere, or read through another relative path).
func (s *Spec) Hash() (string, error) {
	b, err := json.Marshal(struct {
		Train                     *program.Train
		Stage                     string
		Model                     *program.Model
		Steps, Seed               int64
		SeqLen, MicroBatch, Accum int
	}{s.Train, s.Stage, s.Model, s.Steps, s.Seed, s.SeqLen, s.MicroBatch, s.Accum})
	if err != nil {
		return "", fmt.Errorf("train: hashing the run config: %w", err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return "", fmt.Errorf("train: hashing the run config: %w", err)
	}
	return checkpoint.ConfigHash(dropKey(v, "Decl"))
}

// dropKey removes every object member called key from a decoded JSON value.
func dropKey(v any, key string) any {
	switch x := v.(type) {
	case map[string]any:
		delete(x, key)
		for k, e := range x {
			x[k] = dropKey(e, key)
		}
	case []any:
		for i, e := range x {
			x[i] = dropKey(e, key)
		}
	}
	return v
}

// resolve builds the Spec of a new run from the program.
func resolve(opt *Options) (*Spec, *program.Stage, error) {
	t, st, err := Lookup(opt.Program, opt.TrainName, opt.StageName)
	if err != nil {
		return nil, nil, err
	}
	base, ok := opt.Program.Models[t.Model]
	if !ok {
		return nil, nil, diag.Runtimef(diag.CodeUnknownTrain, "train %s trains model %q, which the program does not declare", t.Name, t.Model)
	}
	m := program.StageModel(base, st)
	dataOpt, _, err := data.OptionsFor(t, opt.BaseDir)
	if err != nil {
		return nil, nil, err
	}
	if need := dataOpt.VocabNeeded(); m.Vocab < int64(need) {
		if dataOpt.Tokenizer == nil {
			return nil, nil, diag.Runtimef(diag.CodeVocabTooSmall, "model %s has vocab %d; byte-level training data needs at least %d", m.Name, m.Vocab, data.Vocab)
		}
		e := diag.Runtimef(diag.CodeVocabTooSmall, "model %s has vocab %d; its tokenizer %s has %d ids", m.Name, m.Vocab, t.Tokenizer, need)
		e.Subject = t.TokenizerDecl.Range()
		return nil, nil, e
	}
	s := &Spec{Format: 1, Train: t, Stage: st.Name, Model: m, Seed: t.Seed, BaseDir: opt.BaseDir,
		OutRoot: opt.OutRoot, OutDir: opt.OutDir, From: opt.From, Cluster: opt.Program.Clusters[t.Cluster], Keep: opt.Keep, ValWindows: opt.ValWindows, CheckpointEvery: t.CheckpointEvery}
	if s.OutRoot == "" {
		s.OutRoot = "out"
	}
	if s.Keep <= 0 {
		s.Keep = 2
	}
	if s.ValWindows <= 0 {
		s.ValWindows = 64
	}
	if opt.CheckpointEvery > 0 {
		s.CheckpointEvery = opt.CheckpointEvery
	}
	if opt.Seed != nil {
		s.Seed = *opt.Seed
	}
	s.SeqLen = int(t.SeqLen)
	if s.SeqLen <= 0 {
		s.SeqLen = int(m.SeqLen)
	}
	if s.SeqLen <= 0 {
		return nil, nil, diag.Runtimef(diag.CodeBadRunOption, "train %s has no sequence length", t.Name)
	}
	s.MicroBatch = opt.MicroBatch
	if s.MicroBatch <= 0 {
		s.MicroBatch = t.MicroBatch
	}
	seqs := max(t.TokensPerBatch/int64(s.SeqLen), 1) // sequences per optimizer step
	if s.MicroBatch <= 0 {
		s.MicroBatch = int(min(seqs, 8))
	}
	s.Accum = int(max((seqs+int64(s.MicroBatch)-1)/int64(s.MicroBatch), 1))
	s.Steps = opt.Steps
	if s.Steps <= 0 {
		s.Steps = st.Steps
	}
	if s.Steps <= 0 {
		s.Steps = program.StepsFor(st.Tokens, s.TokensPerStep())
	}
	if s.Steps <= 0 {
		return nil, nil, diag.Runtimef(diag.CodeBadRunOption, "stage %s sets neither steps nor tokens; pass --steps", st.Name)
	}
	return s, st, nil
}

// ReadSpec reads the run.json of run directory dir.
func ReadSpec(dir string) (*Spec, error) {
	b, err := os.ReadFile(filepath.Join(dir, SpecFile))
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeBadRunOption, err, "cannot resume %s: not a run directory", dir)
	}
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil || s.Train == nil || s.Model == nil {
		if err == nil {
			err = errors.New("missing train or model")
		}
		return nil, diag.RuntimeWrap(diag.CodeCorruptCheckpoint, err, "cannot resume %s: bad %s", dir, SpecFile)
	}
	return &s, nil
}

// prepareDir makes sure a new run may write to dir.
func prepareDir(dir string, force bool) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	held := 0 // what a run leaves that is no run: the folder's lock file
	for _, e := range ents {
		if e.Name() == LockFile {
			held++
		}
	}
	if len(ents) == held {
		return nil
	}
	if !force {
		return &diag.Diagnostic{Code: diag.CodeOutputExists,
			Summary:    fmt.Sprintf("run directory %s is not empty", dir),
			Suggestion: fmt.Sprintf("use --resume %s to continue it, --force to start over, or --out for another directory", dir)}
	}
	// Replace only what a run writes; leave anything else the user put there.
	for _, name := range []string{SpecFile, LogFile, PlotFile, ResultFile, CheckpointsDir, LogFile + ".tmp"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("train: %w", err)
		}
	}
	return nil
}

// String describes the layout as progress lines name it.
func (ls *LayoutSpec) String() string {
	if ls == nil {
		return "1 rank"
	}
	s := "1 rank"
	if ls.Ranks > 1 {
		s = fmt.Sprintf("%d ranks", ls.Ranks)
	}
	if ls.EP > 1 {
		s += fmt.Sprintf(", ep %d", ls.EP)
	}
	if ls.ZeRO > 0 {
		s += fmt.Sprintf(", zero %d", ls.ZeRO)
	}
	if ls.CacheBudget > 0 {
		s += fmt.Sprintf(", unified cache of %d bytes", ls.CacheBudget)
	} else if ls.Offload {
		s += ", offload"
	}
	if ls.LLVM != "" {
		s += ", LLVM kernels " + ls.LLVM
	}
	return s
}
