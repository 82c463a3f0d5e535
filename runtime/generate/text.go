package generate

import (
	"context"
	"io"
	"path/filepath"
	"slices"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/tokenizer"
	"github.com/moec-dev/moec/runtime/train"
)

// loadTokenizer returns the tokenizer generation uses: the one named, else the one kept
// with the checkpoint (train.FindTokenizer), else nil (bytes). Its ids must fit the model.
func loadTokenizer(path, checkpointDir string, m *nn.Model) (*tokenizer.Tokenizer, tokenizer.Config, error) {
	if path == "" {
		path = train.FindTokenizer(checkpointDir)
	}
	if path == "" {
		return nil, tokenizer.Config{}, nil
	}
	tok, err := tokenizer.Load(path)
	if err != nil {
		return nil, tokenizer.Config{}, err
	}
	if v := m.Config().Vocab; int64(tok.VocabSize()) > v {
		return nil, tokenizer.Config{}, diag.Runtimef(tokenizer.ErrBadTokenizer, "tokenizer %s has %d token ids, more than the model's vocab of %d", path, tok.VocabSize(), v)
	}
	dir := path
	if filepath.Base(path) == "tokenizer.json" {
		dir = filepath.Dir(path)
	}
	return tok, tokenizer.LoadConfig(dir, tok), nil
}

// generateText is Run with a tokenizer: the prompt is encoded (with the BOS its
// post-processor adds), generation stops at an end-of-sequence token, and the text is
// streamed as it settles, special tokens left out.
func generateText(ctx context.Context, m *nn.Model, dec Decoder, tok *tokenizer.Tokenizer, cfg tokenizer.Config, opt Options, w io.Writer) error {
	prompt := opt.Prompt
	if prompt == "" {
		prompt = "\n"
	}
	ids, err := tok.Encode(prompt, true)
	if err != nil {
		return err
	}
	promptIDs := make([]int32, len(ids))
	for i, id := range ids {
		promptIDs[i] = int32(id)
	}
	if dec == nil {
		dec = m.NewDecoder(1, int(m.Config().SeqLen))
	}
	stream := tok.NewStream(true)
	s := Sampler{Temperature: opt.Temperature, TopK: opt.TopK, Seed: opt.Seed}
	err = GenerateIDs(ctx, m.Config(), dec, promptIDs, opt.MaxTokens, tok.VocabSize(), s, func(id int32) (bool, error) {
		if slices.Contains(cfg.EOS, int(id)) {
			return true, nil
		}
		b, err := stream.Add(int(id))
		if err != nil {
			return false, err
		}
		_, err = w.Write(b)
		return false, err
	})
	if err != nil {
		return err
	}
	_, err = w.Write(stream.Flush())
	return err
}
