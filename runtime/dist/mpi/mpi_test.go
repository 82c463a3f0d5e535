package mpi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestInRun(t *testing.T) {
	t.Setenv("OMPI_COMM_WORLD_SIZE", "4")
	if !InRun() {
		t.Error("InRun is false with OMPI_COMM_WORLD_SIZE set")
	}
	os.Unsetenv("OMPI_COMM_WORLD_SIZE")
	if InRun() {
		t.Error("InRun is true without OMPI_COMM_WORLD_SIZE")
	}
}

// mpiRunTimeout bounds one mpirun; a job that hangs fails the test instead of the suite.
const mpiRunTimeout = 60 * time.Second

// mpiProgram builds internal/mpicheck for mpirun, or skips the test when this machine
// cannot run MPI jobs.
func mpiProgram(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("launches mpirun")
	}
	if InRun() {
		t.Skip("already running under mpirun; a nested mpirun would join this job")
	}
	if _, err := exec.LookPath("mpirun"); err != nil {
		t.Skip("mpirun is not installed (Debian: openmpi-bin)")
	}
	if err := load(); err != nil {
		t.Skipf("Open MPI's library cannot be loaded: %v", err)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the MPI test program")
	}
	bin := filepath.Join(t.TempDir(), "mpicheck")
	out, err := exec.Command(goTool, "build", "-o", bin, "./internal/mpicheck").CombinedOutput()
	if err != nil {
		t.Fatalf("building the MPI test program: %v\n%s", err, out)
	}
	return bin
}

// mpirun runs bin on np ranks and returns its combined output, duration and exit error.
// The flags and environment are what Open MPI needs in a container: root, more ranks
// than cores, and shared memory without cross-memory attach (see the package doc).
func mpirun(t *testing.T, np int, bin string, args ...string) (string, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mpiRunTimeout)
	defer cancel()
	cmdArgs := append([]string{"--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader", "-np", fmt.Sprint(np), bin}, args...)
	cmd := exec.CommandContext(ctx, "mpirun", cmdArgs...)
	cmd.Env = append(os.Environ(), "OMPI_MCA_btl_vader_single_copy_mechanism=none", "OMPI_MCA_mpi_yield_when_idle=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("mpirun -np %d %s hung for %s and was killed:\n%s", np, strings.Join(args, " "), mpiRunTimeout, out.String())
	}
	return out.String(), took, err
}

// TestConformance runs the dist conformance suite on 2 and 3 MPI processes.
func TestConformance(t *testing.T) {
	bin := mpiProgram(t)
	for _, np := range []int{2, 3} {
		t.Run(fmt.Sprintf("np=%d", np), func(t *testing.T) {
			out, took, err := mpirun(t, np, bin)
			t.Logf("mpirun -np %d: %s", np, took.Round(time.Millisecond))
			if err != nil {
				t.Fatalf("mpirun -np %d: %v\n%s", np, err, out)
			}
			for r := range np {
				if !strings.Contains(out, fmt.Sprintf("rank %d of %d: ok", r, np)) {
					t.Errorf("rank %d did not report success:\n%s", r, out)
				}
			}
		})
	}
}

// TestFailureStopsJob: a rank that aborts, exits or never arrives mid-collective stops
// the whole job (non-zero exit, no hang), and the output names the rank.
func TestFailureStopsJob(t *testing.T) {
	bin := mpiProgram(t)
	for _, tc := range []struct {
		fail string
		want []*regexp.Regexp
	}{
		// The aborting rank names itself, and so does mpirun.
		{"abort", []*regexp.Regexp{
			regexp.MustCompile(`MPI rank 2 of 3 .*failed: injected failure on rank 2`),
			regexp.MustCompile(`MPI_ABORT was invoked on rank 2`),
		}},
		// mpirun reports the process that exited: [[job,1],2].
		{"exit", []*regexp.Regexp{regexp.MustCompile(`(?s)exited with non-zero status.*\[\[\d+,\d+\],2\]`)}},
		// The waiting ranks time out, say so, and abort. Only moec's own message is
		// required: when two ranks call MPI_Abort at once, mpirun's "MPI_ABORT was
		// invoked" banner can be lost to a race in its help-message relay (Open MPI 4.1
		// prints "ORTE_ERROR_LOG: Data unpack would read past end of buffer" instead).
		{"stall", []*regexp.Regexp{
			regexp.MustCompile(`MPI rank [01] of 3: rank [01]: all_reduce on group world timed out after 2s waiting for the other ranks; aborting the job`),
		}},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			out, took, err := mpirun(t, 3, bin, "-fail", tc.fail, "-timeout", "2s")
			t.Logf("mpirun -np 3 -fail %s: stopped after %s", tc.fail, took.Round(time.Millisecond))
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("mpirun: got %v, want a non-zero exit\n%s", err, out)
			}
			for _, re := range tc.want {
				if !re.MatchString(out) {
					t.Errorf("output does not match %q:\n%s", re, out)
				}
			}
		})
	}
}
