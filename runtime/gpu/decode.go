package gpu

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/codegen/cudastep"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/llvmrt"
)

// Decoder decodes with a KV cache on the GPU (or the emulation): m's prefill program
// (prompts of up to Prompt positions) and decoding-step program (one token per sequence
// at its own position), lowered together into one generated host program over one device
// arena (cudastep.Decoding). One arena rather than two sessions: the two programs' weights
// and KV caches lie at the same offsets of their memory plans, so the caches the prefill
// fills are the ones the decoding steps extend, with no copy and the weights uploaded
// once; two host programs would each create their own context and allocation, and a
// device pointer of one context is not the other's. Sampling stays with the caller.
type Decoder struct {
	m       *program.Model
	low     *cudastep.Decoding
	lib     *llvmrt.Library
	fns     map[string]*llvmrt.Func
	handle  int64
	batch   int
	prompt  int
	maxLen  int
	vocab   int // the model's vocabulary: token ids below it
	maxPos  int // learned positions (0: rotary or none)
	tokens  []int32
	at      []int32
	logits  []float32 // [batch, padded vocab], reused by every call
	logitsN int
}

// decoderFuncs are the entry points of the decoding host program.
var decoderFuncs = []string{"moec_step_device", "moec_step_open", "moec_step_upload", "moec_step_download", "moec_step_close",
	"moec_decode_prefill", "moec_decode_step", "moec_decode_feed"}

// OpenDecoder lowers m's inference programs for in (Batch sequences of MaxLen positions,
// prompts of up to Prompt ≥ 1 positions) on one rank, writes and compiles the decoding
// host program and opens it on the device (or the emulation). The weights are zero until
// LoadParams.
func OpenDecoder(ctx context.Context, m *program.Model, in step.Inference, o Options) (*Decoder, error) {
	if in.Prompt < 1 {
		return nil, fmt.Errorf("gpu: a prefill of %d positions: want at least 1", in.Prompt)
	}
	prefill, err := step.LowerPrefill(m, in.Batch, in.Prompt, in.MaxLen)
	if err != nil {
		return nil, err
	}
	decode, err := step.LowerDecode(m, in.Batch, in.MaxLen)
	if err != nil {
		return nil, err
	}
	low, err := cudastep.LowerDecoding(prefill, decode, m, cudastep.Options{BF16: o.BF16})
	if err != nil {
		return nil, err
	}
	d, err := m.Dims()
	if err != nil {
		return nil, fmt.Errorf("gpu: %w", err)
	}
	files, err := cudastep.DecodingSources(low)
	if err != nil {
		return nil, err
	}
	lib, fns, handle, err := openHost(ctx, files, low.KernelFiles(), o, fmt.Sprintf("the decoding of %s", m.Name))
	if err != nil {
		return nil, err
	}
	dec := &Decoder{m: m, low: low, lib: lib, fns: fns, handle: handle, batch: in.Batch, prompt: in.Prompt, maxLen: in.MaxLen,
		vocab: d.V, maxPos: d.MaxPos, tokens: make([]int32, in.Batch*in.Prompt), at: make([]int32, in.Batch)}
	for _, b := range decode.Buffers {
		if b.Name == "logits@0" {
			dec.logitsN = int(b.Elements())
		}
	}
	dec.logits = make([]float32, dec.logitsN)
	return dec, nil
}

// openHost writes and compiles a generated host program's sources (files, with the kernel
// files kernels) and opens it: the library, its entry points (decoderFuncs) and the
// device state's handle.
func openHost(ctx context.Context, files map[string]string, kernels []cudastep.KernelFile, o Options, what string) (*llvmrt.Library, map[string]*llvmrt.Func, int64, error) {
	if o.Mode == Device {
		if err := CheckDriver(); err != nil {
			return nil, nil, 0, err
		}
	}
	clang := o.Clang
	if clang == "" {
		clang = cuda.FindClang()
	}
	if clang == "" {
		return nil, nil, 0, errors.New("gpu: no clang++ on PATH: moec compiles its CUDA with clang (16 or newer)")
	}
	dir := o.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "moec-gpu-*")
		if err != nil {
			return nil, nil, 0, fmt.Errorf("gpu: %w", err)
		}
		// The loaded library stays mapped: the folder is not needed once it is open.
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	files["moec_cpu_emu.h"] = cuda.EmulationHeader()
	files[cuda.PreludeName] = cuda.Prelude()
	for n, text := range files {
		if err := writeFile(dir+string(os.PathSeparator)+n, text); err != nil {
			return nil, nil, 0, err
		}
	}
	so, err := compileHostOf(ctx, dir, clang, o.Mode, kernels)
	if err != nil {
		return nil, nil, 0, err
	}
	lib, err := llvmrt.Open(so)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("gpu: loading the host program: %w", err)
	}
	fail := func(err error) (*llvmrt.Library, map[string]*llvmrt.Func, int64, error) {
		lib.Close()
		return nil, nil, 0, err
	}
	fns := map[string]*llvmrt.Func{}
	for _, name := range decoderFuncs {
		f, err := lib.Func(name)
		if err != nil {
			return fail(fmt.Errorf("gpu: %w", err))
		}
		fns[name] = f
	}
	var ptx []string
	if o.Mode == Device {
		arch := o.Arch
		if arch == "" {
			probe := &Session{fns: fns}
			if arch, err = probe.deviceArch(); err != nil {
				return fail(err)
			}
		}
		if ptx, err = compilePTXOf(ctx, dir, clang, arch, kernels); err != nil {
			return fail(err)
		}
	}
	handle, err := openHandle(fns["moec_step_open"], ptx, what, o.Mode, 0)
	if err != nil {
		return fail(err)
	}
	return lib, fns, handle, nil
}

// Close releases the device memory and the library.
func (d *Decoder) Close() error {
	if d.lib == nil {
		return nil
	}
	err := d.fns["moec_step_close"].Call(0, 0, d.handle)
	err = errors.Join(err, d.lib.Close())
	d.lib = nil
	return err
}

// Batch is the number of sequences the decoder decodes at once, Prompt the longest
// prompt its prefill takes, MaxLen the positions of its KV caches.
func (d *Decoder) Batch() int  { return d.batch }
func (d *Decoder) Prompt() int { return d.prompt }
func (d *Decoder) MaxLen() int { return d.maxLen }

// LoadParams uploads every weight of the decoding programs from get (whole tensors by
// parameter); a parameter get has no values for is an error.
func (d *Decoder) LoadParams(get func(id params.ID) []float32) error {
	for _, b := range d.low.Weights().Program.Buffers {
		if b.Kind != step.KindParam || b.Param == nil {
			continue
		}
		id := *b.Param
		id.Shard = params.Shard{}
		w := get(id)
		if int64(len(w)) != b.Elements() {
			return fmt.Errorf("gpu: parameter %s: %d values, the buffer holds %d", id, len(w), b.Elements())
		}
		msg := make([]byte, errBytes)
		if err := d.fns["moec_step_upload"].Call(0, 0, d.handle, b.Offset, w, int64(4*len(w)), msg, int64(errBytes)); err != nil {
			return err
		}
		if e := cString(msg); e != "" {
			return fmt.Errorf("gpu: uploading %s: %s", id, e)
		}
	}
	return nil
}

// Prefill fills the KV caches from the prompts (one per sequence, each of 1 to Prompt
// tokens, from position 0; shorter ones are padded at the end, which causal attention
// keeps out of every real position) and returns the logits of each prompt's last
// position ([sequences, padded vocab], reused by the next call). Sequence i's decoding
// goes on at position len(prompts[i]).
func (d *Decoder) Prefill(prompts [][]int32) ([]float32, error) {
	if len(prompts) != d.batch {
		return nil, fmt.Errorf("gpu: %d prompts for a prefill of %d sequences", len(prompts), d.batch)
	}
	clear(d.tokens)
	for i, p := range prompts {
		if len(p) < 1 || len(p) > d.prompt {
			return nil, fmt.Errorf("gpu: prompt %d has %d tokens, the prefill takes 1 to %d", i, len(p), d.prompt)
		}
		if err := d.checkTokens(p); err != nil {
			return nil, err
		}
		copy(d.tokens[i*d.prompt:], p)
		d.at[i] = int32(len(p))
	}
	return d.call("moec_decode_prefill", d.tokens, "the prefill")
}

// Decode feeds tokens[i] to sequence i at position pos[i] (its cache holds positions
// 0..pos[i]−1) and returns every sequence's next-token logits ([sequences, padded vocab],
// reused by the next call).
func (d *Decoder) Decode(tokens []int32, pos []int) ([]float32, error) {
	if len(tokens) != d.batch || len(pos) != d.batch {
		return nil, fmt.Errorf("gpu: %d tokens and %d positions for %d sequences", len(tokens), len(pos), d.batch)
	}
	for i, p := range pos {
		if p < 0 || p >= d.maxLen || d.maxPos > 0 && p >= d.maxPos {
			return nil, fmt.Errorf("gpu: position %d of sequence %d outside the cache of %d positions", p, i, d.maxLen)
		}
		d.at[i] = int32(p)
	}
	if err := d.checkTokens(tokens); err != nil {
		return nil, err
	}
	return d.call("moec_decode_step", tokens, "a decoding step")
}

func (d *Decoder) call(fn string, tokens []int32, what string) ([]float32, error) {
	if d.lib == nil {
		return nil, errors.New("gpu: the decoder is closed")
	}
	msg := make([]byte, errBytes)
	if err := d.fns[fn].Call(0, 0, d.handle, tokens, d.at, d.logits, msg, int64(errBytes)); err != nil {
		return nil, err
	}
	if e := cString(msg); e != "" {
		return nil, fmt.Errorf("gpu: %s: %s", what, e)
	}
	return d.logits, nil
}

func (d *Decoder) checkTokens(tokens []int32) error {
	for i, t := range tokens {
		if t < 0 || int(t) >= d.vocab {
			return fmt.Errorf("gpu: token %d at %d outside the vocabulary of %d", t, i, d.vocab)
		}
	}
	return nil
}
