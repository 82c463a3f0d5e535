package tokenizer

import (
	"bytes"
	"unicode/utf8"
)

// Stream decodes ids one at a time into text that can be shown as it comes: each Add
// returns the bytes that decoding the ids so far adds to what was returned before, holding
// back a tail that is not settled yet (an incomplete UTF-8 sequence, or a byte-fallback
// run decoded as U+FFFD that the next token may complete).
type Stream struct {
	tok         *Tokenizer
	skipSpecial bool
	ids         []int
	sent        int
}

// NewStream starts a stream of decoded text. With skipSpecial, special tokens add nothing.
func (t *Tokenizer) NewStream(skipSpecial bool) *Stream {
	return &Stream{tok: t, skipSpecial: skipSpecial}
}

// Add decodes one more id and returns the text it settles.
func (s *Stream) Add(id int) ([]byte, error) {
	s.ids = append(s.ids, id)
	text, err := s.tok.DecodeBytes(s.ids, s.skipSpecial)
	if err != nil {
		s.ids = s.ids[:len(s.ids)-1]
		return nil, err
	}
	end := len(text)
	// Hold back an incomplete UTF-8 sequence at the end.
	for k := 1; k < utf8.UTFMax && end-k >= 0; k++ {
		if utf8.RuneStart(text[end-k]) {
			if !utf8.FullRune(text[end-k : end]) {
				end -= k
			}
			break
		}
	}
	// And a trailing U+FFFD, which a byte-fallback run may still turn into a character.
	for bytes.HasSuffix(text[:end], []byte("\uFFFD")) {
		end -= len("\uFFFD")
	}
	// The decoders this package implements only append as tokens come (ByteFallback's
	// U+FFFD aside, held back above), so what was sent is still the start of text.
	if end <= s.sent {
		return nil, nil
	}
	// Bytes that can never be UTF-8 (a model may sample any byte token) are shown as
	// U+FFFD, as Decode does.
	out := []byte(lossyUTF8(text[s.sent:end]))
	s.sent = end
	return out, nil
}

// Flush returns what is held back, once no more ids come.
func (s *Stream) Flush() []byte {
	text, err := s.tok.DecodeBytes(s.ids, s.skipSpecial)
	if err != nil || len(text) <= s.sent {
		return nil
	}
	out := []byte(lossyUTF8(text[s.sent:]))
	s.sent = len(text)
	return out
}
