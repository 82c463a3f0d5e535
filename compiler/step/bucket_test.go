package step

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// TestGradientBuckets: the data-parallel gradients are reduced in buckets inside the last
// micro-batch's backward, each gradient exactly once per layout (buckets and the
// all-reduce after the backward together), none in an earlier micro-batch's backward; the
// gradients another reduction sums first stay after the backward; a bucket size of one
// byte gives a bucket per gradient, and a negative one a single all-reduce per group.
func TestGradientBuckets(t *testing.T) {
	plain := func(m *program.Model) {
		m.Attention.TalkingHeads = false
		m.Attention.ShareWeights = 1
		m.MoE.Router = program.RouteHidden
	}
	b := Batch{MicroBatch: 2, SeqLen: 16, Micro: 2}
	for _, tc := range []struct {
		name   string
		edit   func(m *program.Model)
		layout Layout
		// late is a gradient that must not be in a bucket (on rank 0).
		late string
	}{
		{"dp2", func(*program.Model) {}, Layout{DP: 2, EP: 1, TP: 1, PP: 1}, ""},
		{"dp4 ep2 zero1", func(*program.Model) {}, Layout{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 1}, ""},
		{"dp2 tp2 sp", plain, Layout{DP: 2, EP: 1, TP: 2, PP: 1, SequenceParallel: true}, "dL0.attn_in_norm"},
		{"dp2 tp2 qk-norm", func(m *program.Model) { plain(m); m.Attention.QKNorm = true }, Layout{DP: 2, EP: 1, TP: 2, PP: 1}, "dL0.q_norm"},
		{"pp2 dp2 tied", func(m *program.Model) { plain(m); m.TieEmbeddings = true }, Layout{DP: 2, EP: 1, TP: 1, PP: 2}, "dembed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := hunyuanTiny(t, 8)
			moe := *m.MoE
			m.MoE = &moe
			tc.edit(m)
			for _, bucket := range []int64{0, 1, -1} {
				l := tc.layout
				l.GradBucket = bucket
				progs, err := Lower(m, b, l)
				if err != nil {
					t.Fatal(err)
				}
				if err := VerifyLayout(progs); err != nil {
					t.Fatalf("%s: %v", l, err)
				}
				p := progs[0]
				if _, ok := findBuffer(p, tc.late); tc.late != "" && !ok {
					t.Fatalf("%s: rank 0 has no buffer %s", l, tc.late)
				}
				lastStart, lastBwd := -1, -1
				for i, op := range p.Ops {
					if op.Phase == Backward {
						if op.Micro == b.Micro-1 && lastStart < 0 {
							lastStart = i
						}
						lastBwd = i
					}
				}
				reduced := map[int]int{} // gradient buffer → all-reduces over dp or edp
				buckets, early := 0, 0
				for i, op := range p.Ops {
					if op.Kind != OpAllReduce || op.Phase != Reduce || (op.Group != "dp" && op.Group != "edp") || op.Layer < 0 && strings.Contains(op.Attr, "expert loads") {
						continue
					}
					if strings.Contains(op.Attr, "bucket") {
						buckets++
						if i < lastStart {
							t.Errorf("%s: op %d (%s) reduces before the last micro-batch's backward (op %d)", l, i, op.Attr, lastStart)
						}
						if i < lastBwd {
							early++
						}
						for _, g := range op.In {
							if p.Buffers[g].Name == tc.late {
								t.Errorf("%s: %s is reduced in %s", l, tc.late, op.Attr)
							}
						}
					}
					for _, g := range op.In {
						reduced[g]++
					}
				}
				for _, g := range p.Groups {
					if g.Size <= 1 {
						continue
					}
					for i, buf := range p.Buffers {
						if buf.Kind == KindGrad && buf.Param != nil && groupOfName(buf) == g.Name && reduced[i] != 1 {
							t.Errorf("%s: %s is all-reduced over %s %d times", l, buf.Name, g.Axis, reduced[i])
						}
					}
				}
				switch {
				case bucket < 0 && buckets > 0:
					t.Errorf("%s: %d buckets with the buckets off", l, buckets)
				case bucket >= 0 && early == 0:
					t.Errorf("%s: no bucket reduced beside the backward", l)
				case bucket == 1 && buckets < len(reduced)/2:
					t.Errorf("%s: %d buckets of one byte for %d gradients", l, buckets, len(reduced))
				}
				t.Logf("%s: %d buckets (%d beside the backward) for %d gradients", l, buckets, early, len(reduced))
			}
		})
	}
}

// groupOfName is the reduction group of a gradient buffer: the routed experts' or the
// dense one.
func groupOfName(b *Buffer) string {
	if b.Param.Role.Routed() {
		return "expert"
	}
	return "dense"
}

func findBuffer(p *Program, name string) (int, bool) {
	for i, b := range p.Buffers {
		if b.Name == name {
			return i, true
		}
	}
	return -1, false
}
