package diag

import (
	"strings"
	"testing"
)

// withoutExample lists the registered codes that have no example in lang/diag/examples,
// each with the reason. A code registered without an example and without an entry here
// fails TestEveryCodeHasAnExample; add the example (examples/CODE.moe, or CODE.txtar for
// a command line) rather than an entry where any input reaches the code.
func withoutExample() map[Code]string {
	const internal = "reports a bug in moec: no input should produce it"
	return map[Code]string{
		CodeNestingTooDeep:      "needs brackets nested more than 64 deep, which only generated input reaches (lang/parse tests it)",
		CodeExprTooLong:         "needs an expression of more than 10,000 operators, which only generated input reaches (lang/parse tests it)",
		CodeTooManyRepeats:      "needs more entries in a row than the parser's repetition cap, which only generated input reaches (lang/parse tests it)",
		CodeInternalParserError: internal,
		CodeInternalCheckError:  internal,
		CodeInternalPlanError:   internal,
		CodeUnresolved:          "the checker reports an undeclared model or cluster first (E0401, E0402); only a program built without the checker reaches the planner's check",
		CodeNoLayout:            "the one-device layout (dp = tp = pp = 1) divides every checked model, so the search always has a candidate; when none fits the planner reports E0501",
		CodeLocalLayout:         "the CLI refuses a local layout before planning it (E0611, E0509) and meets the planner's refusal only as a note beside a run it still starts",
		CodeDeviceIncomplete:    "every catalog device has an FP32 peak and a memory bandwidth, and the checker refuses a written 0 (E0221)",
		CodeBadDataFile:         "needs a data file the process may not read (permissions), which a test running as root cannot make; runtime/data tests it",
		CodeRankFailed:          "needs a rank of a sharded run to fail or stall mid-step; runtime/train tests it with an injected fault",
		CodeRunInUse:            "needs a second process holding the run folder's lock; cmd/moec's run_lock script holds one (holdlock)",
	}
}

// TestEveryCodeHasAnExample holds the registry and the examples together: each
// registered code has an example `moec explain` prints, or a reason in withoutExample;
// each example names a registered code and has the shape its test runs.
func TestEveryCodeHasAnExample(t *testing.T) {
	exempt := withoutExample()
	registered := map[Code]bool{}
	for _, info := range Registry() {
		registered[info.Code] = true
		_, has := Example(info.Code)
		reason, isExempt := exempt[info.Code]
		switch {
		case !has && !isExempt:
			t.Errorf("%s has no example: add lang/diag/examples/%s.moe (or .txtar for a command line), or a reason to withoutExample", info.Code, info.Code)
		case has && isExempt:
			t.Errorf("%s has an example and is listed in withoutExample (%s): remove the entry", info.Code, reason)
		case isExempt && reason == "":
			t.Errorf("%s is listed in withoutExample without a reason", info.Code)
		}
	}
	for code := range exempt {
		if !registered[code] {
			t.Errorf("withoutExample lists %s, which is not registered", code)
		}
	}
	for _, ex := range Examples() {
		if !registered[ex.Code] {
			t.Errorf("examples/%s: %s is not a registered code", ex.File, ex.Code)
			continue
		}
		first, _, _ := strings.Cut(ex.Text, "\n")
		switch {
		case strings.HasSuffix(ex.File, ".moe"):
			if !ex.Code.Checked() {
				t.Errorf("examples/%s: only the parser's and the checker's codes (E01xx-E04xx, W92xx) have .moe examples; write a .txtar with the command line", ex.File)
			}
			if !strings.HasPrefix(first, "// ") {
				t.Errorf("examples/%s: the first line is not a `// ` comment saying what is wrong", ex.File)
			}
		case ex.IsArchive():
			if !strings.HasPrefix(first, "# ") {
				t.Errorf("examples/%s: the first line is not a `# ` comment saying what is wrong", ex.File)
			}
			if len(ex.Commands()) == 0 {
				t.Errorf("examples/%s: no `$ moec ...` command line", ex.File)
			}
		default:
			t.Errorf("examples/%s: an example is a .moe file or a .txtar archive", ex.File)
		}
	}
}

func TestExampleLookup(t *testing.T) {
	ex, ok := Example("e0201")
	if !ok || ex.Code != CodeUnknownKey || ex.File != "E0201.moe" || ex.IsArchive() {
		t.Errorf("Example(e0201) = %+v, %v", ex, ok)
	}
	if _, ok := Example("E9999"); ok {
		t.Error("Example found an example for an unregistered code")
	}
	ex, ok = Example(CodeUnknownStage)
	if !ok || !ex.IsArchive() {
		t.Fatalf("Example(E0601) = %+v, %v", ex, ok)
	}
	if cmds := ex.Commands(); len(cmds) == 0 || cmds[0][0] != "moec" {
		t.Errorf("E0601's commands = %q", cmds)
	}
}
