package kernelsel

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/train"
)

// Net is an nn.Model whose training steps run the compiled kernels; evaluation keeps the
// Go kernels. It implements train.Net, so `train.Run` trains with it when
// Options.NewNet is NewNet(library).
type Net struct {
	*nn.Model
	k nn.Kernels
}

// ForwardBackward runs the step's schedule with the compiled kernels.
func (n *Net) ForwardBackward(b nn.Batch, o nn.StepOptions) (nn.Stats, error) {
	s, err := n.BeginStepWith(b, o, n.k)
	if err != nil {
		return nn.Stats{}, err
	}
	for l := 0; l < s.Layers(); l++ {
		if err := s.LayerForward(l); err != nil {
			return nn.Stats{}, err
		}
	}
	st, err := s.HeadForward()
	if err != nil {
		return st, err
	}
	if err := s.HeadBackward(); err != nil {
		return st, err
	}
	for l := s.Layers() - 1; l >= 0; l-- {
		if err := s.LayerBackward(l); err != nil {
			return st, err
		}
	}
	return st, s.EmbedBackward()
}

// NewNet returns a train.NewNetFunc that builds the model and binds the compiled library
// at path to it. The library stays loaded for the life of the process: a training run
// is one model, and unloading code that a Net may still call is not worth the risk.
func NewNet(path string) train.NewNetFunc {
	return func(m *program.Model, seed int64) (train.Net, error) {
		model, err := nn.New(m, seed)
		if err != nil {
			return nil, err
		}
		lib, err := Open(path, m)
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", m.Name, err)
		}
		return &Net{Model: model, k: lib}, nil
	}
}
