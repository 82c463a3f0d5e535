package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moec-dev/moec/lang/diag"
)

// fileJSON is the part of tokenizer.json this package reads.
type fileJSON struct {
	AddedTokens   []addedJSON     `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

type addedJSON struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// typed is any component: its "type" names it.
type typed struct {
	Type string `json:"type"`
}

// patternJSON is a Split or Replace pattern: a literal string or a regex.
type patternJSON struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

// Load reads a tokenizer.json, or the tokenizer.json inside a folder.
func Load(path string) (*Tokenizer, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "tokenizer.json")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		// The path error repeats the path the message names: keep the cause alone.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, diag.RuntimeWrap(diag.CodeTokenizerUnreadable, err, "tokenizer %s", path)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeTokenizerUnreadable, err, "tokenizer %s", path)
	}
	return t, nil
}

// Parse builds a tokenizer from the text of a tokenizer.json.
func Parse(data []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		if kind := otherKind(data); kind != "" {
			return nil, fmt.Errorf("not a tokenizer.json but %s", kind)
		}
		return nil, fmt.Errorf("not a tokenizer.json: %w", err)
	}
	if isNull(f.Model) {
		if kind := otherKind(data); kind != "" {
			return nil, fmt.Errorf("not a tokenizer.json but %s", kind)
		}
		return nil, fmt.Errorf("no model")
	}
	var err error
	t := &Tokenizer{}
	if t.model, err = parseModel(f.Model); err != nil {
		return nil, err
	}
	if t.normalizer, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	if t.preTokenizer, err = parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	if t.decoder, err = parseDecoder(f.Decoder); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	t.added = newAddedVocab(f.AddedTokens)
	if t.post, err = parsePostProcessor(f.PostProcessor, t); err != nil {
		return nil, fmt.Errorf("post_processor: %w", err)
	}
	return t, nil
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

func typeOf(raw json.RawMessage) (string, error) {
	var ty typed
	if err := json.Unmarshal(raw, &ty); err != nil {
		return "", err
	}
	return ty.Type, nil
}

// unsupported names a component kind this package does not implement.
func unsupported(what, kind string, known ...string) error {
	if kind == "" {
		return fmt.Errorf("a %s without a type", what)
	}
	return fmt.Errorf("%s %q is not supported (moec reads %s)", what, kind, strings.Join(known, ", "))
}

func (p patternJSON) compile() (*pattern, error) {
	switch {
	case p.String != nil:
		return &pattern{literal: *p.String}, nil
	case p.Regex != nil:
		return compileRegex(*p.Regex)
	}
	return nil, fmt.Errorf("a pattern that is neither String nor Regex")
}
