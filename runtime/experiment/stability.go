package experiment

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/data"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/train"
)

// routingStability loads a final checkpoint, runs it over the validation windows and
// returns, per MoE layer, the fraction of token occurrences routed (first choice) to the
// expert that token id goes to most often. 1 means every occurrence of every token goes
// to one expert; routing on a per-token embedding has exactly 1 by construction, so the
// number matters for routers that read the hidden state.
func routingStability(ckpt string, t *program.Train, corpora *corpusCache, windows int) ([]float64, error) {
	net, m, err := train.LoadNet(ckpt, nil)
	if err != nil {
		return nil, fmt.Errorf("routing stability: %w", err)
	}
	corpus, err := corpora.open(t)
	if err != nil {
		return nil, fmt.Errorf("routing stability: %w", err)
	}
	T := int(t.SeqLen)
	if T <= 0 {
		T = int(m.Model.SeqLen)
	}
	if windows <= 0 {
		windows = 64
	}
	ws, err := corpus.ValWindows(T, windows)
	if err != nil {
		return nil, fmt.Errorf("routing stability: %w", err)
	}
	K := 1
	if m.Model.MoE != nil && m.Model.MoE.TopK > 0 {
		K = m.Model.MoE.TopK
	}
	var counts []map[[2]int32]int // per layer: (token, expert) -> first choices
	const B = 8
	for i := 0; i < len(ws); i += B {
		n := min(B, len(ws)-i)
		toks := make([]int32, 0, n*(T+1))
		for _, w := range ws[i : i+n] {
			toks = append(toks, w...)
		}
		st, err := net.Forward(nn.Batch{B: n, T: T, Tokens: toks}, nn.StepOptions{Seed: m.Seed, Assignments: true})
		if err != nil {
			return nil, fmt.Errorf("routing stability: %w", err)
		}
		if counts == nil {
			counts = make([]map[[2]int32]int, len(st.Assignments))
			for l := range counts {
				counts[l] = map[[2]int32]int{}
			}
		}
		for l, a := range st.Assignments {
			if l >= len(counts) || len(a) != n*T*K {
				return nil, fmt.Errorf("routing stability: layer %d reports %d assignments for %d tokens", l, len(a), n*T)
			}
			for r := 0; r < n; r++ {
				for p := 0; p < T; p++ {
					tok := toks[r*(T+1)+p]
					counts[l][[2]int32{tok, a[(r*T+p)*K]}]++
				}
			}
		}
	}
	out := make([]float64, len(counts))
	for l, c := range counts {
		best := map[int32]int{}
		total := 0
		for k, v := range c {
			best[k[0]] = max(best[k[0]], v)
			total += v
		}
		top := 0
		for _, v := range best {
			top += v
		}
		if total > 0 {
			out[l] = float64(top) / float64(total)
		}
	}
	return out, nil
}

// corpusCache keeps the corpora one Run has opened: reading a large glob once per run
// would cost more than measuring it.
type corpusCache struct {
	baseDir string
	byGlob  map[[3]string]*data.Corpus
}

func (c *corpusCache) open(t *program.Train) (*data.Corpus, error) {
	key := [3]string{t.Data, t.ValData, t.Tokenizer}
	if cp := c.byGlob[key]; cp != nil {
		return cp, nil
	}
	opt, _, err := data.OptionsFor(t, c.baseDir)
	if err != nil {
		return nil, err
	}
	cp, err := data.Open(opt)
	if err != nil {
		return nil, err
	}
	if c.byGlob == nil {
		c.byGlob = map[[3]string]*data.Corpus{}
	}
	c.byGlob[key] = cp
	return cp, nil
}
