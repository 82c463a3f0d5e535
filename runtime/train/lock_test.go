package train

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moec-dev/moec/lang/diag"
)

// TestRunFolderLock starts a run in another process, holds it inside a checkpoint write,
// and checks that every way of starting a second run into its folder (a new run, --force,
// --resume) fails at once naming the holder and leaves the folder alone; once the holder is
// killed, the system has released the lock and the folder resumes.
func TestRunFolderLock(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	dir := filepath.Join(t.TempDir(), "run")
	c := startChild(t, dir, false, 20*time.Second)
	defer c.kill(t)
	if !c.waitMarker(t, 1) {
		t.Fatal("child never reached its first checkpoint")
	}
	logBefore, err := os.ReadFile(filepath.Join(dir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	holder := fmt.Sprintf("pid %d on host ", c.cmd.Process.Pid)
	for _, tc := range []struct {
		name string
		opt  Options
	}{
		{"new run", Options{Program: killProgram(), StageName: "dense", Steps: 2, OutDir: dir}},
		{"--force", Options{Program: killProgram(), StageName: "dense", Steps: 2, OutDir: dir, Force: true}},
		{"--resume", Options{Resume: dir}},
		{"--resume --restart", Options{Resume: dir, Restart: true}},
	} {
		start := time.Now()
		_, err := Run(context.Background(), tc.opt)
		if diag.CodeOf(err) != diag.CodeRunInUse || !strings.Contains(err.Error(), holder) || !strings.Contains(err.Error(), "TestTrainChild") {
			t.Errorf("%s into a held folder: %v, want %s naming %s... and its command", tc.name, err, diag.CodeRunInUse, holder)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s waited %v for the lock; it must fail at once", tc.name, d)
		}
	}
	logAfter, _ := os.ReadFile(filepath.Join(dir, LogFile))
	if string(logAfter) != string(logBefore) {
		t.Error("a refused run changed the holder's log")
	}
	if _, err := os.Stat(filepath.Join(dir, SpecFile)); err != nil {
		t.Errorf("a refused run removed the holder's %s: %v", SpecFile, err)
	}

	c.kill(t) // a killed holder leaves the lock file, not the lock
	// It died inside its first checkpoint, so the resume starts over.
	if _, err := Run(context.Background(), Options{Resume: dir, Restart: true}); err != nil {
		t.Fatalf("resume after the holder died: %v", err)
	}
	// A finished run left its lock file; a new run with --force starts there as before.
	if _, err := Run(context.Background(), Options{Program: killProgram(), StageName: "dense", Steps: 2, OutDir: dir, Force: true}); err != nil {
		t.Fatalf("--force over a finished run: %v", err)
	}
}

// TestLockFileIsNoRun checks that a folder holding only the lock file of a run that died
// before writing anything is an empty folder to a new run.
func TestLockFileIsNoRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	l, err := LockRunDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockRunDir(dir); diag.CodeOf(err) != diag.CodeRunInUse || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("second lock in one process: %v, want %s naming pid %d", err, diag.CodeRunInUse, os.Getpid())
	}
	l.Release()
	l.Release()
	if err := prepareDir(dir, false); err != nil {
		t.Errorf("a folder with only %s: %v", LockFile, err)
	}
}
