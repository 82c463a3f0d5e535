package generate

import (
	"errors"
	"fmt"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// StepDecoder decodes one sequence through inference step programs (compiler/step, run
// by runtime/exec's LocalDecoder): a prompt by one prefill program, then one decoding
// step per token; the programs' KV caches hold the positions fed so far. Under expert
// parallelism each of the ep replicas decodes a copy of the sequence.
type StepDecoder struct {
	ld      *exec.LocalDecoder
	vocab   int
	pos     int
	tok     []int32
	at      []int
	prompts [][]int32
}

// peerTimeout is how long an in-process rank waits for the others in a collective.
const peerTimeout = time.Minute

// NewStepDecoder lowers m's inference programs for one sequence of m's seq_len
// positions at tensor-parallel size tp, expert-parallel size ep and pipeline-parallel
// size pp (all 1: one rank) and loads m's weights into them. A layout that does not
// divide m is an E0509 diagnostic, a feature not lowered under it E0510.
func NewStepDecoder(m *nn.Model, tp, ep, pp int) (*StepDecoder, error) {
	cfg := m.Config()
	l := step.Layout{DP: max(ep, 1), EP: max(ep, 1), TP: max(tp, 1), PP: max(pp, 1)}
	ld, err := exec.NewLocalDecoder(cfg, 1, int(cfg.SeqLen), l, peerTimeout)
	if err != nil {
		return nil, layoutError(cfg, l, err)
	}
	var ts []safetensors.Tensor
	for _, p := range m.Params() {
		ts = append(ts, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: p.W})
	}
	if err := ld.Load(ts); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	n := ld.Sequences()
	return &StepDecoder{ld: ld, vocab: int(cfg.PaddedVocab()), tok: make([]int32, n), at: make([]int, n), prompts: make([][]int32, n)}, nil
}

// layoutError is a refusal of the layout as a diagnostic: E0509 for a layout that does
// not divide the model, E0510 for a feature the step program does not lower under it.
func layoutError(cfg *program.Model, l step.Layout, err error) error {
	var le *step.LayoutError
	if !errors.As(err, &le) {
		return fmt.Errorf("generate: %w", err)
	}
	return le.Diagnostic(diag.Range{}, fmt.Sprintf("model %s cannot decode at %s", cfg.Name, l))
}

// Reset starts the sequence over at position 0.
func (d *StepDecoder) Reset() { d.pos = 0 }

// Pos is the next position.
func (d *StepDecoder) Pos() int { return d.pos }

// Prefill feeds a whole prompt from position 0 by the prefill program and returns the
// logits of its last position.
func (d *StepDecoder) Prefill(tokens []int32) ([]float32, error) {
	for i := range d.prompts {
		d.prompts[i] = tokens
	}
	logits, err := d.ld.Prefill(d.prompts)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	d.pos = len(tokens)
	return logits[:d.vocab], nil
}

// Step feeds one token at the next position and returns the next-token logits.
func (d *StepDecoder) Step(tokens []int32) ([]float32, error) {
	if len(tokens) != 1 {
		return nil, fmt.Errorf("generate: %d tokens for one sequence", len(tokens))
	}
	for i := range d.tok {
		d.tok[i], d.at[i] = tokens[0], d.pos
	}
	logits, err := d.ld.Decode(d.tok, d.at)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	d.pos++
	return logits[:d.vocab], nil
}
