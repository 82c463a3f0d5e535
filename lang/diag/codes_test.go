package diag

import (
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestRegistry: every code is registered once, with a summary and a phase `moec explain`
// can name, and Lookup finds it in any case.
func TestRegistry(t *testing.T) {
	seen := map[Code]bool{}
	for _, info := range Registry() {
		if seen[info.Code] {
			t.Errorf("%s registered twice", info.Code)
		}
		seen[info.Code] = true
		if info.Summary == "" {
			t.Errorf("%s has no summary", info.Code)
		}
		if p := info.Code.Phase(); p == "unknown" || p == "warnings" {
			t.Errorf("%s: no phase owns its number", info.Code)
		}
		if got, ok := Lookup(string(info.Code)); !ok || got != info {
			t.Errorf("Lookup(%s) = %v, %v", info.Code, got, ok)
		}
	}
	if _, ok := Lookup("e0509"); !ok {
		t.Error("Lookup is case-sensitive")
	}
	if _, ok := Lookup("E9999"); ok {
		t.Error("Lookup found an unregistered code")
	}
	if Code("W9501").Severity() != "warning" || Code("E0101").Severity() != "error" {
		t.Error("severity by prefix")
	}
}

// TestEveryCodeConstantIsRegistered holds the constants and the registry together: each
// constant of type Code declared in this package is named Code<Name>, is registered under
// its own value, and no two constants share a value; so a code added as a constant alone,
// or under another naming scheme, fails here.
func TestEveryCodeConstantIsRegistered(t *testing.T) {
	registered := map[Code]bool{}
	for _, info := range Registry() {
		registered[info.Code] = true
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	byValue := map[string]string{}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				if typ, ok := vs.Type.(*ast.Ident); !ok || typ.Name != "Code" {
					continue
				}
				for i, name := range vs.Names {
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Errorf("%s: %s is not a string literal", fset.Position(name.Pos()), name.Name)
						continue
					}
					value := constant.StringVal(constant.MakeFromLiteral(lit.Value, lit.Kind, 0))
					if !strings.HasPrefix(name.Name, "Code") {
						t.Errorf("%s: code constant %s is not named Code<Name>", fset.Position(name.Pos()), name.Name)
					}
					if prev, dup := byValue[value]; dup {
						t.Errorf("%s: %s and %s are both %s", fset.Position(name.Pos()), prev, name.Name, value)
					}
					byValue[value] = name.Name
					if !registered[Code(value)] {
						t.Errorf("%s: %s (%s) is not registered: add it to the table of its file", fset.Position(name.Pos()), name.Name, value)
					}
				}
			}
		}
	}
	for c := range registered {
		if _, ok := byValue[string(c)]; !ok {
			t.Errorf("%s is registered without a Code constant", c)
		}
	}
}
