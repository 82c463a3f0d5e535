package nn

import (
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/runtime/quant"
)

// TestEmbedRowQuantised: a quantised embedding's row is s·q of each of its values, int8
// (per channel and in groups) and int4 alike.
func TestEmbedRowQuantised(t *testing.T) {
	const v, d = 10, 96
	r := rand.New(rand.NewPCG(3, 4))
	w := make([]float32, v*d)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	for _, scheme := range []struct{ bits, group int }{{8, 0}, {8, 32}, {4, 32}, {4, 0}} {
		q, err := quant.Quantize(w, v, d, scheme.bits, scheme.group)
		if err != nil {
			t.Fatal(err)
		}
		c := &core[float32]{embed: &tensor[float32]{name: "embed", shape: []int{v, d}, q: q}}
		c.d.D = d
		got := make([]float32, d)
		for id := range v {
			c.embedRow(got, id)
			for k, g := range got {
				if want := q.Scale(id, k) * float32(q.Q(id, k)); g != want {
					t.Fatalf("int%d group %d: row %d column %d = %g, s·q = %g", scheme.bits, scheme.group, id, k, g, want)
				}
			}
		}
	}
}
