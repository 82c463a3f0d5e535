package check

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// Check resolves parsed files (a file and its imports, in any order) into a typed
// Program. Declarations may refer to each other across files; Check does not read
// imports itself (Load does). It keeps going after errors, so the list holds every
// problem found, sorted by position; the Program is filled as far as the input allows
// and should not be used when the list has errors. A panic (a bug in the checker) comes
// back as one E0299 diagnostic, never as a crash.
func Check(files ...*ast.File) (prog *program.Program, diags diag.List) {
	c := newChecker()
	defer func() {
		if v := recover(); v != nil {
			diags = append(c.r.diags, diag.Diagnostic{Severity: diag.Error, Code: diag.CodeInternalCheckError,
				Summary: fmt.Sprintf("internal error in the checker: %v", v),
				Notes:   []string{"this is a bug in moec; please report it with the input"}})
			prog = c.prog
		}
	}()
	for _, f := range files {
		if f != nil {
			c.collect(f)
		}
	}
	c.resolveModels()
	c.resolveClusters()
	c.resolveTrains()
	c.resolveServes()
	c.resolveCompresses()
	c.resolveExperiments()
	n := 0
	for _, d := range c.decls {
		n += len(d.prov)
	}
	if n > 0 {
		c.prog.Explain = make([]program.Provenance, 0, n)
	}
	for _, d := range c.decls {
		c.prog.Explain = append(c.prog.Explain, d.prov...)
		d.prov = nil // copied: the declaration's own list is garbage from here
	}
	c.attachContext()
	c.r.diags.Sort()
	return c.prog, dedupe(c.r.diags)
}

// dedupe drops a diagnostic that repeats an earlier one word for word at the same place:
// an inherited expression that is wrong in the base is usually wrong the same way in
// every child, and one report says it.
func dedupe(list diag.List) diag.List {
	seen := map[string]bool{}
	out := list[:0]
	for _, d := range list {
		k := fmt.Sprintf("%s|%s|%d|%d|%s", d.Code, d.Subject.File, d.Subject.Start.Offset, d.Subject.End.Offset, d.Summary)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, d)
	}
	return out
}

// decl is one top-level declaration.
type decl struct {
	kind  string
	name  string
	block *ast.Block
	file  string
	spec  *blockSpec
	scope *scope
	prov  []program.Provenance

	// Models only: the merged entries after inheritance.
	flat    *flatBlock
	counted bool // checked clean and its parameter count fits in 64 bits
}

func (d *decl) String() string { return d.kind + " " + d.name }

type checker struct {
	schema *schema
	r      *resolver
	prog   *program.Program
	decls  []*decl                     // source order
	byKind map[string]map[string]*decl // kind -> name -> decl
}

func newChecker() *checker {
	s := newSchema()
	return &checker{
		schema: s,
		r:      &resolver{schema: s, defaults: map[string]ast.Expr{}, typos: map[string]bool{}},
		prog: &program.Program{
			Models: map[string]*program.Model{}, Clusters: map[string]*program.Cluster{},
			Trains: map[string]*program.Train{}, Serves: map[string]*program.Serve{},
			Compresses: map[string]*program.Compress{}, Experiments: map[string]*program.Experiment{},
		},
		byKind: map[string]map[string]*decl{},
	}
}

func (c *checker) errorf(code diag.Code, rng diag.Range, format string, args ...any) *diag.Diagnostic {
	return c.r.diags.Errorf(code, rng, format, args...)
}

// collect registers a file's declarations, reporting unknown kinds, malformed headers
// and duplicates.
func (c *checker) collect(f *ast.File) {
	for _, b := range f.Decls {
		if b == nil || b.Kind == nil {
			continue
		}
		kind := b.Kind.Name
		if !contains(c.schema.topLevel, kind) {
			d := c.errorf(diag.CodeUnknownBlock, diag.RangeOf(f.Name, b.Kind), "unknown declaration `%s`; expected %s", kind, strings.Join(c.schema.topLevel, ", "))
			d.Suggestion = didYouMean(kind, c.schema.topLevel)
			continue
		}
		spec := c.schema.blocks[kind]
		if !c.checkHeader(spec, b, f.Name) || b.Name == nil {
			continue
		}
		d := &decl{kind: kind, name: b.Name.Name, block: b, file: f.Name, spec: spec}
		if c.byKind[kind] == nil {
			c.byKind[kind] = map[string]*decl{}
		}
		if prev := c.byKind[kind][d.name]; prev != nil {
			dg := c.errorf(diag.CodeDuplicateDecl, diag.RangeOf(f.Name, b.Name), "%s is declared twice", d)
			dg.Label(diag.RangeOf(prev.file, prev.block.Name), "first declared here")
			if kind == "train" || kind == "serve" || kind == "compress" {
				dg.Notes = append(dg.Notes, kind+" declarations are named by the model they use")
			}
			continue
		}
		c.byKind[kind][d.name] = d
		c.decls = append(c.decls, d)
	}
}

// checkHeader reports header clauses the block kind does not take. It returns false
// when the block cannot be used at all.
func (c *checker) checkHeader(spec *blockSpec, b *ast.Block, file string) bool {
	ok := true
	kind := spec.kind
	if spec.headerName && b.Name == nil {
		what := "a name"
		if spec.headerOn || kind == "compress" {
			what = "the name of a model"
		}
		c.errorf(diag.CodeBadHeader, diag.RangeOf(file, b.Kind), "%s needs %s: `%s NAME {`", kind, what, kind)
		ok = false
	}
	if !spec.headerName && b.Name != nil {
		d := c.errorf(diag.CodeBadHeader, diag.RangeOf(file, b.Name), "the %s block takes no name", kind)
		d.Suggestion = "write `" + kind + " {`"
	}
	if b.Extends != nil && !spec.extends {
		c.errorf(diag.CodeBadHeader, diag.RangeOf(file, b.Extends), "only models take `extends`, not %s", kind)
	}
	if b.From != nil && !spec.from {
		c.errorf(diag.CodeBadHeader, diag.RangeOf(file, b.From), "only stages take `from`, not %s", kind)
	}
	if b.Distill != nil && !spec.from {
		c.errorf(diag.CodeBadHeader, diag.RangeOf(file, b.Distill), "only stages distill, not %s", kind)
	}
	if spec.headerOn && b.On == nil {
		d := c.errorf(diag.CodeBadHeader, diag.RangeOf(file, b.Kind), "%s needs a cluster: `%s MODEL on CLUSTER {`", kind, kind)
		d.Suggestion = "add `on CLUSTER` after the model's name"
	}
	if !spec.headerOn && b.On != nil {
		c.errorf(diag.CodeBadHeader, diag.RangeOf(file, b.On), "only train and serve take `on CLUSTER`, not %s", kind)
	}
	return ok
}

// lookupDecl finds a declaration by kind and name, reporting an unknown one at n with
// a suggestion drawn from the declarations of that kind.
func (c *checker) lookupDecl(kind, name string, code diag.Code, file string, n ast.Node, context string) *decl {
	if d := c.byKind[kind][name]; d != nil {
		return d
	}
	var names []string
	for _, d := range c.decls {
		if d.kind == kind {
			names = append(names, d.name)
		}
	}
	dg := c.errorf(code, diag.RangeOf(file, n), "%s: no %s is named `%s`", context, kind, name)
	dg.Suggestion = didYouMean(name, names)
	if dg.Suggestion == "" && len(names) > 0 {
		dg.Notes = append(dg.Notes, fmt.Sprintf("declared %ss: %s", kind, strings.Join(names, ", ")))
	}
	return nil
}

func (c *checker) declsOf(kind string) []*decl {
	var out []*decl
	for _, d := range c.decls {
		if d.kind == kind {
			out = append(out, d)
		}
	}
	return out
}

// declSource is where a declaration is written for later phases: its header, from the
// keyword to the last name (`train hunyuan on taiji`), so a caret marks one line.
func declSource(file string, b *ast.Block) program.Source {
	end := b.Kind.EndPos()
	for _, id := range []*ast.Ident{b.Name, b.Extends, b.On, b.From} {
		if id != nil && id.EndPos().Offset > end.Offset {
			end = id.EndPos()
		}
	}
	return program.Source{File: file, Start: b.Pos(), End: end}
}
