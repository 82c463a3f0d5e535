package lsp

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/catalog"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/human"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/format"
)

// view is a request's look at one open document and its analysis.
type view struct {
	doc  *document
	snap *snapshot
	pos  positions
}

// siteAt is the identifier under the cursor in the document, or nil.
func (v *view) siteAt(p position) *site {
	return siteAt(v.snap.root, v.pos.offset(p))
}

// rangeIn converts a node's span in file to an LSP range.
func (v *view) rangeIn(file string, n ast.Node) lspRange {
	ps := v.positionsOf(file)
	return ps.rangeOf(offsetOf(n.Pos(), ps), offsetOf(n.EndPos(), ps))
}

func (v *view) positionsOf(file string) positions {
	if filepath.Clean(file) == v.snap.path {
		return v.pos
	}
	src := v.snap.sources[filepath.Clean(file)]
	return positions{text: src, lines: lineStarts(src), utf8: v.pos.utf8}
}

func (v *view) uriOf(file string) string {
	if filepath.Clean(file) == v.snap.path {
		return v.doc.uri
	}
	return pathToURI(file)
}

// ---- hover ----

func (v *view) hover(p position) *hover {
	s := v.siteAt(p)
	if s == nil {
		return nil
	}
	var text string
	switch s.role {
	case roleKey:
		text = v.hoverKey(s)
	case roleKind:
		text = v.hoverKind(s)
	case roleValue:
		if sym := symbolOf(s); sym.kind != "" {
			text = v.hoverSymbol(sym)
		} else {
			text = v.hoverValue(s)
		}
	case roleImport:
		text = "import `" + s.id.Name + "`"
	default:
		text = v.hoverSymbol(symbolOf(s))
	}
	if text == "" {
		return nil
	}
	r := v.rangeIn(s.file, s.id)
	return &hover{Contents: markupContent{Kind: "markdown", Value: text}, Range: &r}
}

// specOf is the schema of the block or constructor a key site sits in.
func specOf(s *site, schema map[string]check.BlockDoc) (check.BlockDoc, bool) {
	if s.call != nil && s.call.Fn != nil {
		b, ok := schema[s.call.Fn.Name]
		return b, ok
	}
	if b := s.block(); b != nil && b.Kind != nil {
		spec, ok := schema[b.Kind.Name]
		return spec, ok
	}
	return check.BlockDoc{}, false
}

// keyDoc is a key's documentation line: "query heads. an integer; default `heads`".
func keyDoc(k check.KeyDoc) string {
	text := k.Doc + " — " + k.Type
	switch {
	case k.Required:
		text += "; required"
	case k.Default != "":
		text += "; default `" + k.Default + "`"
	}
	return text
}

// hoverKey says a key's resolved value and where it came from, as `moec check --explain`
// prints it, and the key's documentation.
func (v *view) hoverKey(s *site) string {
	var b strings.Builder
	if s.call == nil {
		path := explainPath(s.blocks) + "." + s.id.Name
		for _, e := range v.snap.prog.Explain {
			if e.Path == path {
				fmt.Fprintf(&b, "`%s = %s`\n\n%s", e.Path, e.Value, e.Source)
				if e.From != "" {
					fmt.Fprintf(&b, " (%s)", e.From)
				}
				b.WriteString("\n\n")
				break
			}
		}
	}
	if spec, ok := specOf(s, check.Schema()); ok {
		if k, ok := spec.Key(s.id.Name); ok {
			b.WriteString(keyDoc(k))
		}
	}
	return strings.TrimSpace(b.String())
}

// hoverValue documents an enum word or constructor by its key.
func (v *view) hoverValue(s *site) string {
	if s.assign == nil || s.assign.Key == nil {
		return ""
	}
	schema := check.Schema()
	if s.call != nil && s.call.Fn == s.id {
		if ctor, ok := schema[s.id.Name]; ok {
			var names []string
			for _, k := range ctor.Keys {
				names = append(names, k.Name)
			}
			return fmt.Sprintf("`%s` takes %s", s.id.Name, strings.Join(names, ", "))
		}
	}
	key := *s
	key.call = nil
	if spec, ok := specOf(&key, schema); ok {
		if k, ok := spec.Key(s.assign.Key.Name); ok {
			return "`" + s.assign.Key.Name + "`: " + keyDoc(k)
		}
	}
	return ""
}

// hoverKind documents a block keyword; on a model's section it gives the section's
// parameters.
func (v *view) hoverKind(s *site) string {
	if len(s.blocks) == 2 && s.blocks[0].Kind.Name == "model" && s.blocks[0].Name != nil {
		m := v.snap.prog.Models[s.blocks[0].Name.Name]
		if m == nil {
			return ""
		}
		c, err := analysis.CountChecked(m)
		if err != nil {
			return err.Error()
		}
		part := map[string][2]int64{
			"attention": {c.Total.Attention, c.Active.Attention},
			"ffn":       {c.Total.DenseFFN, c.Active.DenseFFN},
			"moe":       {c.Total.RoutedExperts + c.Total.SharedExperts + c.Total.Router, c.Active.RoutedExperts + c.Active.SharedExperts + c.Active.Router},
		}[s.id.Name]
		return fmt.Sprintf("`%s`: %s parameters in all layers, %s active per token", s.id.Name, human.Count(float64(part[0])), human.Count(float64(part[1])))
	}
	return ""
}

// hoverSymbol describes a declaration: a model's counts, a stage's budget and plan, a
// cluster's devices.
func (v *view) hoverSymbol(sym symbol) string {
	prog := v.snap.prog
	switch sym.kind {
	case "model":
		if m := prog.Models[sym.name]; m != nil {
			return modelSummary("model "+sym.name, m)
		}
	case "cluster":
		if c := prog.Clusters[sym.name]; c != nil {
			return fmt.Sprintf("**cluster %s**: %d × %d %s (%s each), %d devices", sym.name, c.Nodes, c.GPUsPerNode, c.Device.Name, human.Bytes(c.Device.Memory), c.GPUs())
		}
	case "stage":
		if t := prog.Trains[sym.train]; t != nil {
			for _, st := range t.Stages {
				if st.Name == sym.name {
					return v.stageSummary(t, st)
				}
			}
		}
	case "compress", "experiment":
		return "**" + sym.kind + " " + sym.name + "**"
	}
	return ""
}

func modelSummary(title string, m *program.Model) string {
	c, err := analysis.CountChecked(m)
	if err != nil {
		return "**" + title + "**: " + err.Error()
	}
	f := analysis.CountFLOPs(m, 0)
	var b strings.Builder
	fmt.Fprintf(&b, "**%s**: %s parameters (%s), %s active per token\n\n", title, human.Count(float64(c.TotalAll)), human.Exact(c.TotalAll), human.Count(float64(c.ActiveAll)))
	fmt.Fprintf(&b, "FLOPs per token: %s forward, %s training (sequence %d)\n", human.Count(f.ForwardPerToken), human.Count(f.TrainPerToken), f.SeqLen)
	seen := map[bool]bool{}
	for _, l := range c.Layers {
		if seen[l.MoE] || l.Encoder {
			continue
		}
		seen[l.MoE] = true
		kind := "dense layer"
		if l.MoE {
			kind = "MoE layer"
		}
		fmt.Fprintf(&b, "\n- %s (e.g. %d): %s parameters, %s active", kind, l.Index, human.Count(float64(l.Total)), human.Count(float64(l.Active)))
		if l.MoE {
			fmt.Fprintf(&b, "; one expert %s", human.Count(float64(l.PerExpert)))
		}
	}
	return b.String()
}

// stageSummary gives a stage's model, budget and, with a cluster, the plan `moec plan`
// would choose.
func (v *view) stageSummary(t *program.Train, st *program.Stage) string {
	var b strings.Builder
	title := "stage " + st.Name
	if base := v.snap.prog.Models[t.Model]; base != nil {
		b.WriteString(modelSummary(title, program.StageModel(base, st)))
	} else {
		b.WriteString("**" + title + "**")
	}
	fmt.Fprintf(&b, "\n\ntokens %s, %s steps at %s tokens per batch", human.Count(float64(st.TokensAt(t.TokensPerBatch))), human.Exact(st.StepsAt(t.TokensPerBatch)), human.Exact(t.TokensPerBatch))
	if v.snap.prog.Clusters[t.Cluster] == nil {
		return b.String()
	}
	sp := v.snap.planStage(t, st)
	switch {
	case sp.plan != nil:
		p := sp.plan
		nodes := fmt.Sprintf("%d nodes", p.Nodes)
		if p.Nodes == 1 {
			nodes = "1 node"
		}
		fmt.Fprintf(&b, "\n\nplan on %s: %d GPUs (%s), %s", t.Cluster, p.GPUs, nodes, plan.StrategyName(p.Layout))
		for _, tier := range p.Memory {
			fmt.Fprintf(&b, "\n- %s memory per %s: %s of %s", tier.Tier, tier.Per, human.Bytes(tier.Used), human.Bytes(tier.Capacity))
		}
		fmt.Fprintf(&b, "\n- step time %.3g s, %s steps, %.3g days", p.Time.StepSeconds, human.Exact(p.Totals.Steps), p.Totals.Days)
	case len(sp.diags) > 0:
		fmt.Fprintf(&b, "\n\nno plan on %s: %s[%s] %s", t.Cluster, sp.diags[0].Severity, sp.diags[0].Code, sp.diags[0].Summary)
	}
	return b.String()
}

// ---- definition and references ----

// declarationOf finds where sym is declared, in any file of the analysis.
func (v *view) declarationOf(sym symbol) *site {
	var found *site
	for _, name := range sortedFiles(v.snap.files) {
		walkSites(v.snap.files[name], func(s *site) {
			if found != nil || s.role != roleDeclName || symbolOf(s) != sym {
				return
			}
			if kind := s.block().Kind.Name; kind == sym.kind {
				found = s
			}
		})
	}
	return found
}

func (v *view) definition(p position) []location {
	s := v.siteAt(p)
	if s == nil {
		return nil
	}
	if s.role == roleImport {
		path := filepath.Join(filepath.Dir(v.snap.path), s.id.Name)
		return []location{{URI: pathToURI(path)}}
	}
	sym := symbolOf(s)
	if sym.kind == "" {
		return nil
	}
	if d := v.declarationOf(sym); d != nil {
		return []location{{URI: v.uriOf(d.file), Range: v.rangeIn(d.file, d.id)}}
	}
	return nil
}

func (v *view) references(p position, includeDecl bool) []location {
	s := v.siteAt(p)
	if s == nil {
		return nil
	}
	sym := symbolOf(s)
	if sym.kind == "" {
		return nil
	}
	decl := v.declarationOf(sym)
	out := []location{}
	for _, name := range sortedFiles(v.snap.files) {
		walkSites(v.snap.files[name], func(r *site) {
			if symbolOf(r) != sym {
				return
			}
			if !includeDecl && decl != nil && r.file == decl.file && r.id.Pos() == decl.id.Pos() {
				return
			}
			out = append(out, location{URI: v.uriOf(r.file), Range: v.rangeIn(r.file, r.id)})
		})
	}
	return out
}

// ---- completion ----

var (
	valuePrefix = regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*[A-Za-z0-9_]*$`)
	keyPrefix   = regexp.MustCompile(`^\s*[A-Za-z_]*[A-Za-z0-9_]*$`)
)

// enclosing returns the innermost block or brace constructor around off, outermost first.
func enclosing(f *ast.File, off int) (blocks []*ast.Block, call *ast.Call) {
	inside := func(n ast.Node) bool { return n.Pos().Offset < off && off < n.EndPos().Offset }
	if f == nil {
		return nil, nil
	}
	var visit func(b *ast.Block)
	visit = func(b *ast.Block) {
		blocks = append(blocks, b)
		for _, e := range b.Body {
			switch e := e.(type) {
			case *ast.Block:
				if inside(e) {
					visit(e)
					return
				}
			case *ast.Assign:
				if c, ok := e.Value.(*ast.Call); ok && c.Braces && inside(c) {
					call = c
					return
				}
			}
		}
	}
	for _, d := range f.Decls {
		if d != nil && inside(d) {
			visit(d)
			break
		}
	}
	return blocks, call
}

func (v *view) completion(p position) completionList {
	off := v.pos.offset(p)
	lineStart := v.pos.lines[v.pos.position(off).Line]
	prefix := string(v.doc.text[lineStart:off])
	if i := strings.LastIndexAny(prefix, "{;"); i >= 0 {
		prefix = prefix[i+1:]
	}
	schema := check.Schema()
	blocks, call := enclosing(v.snap.root, off)
	list := completionList{Items: []completionItem{}}
	if len(blocks) == 0 {
		if keyPrefix.MatchString(prefix) {
			for _, k := range check.TopLevel() {
				list.Items = append(list.Items, completionItem{Label: k, Kind: completionKeyword, Detail: "declaration"})
			}
			list.Items = append(list.Items, completionItem{Label: "import", Kind: completionKeyword, Detail: "import \"other.moe\""})
		}
		return list
	}
	spec, ok := schema[blocks[len(blocks)-1].Kind.Name]
	if call != nil && call.Fn != nil {
		spec, ok = schema[call.Fn.Name]
	}
	if !ok {
		return list
	}
	if m := valuePrefix.FindStringSubmatch(prefix); m != nil {
		k, ok := spec.Key(m[1])
		if !ok {
			return list
		}
		words := k.Values
		if k.Type == "a name" {
			words = v.namesFor(blocks[0], k.Name)
		}
		for _, w := range words {
			item := completionItem{Label: w, Kind: completionEnum, Detail: k.Name}
			if c, ok := schema[w]; ok && len(c.Keys) > 0 {
				var names []string
				for _, ck := range c.Keys {
					names = append(names, ck.Name)
				}
				item.Documentation = &markupContent{Kind: "markdown", Value: "takes " + strings.Join(names, ", ")}
			}
			list.Items = append(list.Items, item)
		}
		return list
	}
	if !keyPrefix.MatchString(prefix) {
		return list
	}
	for _, k := range spec.Keys {
		list.Items = append(list.Items, completionItem{
			Label: k.Name, Kind: completionProperty, Detail: k.Type,
			Documentation: &markupContent{Kind: "markdown", Value: keyDoc(k)}, InsertText: k.Name + " = ",
		})
	}
	for _, sec := range spec.Sections {
		list.Items = append(list.Items, completionItem{Label: sec, Kind: completionModule, Detail: sec + " { ... }", InsertText: sec + " {"})
	}
	for _, n := range spec.Named {
		list.Items = append(list.Items, completionItem{Label: n, Kind: completionModule, Detail: n + " NAME { ... }"})
	}
	return list
}

// namesFor lists the declaration names a name-valued key may take.
func (v *view) namesFor(top *ast.Block, key string) []string {
	prog := v.snap.prog
	switch top.Kind.Name + "." + key {
	case "cluster.gpu":
		return catalog.Names()
	case "experiment.train":
		return prog.TrainOrder
	case "compress.distill_into":
		return prog.ModelOrder
	case "serve.stage":
		if top.Name != nil {
			if t := prog.Trains[top.Name.Name]; t != nil {
				var names []string
				for _, st := range t.Stages {
					names = append(names, st.Name)
				}
				return names
			}
		}
	}
	return nil
}

// ---- symbols ----

func (v *view) symbols() []documentSymbol {
	out := []documentSymbol{}
	if v.snap.root == nil {
		return out
	}
	for _, d := range v.snap.root.Decls {
		if d != nil && d.Kind != nil {
			out = append(out, v.blockSymbol(d))
		}
	}
	return out
}

func (v *view) blockSymbol(b *ast.Block) documentSymbol {
	file := v.snap.path
	sym := documentSymbol{Name: b.Kind.Name, Kind: symbolModule, Range: v.rangeIn(file, b), SelectionRange: v.rangeIn(file, b.Kind)}
	if b.Name != nil {
		sym.Name, sym.Detail, sym.SelectionRange = b.Name.Name, b.Kind.Name, v.rangeIn(file, b.Name)
		sym.Kind = map[string]int{"model": symbolClass, "cluster": symbolObject, "stage": symbolEvent}[b.Kind.Name]
		if sym.Kind == 0 {
			sym.Kind = symbolModule
		}
	}
	for _, e := range b.Body {
		switch e := e.(type) {
		case *ast.Block:
			if e.Kind != nil {
				sym.Children = append(sym.Children, v.blockSymbol(e))
			}
		case *ast.Assign:
			if e.Key != nil {
				sym.Children = append(sym.Children, documentSymbol{Name: e.Key.Name, Kind: symbolProperty, Range: v.rangeIn(file, e), SelectionRange: v.rangeIn(file, e.Key)})
			}
		}
	}
	return sym
}

// ---- formatting ----

// format is `moec fmt` on the buffer: one edit replacing the whole text, none when the
// text is already formatted, and null when it has syntax errors (the formatter refuses
// those rather than drop text).
func (v *view) format() (any, *rpcError) {
	out, _ := format.File(v.doc.path, v.doc.text)
	if out == nil {
		return nil, nil
	}
	if bytes.Equal(out, v.doc.text) {
		return []textEdit{}, nil
	}
	return []textEdit{{Range: v.pos.rangeOf(0, len(v.doc.text)), NewText: string(out)}}, nil
}

// ---- code actions ----

// replacement is the text a suggestion puts in place of the diagnostic's range:
// "did you mean `heads`?" gives heads, "did you mean 16GiB?" gives 16GiB.
var replacement = regexp.MustCompile("^did you mean `?([^`?\\s]+)`?\\?$")

func (v *view) codeActions(r lspRange) []codeAction {
	out := []codeAction{}
	start, end := v.pos.offset(r.Start), v.pos.offset(r.End)
	byFile := v.snap.diagnosticsByFile(v.pos.utf8)[v.snap.path]
	i := 0
	for _, d := range v.snap.diags {
		file := d.Subject.File
		if file == "" {
			file = v.snap.path
		}
		if filepath.Clean(file) != v.snap.path {
			continue
		}
		ld := byFile[i]
		i++
		m := replacement.FindStringSubmatch(d.Suggestion)
		if m == nil || !d.Subject.Start.IsValid() {
			continue
		}
		ds, de := offsetOf(d.Subject.Start, v.pos), offsetOf(d.Subject.End, v.pos)
		if de < ds {
			de = ds
		}
		if de < start || ds > end {
			continue
		}
		out = append(out, codeAction{
			Title: fmt.Sprintf("Replace with %s", m[1]), Kind: "quickfix", Diagnostics: []lspDiagnostic{ld}, IsPreferred: true,
			Edit: &workspaceEdit{Changes: map[string][]textEdit{v.doc.uri: {{Range: ld.Range, NewText: m[1]}}}},
		})
	}
	return out
}
