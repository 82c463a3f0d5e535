package codegen

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// maxIdent bounds the sanitised name; long names keep a prefix and their hash.
const maxIdent = 48

// Ident turns a model and stage name into the one spelling that generated code uses:
// ASCII letters, digits and single underscores, starting with a letter. It is safe in
// C and LLVM identifiers, in C and LLVM comments and in file names. A name that had to
// change gets the FNV-1a hash of the original appended, so two different hostile names
// never share an identifier; a benign name maps to itself ("tiny" + "dense" ->
// "tiny_dense").
func Ident(model, stage string) string {
	raw := model
	if stage != "" {
		raw += "_" + stage
	}
	var b strings.Builder
	lastUnderscore := false
	for _, r := range raw {
		ok := r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
		if !ok {
			if !lastUnderscore && b.Len() > 0 {
				b.WriteByte('_')
			}
			lastUnderscore = true
			continue
		}
		b.WriteRune(r)
		lastUnderscore = false
	}
	s := strings.TrimRight(b.String(), "_")
	if s == "" || s[0] < 'A' || (s[0] > 'Z' && s[0] < 'a') {
		s = "m_" + s
		s = strings.TrimRight(s, "_")
	}
	if len(s) > maxIdent {
		s = s[:maxIdent]
	}
	if s != raw {
		h := fnv.New32a()
		h.Write([]byte(raw))
		s = fmt.Sprintf("%s_%08x", strings.TrimRight(s, "_"), h.Sum32())
	}
	return s
}

// SanitizePath turns one name from a .moe file (a model, stage or serve block) into a
// single safe path component: ASCII letters, digits, '_', '-' and '.', never starting with
// '.' or '-' (so never "..", a hidden file or an option), at most maxIdent characters.
// Benign names pass through unchanged; a name that had to change gets the FNV-1a hash of
// the original appended, so distinct names stay distinct directories.
func SanitizePath(name string) string {
	var b strings.Builder
	for _, r := range name {
		ok := r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')
		if !ok {
			r = '_'
		}
		b.WriteRune(r)
	}
	s := strings.TrimLeft(b.String(), ".-")
	if len(s) > maxIdent {
		s = s[:maxIdent]
	}
	if s != name || s == "" {
		h := fnv.New32a()
		h.Write([]byte(name))
		s = fmt.Sprintf("%s_%08x", strings.TrimRight(s, "."), h.Sum32())
		s = strings.TrimLeft(s, "_")
	}
	return s
}
