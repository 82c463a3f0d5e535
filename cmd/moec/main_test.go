package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/moec-dev/moec/runtime/train"
)

// TestMain lets the testscript files run `moec` as a user types it: the test binary
// re-executes itself as the moec command.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"moec": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

var update = flag.Bool("update", false, "rewrite the files that cmp compares stdout or stderr with in testdata/script/*.txtar")

// TestScripts runs testdata/script/*.txtar: commands, their output and exit statuses.
func TestScripts(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:           "testdata/script",
		UpdateScripts: *update,
		Setup: func(env *testscript.Env) error {
			env.Setenv("REPO", repo)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"holdlock":  holdLock,
			"lspframes": lspFrames,
			"freeport":  freePort,    // serve_script_test.go
			"complete":  completeAll, // serve_script_test.go
			"generated": generated,   // serve_script_test.go
		},
		Condition: scriptCondition, // serve_script_test.go
	})
}

// holdLock is the script command `holdlock DIR`: this test process takes run folder DIR's
// lock, as a run training there would, and holds it until the script ends, so the moec
// processes the script starts meet a folder another process holds.
func holdLock(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: holdlock DIR")
	}
	l, err := train.LockRunDir(ts.MkAbs(args[0]))
	ts.Check(err)
	ts.Defer(l.Release)
}

// moecCommand is this test binary under the name moec, in a folder of the test's own: run
// so (a process of its own, under mpirun too), TestMain hands it to the moec command as if
// a user had typed `moec`. No separate `go build` of the command is needed.
func moecCommand(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "moec")
	if err := os.Symlink(self, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}
