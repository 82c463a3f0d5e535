package lsp

import "testing"

// TestPositions holds the conversion between byte offsets and LSP positions: UTF-16 code
// units by default (é is one unit in two bytes, 😀 two units in four), bytes when UTF-8 was
// negotiated, clamping past a line's end or the text's end, and an invalid byte counted as
// one unit.
func TestPositions(t *testing.T) {
	text := []byte("aé😀b\n\xffc\n")
	for _, tc := range []struct {
		utf8 bool
		off  int
		pos  position
	}{
		{false, 0, position{0, 0}},
		{false, 1, position{0, 1}},
		{false, 3, position{0, 2}},
		{false, 7, position{0, 4}},
		{false, 9, position{1, 0}},
		{false, 10, position{1, 1}},
		{false, 12, position{2, 0}},
		{true, 7, position{0, 7}},
		{true, 10, position{1, 1}},
	} {
		ps := positions{text: text, lines: lineStarts(text), utf8: tc.utf8}
		if got := ps.position(tc.off); got != tc.pos {
			t.Errorf("utf8=%v: position(%d) = %v, want %v", tc.utf8, tc.off, got, tc.pos)
		}
		if got := ps.offset(tc.pos); got != tc.off {
			t.Errorf("utf8=%v: offset(%v) = %d, want %d", tc.utf8, tc.pos, got, tc.off)
		}
	}
	ps := positions{text: text, lines: lineStarts(text)}
	for _, tc := range []struct {
		pos position
		off int
	}{
		{position{0, 99}, 8},  // past the line's end: the newline
		{position{99, 0}, 12}, // past the last line: the end
		{position{-1, 0}, 0},
	} {
		if got := ps.offset(tc.pos); got != tc.off {
			t.Errorf("offset(%v) = %d, want %d", tc.pos, got, tc.off)
		}
	}
}
