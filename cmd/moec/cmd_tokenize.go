package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/tokenizer"
	"github.com/moec-dev/moec/runtime/train"
)

func newTokenizeCommand(stdout io.Writer) *cobra.Command {
	var (
		path                    string
		decode, noSpecial, skip bool
	)
	cmd := &cobra.Command{
		Use:   "tokenize --tokenizer FILE [TEXT]",
		Short: "Print the token ids a Hugging Face tokenizer.json gives a text (or, with --decode, the text of ids)",
		Long: `tokenize prints the ids of TEXT, or of standard input when TEXT is absent (every byte of it,
a final newline included), as JSON: {"ids": [...]}. The post-processor's special tokens (a
BOS) are added as the model sees them in generate; --no-special leaves them out. With
--decode it reads ids (a JSON list, {"ids": [...]}, or numbers separated by spaces or
commas) and prints their text; --skip-special leaves the special tokens out of it.
FILE is a tokenizer.json, or a folder holding one.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if path == "" {
				return usageCode(diag.CodeMissingFlag, "tokenize: --tokenizer is required")
			}
			tok, err := tokenizer.Load(path)
			if err != nil {
				return err
			}
			var input string
			if len(args) == 1 {
				input = args[0]
			} else {
				b, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return fmt.Errorf("tokenize: reading standard input: %w", err)
				}
				input = string(b)
			}
			if decode {
				ids, err := parseIDs(input)
				if err != nil {
					return usage(diag.RuntimeWrap(diag.CodeBadRunOption, err, "tokenize --decode"))
				}
				text, err := tok.Decode(ids, skip)
				if err != nil {
					return diag.RuntimeWrap(diag.CodeBadRunOption, err, "tokenize --decode")
				}
				_, err = io.WriteString(stdout, text)
				return err
			}
			ids, err := tok.Encode(input, !noSpecial)
			if err != nil {
				return fmt.Errorf("tokenize: %w", err)
			}
			if ids == nil {
				ids = []int{}
			}
			out, err := json.Marshal(struct {
				IDs []int `json:"ids"`
			}{ids})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s\n", out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "tokenizer", "", "a Hugging Face tokenizer.json, or a folder holding one")
	f.BoolVar(&decode, "decode", false, "read ids and print their text")
	f.BoolVar(&noSpecial, "no-special", false, "leave out the special tokens the post-processor adds (a BOS)")
	f.BoolVar(&skip, "skip-special", false, "with --decode, leave special tokens out of the text")
	return cmd
}

// parseIDs reads ids as a JSON list, {"ids": [...]}, or numbers separated by spaces or commas.
func parseIDs(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "{") {
		var v struct {
			IDs *[]int `json:"ids"`
		}
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return nil, fmt.Errorf("want {\"ids\": [...]}: %w", err)
		}
		if v.IDs == nil {
			return nil, fmt.Errorf("the JSON object has no \"ids\"")
		}
		return *v.IDs, nil
	}
	if strings.HasPrefix(s, "[") {
		var ids []int
		if err := json.Unmarshal([]byte(s), &ids); err != nil {
			return nil, fmt.Errorf("want a JSON list of ids: %w", err)
		}
		return ids, nil
	}
	var ids []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' }) {
		id, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a token id", f)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// keepImportedTokenizer keeps the tokenizer of an imported Hugging Face folder beside the
// converted checkpoint, where generate, serve and export find it. A tokenizer moec cannot
// read is left behind, saying why: the model then reads bytes.
func keepImportedTokenizer(hfDir, outDir string, stdout, stderr io.Writer) {
	path := filepath.Join(hfDir, "tokenizer.json")
	if _, err := os.Stat(path); err != nil {
		return
	}
	if _, err := tokenizer.Load(path); err != nil {
		fmt.Fprintf(stderr, "note: the tokenizer was not kept (%v); generate and serve will read bytes until --tokenizer names one\n", err)
		return
	}
	if err := train.KeepTokenizer(outDir, path); err != nil {
		fmt.Fprintf(stderr, "note: %v\n", err)
		return
	}
	fmt.Fprintf(stdout, "kept the tokenizer in %s\n", outDir)
}
