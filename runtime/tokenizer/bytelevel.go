package tokenizer

import "strings"

// byteChar is GPT-2's map of bytes to printable characters: the printable Latin-1 bytes
// stand for themselves, the others (controls, space, soft hyphen) for 256 upward.
func byteChar(b byte) rune {
	if printableByte(b) {
		return rune(b)
	}
	n := 0
	for c := 0; c < int(b); c++ {
		if !printableByte(byte(c)) {
			n++
		}
	}
	return rune(256 + n)
}

func printableByte(b byte) bool {
	return b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE
}

// byteTable is the map both ways, built once per tokenizer.
type byteTable struct {
	toChar [256]rune
	toByte map[rune]byte
}

func newByteTable() *byteTable {
	t := &byteTable{toByte: make(map[rune]byte, 256)}
	for b := 0; b < 256; b++ {
		t.toChar[b] = byteChar(byte(b))
		t.toByte[t.toChar[b]] = byte(b)
	}
	return t
}

// bytesToChars maps every byte of s to its character.
func bytesToChars(s string) string {
	var b strings.Builder
	b.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteChar(s[i]))
	}
	return b.String()
}
