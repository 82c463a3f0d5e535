package cudastep

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// TestCompactLeavesOutTheScores: with Options.Compact the device arena holds no buffer
// the fused attention kernels never touch (every layer's [B, H, T, T] scores, weights and
// their gradients), shrinks by at least a layer's worth of them at the peak, names none
// of the left-out buffers in any launch, and launches the same kernels in the same order
// as the uncompacted lowering; without fused chains (talking heads) nothing is left out.
func TestCompactLeavesOutTheScores(t *testing.T) {
	for _, rc := range []program.Recompute{program.RecomputeNone, program.RecomputeSelective} {
		// 256 positions: a layer's scores (2 sequences, 4 heads: 2 MiB) outweigh the rest.
		m := flashModel(func(m *program.Model) { m.SeqLen = 256 })
		p, err := step.LowerRank(m, step.Batch{MicroBatch: 2, SeqLen: 256, Micro: 2}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: rc}, 0)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := LowerWith(p, m, Options{})
		if err != nil {
			t.Fatal(err)
		}
		low, err := LowerWith(p, m, Options{Compact: true})
		if err != nil {
			t.Fatal(err)
		}
		q := low.Program
		if q == p || plain.Dropped != 0 {
			t.Fatalf("%s: the compacted lowering kept the program (or the plain one dropped %d bytes)", rc, plain.Dropped)
		}
		var scores, dropped int64
		for i, b := range q.Buffers {
			if q.Memory.Lifetime[i][0] < 0 && p.Memory.Lifetime[i][0] >= 0 {
				dropped += b.Bytes()
				if b.Offset != -1 {
					t.Errorf("%s: left-out buffer %s at offset %d", rc, b.Name, b.Offset)
				}
			}
			if strings.Contains(b.Name, ".scores@") {
				scores = b.Bytes()
				if q.Memory.Lifetime[i][0] >= 0 {
					t.Errorf("%s: %s is still in the arena", rc, b.Name)
				}
			}
		}
		if scores == 0 || dropped != low.Dropped || dropped < 2*scores {
			t.Fatalf("%s: %d bytes left out (Dropped %d); one scores buffer is %d bytes", rc, dropped, low.Dropped, scores)
		}
		if q.Memory.Arena[step.Device]+scores > p.Memory.Arena[step.Device] {
			t.Errorf("%s: arena %d bytes, %d before: not even one scores buffer (%d) smaller", rc, q.Memory.Arena[step.Device], p.Memory.Arena[step.Device], scores)
		}
		t.Logf("%s: arena %d → %d bytes (%d bytes of buffers left out)", rc, p.Memory.Arena[step.Device], q.Memory.Arena[step.Device], dropped)
		if len(low.Ops) != len(plain.Ops) {
			t.Fatalf("%s: %d ops lowered, %d without compaction", rc, len(low.Ops), len(plain.Ops))
		}
		for k := range low.Ops {
			a, b := low.Ops[k].Launches, plain.Ops[k].Launches
			if len(a) != len(b) {
				t.Fatalf("%s: op %d launches %d kernels, %d without compaction", rc, k, len(a), len(b))
			}
			for j := range a {
				if a[j].Kernel != b[j].Kernel {
					t.Errorf("%s: op %d launch %d is %s, %s without compaction", rc, k, j, a[j].Kernel, b[j].Kernel)
				}
				for _, arg := range a[j].Args {
					if arg.Kind.Pointer() && arg.Buf >= 0 && q.Buffers[arg.Buf].Offset < 0 {
						t.Errorf("%s: op %d's %s names left-out %s", rc, k, a[j].Kernel, q.Buffers[arg.Buf].Name)
					}
				}
			}
		}
	}
	m := flashModel(func(m *program.Model) { m.Attention.TalkingHeads = true })
	p := flashLower(t, m, program.RecomputeNone)
	low, err := LowerWith(p, m, Options{Compact: true})
	if err != nil {
		t.Fatal(err)
	}
	if low.Dropped != 0 || low.Program != p {
		t.Errorf("talking heads (no fused chain): %d bytes left out", low.Dropped)
	}
}
