package lsp

import (
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// document is an open editor buffer.
type document struct {
	uri     string
	path    string // the name diagnostics use: the file path for file: URIs, else the URI
	version int
	text    []byte
	lines   []int     // byte offset of each line's start
	snap    *snapshot // the analysis of this version; nil until computed
}

func newDocument(uri string, version int, text string) *document {
	d := &document{uri: uri, path: uriToPath(uri), version: version}
	d.setText([]byte(text))
	return d
}

func (d *document) setText(text []byte) {
	d.text = text
	d.lines = lineStarts(text)
	d.snap = nil
}

// lineStarts returns the offset of every line's first byte.
func lineStarts(text []byte) []int {
	starts := []int{0}
	for i, b := range text {
		if b == '\n' {
			starts = append(starts, i+1)
		}
	}
	return starts
}

// uriToPath turns a file: URI into a path; other URIs (untitled:) are used as they are.
func uriToPath(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "file" {
		return uri
	}
	return filepath.FromSlash(u.Path)
}

// pathToURI is the inverse of uriToPath.
func pathToURI(path string) string {
	if strings.Contains(path, ":") && !filepath.IsAbs(path) {
		return path // already a URI (untitled:...)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
}

// positions converts between byte offsets and LSP positions in one text, counting
// characters in UTF-16 code units (the protocol's default) or in bytes when the client
// agreed to UTF-8.
type positions struct {
	text  []byte
	lines []int
	utf8  bool
}

// offset returns the byte offset of p, clamped into the text: a line past the end is the
// end, a character past a line's end is the line's end.
func (ps positions) offset(p position) int {
	if p.Line < 0 {
		return 0
	}
	if p.Line >= len(ps.lines) {
		return len(ps.text)
	}
	start := ps.lines[p.Line]
	end := len(ps.text)
	if p.Line+1 < len(ps.lines) {
		end = ps.lines[p.Line+1] - 1 // the newline
	}
	if ps.utf8 {
		return min(start+max(p.Character, 0), end)
	}
	units := 0
	for i := start; i < end; {
		if units >= p.Character {
			return i
		}
		r, size := utf8.DecodeRune(ps.text[i:end])
		units += utf16Len(r)
		i += size
	}
	return end
}

// position returns the LSP position of byte offset off (clamped into the text).
func (ps positions) position(off int) position {
	off = min(max(off, 0), len(ps.text))
	line := sort.Search(len(ps.lines), func(i int) bool { return ps.lines[i] > off }) - 1
	start := ps.lines[line]
	if ps.utf8 {
		return position{Line: line, Character: off - start}
	}
	units := 0
	for i := start; i < off; {
		r, size := utf8.DecodeRune(ps.text[i:off])
		units += utf16Len(r)
		i += size
	}
	return position{Line: line, Character: units}
}

func (ps positions) rangeOf(start, end int) lspRange {
	return lspRange{Start: ps.position(start), End: ps.position(max(start, end))}
}

// utf16Len is how many UTF-16 code units r takes (an invalid byte counts as U+FFFD, one).
func utf16Len(r rune) int {
	if n := utf16.RuneLen(r); n > 0 {
		return n
	}
	return 1
}
