package data

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/rng"
	"github.com/moec-dev/moec/runtime/tokenizer"
)

// LoadTokenizer reads a train block's tokenizer entry: a tokenizer.json or a folder holding
// one. A relative path is taken relative to base (the .moe file's directory), then, when
// nothing is there, to the working directory, as a data glob is. It returns the tokenizer
// and the path it was read from. A refusal points at src (where the entry is written).
func LoadTokenizer(path, base string, src diag.Range) (*tokenizer.Tokenizer, string, error) {
	expanded, err := ExpandVars(path)
	if err != nil {
		e := diag.RuntimeWrap(diag.CodeTokenizerUnreadable, err, "tokenizer %q", path)
		e.Subject = src
		return nil, "", e
	}
	resolved := expanded
	if !filepath.IsAbs(expanded) && base != "" && base != "." {
		if _, err := os.Stat(filepath.Join(base, expanded)); err == nil {
			resolved = filepath.Join(base, expanded)
		}
	}
	tok, err := tokenizer.Load(resolved)
	if err != nil {
		var re *diag.Diagnostic
		if !errors.As(err, &re) {
			re = diag.RuntimeWrap(diag.CodeTokenizerUnreadable, err, "tokenizer %q", path)
		}
		re.Subject = src
		if _, statErr := os.Stat(resolved); statErr != nil {
			re.Suggestion = "a relative path is read from the .moe file's folder, then the working directory"
		}
		return nil, "", re
	}
	if info, err := os.Stat(resolved); err == nil && info.IsDir() {
		resolved = filepath.Join(resolved, "tokenizer.json")
	}
	return tok, resolved, nil
}

// batchIDs is Batch over the token ids of a tokenized corpus.
func (c *Corpus) batchIDs(seed, step int64, first, B, T int) ([]int32, error) {
	w := T + 1
	if len(c.TrainIDs) < w {
		return nil, diag.Runtimef(diag.CodeEmptyCorpus, "training text has %d tokens, fewer than one window of %d tokens", len(c.TrainIDs), w)
	}
	s := rng.New(rng.Key(seed, step, 0, rng.PurposeDataOrder))
	out := make([]int32, B*w)
	for b := 0; b < B; b++ {
		s.Counter = uint64(first + b)
		start := s.Intn(len(c.TrainIDs) - w + 1)
		copy(out[b*w:(b+1)*w], c.TrainIDs[start:start+w])
	}
	return out, nil
}

// valWindowsIDs is ValWindows over token ids.
func valWindowsIDs(ids []int32, T, limit int) ([][]int32, error) {
	w := T + 1
	if len(ids) < w {
		return nil, diag.Runtimef(diag.CodeEmptyCorpus, "validation text has %d tokens, fewer than one window of %d tokens", len(ids), w)
	}
	n := len(ids) / w
	if limit > 0 && n > limit {
		n = limit
	}
	stride := len(ids) / n
	if n > 1 {
		stride = (len(ids) - w) / (n - 1)
	}
	out := make([][]int32, n)
	for i := range out {
		out[i] = append([]int32(nil), ids[i*stride:i*stride+w]...)
	}
	return out, nil
}

// OptionsFor is the Options of a train block's data, its tokenizer loaded (base: the .moe
// file's directory). It also returns the path the tokenizer was read from ("" for bytes).
func OptionsFor(t *program.Train, base string) (Options, string, error) {
	opt := Options{Glob: t.Data, ValGlob: t.ValData, BaseDir: base, ValSource: t.ValDataDecl.Range()}
	if t.Tokenizer == "" || t.Tokenizer == program.TokenizerBytes {
		return opt, "", nil
	}
	tok, path, err := LoadTokenizer(t.Tokenizer, base, t.TokenizerDecl.Range())
	if err != nil {
		return Options{}, "", err
	}
	opt.Tokenizer = tok
	return opt, path, nil
}

// VocabNeeded is the number of token ids the data can hold: Vocab for bytes, else the
// tokenizer's.
func (o Options) VocabNeeded() int {
	if o.Tokenizer == nil {
		return Vocab
	}
	return o.Tokenizer.VocabSize()
}
