package check

import (
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// flatBlock is a block's entries after inheritance: top-level keys, sections, and the
// named nested blocks (stages, variants) in source order.
type flatBlock struct {
	entries  map[string]*entry
	sections map[string]*flatSection
	named    []*ast.Block
	// incomplete: the base model is unknown or in a cycle, or a syntax error cut the
	// block short (see scope.incomplete).
	incomplete bool
}

type flatSection struct {
	entries map[string]*entry
	at      ast.Node
	file    string
}

func newFlatBlock() *flatBlock {
	return &flatBlock{entries: map[string]*entry{}, sections: map[string]*flatSection{}}
}

// readBody adds the entries written in body to fb, reporting unknown and duplicate keys
// and nested blocks the kind does not take. Entries written here replace inherited ones.
func (c *checker) readBody(spec *blockSpec, path string, body []ast.Entry, file string, fb *flatBlock) {
	seen := map[string]*entry{}
	seenSection := map[string]ast.Node{}
	for _, en := range body {
		switch en := en.(type) {
		case *ast.Assign:
			if en.Key == nil {
				continue
			}
			key := en.Key.Name
			target, targetSpec, targetPath := fb.entries, spec, path
			if sec, rest, ok := strings.Cut(key, "."); ok && spec.hasSection(sec) {
				// `attention.heads = 4` is shorthand for a one-key section.
				fs := fb.section(sec, en.Key, file)
				target, targetSpec, targetPath, key = fs.entries, c.schema.blocks[sec], path+"."+sec, rest
			}
			if targetSpec.key(key) == nil {
				c.unknownKey(targetSpec, targetPath, key, en.Key, file)
				continue
			}
			e := &entry{key: key, keyNode: en.Key, expr: en.Value, file: file, source: program.Written}
			seenKey := targetPath + "." + key
			if prev := seen[seenKey]; prev != nil {
				d := c.errorf(diag.CodeDuplicateKey, diag.RangeOf(file, en.Key), "`%s` is written twice in %s", key, targetPath)
				d.Label(diag.RangeOf(prev.file, prev.keyNode), "first written here")
				continue
			}
			seen[seenKey] = e
			if en.Value == nil {
				continue
			}
			target[key] = e
		case *ast.Block:
			if en.Kind == nil {
				continue
			}
			kind := en.Kind.Name
			switch {
			case spec.hasSection(kind):
				sub := c.schema.blocks[kind]
				c.checkHeader(sub, en, file)
				if prev := seenSection[kind]; prev != nil {
					d := c.errorf(diag.CodeDuplicateKey, diag.RangeOf(file, en.Kind), "%s block is written twice in %s", kind, path)
					d.Notes = append(d.Notes, "merge the two blocks into one")
					continue
				}
				seenSection[kind] = en.Kind
				fs := fb.section(kind, en.Kind, file)
				inner := newFlatBlock()
				inner.entries = fs.entries
				c.readBody(sub, path+"."+kind, en.Body, file, inner)
			case spec.hasNamed(kind):
				fb.named = append(fb.named, en)
			default:
				allowed := append(append([]string{}, spec.sections...), spec.named...)
				var d *diag.Diagnostic
				if len(allowed) == 0 {
					d = c.errorf(diag.CodeUnknownBlock, diag.RangeOf(file, en.Kind), "%s takes no nested blocks, found `%s`", path, kind)
				} else {
					d = c.errorf(diag.CodeUnknownBlock, diag.RangeOf(file, en.Kind), "unknown block `%s` in %s; expected %s", kind, path, strings.Join(allowed, ", "))
				}
				d.Suggestion = didYouMean(kind, allowed)
				if d.Suggestion == "" && spec.key(kind) != nil {
					d.Suggestion = "write `" + kind + " = ...`"
				}
			}
		}
	}
}

func (fb *flatBlock) section(kind string, at ast.Node, file string) *flatSection {
	fs := fb.sections[kind]
	if fs == nil {
		fs = &flatSection{entries: map[string]*entry{}}
		fb.sections[kind] = fs
	}
	if fs.at == nil {
		fs.at, fs.file = at, file
	}
	return fs
}

func (c *checker) unknownKey(spec *blockSpec, path, key string, at ast.Node, file string) {
	d := c.errorf(diag.CodeUnknownKey, diag.RangeOf(file, at), "unknown key `%s` in %s", key, path)
	if near, ok := diag.Closest(key, spec.keyNames()); ok && near != key {
		d.Suggestion = "did you mean `" + near + "`?"
		// A misspelt required key is reported once, here, not again as missing.
		c.r.typos[path+"."+near] = true
	}
	if d.Suggestion == "" && (spec.hasSection(key) || spec.hasNamed(key)) {
		d.Suggestion = "`" + key + "` is a block: write `" + key + " { ... }`"
	}
	if d.Suggestion == "" {
		// A key of a section written at the top (heads in a model) is a common slip.
		for _, sec := range spec.sections {
			if sub := c.schemaBlock(sec); sub != nil && sub.key(key) != nil {
				d.Suggestion = "`" + key + "` belongs in the " + sec + " block: `" + sec + " { " + key + " = ... }`"
				break
			}
		}
	}
}

func (c *checker) schemaBlock(kind string) *blockSpec { return c.schema.blocks[kind] }
