package generate

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// StepDecoder decodes one sequence through the step program of a decoding step: the
// program's KV caches hold the positions fed so far.
type StepDecoder struct {
	ex  *exec.Executor
	pos int
	tok []int32
}

// NewStepDecoder lowers m's decoding step for one sequence of m's seq_len positions and
// loads m's weights into it.
func NewStepDecoder(m *nn.Model) (*StepDecoder, error) {
	cfg := m.Config()
	prog, err := step.LowerDecode(cfg, 1, int(cfg.SeqLen))
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	ex, err := exec.New(prog, cfg, nil)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	var ts []safetensors.Tensor
	for _, p := range m.Params() {
		ts = append(ts, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: p.W})
	}
	if err := ex.LoadTensors(ts); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	return &StepDecoder{ex: ex, tok: make([]int32, 1)}, nil
}

// Reset starts the sequence over at position 0.
func (d *StepDecoder) Reset() { d.pos = 0 }

// Pos is the next position.
func (d *StepDecoder) Pos() int { return d.pos }

// Step feeds one token at the next position and returns the next-token logits.
func (d *StepDecoder) Step(tokens []int32) ([]float32, error) {
	logits, err := d.ex.Decode(tokens, d.pos)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	d.pos++
	return logits, nil
}
