package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/moec-dev/moec/lang/diag"
)

// TestCodeExamples runs every command-line example of lang/diag/examples (CODE.txtar, the
// example `moec explain CODE` prints) as a user types it: in a fresh folder holding the
// archive's files, each `$ moec ...` line runs in turn; the ones before the last succeed,
// and the last reports the example's code and no other (failing for an error, succeeding
// for a warning). The .moe examples run in compiler/check's tests.
func TestCodeExamples(t *testing.T) {
	dir := t.TempDir()
	n := 0
	for _, ex := range diag.Examples() {
		if !ex.IsArchive() {
			continue
		}
		script, err := exampleScript(ex)
		if err != nil {
			t.Errorf("%s: %v", ex.File, err)
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, ex.File), []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no command-line example")
	}
	testscript.Run(t, testscript.Params{
		Dir: dir,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"reports": reportsOnly,
		},
	})
}

// exampleScript turns a command-line example into a testscript: its `$ moec ...` lines
// become exec lines, and the last is followed by `reports CODE`.
func exampleScript(ex diag.CodeExample) (string, error) {
	cmds := len(ex.Commands())
	if cmds == 0 {
		return "", fmt.Errorf("no `$ moec ...` line")
	}
	last := "! exec "
	if ex.Code.Severity() == "warning" {
		last = "exec "
	}
	var b strings.Builder
	seen := 0
	inFiles := false
	for _, line := range strings.SplitAfter(ex.Text, "\n") {
		if strings.HasPrefix(line, "-- ") {
			inFiles = true
		}
		cmd, isCmd := strings.CutPrefix(line, "$ ")
		if inFiles || !isCmd {
			b.WriteString(line)
			continue
		}
		if !strings.HasPrefix(cmd, "moec ") {
			return "", fmt.Errorf("command line %q does not run moec", strings.TrimSpace(line))
		}
		seen++
		if seen < cmds {
			b.WriteString("exec " + cmd)
			continue
		}
		b.WriteString(last + strings.TrimRight(cmd, "\n") + "\nreports " + string(ex.Code) + "\n")
	}
	return b.String(), nil
}

var reportedCodeRE = regexp.MustCompile(`(?:error|warning)\[([EW]\d{4})\]`)

// reportsOnly is the script command `reports CODE`: the last command's output names
// CODE as `error[CODE]` or `warning[CODE]`, and names no other error code so (a warning
// the checker gives beside an error is allowed: a batch shorter than one sequence, E0502,
// is never a whole number of sequences, W9202).
func reportsOnly(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: reports CODE")
	}
	out := ts.ReadFile("stdout") + ts.ReadFile("stderr")
	found := false
	for _, m := range reportedCodeRE.FindAllStringSubmatch(out, -1) {
		if m[1] == args[0] {
			found = true
		} else if diag.Code(m[1]).Severity() == "error" || diag.Code(args[0]).Severity() == "warning" {
			ts.Fatalf("reports %s besides %s", m[1], args[0])
		}
	}
	if !found {
		ts.Fatalf("does not report %s", args[0])
	}
}
