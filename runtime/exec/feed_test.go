package exec

import (
	"math"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// feedSchedule is the feeds of a continuous batch of three sequences of T tokens: sequence
// 0 reads chunks of chunk tokens, sequence 1 one token a call, sequence 2 waits two calls
// and then reads chunks of chunk+1. Each call's runs and positions, in order.
func feedSchedule(toks [][]int32, chunk int) (runs [][][]int32, pos [][]int) {
	T := len(toks[0])
	fed := make([]int, 3)
	for call := 0; fed[0] < T || fed[1] < T || fed[2] < T; call++ {
		r, p := make([][]int32, 3), make([]int, 3)
		for s, size := range []int{chunk, 1, chunk + 1} {
			if s == 2 && call < 2 || fed[s] >= T {
				continue
			}
			n := min(size, T-fed[s])
			r[s], p[s] = toks[s][fed[s]:fed[s]+n], fed[s]
			fed[s] += n
		}
		runs, pos = append(runs, r), append(pos, p)
	}
	return runs, pos
}

// feedAlike feeds m's feeding program (step.LowerFeed, rows enough for the schedule's
// largest call) the schedule and holds each fed sequence's logits to those runtime/nn's
// one-sequence decoder gives after the same tokens read one Step at a time; it returns
// the worst difference relative to the largest logit.
func feedAlike(t *testing.T, m *program.Model, net *nn.Model, T, chunk int) float64 {
	t.Helper()
	prog, err := step.LowerFeed(m, 3, 2*chunk+2, T)
	if err != nil {
		t.Fatal(err)
	}
	if err := step.Verify(prog); err != nil {
		t.Fatal(err)
	}
	ex, err := New(prog, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.LoadTensors(tensorsOf(net)); err != nil {
		t.Fatal(err)
	}
	toks, want := make([][]int32, 3), make([][][]float32, 3)
	for s := range toks {
		toks[s] = randomTokens(1, T-1, int(m.Vocab), int64(s))
		one := net.NewDecoder(1, T)
		for _, tok := range toks[s] {
			lg, err := one.Step([]int32{tok})
			if err != nil {
				t.Fatal(err)
			}
			want[s] = append(want[s], append([]float32(nil), lg...))
		}
	}
	runs, pos := feedSchedule(toks, chunk)
	V := int(m.PaddedVocab())
	worst := 0.0
	for c := range runs {
		got, err := ex.Feed(runs[c], pos[c])
		if err != nil {
			t.Fatal(err)
		}
		for s, run := range runs[c] {
			if len(run) == 0 {
				continue
			}
			w := want[s][pos[c][s]+len(run)-1]
			var scale float64
			for _, v := range w {
				scale = math.Max(scale, math.Abs(float64(v)))
			}
			for j, v := range w {
				worst = math.Max(worst, math.Abs(float64(got[s*V+j]-v))/math.Max(scale, 1e-6))
			}
		}
	}
	return worst
}

// TestFeedMatchesHandWritten: the feeding program (chunks of prompts at any position beside
// other sequences' decoding tokens, padding rows) computes what runtime/nn's decoder
// computes reading the same tokens one step at a time:
// hunyuan_tiny's eight-expert stage (talking heads, the token-embedding router) and the
// attention variants (windows, sinks, chunks, talking heads, Llama 4's and gpt-oss's) and
// latent attention in DeepSeek-V3's and V2-Lite's shapes (and V2-Lite's with a window,
// without positions, with values wider than the keys), for chunks of 1 to 5 tokens;
// logits within 1e-5 of their largest.
func TestFeedMatchesHandWritten(t *testing.T) {
	models := map[string]*program.Model{"hunyuan_tiny": hunyuanTiny(t, 8)}
	for _, v := range attnVariants {
		models[v.name] = attnModel(t, v.attention)
	}
	for _, v := range mlaVariants() { // latent attention (feed_mla.go)
		m := variantModel(t, v)
		m.SeqLen = 16
		models["mla "+v.name] = m
	}
	for name, edit := range map[string]func(m *program.Model){
		"mla window":                     func(m *program.Model) { m.Attention.Window = 4 },
		"mla nope":                       func(m *program.Model) { m.Position = program.NoPosition },
		"mla values wider than the keys": func(m *program.Model) { m.Attention.VHeadDim = 10 },
	} {
		m := variantModel(t, mlaVariants()[1])
		m.SeqLen = 16
		edit(m)
		models[name] = m
	}
	for name, m := range models {
		t.Run(name, func(t *testing.T) {
			net, err := nn.New(m, 3)
			if err != nil {
				t.Fatal(err)
			}
			randomizeConstants(net)
			for _, chunk := range []int{1, 5} {
				if w := feedAlike(t, m, net, 12, chunk); w > 1e-5 {
					t.Errorf("chunks of %d: logits differ by %.3g", chunk, w)
				}
			}
		})
	}
}

// TestFeedRefuses: runs past the caches, more rows than the program holds, tokens outside
// the vocabulary and a wrong number of runs are errors.
func TestFeedRefuses(t *testing.T) {
	m := attnModel(t, "window = 5")
	prog, err := step.LowerFeed(m, 2, 4, 8)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := New(prog, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		runs [][]int32
		pos  []int
		want string
	}{
		{[][]int32{{1, 2}, nil}, []int{7, 0}, "pass the 8 positions"},
		{[][]int32{{1, 2, 3}, {1, 2}}, []int{0, 0}, "for a feed of 4 rows"},
		{[][]int32{{64}, nil}, []int{0, 0}, "outside the vocabulary"},
		{[][]int32{{1}}, []int{0}, "for a feed of 2 sequences"},
	} {
		if _, err := ex.Feed(c.runs, c.pos); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v at %v: got %v, want an error naming %q", c.runs, c.pos, err, c.want)
		}
	}
}
