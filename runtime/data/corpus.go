package data

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/rng"
	"github.com/moec-dev/moec/runtime/tokenizer"
)

// Vocab is the number of byte-level token ids.
const Vocab = 256

// HoldOutEvery is the validation split when no validation glob is given: file i (in sorted
// order) is held out when i % HoldOutEvery == HoldOutEvery-1.
const HoldOutEvery = 20

// Options says where the text is.
type Options struct {
	Glob    string // training text
	ValGlob string // validation text; "" holds out every HoldOutEvery-th training file
	// ValSource is where ValGlob is written, so that a refusal of it points there (zero: nowhere).
	ValSource diag.Range
	// BaseDir is the .moe file's directory. A relative glob is taken relative to it, like
	// an import; when that matches nothing it is taken relative to the working directory,
	// where a user running moec from a project root expects it.
	BaseDir string
	// Tokenizer turns the text into ids; nil: each byte is a token (Vocab of them).
	Tokenizer *tokenizer.Tokenizer
}

// globFiles expands pattern relative to base, then, when that finds nothing, relative to
// the working directory.
func globFiles(pattern, base string) ([]string, error) {
	files, err := Glob(pattern, base)
	if err != nil || len(files) > 0 || base == "" || base == "." {
		return files, err
	}
	return Glob(pattern, "")
}

// Corpus is the loaded text. Token ids are byte values, or with a tokenizer the ids in
// TrainIDs and ValIDs (each file encoded on its own, without special tokens).
type Corpus struct {
	Train, Val []byte
	// TrainIDs and ValIDs are the token ids of Train and Val when a tokenizer made them;
	// nil for bytes.
	TrainIDs, ValIDs []int32
	TrainFiles       int
	ValFiles         int
	Skipped          int      // binary files (with a NUL byte) left out
	SkippedName      []string // the first few of them, for messages
	Fingerprint      string   // SHA-256 of the training and validation text
}

// Open reads the corpus.
func Open(opt Options) (*Corpus, error) {
	files, err := globFiles(opt.Glob, opt.BaseDir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, diag.Runtimef(diag.CodeEmptyCorpus, "data glob %s matches no files%s", describeGlob(opt.Glob), where(opt.Glob, opt.BaseDir))
	}
	c := &Corpus{}
	var trainFiles, valFiles []string
	if opt.ValGlob == "" {
		for i, f := range files {
			if i%HoldOutEvery == HoldOutEvery-1 {
				valFiles = append(valFiles, f)
			} else {
				trainFiles = append(trainFiles, f)
			}
		}
		if len(valFiles) == 0 {
			// Too few files for the split: hold out the last file, or nothing when there is one.
			if len(trainFiles) > 1 {
				valFiles, trainFiles = trainFiles[len(trainFiles)-1:], trainFiles[:len(trainFiles)-1]
			}
		}
	} else {
		trainFiles = files
		if valFiles, err = globFiles(opt.ValGlob, opt.BaseDir); err != nil {
			return nil, err
		}
		if len(valFiles) == 0 {
			e := diag.Runtimef(diag.CodeEmptyCorpus, "validation glob %s matches no files%s", describeGlob(opt.ValGlob), where(opt.ValGlob, opt.BaseDir))
			e.Subject = opt.ValSource
			return nil, e
		}
	}
	var trainIDs, valIDs []int32
	if c.Train, trainIDs, c.TrainFiles, err = c.read(trainFiles, opt.Tokenizer); err != nil {
		return nil, err
	}
	trainSkipped := c.Skipped
	if c.Val, valIDs, c.ValFiles, err = c.read(valFiles, opt.Tokenizer); err != nil {
		return nil, err
	}
	if opt.ValGlob != "" && len(c.Val) == 0 {
		// Falling back to a slice of the training text would report a perplexity over
		// tokens the user did not name as validation data.
		binary := c.Skipped - trainSkipped
		what := fmt.Sprintf("%d files, none of which holds text", len(valFiles))
		switch {
		case len(valFiles) == 1 && binary == 1:
			what = "1 file, which is binary"
		case len(valFiles) == 1:
			what = "1 file, which is empty"
		case binary > 0:
			what += fmt.Sprintf(" (%d binary)", binary)
		}
		msg := fmt.Sprintf("validation glob %s matches %s", describeGlob(opt.ValGlob), what)
		e := diag.Runtimef(diag.CodeEmptyCorpus, "%s", msg)
		e.Subject = opt.ValSource
		e.Suggestion = "point val_data at text files, or remove it to validate on a held-out part of the training data"
		return nil, e
	}
	if len(c.Train) == 0 {
		msg := fmt.Sprintf("data glob %s matches %d files but none holds text", describeGlob(opt.Glob), len(files))
		if c.Skipped > 0 {
			msg += fmt.Sprintf(" (%d binary files skipped, e.g. %s)", c.Skipped, c.SkippedName[0])
		}
		return nil, diag.Runtimef(diag.CodeEmptyCorpus, "%s", msg)
	}
	if len(c.Val) == 0 {
		// A single-file corpus: validate on its last 1%, train on the rest.
		cut := len(c.Train) - max(len(c.Train)/100, 1)
		c.Train, c.Val = c.Train[:cut], c.Train[cut:]
		if opt.Tokenizer != nil {
			cut := len(trainIDs) - max(len(trainIDs)/100, 1)
			trainIDs, valIDs = trainIDs[:cut], trainIDs[cut:]
		}
	}
	h := sha256.New()
	fmt.Fprintf(h, "train %d\n", len(c.Train))
	h.Write(c.Train)
	fmt.Fprintf(h, "val %d\n", len(c.Val))
	h.Write(c.Val)
	if opt.Tokenizer != nil {
		// The same text under another tokenizer is other data.
		c.TrainIDs, c.ValIDs = trainIDs, valIDs
		for _, ids := range [][]int32{trainIDs, valIDs} {
			fmt.Fprintf(h, "ids %d\n", len(ids))
			for _, id := range ids {
				fmt.Fprintf(h, "%d ", id)
			}
		}
	}
	c.Fingerprint = hex.EncodeToString(h.Sum(nil))
	return c, nil
}

// where says which directories a relative glob was tried in.
func where(pattern, base string) string {
	if p, err := ExpandVars(pattern); err != nil || filepath.IsAbs(p) {
		return ""
	}
	if base == "" || base == "." {
		return " in the working directory"
	}
	return fmt.Sprintf(" in %s or the working directory", base)
}

// read concatenates the text files, skipping binary ones, and with a tokenizer their ids,
// each file encoded on its own.
func (c *Corpus) read(files []string, tok *tokenizer.Tokenizer) ([]byte, []int32, int, error) {
	var buf bytes.Buffer
	var ids []int32
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, 0, diag.RuntimeWrap(diag.CodeBadDataFile, err, "reading data file %s", f)
		}
		if bytes.IndexByte(b, 0) >= 0 {
			c.Skipped++
			if len(c.SkippedName) < 3 {
				c.SkippedName = append(c.SkippedName, f)
			}
			continue
		}
		if len(b) == 0 {
			continue
		}
		start := buf.Len()
		buf.Write(b)
		if b[len(b)-1] != '\n' {
			buf.WriteByte('\n')
		}
		n++
		if tok != nil {
			fileIDs, err := tok.Encode(string(buf.Bytes()[start:]), false)
			if err != nil {
				return nil, nil, 0, diag.RuntimeWrap(diag.CodeBadDataFile, err, "tokenizing data file %s", f)
			}
			for _, id := range fileIDs {
				ids = append(ids, int32(id))
			}
		}
	}
	return buf.Bytes(), ids, n, nil
}

// Batch returns windows first .. first+B-1 of step's sequence of windows, each T+1
// tokens, row-major. Window i of a step depends only on (seed, step, i) and the corpus:
// never on earlier calls, and not on how a step is split into micro-batches, so a run
// sees the same text whatever its micro-batch size and after any resume.
func (c *Corpus) Batch(seed, step int64, first, B, T int) ([]int32, error) {
	w := T + 1
	if c.TrainIDs != nil {
		return c.batchIDs(seed, step, first, B, T)
	}
	if len(c.Train) < w {
		return nil, diag.Runtimef(diag.CodeEmptyCorpus, "training text has %d bytes, fewer than one window of %d tokens", len(c.Train), w)
	}
	s := rng.New(rng.Key(seed, step, 0, rng.PurposeDataOrder))
	out := make([]int32, B*w)
	for b := 0; b < B; b++ {
		// Each window takes one draw, so window i is the stream's value i.
		s.Counter = uint64(first + b)
		start := s.Intn(len(c.Train) - w + 1)
		for i, ch := range c.Train[start : start+w] {
			out[b*w+i] = int32(ch)
		}
	}
	return out, nil
}

// ValWindows returns up to limit windows of T+1 validation tokens, evenly spaced over the
// validation text without overlapping, always the same for the same corpus.
func (c *Corpus) ValWindows(T, limit int) ([][]int32, error) {
	w := T + 1
	if c.ValIDs != nil {
		return valWindowsIDs(c.ValIDs, T, limit)
	}
	if len(c.Val) < w {
		return nil, diag.Runtimef(diag.CodeEmptyCorpus, "validation text has %d bytes, fewer than one window of %d tokens", len(c.Val), w)
	}
	n := len(c.Val) / w
	if limit > 0 && n > limit {
		n = limit
	}
	stride := len(c.Val) / n
	if n > 1 {
		stride = (len(c.Val) - w) / (n - 1)
	}
	out := make([][]int32, n)
	for i := range out {
		start := i * stride
		win := make([]int32, w)
		for j, ch := range c.Val[start : start+w] {
			win[j] = int32(ch)
		}
		out[i] = win
	}
	return out, nil
}
