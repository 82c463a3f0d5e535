package plan

import (
	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/program"
)

// workload is what the planner needs to know about a model, computed once per plan so
// that the search evaluates each candidate with a few dozen multiplications.
type workload struct {
	model  *program.Model
	counts analysis.Counts
	flops  analysis.FLOPs

	seqLen    int64
	sequences int64 // sequences per global batch (train) or concurrent sequences (serve)

	d, qDim, kvDim, ffnHidden, expertHidden, sharedHidden int64
	heads, kvHeads                                        int64
	vocab                                                 int64
	gated, expertGated                                    bool
	experts, topK, sharedExperts                          int
	parallelDense                                         bool
	routeFactor                                           float64 // capacity factor, or the dropless skew bound
	share                                                 float64 // probability a layer computes its own attention weights
	mla                                                   bool    // latent attention: no attention weights to share
	talkingHeads                                          bool    // head mixers before and after the softmax
	sharesWeights                                         bool    // some layer may reuse the layer below's attention weights

	layers []layerParams // encoder layers first, then decoder layers
	embed  int64         // first pipeline stage: embeddings, positions
	router int64         // every stage with an MoE layer: the token-embedding router table (a copy each under pp)
	head   int64         // last pipeline stage: output head and final norms

	expertFLOPsPerToken float64 // forward FLOPs of routed and shared experts per token

	// teacher is a distillation stage's teacher, which runs forward beside the student
	// with its weights resident (nil: no teacher).
	teacher *workload
}

// teacherWeights are the teacher's parameters one device holds: the share an inference
// engine would give it on the student's layout: its dense weights sliced by tensor and
// pipeline parallelism, its routed experts by those and by expert parallelism over the
// data-parallel ranks (gcd(dp, teacher experts) of them, DeepSpeed-MoE inference's
// placement: the teacher's experts need not follow the student's ep, a dense student has
// none).
func (w *workload) teacherWeights(tp, dp, pp int) float64 {
	t := w.teacher
	if t == nil {
		return 0
	}
	experts := float64(t.expertParams())
	dense := float64(t.totalParams()) - experts
	ep := 1
	if t.experts > 1 {
		ep = gcd(dp, t.experts)
	}
	return (dense/float64(tp) + experts/float64(tp*ep)) / float64(pp)
}

// layerParams is one layer's parameters split by how ZeRO shards them.
type layerParams struct {
	dense   int64 // everything replicated across expert-parallel ranks
	experts int64 // routed experts (sharded over the expert-data-parallel group)
	moe     bool
}

// newWorkload counts m. seqLen <= 0 means the model's.
func newWorkload(m *program.Model, seqLen int64, a *Assumptions) *workload {
	if seqLen <= 0 {
		seqLen = m.SeqLen
	}
	// The model's one resolution. A GPU plan also sizes models the CPU runtime does not
	// build (MLA, encoder-decoder), so an error of Dims is not the planner's to report:
	// the sizes are filled regardless.
	d, _ := m.Dims()
	w := &workload{
		model:   m,
		counts:  analysis.Count(m),
		flops:   analysis.CountFLOPs(m, seqLen),
		seqLen:  seqLen,
		d:       int64(d.D),
		heads:   int64(d.H),
		kvHeads: int64(d.KV),
		vocab:   int64(d.V),
		qDim:    int64(d.QDim),
		kvDim:   int64(d.KVDim),
	}
	if m.Attention.MLA {
		// MLA caches the latent, but training stores the expanded keys and values.
		w.qDim = w.heads * (m.Attention.QKNopeHeadDim + m.Attention.QKRopeHeadDim)
		w.kvDim = w.heads * m.Attention.VHeadDim
	}
	w.share = m.Attention.RecomputeProbability()
	w.mla = m.Attention.LatentAttention()
	w.talkingHeads = m.Attention.TalkingHeads && !w.mla
	w.sharesWeights = m.Attention.SharesWeights() && !w.mla
	w.ffnHidden, w.gated = int64(d.Hidden), d.FFNActivation.Gated()
	if moe := m.MoE; moe != nil && moe.Experts > 0 {
		w.experts, w.topK = moe.Experts, max(moe.TopK, 1)
		w.expertHidden, w.expertGated = int64(d.EHidden), d.ExpertActivation.Gated()
		w.sharedExperts, w.sharedHidden = moe.SharedExperts, int64(d.SHidden)
		w.parallelDense = moe.ParallelDense
		w.routeFactor = moe.CapacityFactor
		if moe.Dropless() {
			w.routeFactor = a.DroplessSkew
		}
	}
	c := w.counts
	for _, l := range c.Layers {
		dense := l.Total - l.Experts
		w.layers = append(w.layers, layerParams{dense: dense, experts: l.Experts, moe: l.MoE})
	}
	// What the layers do not hold sits on the first stage (tables) or the last (head, final
	// norms); the split keeps the sum exact whatever the counter's convention for norms.
	var inLayers int64
	for _, l := range c.Layers {
		inLayers += l.Total
	}
	w.embed = c.Total.Embedding + c.Total.Position
	w.router = c.Total.RouterEmbedding
	w.head = c.TotalAll - inLayers - w.embed - w.router
	if w.head < 0 {
		w.head = 0
	}
	w.expertFLOPsPerToken = 2 * float64(c.Active.RoutedExperts+c.Active.SharedExperts)
	return w
}

// totalParams and expertParams are the model's totals.
func (w *workload) totalParams() int64 { return w.counts.TotalAll }

func (w *workload) expertParams() int64 { return w.counts.Total.RoutedExperts }

// isMoE reports whether the model has routed experts.
func (w *workload) isMoE() bool { return w.experts > 1 }

// stageShape is one pipeline stage's share of the model.
type stageShape struct {
	index      int
	dense      int64 // parameters replicated over expert parallelism
	experts    int64 // routed-expert parameters
	layers     int
	moeLayers  int
	maxDense   int64 // largest layer's dense parameters (ZeRO-3 gathers a layer at a time)
	maxExperts int64 // largest layer's routed-expert parameters
	first      bool
	last       bool
}

// stages splits the layers into pp contiguous stages (pp divides the layer count) and
// returns the distinct shapes: stages with equal counts are evaluated once.
func (w *workload) stages(pp int) []stageShape {
	n := len(w.layers)
	per := n / pp
	var out []stageShape
	for s := 0; s < pp; s++ {
		st := stageShape{index: s, first: s == 0, last: s == pp-1}
		for _, l := range w.layers[s*per : (s+1)*per] {
			st.dense += l.dense
			st.experts += l.experts
			st.layers++
			if l.moe {
				st.moeLayers++
			}
			st.maxDense = max(st.maxDense, l.dense)
			st.maxExperts = max(st.maxExperts, l.experts)
		}
		if st.first {
			st.dense += w.embed
		}
		if st.moeLayers > 0 {
			// compiler/step's router_table.go: every stage that routes holds the table.
			st.dense += w.router
		}
		if st.last {
			st.dense += w.head
		}
		dup := false
		for _, o := range out {
			if o.dense == st.dense && o.experts == st.experts && o.layers == st.layers &&
				o.moeLayers == st.moeLayers && o.maxDense == st.maxDense && o.maxExperts == st.maxExperts &&
				o.first == st.first && o.last == st.last {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, st)
		}
	}
	return out
}
