package train

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
)

func TestLoadParams(t *testing.T) {
	params := func() []*nn.Param {
		return []*nn.Param{
			{Name: "a", Shape: []int{2, 2}, W: make([]float32, 4), G: make([]float32, 4)},
			{Name: "b", Shape: []int{3}, W: make([]float32, 3), G: make([]float32, 3)},
		}
	}
	good := []safetensors.Tensor{
		{Name: "b", Shape: []int{3}, Data: []float32{4, 5, 6}},
		{Name: "a", Shape: []int{2, 2}, Data: []float32{1, 2, 3, 4}},
	}
	ps := params()
	if err := LoadParams(ps, good, "ck"); err != nil {
		t.Fatal(err)
	}
	if ps[0].W[3] != 4 || ps[1].W[0] != 4 {
		t.Errorf("weights not loaded: %v %v", ps[0].W, ps[1].W)
	}
	cases := []struct {
		ts   []safetensors.Tensor
		want string
	}{
		{good[:1], "has no tensor a (shape [2 2])"},
		{[]safetensors.Tensor{good[0], {Name: "a", Shape: []int{4}, Data: make([]float32, 4)}}, "tensor a has shape [4], the model expects [2 2]"},
		{append(good, safetensors.Tensor{Name: "c", Shape: []int{1}, Data: []float32{0}}), "tensor c (shape [1]), which the model does not have"},
	}
	for _, c := range cases {
		err := LoadParams(params(), c.ts, "ck")
		if diag.CodeOf(err) != diag.CodeCheckpointMismatch || !strings.Contains(err.Error(), c.want) {
			t.Errorf("LoadParams = %v, want E0608 %q", err, c.want)
		}
	}
}
