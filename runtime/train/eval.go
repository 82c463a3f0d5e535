package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/compress"
	"github.com/moec-dev/moec/runtime/data"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/weights"
)

// EvalOptions configure Eval.
type EvalOptions struct {
	Checkpoint string           // a checkpoint directory, or a run directory (its newest checkpoint)
	Program    *program.Program // where the data globs come from; nil = the run's run.json
	BaseDir    string           // relative data globs are relative to this
	Windows    int              // validation windows [64]
	MicroBatch int              // windows per forward [8]
	NewNet     NewNetFunc
}

// EvalResult is a validation measurement.
type EvalResult struct {
	Checkpoint string
	Step       int64
	Loss       float64 // mean cross-entropy, nats per token
	PPL        float64 // exp(Loss)
	Tokens     int
}

// ResolveCheckpoint returns the checkpoint directory dir names: dir itself when it holds a
// manifest, else the newest checkpoint of the run directory dir (weights.ResolveCheckpoint).
func ResolveCheckpoint(dir string) (string, error) { return weights.ResolveCheckpoint(dir) }

// LoadNet builds the model a checkpoint was trained as and loads its weights.
func LoadNet(dir string, newNet NewNetFunc) (Net, *checkpoint.Manifest, error) {
	if m, err := checkpoint.LoadManifest(dir); err == nil && compress.IsCompressed(m) {
		// A compressed checkpoint: its quantised matrices run as they are stored.
		net, cm, _, err := compress.Load(dir)
		if err != nil {
			return nil, nil, err
		}
		return net, cm, nil
	}
	c, err := checkpoint.Load(dir, false)
	if err != nil {
		return nil, nil, err
	}
	if err := CheckWeights(dir, c.Manifest.Model, c.Model); err != nil {
		return nil, nil, err
	}
	if newNet == nil {
		newNet = newNNNet
	}
	net, err := newNet(c.Manifest.Model, c.Manifest.Seed)
	if err != nil {
		var ue *nn.UnsupportedError
		if errors.As(err, &ue) {
			return nil, nil, diag.RuntimeWrap(diag.CodeUnsupportedFeature, err, "cannot load checkpoint %s", dir)
		}
		return nil, nil, diag.RuntimeWrap(diag.CodeCheckpointMismatch, err, "checkpoint %s: model config", dir)
	}
	if err := LoadParams(net.Params(), c.Model, dir); err != nil {
		return nil, nil, err
	}
	return net, &c.Manifest, nil
}

// Eval measures the validation perplexity of a checkpoint.
func Eval(ctx context.Context, opt EvalOptions) (*EvalResult, error) {
	dir, err := ResolveCheckpoint(opt.Checkpoint)
	if err != nil {
		return nil, err
	}
	net, m, err := LoadNet(dir, opt.NewNet)
	if err != nil {
		return nil, err
	}
	var dataTrain *program.Train
	var base string
	seqLen := int(m.Model.SeqLen)
	if opt.Program != nil {
		t, ok := opt.Program.Trains[m.Train]
		if !ok {
			// The checkpoint names its train block; there is no flag to choose another.
			return nil, diag.Runtimef(diag.CodeCheckpointMismatch, "the checkpoint was trained by train block %q, which the given .moe file does not have (it has: %s); pass the file the run used, or leave the .moe file out to use the run's own",
				m.Train, strings.Join(opt.Program.TrainOrder, ", "))
		}
		dataTrain, base = t, opt.BaseDir
		if t.SeqLen > 0 {
			seqLen = int(t.SeqLen)
		}
	} else {
		// checkpoints/step-N is two levels below the run directory; a compressed
		// checkpoint carries its source run's spec.
		runDir := filepath.Dir(filepath.Dir(dir))
		if compressed, _ := checkpoint.LoadManifest(dir); compressed != nil && compress.IsCompressed(compressed) {
			runDir = dir
		}
		spec, err := ReadSpec(runDir)
		if err != nil {
			return nil, fmt.Errorf("%w; pass the .moe file so the validation data can be found", err)
		}
		dataTrain, base, seqLen = spec.Train, spec.BaseDir, spec.SeqLen
		if kept := FindTokenizer(dir); dataTrain.Tokenizer != "" && kept != "" {
			// The run kept the tokenizer it trained with: read that, wherever the original is.
			t := *dataTrain
			t.Tokenizer, t.TokenizerDecl = kept, program.Source{}
			dataTrain = &t
		}
	}
	dataOpt, _, err := data.OptionsFor(dataTrain, base)
	if err != nil {
		return nil, err
	}
	corpus, err := data.Open(dataOpt)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b := opt.MicroBatch
	if b <= 0 {
		b = 8
	}
	w := opt.Windows
	if w <= 0 {
		w = 64
	}
	ev, err := evaluate(net, corpus, m.Seed, seqLen, b, w)
	if err != nil {
		return nil, err
	}
	ev.Checkpoint, ev.Step = dir, m.Step
	return ev, nil
}

// evaluate runs the model over the validation windows without gradients and returns the
// mean cross-entropy over all their tokens.
func evaluate(net Net, corpus *data.Corpus, seed int64, T, B, windows int) (*EvalResult, error) {
	ws, err := corpus.ValWindows(T, windows)
	if err != nil {
		return nil, err
	}
	var sum float64
	tokens := 0
	for i := 0; i < len(ws); i += B {
		n := min(B, len(ws)-i)
		toks := make([]int32, 0, n*(T+1))
		for _, w := range ws[i : i+n] {
			toks = append(toks, w...)
		}
		st, err := net.Forward(nn.Batch{B: n, T: T, Tokens: toks}, nn.StepOptions{Seed: seed})
		if err != nil {
			return nil, fmt.Errorf("train: validation: %w", err)
		}
		sum += st.CE * float64(n*T)
		tokens += n * T
	}
	loss := sum / float64(tokens)
	return &EvalResult{Loss: loss, PPL: math.Exp(loss), Tokens: tokens}, nil
}
