package check

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// entry is one written value of a block: `key = expr`, either written in the block
// itself or inherited from a base model. The expression is kept, not its value, so an
// inherited `hidden = 4 * d_model` is evaluated again with the child's d_model.
type entry struct {
	key     string
	keyNode ast.Node // where the key was written
	expr    ast.Expr
	file    string
	source  program.SourceKind // Written or Inherited
	from    string             // Inherited: the declaration that wrote it
}

func (e *entry) where() string {
	p := e.keyNode.Pos()
	return fmt.Sprintf("%s:%d:%d", e.file, p.Line, p.Col)
}

type slotState int

const (
	unvisited slotState = iota
	visiting
	done
)

// slot holds the resolved value of one key with its provenance.
type slot struct {
	state  slotState
	val    value
	ok     bool // false: missing, erroneous, or depending on an error (already reported)
	source program.SourceKind
	from   string
}

// scope is one block being resolved: a declaration, a section (attention, ffn, moe), a
// stage or a constructor's arguments. Names in expressions are looked up through the
// scope, its parents and the sections of the outermost block; links name other
// declarations (a train's "model" and "cluster").
type scope struct {
	path     string // "model tiny.attention", for Explain and messages
	spec     *blockSpec
	file     string
	at       ast.Node // where block-level diagnostics point (the header or the key)
	entries  map[string]*entry
	parent   *scope
	sections map[string]*scope
	links    map[string]*scope
	slots    map[string]*slot
	// incomplete marks a declaration whose base model is unknown or cyclic, or that the
	// parser could read only in part (ast.Block.Broken): missing required keys would only
	// repeat that error.
	incomplete bool
}

func (s *scope) root() *scope {
	for s.parent != nil {
		s = s.parent
	}
	return s
}

func newScope(path string, spec *blockSpec, file string, at ast.Node, entries map[string]*entry, parent *scope) *scope {
	if entries == nil {
		entries = map[string]*entry{}
	}
	return &scope{path: path, spec: spec, file: file, at: at, entries: entries, parent: parent,
		sections: map[string]*scope{}, links: map[string]*scope{}, slots: map[string]*slot{}}
}

func (s *scope) slot(key string) *slot {
	sl := s.slots[key]
	if sl == nil {
		sl = &slot{}
		s.slots[key] = sl
	}
	return sl
}

// child returns a section or linked declaration visible by name from s.
func (s *scope) child(name string) *scope {
	if c := s.sections[name]; c != nil {
		return c
	}
	return s.links[name]
}

// rangeOf is where a diagnostic about key points: its written value, or the block.
func (s *scope) rangeOf(key string) diag.Range {
	if e := s.entries[key]; e != nil {
		return diag.RangeOf(e.file, e.expr)
	}
	return s.blockRange()
}

func (s *scope) blockRange() diag.Range {
	if s.at == nil {
		return diag.Range{File: s.file}
	}
	return diag.RangeOf(s.file, s.at)
}

// written reports whether key was written (here or in a base model), not defaulted.
func (s *scope) written(key string) bool { return s.entries[key] != nil }

// Typed accessors read resolved slots; an unresolved key reads as the zero value (its
// error has been reported already).
func (s *scope) val(key string) (value, bool) {
	sl := s.slots[key]
	if sl == nil || sl.state != done || !sl.ok {
		return value{}, false
	}
	return sl.val, true
}

func (s *scope) i64(key string) int64 {
	v, ok := s.val(key)
	if !ok || v.kind != kindNum || !v.num.IsInt() || !v.num.Num().IsInt64() {
		return 0
	}
	return v.num.Num().Int64()
}

func (s *scope) int(key string) int { return int(s.i64(key)) }

func (s *scope) f64(key string) float64 {
	v, ok := s.val(key)
	if !ok {
		return 0
	}
	if v.kind == kindIdent {
		return 0 // a word a float key accepts (dropless) stands for 0
	}
	if v.kind != kindNum {
		return 0
	}
	f, _ := v.num.Float64()
	return f
}

// boolean reads a bool key; a word the key accepts (qk_norm = full) says how it is on, so
// it reads as true.
func (s *scope) boolean(key string) bool {
	v, ok := s.val(key)
	return ok && (v.kind == kindBool && v.b || v.kind == kindIdent)
}

func (s *scope) str(key string) string {
	v, ok := s.val(key)
	if !ok || (v.kind != kindIdent && v.kind != kindString) {
		return ""
	}
	return v.s
}

func (s *scope) ints(key string) []int {
	v, ok := s.val(key)
	if !ok || v.kind != kindList || len(v.list) == 0 {
		return nil
	}
	out := make([]int, 0, len(v.list))
	for _, e := range v.list {
		if e.kind == kindNum && e.num.IsInt() && e.num.Num().IsInt64() {
			out = append(out, int(e.num.Num().Int64()))
		}
	}
	return out
}

// floats reads a list of numbers; nil when the key did not resolve.
func (s *scope) floats(key string) []float64 {
	v, ok := s.val(key)
	if !ok || v.kind != kindList {
		return nil
	}
	out := make([]float64, 0, len(v.list))
	for _, e := range v.list {
		if e.kind == kindNum {
			f, _ := e.num.Float64()
			out = append(out, f)
		}
	}
	return out
}

func (s *scope) ints64(key string) []int64 {
	var out []int64
	for _, i := range s.ints(key) {
		out = append(out, int64(i))
	}
	return out
}

func (s *scope) call(key string) *scope {
	v, ok := s.val(key)
	if !ok || v.kind != kindCall {
		return nil
	}
	return v.call
}

// callString is a constructor's canonical text with every argument resolved:
// zero(stage = 3, offload = cpu).
func (s *scope) callString() string {
	var parts []string
	for _, k := range s.spec.keys {
		if v, ok := s.val(k.name); ok {
			parts = append(parts, k.name+" = "+v.String())
		}
	}
	return s.spec.kind + "(" + strings.Join(parts, ", ") + ")"
}

// provenance appends every resolved key of s and its sections, in schema order.
func (s *scope) provenance(out []program.Provenance) []program.Provenance {
	for _, k := range s.spec.keys {
		sl := s.slots[k.name]
		if sl == nil || sl.state != done || !sl.ok {
			continue
		}
		out = append(out, program.Provenance{Path: s.path + "." + k.name, Value: sl.val.String(), Source: sl.source, From: sl.from})
	}
	for _, sec := range s.spec.sections {
		if c := s.sections[sec]; c != nil {
			out = c.provenance(out)
		}
	}
	return out
}
