package generate

import (
	"context"
	"io"
	"slices"

	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/tokenizer"
)

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
