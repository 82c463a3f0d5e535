package train

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/nn"
)

// TestCurriculum trains the dense stage, then grows it into the MoE stage, and checks the
// run directories, the log, the checkpoints and that the loss goes down.
func TestCurriculum(t *testing.T) {
	root := t.TempDir()
	p := tinyProgram()
	var out bytes.Buffer
	res, err := Run(context.Background(), Options{Program: p, StageName: "dense", OutRoot: root, Progress: &out})
	if err != nil {
		t.Fatal(err)
	}
	if res.Steps != 8 || res.Tokens != 8*256 || res.Resumed || res.Stopped {
		t.Errorf("result %+v", res)
	}
	if !(res.ValPPL > 1 && res.ValPPL < 256) {
		t.Errorf("validation perplexity %v", res.ValPPL)
	}
	recs, err := ReadLog(res.LogPath)
	if err != nil || len(recs) != 8 {
		t.Fatalf("log: %d records, %v", len(recs), err)
	}
	if !(recs[7].Loss < recs[0].Loss-0.3) {
		t.Errorf("loss did not fall: %v -> %v", recs[0].Loss, recs[7].Loss)
	}
	if recs[0].LR >= recs[1].LR || recs[0].GradNorm <= 0 || recs[7].Tokens != 8*256 {
		t.Errorf("first records %+v %+v", recs[0], recs[1])
	}
	for _, f := range []string{SpecFile, LogFile, PlotFile, ResultFile} {
		if _, err := os.Stat(filepath.Join(res.Dir, f)); err != nil {
			t.Error(err)
		}
	}
	all, _ := checkpoint.Complete(filepath.Join(res.Dir, CheckpointsDir))
	if len(all) != 2 || filepath.Base(all[1]) != "step-00000008" {
		t.Errorf("checkpoints %v", all)
	}
	if !strings.Contains(out.String(), "step 8/8") || !strings.Contains(out.String(), "validation: loss") {
		t.Errorf("progress output:\n%s", out.String())
	}

	// The MoE stage grows from the dense stage's final checkpoint.
	res2, err := Run(context.Background(), Options{Program: p, StageName: "moe", OutRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	recs2, err := ReadLog(res2.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	// Grown from a trained model, the first MoE step starts near where dense ended.
	if math.Abs(recs2[0].CE-recs[7].CE) > 0.3 {
		t.Errorf("MoE stage starts at CE %v, dense ended at %v", recs2[0].CE, recs[7].CE)
	}
	if len(recs2[0].ExpertTokens) != 2 || len(recs2[0].ExpertTokens[0]) != 4 {
		t.Errorf("expert token counts %v", recs2[0].ExpertTokens)
	}
	sum := 0
	for _, n := range recs2[0].ExpertTokens[0] {
		sum += n
	}
	if sum != 256 {
		t.Errorf("layer 0 routed %d tokens, want 256", sum)
	}

	// An explicit From: the dense checkpoint given by its run directory; the wrong stage's
	// checkpoint is refused.
	if _, err := Run(context.Background(), Options{Program: p, StageName: "moe", OutDir: t.TempDir(), From: res.Dir, Steps: 1}); err != nil {
		t.Errorf("moe from an explicit dense run dir: %v", err)
	}
	if _, err := Run(context.Background(), Options{Program: p, StageName: "moe", OutDir: t.TempDir(), From: res2.Dir, Steps: 1}); diag.CodeOf(err) != diag.CodeBadGrowth {
		t.Errorf("moe from the moe stage's own checkpoint: %v", err)
	}

	// Eval of the final checkpoint agrees with the run's own validation.
	ev, err := Eval(context.Background(), EvalOptions{Checkpoint: res2.Dir})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(ev.PPL-res2.ValPPL) > 1e-9*res2.ValPPL || ev.Step != 8 {
		t.Errorf("Eval = %+v, run said ppl %v", ev, res2.ValPPL)
	}
}

func TestRunErrors(t *testing.T) {
	root := t.TempDir()
	cases := []struct {
		name   string
		mutate func(o *Options)
		code   diag.Code
		want   string
	}{
		{"unknown stage", func(o *Options) { o.StageName = "dens" }, diag.CodeUnknownStage, "did you mean `dense`?"},
		{"unknown train", func(o *Options) { o.TrainName = "tinyy" }, diag.CodeUnknownTrain, "did you mean `tiny`?"},
		{"no from checkpoint", func(o *Options) { o.StageName = "moe" }, diag.CodeNoFromCheckpoint, "no final checkpoint"},
		{"empty corpus", func(o *Options) { o.Program.Trains["tiny"].Data = "$GOROOT/src/strings/*.nothing" }, diag.CodeEmptyCorpus, "matches no files"},
		{"small vocab", func(o *Options) { o.Program.Models["tiny"].Vocab = 100 }, diag.CodeVocabTooSmall, "vocab 100"},
		{"unsupported", func(o *Options) {
			// nn's feature set grows; what is checked here is how its refusal is reported.
			o.NewNet = func(*program.Model, int64) (Net, error) {
				return nil, &nn.UnsupportedError{Feature: "time travel (moe.time_travel)"}
			}
		}, diag.CodeUnsupportedFeature, "does not support time travel"},
		{"no steps", func(o *Options) { o.Program.Trains["tiny"].Stages[0].Steps = 0; o.Steps = 0 }, diag.CodeBadRunOption, "neither steps nor tokens"},
		{"resume nothing", func(o *Options) { o.Resume = filepath.Join(root, "nope") }, diag.CodeBadRunOption, "not a run directory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := Options{Program: tinyProgram(), StageName: "dense", OutRoot: filepath.Join(root, c.name), Steps: 1}
			c.mutate(&o)
			_, err := Run(context.Background(), o)
			if diag.CodeOf(err) != c.code || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want %s containing %q", err, c.code, c.want)
			}
		})
	}
}

// TestOutputDirGuard checks that a finished run is never overwritten by accident.
func TestOutputDirGuard(t *testing.T) {
	dir := t.TempDir()
	p := tinyProgram()
	if _, err := Run(context.Background(), Options{Program: p, StageName: "dense", OutDir: dir, Steps: 2}); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "notes.txt")
	os.WriteFile(other, []byte("mine"), 0o644)
	before, _ := os.ReadFile(filepath.Join(dir, LogFile))
	_, err := Run(context.Background(), Options{Program: p, StageName: "dense", OutDir: dir, Steps: 2})
	if diag.CodeOf(err) != diag.CodeOutputExists {
		t.Fatalf("second run into the same dir: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, LogFile))
	if !bytes.Equal(before, after) {
		t.Error("refused run touched the log")
	}
	// --force starts over but leaves files a run does not write.
	if _, err := Run(context.Background(), Options{Program: p, StageName: "dense", OutDir: dir, Steps: 3, Force: true}); err != nil {
		t.Fatal(err)
	}
	if recs, _ := ReadLog(filepath.Join(dir, LogFile)); len(recs) != 3 {
		t.Errorf("forced run log has %d records", len(recs))
	}
	if b, _ := os.ReadFile(other); string(b) != "mine" {
		t.Error("--force removed a user's file")
	}
	// Resuming a finished run with a different program is refused.
	p.Trains["tiny"].Optimizer.LR = 1e-3
	if _, err := Run(context.Background(), Options{Program: p, Resume: dir}); diag.CodeOf(err) != diag.CodeCheckpointMismatch {
		t.Errorf("resume with a changed program: %v", err)
	}
}

// cancelNet cancels the run's context during a given step, as Ctrl-C would.
type cancelNet struct {
	Net
	cancel func()
	at     int64
}

func (c cancelNet) ForwardBackward(b nn.Batch, o nn.StepOptions) (nn.Stats, error) {
	if o.Step == c.at {
		c.cancel()
	}
	return c.Net.ForwardBackward(b, o)
}

// TestCancelAndResume stops a run through its context, then resumes it, and compares the
// log with an uninterrupted run's.
func TestCancelAndResume(t *testing.T) {
	root := t.TempDir()
	ref, err := Run(context.Background(), Options{Program: tinyProgram(), StageName: "dense", OutDir: filepath.Join(root, "ref")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := filepath.Join(root, "stopped")
	res, err := Run(ctx, Options{Program: tinyProgram(), StageName: "dense", OutDir: dir,
		NewNet: func(m *program.Model, seed int64) (Net, error) {
			n, err := newNNNet(m, seed)
			return cancelNet{n, cancel, 4}, err
		}})
	if err != context.Canceled || !res.Stopped || res.Steps != 5 || filepath.Base(res.Checkpoint) != checkpoint.DirName(5) {
		t.Fatalf("cancelled run: %+v, %v", res, err)
	}
	if _, err := Run(context.Background(), Options{Resume: dir}); err != nil {
		t.Fatal(err)
	}
	want, _ := ReadLog(ref.LogPath)
	got, _ := ReadLog(filepath.Join(dir, LogFile))
	if len(got) != len(want) {
		t.Fatalf("%d records after resume, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Loss != want[i].Loss || got[i].GradNorm != want[i].GradNorm {
			t.Errorf("step %d: loss %v grad norm %v, uninterrupted %v %v", i+1, got[i].Loss, got[i].GradNorm, want[i].Loss, want[i].GradNorm)
		}
	}
}

// TestResumeRefusesCorruptCheckpoint flips one byte of the newest checkpoint and checks
// that resuming names the file instead of training from damaged weights.
func TestResumeRefusesCorruptCheckpoint(t *testing.T) {
	dir := t.TempDir()
	res, err := Run(context.Background(), Options{Program: tinyProgram(), StageName: "dense", OutDir: dir, Steps: 2})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(res.Checkpoint, checkpoint.OptimizerFile)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0x40
	os.WriteFile(p, b, 0o644)
	_, err = Run(context.Background(), Options{Resume: dir})
	if diag.CodeOf(err) != diag.CodeCorruptCheckpoint || !strings.Contains(err.Error(), "optimizer.safetensors has SHA-256") {
		t.Errorf("resume from a corrupt checkpoint: %v", err)
	}
	// A stage whose `from` stage stopped early has no final checkpoint to grow from.
	root := t.TempDir()
	p2 := tinyProgram()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, Options{Program: p2, StageName: "dense", OutRoot: root}); err != context.Canceled {
		t.Fatalf("cancelled dense run: %v", err)
	}
	if _, err := Run(context.Background(), Options{Program: p2, StageName: "moe", OutRoot: root}); diag.CodeOf(err) != diag.CodeNoFromCheckpoint {
		t.Errorf("growing from an unfinished stage: %v", err)
	}
}

// TestGradientAccumulation checks that a step split into two micro-batches of 4 sequences
// computes the same loss and gradient as one micro-batch of 8: the same windows, gradients
// summed and scaled by 1/2. (Dense stage: MoE balance losses are per micro-batch.)
func TestGradientAccumulation(t *testing.T) {
	run := func(micro int) []StepRecord {
		res, err := Run(context.Background(), Options{Program: tinyProgram(), StageName: "dense", OutDir: t.TempDir(), Steps: 3, MicroBatch: micro})
		if err != nil {
			t.Fatal(err)
		}
		recs, err := ReadLog(res.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	split, whole := run(4), run(8)
	for i := range whole {
		if math.Abs(split[i].Loss-whole[i].Loss) > 1e-5 || math.Abs(split[i].GradNorm-whole[i].GradNorm) > 1e-4*whole[i].GradNorm {
			t.Errorf("step %d: 2×4 gives loss %.7f grad norm %.6f, 1×8 gives %.7f %.6f",
				i+1, split[i].Loss, split[i].GradNorm, whole[i].Loss, whole[i].GradNorm)
		}
		if split[i].Tokens != whole[i].Tokens {
			t.Errorf("step %d: tokens %d vs %d", i+1, split[i].Tokens, whole[i].Tokens)
		}
	}
}

func TestMaxTime(t *testing.T) {
	dir := t.TempDir()
	res, err := Run(context.Background(), Options{Program: tinyProgram(), StageName: "dense", OutDir: dir, MaxTime: time.Nanosecond})
	if err != nil || !res.Stopped || res.Steps != 0 || res.Checkpoint == "" {
		t.Fatalf("MaxTime run: %+v, %v", res, err)
	}
	if !strings.Contains(res.String(), "--resume "+dir) {
		t.Errorf("summary %q does not say how to continue", res.String())
	}
	res, err = Run(context.Background(), Options{Resume: dir})
	if err != nil || res.Steps != 8 || !res.Resumed || res.ValPPL == 0 {
		t.Errorf("resumed: %+v, %v", res, err)
	}
}

// nanNet reports a NaN loss from a given step on, as a diverged model would.
type nanNet struct {
	Net
	at int64
}

func (n nanNet) ForwardBackward(b nn.Batch, o nn.StepOptions) (nn.Stats, error) {
	st, err := n.Net.ForwardBackward(b, o)
	if o.Step >= n.at {
		st.Loss = math.NaN()
	}
	return st, err
}

func TestDivergence(t *testing.T) {
	dir := t.TempDir()
	_, err := Run(context.Background(), Options{Program: tinyProgram(), StageName: "dense", OutDir: dir,
		NewNet: func(m *program.Model, seed int64) (Net, error) {
			n, err := newNNNet(m, seed)
			return nanNet{n, 5}, err
		}})
	if diag.CodeOf(err) != diag.CodeNonFiniteLoss || !strings.Contains(err.Error(), "step 6") {
		t.Fatalf("diverging run: %v", err)
	}
	// The checkpoint from before the divergence is intact and resumable.
	latest, _ := checkpoint.Latest(filepath.Join(dir, CheckpointsDir))
	if filepath.Base(latest) != checkpoint.DirName(4) {
		t.Errorf("latest checkpoint %q", latest)
	}
	if _, err := Run(context.Background(), Options{Resume: dir}); err != nil {
		t.Errorf("resume after divergence: %v", err)
	}
}

// TestResumeRefusesLostProgress: a run folder with logged steps but no complete checkpoint
// (a manifest deleted, or killed before its first checkpoint) is not retrained from step 0
// on --resume; its log stays as it was, and Restart is the explicit way to start over.
func TestResumeRefusesLostProgress(t *testing.T) {
	p := tinyProgram()
	dir := filepath.Join(t.TempDir(), "run")
	if _, err := Run(context.Background(), Options{Program: p, StageName: "dense", Steps: 3, OutDir: dir, ValWindows: 2}); err != nil {
		t.Fatal(err)
	}
	logBefore, err := os.ReadFile(filepath.Join(dir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, want string
		damage     func(t *testing.T)
	}{
		{"manifest deleted", "has no manifest.json", func(t *testing.T) {
			os.Remove(filepath.Join(dir, CheckpointsDir, checkpoint.DirName(3), checkpoint.ManifestFile))
		}},
		{"no checkpoint", "records 3 steps but there is no checkpoint", func(t *testing.T) {
			os.RemoveAll(filepath.Join(dir, CheckpointsDir))
		}},
	} {
		c.damage(t)
		_, err := Run(context.Background(), Options{Resume: dir})
		if diag.CodeOf(err) != diag.CodeCorruptCheckpoint || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: resume gave %v, want %s naming %q", c.name, err, diag.CodeCorruptCheckpoint, c.want)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, LogFile)); string(b) != string(logBefore) {
			t.Errorf("%s: the refused resume changed log.jsonl", c.name)
		}
	}
	res, err := Run(context.Background(), Options{Resume: dir, Restart: true, ValWindows: 2})
	if err != nil || res.Steps != 3 || res.Trained != 3 {
		t.Fatalf("restart: %+v, %v", res, err)
	}
}
