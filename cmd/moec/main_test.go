package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
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
	})
}
