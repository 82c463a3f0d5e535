package serve

import (
	"context"
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/gpu"
	"github.com/moec-dev/moec/runtime/nn"
)

// openDevice compiles m's feeding programs for the server's slots and prefill chunk on
// opt.Device (cuda or cuda-emulated: runtime/gpu's Feeder, the generated CUDA) and
// uploads m's weights. A model the CUDA backend does not lower is an E0510-style refusal
// naming the feature.
func openDevice(ctx context.Context, m *nn.Model, opt Options) (*gpu.Feeder, error) {
	cfg := m.Config()
	mode, err := gpu.ParseMode(opt.Device)
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeBadRunOption, err, "--device")
	}
	if m.Quantized() {
		return nil, diag.Runtimef(diag.CodeUnsupportedFeature, "model %s is compressed (quantised weights): the CUDA decoding does not run quantised matrices; serve it without --device", cfg.Name)
	}
	maxLen := int(cfg.SeqLen)
	if maxLen <= 1 {
		return nil, fmt.Errorf("serve: model %s has seq_len %d; it needs at least 2", cfg.Name, cfg.SeqLen)
	}
	f, err := gpu.OpenFeeder(ctx, cfg, opt.Slots, feedRows(opt.Slots, opt.PrefillChunk, maxLen), maxLen, gpu.Options{Mode: mode, BF16: opt.BF16})
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeUnsupportedFeature, err, "cannot serve %s on --device %s", cfg.Name, opt.Device)
	}
	byID := map[params.ID][]float32{}
	for _, p := range m.Params() {
		byID[p.ID] = p.W
	}
	if err := f.LoadParams(func(id params.ID) []float32 { return byID[id] }); err != nil {
		f.Close()
		return nil, fmt.Errorf("serve: %w", err)
	}
	return f, nil
}
