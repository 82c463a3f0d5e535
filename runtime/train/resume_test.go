package train

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/checkpoint"
)

// The child process protocol: TestTrainChild does nothing unless childEnv is set; then it
// trains (or resumes) the run in MOEC_CHILD_DIR, and before each checkpoint's model file
// is renamed into place it touches MOEC_CHILD_MARKER-<n> and sleeps, so the parent can kill
// it with SIGKILL in the middle of a checkpoint write.
const childEnv = "MOEC_TRAIN_CHILD"

const killSteps = 24

func killProgram() *program.Program {
	p := tinyProgram()
	p.Trains["tiny"].CheckpointEvery = 4
	return p
}

func TestTrainChild(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("helper process for TestResumeAfterKill")
	}
	dir := os.Getenv("MOEC_CHILD_DIR")
	marker := os.Getenv("MOEC_CHILD_MARKER")
	sleep, _ := time.ParseDuration(os.Getenv("MOEC_CHILD_SLEEP"))
	saves := 0
	opt := Options{Program: killProgram(), StageName: "dense", Steps: killSteps, OutDir: dir,
		CheckpointHook: func(point string) {
			if point != "file-written:"+checkpoint.ModelFile {
				return
			}
			saves++
			os.WriteFile(fmt.Sprintf("%s-%d", marker, saves), nil, 0o644)
			time.Sleep(sleep)
		}}
	if os.Getenv("MOEC_CHILD_RESUME") == "1" {
		opt.Resume = dir
	}
	if _, err := Run(context.Background(), opt); err != nil {
		t.Fatal(err)
	}
}

type child struct {
	cmd    *exec.Cmd
	marker string
	done   chan error
	reaped bool // kill has waited for the exit
}

func startChild(t *testing.T, dir string, resume bool, sleep time.Duration) *child {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "marker")
	cmd := exec.Command(os.Args[0], "-test.run=^TestTrainChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1", "MOEC_CHILD_DIR="+dir, "MOEC_CHILD_MARKER="+marker,
		"MOEC_CHILD_SLEEP="+sleep.String(), "MOEC_CHILD_RESUME="+map[bool]string{true: "1", false: "0"}[resume])
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, marker: marker, done: make(chan error, 1)}
	go func() {
		err := cmd.Wait()
		if err != nil && !strings.Contains(err.Error(), "killed") {
			err = fmt.Errorf("%w\n%s", err, out.String())
		}
		c.done <- err
	}()
	return c
}

// kill sends SIGKILL and waits for the process to be gone; a second kill does nothing.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if c.reaped {
		return
	}
	c.cmd.Process.Kill()
	<-c.done
	c.reaped = true
}

func (c *child) waitMarker(t *testing.T, n int) bool {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(fmt.Sprintf("%s-%d", c.marker, n)); err == nil {
			return true
		}
		select {
		case err := <-c.done:
			t.Fatalf("child exited before checkpoint %d: %v", n, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return false
}

// deterministic keeps the fields of a log record that must not depend on interruptions.
type deterministic struct {
	Step                        int64
	Loss, CE, Balance, GradNorm float64
	LR                          float64
	Tokens                      int64
	ExpertTokens                [][]int
}

func detLog(t *testing.T, dir string) []deterministic {
	t.Helper()
	recs, err := ReadLog(filepath.Join(dir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]deterministic, len(recs))
	for i, r := range recs {
		out[i] = deterministic{r.Step, r.Loss, r.CE, r.Balance, r.GradNorm, r.LR, r.Tokens, r.ExpertTokens}
	}
	return out
}

// TestResumeAfterKill kills a training process with SIGKILL in the middle of a checkpoint
// write and again at a random moment, resumes it each time, and checks that the log and the
// final weights are bit-identical to an uninterrupted run's.
func TestResumeAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	root := t.TempDir()
	refDir := filepath.Join(root, "ref")
	_, err := Run(context.Background(), Options{Program: killProgram(), StageName: "dense", Steps: killSteps, OutDir: refDir})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "killed")

	// 1. Killed while writing its second checkpoint: the first must stay the latest, and
	// the half-written one must not be taken for a checkpoint.
	c := startChild(t, dir, false, 400*time.Millisecond)
	if !c.waitMarker(t, 2) {
		t.Fatal("child never reached its second checkpoint")
	}
	c.kill(t)
	ckpts := filepath.Join(dir, CheckpointsDir)
	latest, err := checkpoint.Latest(ckpts)
	if err != nil || filepath.Base(latest) != checkpoint.DirName(4) {
		t.Fatalf("after a kill during checkpoint 2, latest = %q, %v", latest, err)
	}
	ents, _ := os.ReadDir(ckpts)
	torn := false
	for _, e := range ents {
		torn = torn || strings.HasPrefix(e.Name(), ".tmp-")
	}
	if !torn {
		t.Error("no partial checkpoint left behind: the kill did not land inside the write")
	}

	// 2. Resumed, then killed at a random moment: once the log holds a random number of
	// steps, after a random delay shorter than a step.
	seed := time.Now().UnixNano()
	r := rand.New(rand.NewPCG(uint64(seed), 0))
	atStep := 6 + r.IntN(killSteps-14) // leave the child steps and two checkpoint pauses to run into
	delay := time.Duration(r.Int64N(int64(30 * time.Millisecond)))
	t.Logf("random kill after step %d + %v (seed %d)", atStep, delay, seed)
	c = startChild(t, dir, true, 100*time.Millisecond)
	for {
		recs, _ := ReadLog(filepath.Join(dir, LogFile))
		if len(recs) >= atStep {
			break
		}
		select {
		case err := <-c.done:
			t.Fatalf("child ended before step %d: %v", atStep, err)
		case <-time.After(2 * time.Millisecond):
		}
	}
	time.Sleep(delay)
	c.kill(t)
	// On a heavily loaded machine the parent may be descheduled long enough for the child
	// to finish; the comparison below still holds, only this kill did not happen.
	recs, _ := ReadLog(filepath.Join(dir, LogFile))
	t.Logf("killed with %d of %d steps logged", len(recs), killSteps)

	// 3. Resumed to the end.
	c = startChild(t, dir, true, 0)
	if err := <-c.done; err != nil {
		t.Fatal(err)
	}

	want, got := detLog(t, refDir), detLog(t, dir)
	if len(want) != killSteps {
		t.Fatalf("reference log has %d steps", len(want))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log after kills differs from the uninterrupted run (-want +got):\n%s", diff)
	}
	hash := func(d string) string {
		b, err := os.ReadFile(filepath.Join(d, CheckpointsDir, checkpoint.DirName(killSteps), checkpoint.ModelFile))
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", sha256.Sum256(b))
	}
	if hash(refDir) != hash(dir) {
		t.Error("final weights differ from the uninterrupted run")
	}
	readResult := func(d string) (r Result) {
		b, err := os.ReadFile(filepath.Join(d, ResultFile))
		if err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(b, &r)
		return r
	}
	if a, b := readResult(refDir), readResult(dir); a.ValLoss != b.ValLoss || a.ValLoss == 0 {
		t.Errorf("validation loss %v after kills, %v uninterrupted", b.ValLoss, a.ValLoss)
	}
	m, err := checkpoint.LoadManifest(filepath.Join(dir, CheckpointsDir, checkpoint.DirName(killSteps)))
	if err != nil || !m.Final || m.Step != killSteps || m.DataCursor != killSteps {
		t.Errorf("final manifest %+v, %v", m, err)
	}
}
