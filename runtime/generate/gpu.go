package generate

import (
	"context"
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/gpu"
	"github.com/moec-dev/moec/runtime/nn"
)

// GPUDecoder decodes one sequence on the GPU through moec's generated CUDA (runtime/gpu's
// Decoder, or its CPU emulation): a prompt by the prefill program, then one decoding step
// per token, the KV caches in the device arena. The prefill takes prompts of up to
// seq_len − 1 tokens, the longest GenerateIDs feeds it.
type GPUDecoder struct {
	dec *gpu.Decoder
	pos int
	tok []int32
	at  []int
}

// NewGPUDecoder compiles m's decoding for one sequence of m's seq_len positions on device
// (cuda or cuda-emulated; with bf16, its weight products in bfloat16 with float32 sums)
// and uploads m's weights. A model the CUDA backend does not lower
// is an E0510-style refusal naming the feature.
func NewGPUDecoder(ctx context.Context, m *nn.Model, device string, bf16 bool) (*GPUDecoder, error) {
	cfg := m.Config()
	mode, err := gpu.ParseMode(device)
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeBadRunOption, err, "--device")
	}
	if m.Quantized() {
		return nil, diag.Runtimef(diag.CodeUnsupportedFeature, "model %s is compressed (quantised weights): the CUDA decoding does not run quantised matrices; decode it without --device", cfg.Name)
	}
	maxLen := int(cfg.SeqLen)
	if maxLen <= 1 {
		return nil, diag.Runtimef(diag.CodeBadRunOption, "model %s has seq_len %d", cfg.Name, cfg.SeqLen)
	}
	dec, err := gpu.OpenDecoder(ctx, cfg, step.Inference{Batch: 1, Prompt: maxLen - 1, MaxLen: maxLen}, gpu.Options{Mode: mode, BF16: bf16})
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeUnsupportedFeature, err, "cannot decode %s on --device %s", cfg.Name, device)
	}
	byID := map[params.ID][]float32{}
	for _, p := range m.Params() {
		byID[p.ID] = p.W
	}
	if err := dec.LoadParams(func(id params.ID) []float32 { return byID[id] }); err != nil {
		dec.Close()
		return nil, fmt.Errorf("generate: %w", err)
	}
	return &GPUDecoder{dec: dec, tok: make([]int32, 1), at: make([]int, 1)}, nil
}

// Close releases the device memory.
func (d *GPUDecoder) Close() error { return d.dec.Close() }

// Reset starts the sequence over at position 0.
func (d *GPUDecoder) Reset() { d.pos = 0 }

// Pos is the next position.
func (d *GPUDecoder) Pos() int { return d.pos }

// Prefill feeds a whole prompt from position 0 and returns the logits of its last
// position.
func (d *GPUDecoder) Prefill(tokens []int32) ([]float32, error) {
	logits, err := d.dec.Prefill([][]int32{tokens})
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	d.pos = len(tokens)
	return logits, nil
}

// Step feeds one token at the next position and returns the next-token logits.
func (d *GPUDecoder) Step(tokens []int32) ([]float32, error) {
	if len(tokens) != 1 {
		return nil, fmt.Errorf("generate: %d tokens for one sequence", len(tokens))
	}
	d.tok[0], d.at[0] = tokens[0], d.pos
	logits, err := d.dec.Decode(d.tok, d.at)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	d.pos++
	return logits, nil
}
