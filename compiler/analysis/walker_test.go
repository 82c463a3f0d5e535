package analysis

import (
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// component is where Count puts a parameter of role r.
func component(c *Components, r params.Role) *int64 {
	switch r {
	case params.RoleEmbed:
		return &c.Embedding
	case params.RolePositions:
		return &c.Position
	case params.RoleHead:
		return &c.Head
	case params.RoleRouterEmbed:
		return &c.RouterEmbedding
	case params.RoleRouter:
		return &c.Router
	case params.RoleFFNIn, params.RoleFFNUp, params.RoleFFNDown:
		return &c.DenseFFN
	case params.RoleExpertIn, params.RoleExpertUp, params.RoleExpertDown:
		return &c.RoutedExperts
	case params.RoleSharedIn, params.RoleSharedUp, params.RoleSharedDown, params.RoleSharedGate:
		return &c.SharedExperts
	case params.RoleAttnInNorm, params.RolePostAttnNorm, params.RolePreFFNNorm, params.RolePostFFNNorm, params.RoleFinalNorm, params.RoleResidualNorm:
		return &c.Norms
	}
	return &c.Attention // projections, q/k norms, sinks, talking heads
}

// TestCountAgreesWithWalker: for every model the parameter walker lists (the one the
// runtime builds), the closed-form count equals the walker's list, component by
// component and layer by layer, so neither can drift from the other. The closed form stays
// the counter: it also counts what the walker cannot list, and it counts a 1T-parameter
// model in microseconds where listing its parameters takes tens of milliseconds
// (BenchmarkWalk).
func TestCountAgreesWithWalker(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	compared := 0
	for i := range 3000 {
		m := randomModel(r)
		if m.MoE != nil {
			m.MoE.Score = []program.Score{program.Softmax, program.Sigmoid}[r.IntN(2)]
		}
		ps, err := params.Walk(m)
		if err != nil {
			continue // encoder-decoder, MTP, MLA with what the runtime does not combine it with, or sizes the runtime refuses
		}
		compared++
		var walked Components
		var buffers int64
		layers := make([]int64, m.Layers)
		for _, p := range ps {
			if p.ID.Role == params.RoleRouterCorrection {
				// Aux-free balancing's selection bias: listed with the weights, counted as a buffer.
				buffers += p.Elements()
				continue
			}
			*component(&walked, p.ID.Role) += p.Elements()
			if p.ID.Layer >= 0 {
				layers[p.ID.Layer] += p.Elements()
			}
		}
		c := Count(m)
		if c.Total != walked || c.Buffers != buffers {
			t.Fatalf("model %d (%+v, MoE %+v):\ncounted %+v and %d buffers\nwalked  %+v and %d", i, *m, m.MoE, c.Total, c.Buffers, walked, buffers)
		}
		if c.Total != walked {
			t.Fatalf("model %d (%+v, MoE %+v):\ncounted %+v\nwalked  %+v", i, *m, m.MoE, c.Total, walked)
		}
		for l, lc := range c.Layers {
			if lc.Total != layers[l] {
				t.Fatalf("model %d layer %d: counted %d, walked %d", i, l, lc.Total, layers[l])
			}
		}
	}
	if compared < 100 {
		t.Fatalf("only %d random models were walkable", compared)
	}
	t.Logf("%d random models compared", compared)
}
