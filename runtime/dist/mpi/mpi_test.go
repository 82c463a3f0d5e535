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
//
// Only moec's own messages are required. mpirun's banners ("MPI_ABORT was invoked on rank
// 2", "exited with non-zero status") go through its help-message relay, which under load
// can print "ORTE_ERROR_LOG: Out of resource in file show_help.c" instead (Open MPI 4.1);
// the test logs whether they came.
func TestFailureStopsJob(t *testing.T) {
	bin := mpiProgram(t)
	for _, tc := range []struct {
		fail       string
		want       *regexp.Regexp // moec's message naming the rank
		fromMpirun *regexp.Regexp // mpirun's banner, logged when present
	}{
		{"abort",
			regexp.MustCompile(`MPI rank 2 of 3 .*failed: injected failure on rank 2; aborting the job`),
			regexp.MustCompile(`MPI_ABORT was invoked on rank 2`)},
		{"exit",
			// The exiting rank's last words, or mpirun naming it: [[job,1],2].
			regexp.MustCompile(`(?s)mpicheck: rank 2 exits mid-run|exited with non-zero status.*\[\[\d+,\d+\],2\]`),
			regexp.MustCompile(`(?s)exited with non-zero status.*\[\[\d+,\d+\],2\]`)},
		{"stall",
			regexp.MustCompile(`MPI rank [01] of 3: rank [01]: all_reduce on group world timed out after 2s waiting for the other ranks; aborting the job`),
			regexp.MustCompile(`MPI_ABORT was invoked on rank [01]`)},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			out, took, err := mpirun(t, 3, bin, "-fail", tc.fail, "-timeout", "2s")
			t.Logf("mpirun -np 3 -fail %s: stopped after %s; mpirun's own report present: %v",
				tc.fail, took.Round(time.Millisecond), tc.fromMpirun.MatchString(out))
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("mpirun: got %v, want a non-zero exit\n%s", err, out)
			}
			if !tc.want.MatchString(out) {
				t.Errorf("output does not match %q:\n%s", tc.want, out)
			}
		})
	}
}
