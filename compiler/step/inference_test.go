package step

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/moec-dev/moec/internal/golden"
)

// TestInferenceGolden holds the listings of the inference programs an archive of
// testdata/inference names (prefill or decode, batch, prompt, cache length, layout and
// rank), after checking each whole layout with VerifyLayout.
func TestInferenceGolden(t *testing.T) {
	golden.Files(t, "testdata/inference/*.txtar", *update, func(t *testing.T, in map[string][]byte) []golden.Section {
		base := loadModel(t, in["model.moe"])
		m := stageModel(base, "moe")
		var out []golden.Section
		for _, line := range strings.Split(strings.TrimSpace(string(in["programs"])), "\n") {
			fields := strings.Fields(line)
			inf := Inference{}
			l := Layout{PP: 1}
			rank := 0
			for _, f := range fields[1:] {
				k, v, _ := strings.Cut(f, "=")
				var n int
				if _, err := fmt.Sscan(v, &n); err != nil {
					t.Fatalf("%q: %s: %v", line, f, err)
				}
				switch k {
				case "batch":
					inf.Batch = n
				case "prompt":
					inf.Prompt = n
				case "max_len":
					inf.MaxLen = n
				case "dp":
					l.DP = n
				case "ep":
					l.EP = n
				case "tp":
					l.TP = n
				case "rank":
					rank = n
				default:
					t.Fatalf("%q: unknown key %s", line, k)
				}
			}
			if (fields[0] == "prefill") != (inf.Prompt > 0) {
				t.Fatalf("%q: a prefill has a prompt, a decoding step none", line)
			}
			progs, err := LowerInference(m, inf, l)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if err := VerifyLayout(progs); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			p := progs[rank]
			p.Stage = "moe"
			var b bytes.Buffer
			if err := Format(&b, p); err != nil {
				t.Fatal(err)
			}
			out = append(out, golden.Section{Name: line, Data: b.Bytes()})
		}
		return out
	})
}
