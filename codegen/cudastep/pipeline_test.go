package cudastep

import (
	"fmt"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
)

// commLines are the host program's lines that order the streams and the NCCL calls (and
// the op headers of the ops that have them).
func commLines(host string) string {
	var out []string
	header := ""
	for _, line := range strings.Split(host, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "// op "):
			header = line
		case strings.Contains(t, "nccl") || strings.Contains(t, "cuEventRecord") || strings.Contains(t, "cuStreamWaitEvent") ||
			strings.HasPrefix(t, "// received in op"):
			if header != "" {
				out = append(out, header)
				header = ""
			}
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n") + "\n"
}

func TestExplorePP(t *testing.T) {
	m := tinyStage(t, 2, 1)
	m.Attention.ShareWeights = 1
	for _, l := range []step.Layout{{DP: 1, EP: 1, TP: 1, PP: 2}, {DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3}} {
		progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 2}, l)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range progs {
			low, err := Lower(p, m)
			if err != nil {
				t.Fatal(err)
			}
			host, err := HostProgram(low)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("=== %s rank %d\n%s", l, p.Rank, commLines(host))
		}
	}
}
