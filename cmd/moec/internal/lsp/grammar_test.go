package lsp

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/parse"
)

// grammarFile is the editor extension's TextMate grammar.
const grammarFile = "../../../../editors/vscode/syntaxes/moe.tmLanguage.json"

// tmRule is one TextMate rule as the grammar writes it.
type tmRule struct {
	Include  string                           `json:"include"`
	Name     string                           `json:"name"`
	Match    string                           `json:"match"`
	Begin    string                           `json:"begin"`
	End      string                           `json:"end"`
	Captures map[string]struct{ Name string } `json:"captures"`
}

type tmGrammar struct {
	ScopeName  string            `json:"scopeName"`
	Patterns   []tmRule          `json:"patterns"`
	Repository map[string]tmRule `json:"repository"`
}

// compiledRule is a rule Go's regexp can run.
type compiledRule struct {
	tmRule
	match, begin, end *regexp.Regexp
}

// loadGrammar reads the grammar and compiles its top-level rules (includes resolved). Rules
// whose expressions use what Oniguruma has and RE2 lacks (lookahead, lookbehind,
// backreferences) are skipped and returned by name: the key and constructor rules use a
// lookahead `(?=...)` to stop before `=` or `(`.
func loadGrammar(t *testing.T) (rules []compiledRule, skipped []string) {
	t.Helper()
	data, err := os.ReadFile(grammarFile)
	if err != nil {
		t.Fatal(err)
	}
	var g tmGrammar
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatalf("%s is not valid JSON: %v", grammarFile, err)
	}
	if g.ScopeName != "source.moe" {
		t.Errorf("scopeName = %q, want source.moe", g.ScopeName)
	}
	for _, p := range g.Patterns {
		name := strings.TrimPrefix(p.Include, "#")
		r, ok := g.Repository[name]
		if !ok {
			t.Fatalf("pattern includes %q, which the repository lacks", p.Include)
		}
		cr := compiledRule{tmRule: r}
		var errs []error
		compile := func(expr string) *regexp.Regexp {
			if expr == "" {
				return nil
			}
			re, err := regexp.Compile(expr)
			if err != nil {
				errs = append(errs, err)
			}
			return re
		}
		cr.match, cr.begin, cr.end = compile(r.Match), compile(r.Begin), compile(r.End)
		if len(errs) > 0 {
			skipped = append(skipped, name)
			continue
		}
		rules = append(rules, cr)
	}
	return rules, skipped
}

// tokenise gives each byte of line the scope TextMate would: at each position the rule
// whose match starts first (the earlier rule on a tie) wins, its captures' scopes override
// its name, and scanning goes on after it. A begin/end rule runs to its end on the same line.
// (Matches are searched over the whole line so that \b and ^ see the text before them.)
func tokenise(rules []compiledRule, line string) []string {
	scopes := make([]string, len(line))
	for pos := 0; pos < len(line); {
		best, bestRule := []int(nil), -1
		for i, r := range rules {
			re := r.match
			if re == nil {
				re = r.begin
			}
			for _, m := range re.FindAllStringSubmatchIndex(line, -1) {
				if m[0] >= pos && m[1] > m[0] {
					if best == nil || m[0] < best[0] {
						best, bestRule = m, i
					}
					break
				}
			}
		}
		if best == nil {
			break
		}
		r := rules[bestRule]
		end := best[1]
		if r.end != nil {
			if m := r.end.FindStringIndex(line[end:]); m != nil {
				end += m[1]
			} else {
				end = len(line)
			}
		}
		for i := best[0]; i < end; i++ {
			scopes[i] = r.Name
		}
		for g, c := range r.Captures {
			var n int
			fmt.Sscan(g, &n)
			if 2*n+1 < len(best) && best[2*n] >= 0 {
				for i := best[2*n]; i < best[2*n+1]; i++ {
					scopes[i] = c.Name
				}
			}
		}
		pos = end
	}
	return scopes
}

// TestGrammar checks the editor grammar: valid JSON, every rule Go's regexp can express
// compiles, and on every shipped .moe file it gives every declaration and block keyword,
// import, name, number, string, comment and true/false the scope meant for it (read from
// the parser's syntax tree, not from a second list of words). It also tokenises each block
// kind of the checker's schema, so a new kind without a grammar entry fails here.
func TestGrammar(t *testing.T) {
	rules, skipped := loadGrammar(t)
	if want := []string{"key", "constructor"}; !slices.Equal(skipped, want) {
		t.Errorf("rules Go's regexp cannot run = %v, want %v (a rule newly skipped is not tested)", skipped, want)
	}
	files, err := filepath.Glob("../../../../models/*.moe")
	if err != nil {
		t.Fatal(err)
	}
	examples, _ := filepath.Glob("../../../../examples/*.moe")
	files = append(files, examples...)
	if len(files) < 4 {
		t.Fatalf("found only %v", files)
	}
	for _, path := range files {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, diags := parse.File(path, src)
		if diags.HasErrors() {
			t.Fatalf("%s: %v", path, diags.Err())
		}
		lines := lineStarts(src)
		cache := map[int][]string{}
		scopeAt := func(p ast.Pos) string {
			start := lines[p.Line-1]
			if _, ok := cache[p.Line]; !ok {
				end := len(src)
				if p.Line < len(lines) {
					end = lines[p.Line] - 1
				}
				cache[p.Line] = tokenise(rules, string(src[start:end]))
			}
			return cache[p.Line][p.Offset-start]
		}
		want := func(n ast.Node, prefix, what string) {
			for off := n.Pos().Offset; off < n.EndPos().Offset; off++ {
				p := ast.Pos{Offset: off, Line: n.Pos().Line, Col: n.Pos().Col + off - n.Pos().Offset}
				if got := scopeAt(p); !strings.HasPrefix(got, prefix) {
					t.Errorf("%s:%s: %s %q: byte %d has scope %q, want %s*", path, n.Pos(), what, src[n.Pos().Offset:n.EndPos().Offset], off-n.Pos().Offset, got, prefix)
					return
				}
			}
		}
		for _, c := range f.Comments {
			want(c, "comment.", "comment")
		}
		for _, im := range f.Imports {
			want(ast.Span{Start: im.Pos(), End: ast.Pos{Offset: im.Pos().Offset + len("import"), Line: im.Pos().Line, Col: im.Pos().Col + len("import")}}, "keyword.", "import")
			want(im.Path, "string.", "import path")
		}
		var block func(b *ast.Block)
		block = func(b *ast.Block) {
			want(b.Kind, "keyword.", "block keyword")
			for _, id := range []*ast.Ident{b.Name, b.Extends, b.On, b.From} {
				if id != nil {
					want(id, "entity.name.", "name")
				}
			}
			for _, e := range b.Body {
				switch e := e.(type) {
				case *ast.Block:
					block(e)
				case *ast.Assign:
					walkValues(e.Value, func(x ast.Expr) {
						switch x := x.(type) {
						case *ast.Number:
							want(x, "constant.numeric.", "number")
						case *ast.String:
							want(x, "string.", "string")
						case *ast.Ident:
							if x.Name == "true" || x.Name == "false" {
								want(x, "constant.language.", "boolean")
							}
						}
					})
				}
			}
		}
		for _, d := range f.Decls {
			block(d)
		}
	}
	// Every block kind the checker knows is a keyword: declarations and named blocks before
	// their name, sections before their brace.
	lines := map[string]string{}
	for kind, b := range check.Schema() {
		if b.TopLevel {
			lines[kind] = kind + " x {"
		}
		for _, sec := range b.Sections {
			lines[sec] = sec + " {"
		}
		for _, named := range b.Named {
			lines[named] = named + " x {"
		}
	}
	for kind, line := range lines {
		if scopes := tokenise(rules, line); !strings.HasPrefix(scopes[0], "keyword.") {
			t.Errorf("block kind %q in %q: scope %q, want keyword.*", kind, line, scopes[0])
		}
	}
}

// walkValues calls f on x and every expression inside it.
func walkValues(x ast.Expr, f func(ast.Expr)) {
	if x == nil {
		return
	}
	f(x)
	switch x := x.(type) {
	case *ast.List:
		for _, e := range x.Elems {
			walkValues(e, f)
		}
	case *ast.Unary:
		walkValues(x.X, f)
	case *ast.Binary:
		walkValues(x.X, f)
		walkValues(x.Y, f)
	case *ast.Paren:
		walkValues(x.X, f)
	case *ast.Call:
		for _, e := range x.Args {
			walkValues(e, f)
		}
		for _, n := range x.Named {
			walkValues(n.Value, f)
		}
	}
}
