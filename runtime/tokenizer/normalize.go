package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites a piece of text before it is split into words.
type normalizer interface {
	normalize(s string) (string, error)
}

type (
	unicodeNorm struct{ form norm.Form }
	lowercase   struct{}
	prependNorm struct{ prefix string }
	replaceNorm struct {
		pat     *pattern
		content string
	}
	stripNorm    struct{ left, right bool }
	normSequence []normalizer
)

func (n unicodeNorm) normalize(s string) (string, error) { return n.form.String(s), nil }
func (lowercase) normalize(s string) (string, error)     { return strings.ToLower(s), nil }

// Prepend adds its prefix to a piece that is not empty.
func (n prependNorm) normalize(s string) (string, error) {
	if s == "" {
		return s, nil
	}
	return n.prefix + s, nil
}

func (n replaceNorm) normalize(s string) (string, error) { return n.pat.replaceAll(s, n.content) }

func (n stripNorm) normalize(s string) (string, error) {
	if n.left {
		s = strings.TrimLeftFunc(s, isWhitespace)
	}
	if n.right {
		s = strings.TrimRightFunc(s, isWhitespace)
	}
	return s, nil
}

func (seq normSequence) normalize(s string) (string, error) {
	var err error
	for _, n := range seq {
		if s, err = n.normalize(s); err != nil {
			return "", err
		}
	}
	return s, nil
}

func parseNormalizer(raw json.RawMessage) (normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	kind, err := typeOf(raw)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "NFC":
		return unicodeNorm{norm.NFC}, nil
	case "NFD":
		return unicodeNorm{norm.NFD}, nil
	case "NFKC":
		return unicodeNorm{norm.NFKC}, nil
	case "NFKD":
		return unicodeNorm{norm.NFKD}, nil
	case "Lowercase":
		return lowercase{}, nil
	case "Prepend":
		var p struct {
			Prepend string `json:"prepend"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		return prependNorm{p.Prepend}, nil
	case "Replace":
		pat, content, err := parseReplace(raw)
		if err != nil {
			return nil, err
		}
		return replaceNorm{pat, content}, nil
	case "Strip":
		var p struct {
			Left  bool `json:"strip_left"`
			Right bool `json:"strip_right"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		return stripNorm{p.Left, p.Right}, nil
	case "Sequence":
		seq, err := parseSequence(raw, "normalizers", parseNormalizer)
		return normSequence(seq), err
	}
	return nil, unsupported("normalizer", kind, "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Prepend", "Replace", "Strip", "Sequence")
}

func parseReplace(raw json.RawMessage) (*pattern, string, error) {
	var p struct {
		Pattern patternJSON `json:"pattern"`
		Content string      `json:"content"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, "", err
	}
	pat, err := p.Pattern.compile()
	return pat, p.Content, err
}

// parseSequence parses the components listed under key of a Sequence component
// (normalizers, pre-tokenizers or decoders) with parse, leaving out those that do nothing
// (parse returns nil for them).
func parseSequence[T any](raw json.RawMessage, key string, parse func(json.RawMessage) (T, error)) ([]T, error) {
	var p map[string]json.RawMessage
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, err
	}
	var items []json.RawMessage
	if list, ok := p[key]; ok {
		if err := json.Unmarshal(list, &items); err != nil {
			return nil, err
		}
	}
	var seq []T
	for i, r := range items {
		c, err := parse(r)
		if err != nil {
			return nil, fmt.Errorf("sequence item %d: %w", i, err)
		}
		if any(c) != nil {
			seq = append(seq, c)
		}
	}
	return seq, nil
}
