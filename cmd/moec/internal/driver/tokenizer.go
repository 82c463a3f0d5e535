package driver

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/data"
)

// checkTokenizers reads the tokenizer file each train block names, as a later phase of the
// check (compiler/check reads no files but .moe ones): a file that is missing, is not a
// tokenizer.json moec reads (naming its kind), or has more ids than the model's vocab is a
// diagnostic at the tokenizer entry.
func checkTokenizers(prog *program.Program) diag.List {
	var out diag.List
	if prog == nil {
		return nil
	}
	for _, name := range prog.TrainOrder {
		t := prog.Trains[name]
		if t == nil || t.Tokenizer == "" || t.Tokenizer == program.TokenizerBytes {
			continue
		}
		rng := t.TokenizerDecl.Range()
		tok, _, err := data.LoadTokenizer(t.Tokenizer, filepath.Dir(rng.File), rng)
		if err != nil {
			var re *diag.Diagnostic
			if !errors.As(err, &re) {
				out.Errorf(diag.CodeBadTokenizer, rng, "%v", err)
				continue
			}
			msg := re.Summary
			if re.Err != nil {
				msg += ": " + re.Err.Error()
			}
			out.Errorf(diag.CodeBadTokenizer, rng, "%s", msg).Suggestion = re.Suggestion
			continue
		}
		if m := prog.Models[t.Model]; m != nil && m.Vocab < int64(tok.VocabSize()) {
			d := out.Errorf(diag.CodeBadTokenizer, rng, "the tokenizer has %d token ids, more than model %s's vocab of %d", tok.VocabSize(), m.Name, m.Vocab)
			d.Suggestion = "set the model's vocab to at least  " + fmt.Sprint(tok.VocabSize())
		}
	}
	return out
}
