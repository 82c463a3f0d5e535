package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const exitTinyMoe = `model tiny {
  vocab = 256; d_model = 32; layers = 2; seq_len = 32
  attention { heads = 2 }
  ffn { hidden = 64; activation = swiglu }
}
cluster local { gpu = cpu; host_memory = 4GiB; ranks = 1 }
train tiny on local {
  tokens_per_batch = 4 * 32
  precision = fp32
  data = "data.txt"
  stage dense { tokens = 4k }
}
`

// TestExitStatus holds every command to one rule: 0 success, 1 the input it was pointed
// at is wrong (a .moe file, checkpoint, run folder or data file), 2 usage (the command line
// alone is wrong). A corrupt checkpoint is 1 for run, eval, generate, serve and export hf
// alike.
func TestExitStatus(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	var text strings.Builder
	for i := 0; i < 80; i++ {
		fmt.Fprintf(&text, "line %d: the router sends each token to one expert along the sequence\n", i)
	}
	for name, body := range map[string]string{
		"tiny.moe":    exitTinyMoe,
		"data.txt":    text.String(),
		"broken.moe":  "model m { vocab = }\n",
		"config.json": "{ not json",
	} {
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out, errb bytes.Buffer
	if st := run([]string{"run", "--stage", "dense", "--steps", "1", "--out", "R", "tiny.moe"}, &out, &errb); st != 0 {
		t.Fatalf("training the fixture: status %d\n%s", st, errb.String())
	}
	// C: a run folder whose only checkpoint is truncated.
	if st := run([]string{"run", "--stage", "dense", "--steps", "1", "--out", "C", "tiny.moe"}, &out, &errb); st != 0 {
		t.Fatalf("training the fixture: status %d\n%s", st, errb.String())
	}
	if err := os.Truncate(filepath.Join("C", "checkpoints", "step-00000001", "model.safetensors"), 10); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--help"}, 0},
		{[]string{"version"}, 0},
		{[]string{"nosuch"}, 2},
		{[]string{"import", "nosuch"}, 2},
		{[]string{"completion", "nosuch"}, 2},
		{[]string{"completion", "fish", "extra"}, 2},
		{[]string{"check", "--explain", "--json", "tiny.moe"}, 2},
		{[]string{"check", "--steps", "x", "tiny.moe"}, 2},
		{[]string{"run", "--stage", "dense", "--collective-timeout", "soon", "tiny.moe"}, 2},
		{[]string{"version", "extra"}, 2},
		{[]string{"--nosuch"}, 2},

		{[]string{"check", "tiny.moe"}, 0},
		{[]string{"check", "broken.moe"}, 1},
		{[]string{"check", "missing.moe"}, 1},
		{[]string{"check"}, 2},
		{[]string{"check", "--nosuch", "tiny.moe"}, 2},

		{[]string{"fmt", "tiny.moe"}, 0},
		{[]string{"fmt", "missing.moe"}, 1},
		{[]string{"fmt", "broken.moe"}, 1},
		{[]string{"fmt"}, 2},

		{[]string{"build", "missing.moe"}, 1},
		{[]string{"build"}, 2},

		{[]string{"plan", "missing.moe", "--stage", "dense"}, 1},
		{[]string{"plan", "tiny.moe", "--stage", "dense", "--gpus", "8", "--nodes", "1"}, 2},

		{[]string{"run", "--stage", "nosuch", "--out", "N", "tiny.moe"}, 1},
		{[]string{"run", "--stage", "dense", "--out", "R", "tiny.moe"}, 1}, // folder holds a run
		{[]string{"run", "--resume", "C"}, 1},
		{[]string{"run", "--resume", "nowhere"}, 1},
		{[]string{"run", "--resume", "R", "--restart"}, 1}, // R has a checkpoint to resume from
		{[]string{"run", "--stage", "dense", "--steps", "0", "tiny.moe"}, 2},
		{[]string{"run", "--stage", "dense", "--steps", "many", "tiny.moe"}, 2},
		{[]string{"run", "--stage", "dense"}, 2},
		{[]string{"run", "--resume", "R", "tiny.moe"}, 2},
		{[]string{"run", "--all-stages", "--stage", "dense", "tiny.moe"}, 2},
		{[]string{"run", "--stage", "dense", "--restart", "tiny.moe"}, 2},
		{[]string{"run", "--stage", "dense", "--cache-budget", "lots", "tiny.moe"}, 2},

		{[]string{"eval", "--checkpoint", "R"}, 0},
		{[]string{"eval", "--checkpoint", "C"}, 1},
		{[]string{"eval", "--checkpoint", "R", "broken.moe"}, 1},
		{[]string{"eval"}, 2},
		{[]string{"eval", "--checkpoint", "R", "--windows", "0"}, 2},

		{[]string{"generate", "--checkpoint", "R", "--prompt", "a", "--max-tokens", "2"}, 0},
		{[]string{"generate", "--checkpoint", "C", "--prompt", "a"}, 1},
		{[]string{"generate", "--prompt", "a"}, 2},
		{[]string{"generate", "--checkpoint", "R", "--max-tokens", "0"}, 2},

		{[]string{"serve", "--checkpoint", "C"}, 1},
		{[]string{"serve"}, 2},
		{[]string{"serve", "--checkpoint", "R", "--slots", "-1"}, 2},

		{[]string{"experiment", "tiny.moe"}, 1}, // declares no experiment
		{[]string{"experiment", "--tokens", "0", "tiny.moe"}, 2},
		{[]string{"experiment"}, 2},

		{[]string{"import", "hf", "config.json"}, 1},
		{[]string{"import", "hf", "missing.json"}, 1},
		{[]string{"import", "hf"}, 2},
		{[]string{"import", "hf", "config.json", "--checkpoint", "R"}, 2},

		{[]string{"export", "hf", "--checkpoint", "R", "-o", "E"}, 0},
		{[]string{"export", "hf", "--checkpoint", "C", "-o", "E1"}, 1},
		{[]string{"export", "hf", "--checkpoint", "R", "-o", "E"}, 1}, // E is not empty
		{[]string{"export", "hf", "--checkpoint", "R"}, 2},
		{[]string{"export", "megatron", "missing.moe", "--stage", "dense"}, 1},
		{[]string{"export", "megatron"}, 2},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := run(tc.args, &stdout, &stderr); got != tc.want {
				t.Errorf("moec %s: exit %d, want %d\nstderr: %s", strings.Join(tc.args, " "), got, tc.want, stderr.String())
			}
			if tc.want == exitUsage && slices.Contains(tc.args, "--json") {
				// check --json writes it as a JSON line for the editor that reads them.
				if !strings.Contains(stdout.String(), `"code":"E00`) || stderr.Len() > 0 {
					t.Errorf("moec %s: the usage error is not a JSON line alone:\nstdout: %s\nstderr: %s", strings.Join(tc.args, " "), stdout.String(), stderr.String())
				}
			} else if tc.want == exitUsage && !usageErrorForm.MatchString(stderr.String()) {
				t.Errorf("moec %s: a usage error is not `moec: error[CODE]: ...` followed by the usage line and where the help is:\n%s", strings.Join(tc.args, " "), stderr.String())
			}
		})
	}
}

// usageErrorForm is how every usage error prints: coded like any other diagnostic, then
// how the command is called and where its help is.
var usageErrorForm = regexp.MustCompile(`^moec: error\[E\d{4}\]: .*\n(?:(?:help|note): .*\n)*usage: moec .*\nrun 'moec [a-z ]*--help' for more\n$`)

// TestHelpStatesTheExitRule: the rule the statuses follow is in `moec --help`.
func TestHelpStatesTheExitRule(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if st := run([]string{"--help"}, &stdout, &stderr); st != 0 || !strings.Contains(stdout.String(), exitRule) {
		t.Errorf("moec --help: exit %d, output lacks the exit rule:\n%s", st, stdout.String())
	}
}
