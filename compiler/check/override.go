package check

import (
	"fmt"
	"sort"
	"strings"

	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/parse"
)

// ArmStage is the override path an experiment arm uses to pick the stage its runs end at
// (the stage and, first, every stage it grows `from`). It names no model or train key:
// resolveExperiments checks it against the train's stages, and ApplyOverrides leaves it
// for the runner.
const ArmStage = "stage"

// ApplyOverrides returns files with an experiment arm's overrides written into the train
// block named train and into the model it trains (train blocks are named by their model),
// so that checking the result resolves the arm's program exactly as if the user had written
// the values there: keys derived from an overridden one (`hidden = 4 * d_model`) follow it.
// overrides maps override paths (as program.ExperimentVariant holds them) to canonical
// value text. The input files are not modified; blocks that change are copied.
//
// A path resolves as the checker's experiment overrides do: model keys and sections first,
// then train keys, then the arguments of the train's constructor keys (`optimizer.lr`),
// which need the constructor written in the train block.
func ApplyOverrides(files []*ast.File, train string, overrides map[string]string) ([]*ast.File, error) {
	sch := newSchema()
	out := make([]*ast.File, len(files))
	var model, tr *ast.Block
	var modelAt, trainAt [2]int
	for i, f := range files {
		cp := *f
		cp.Decls = append([]*ast.Block(nil), f.Decls...)
		out[i] = &cp
		for j, b := range f.Decls {
			if b == nil || b.Kind == nil || b.Name == nil || b.Name.Name != train {
				continue
			}
			switch b.Kind.Name {
			case "model":
				model, modelAt = b, [2]int{i, j}
			case "train":
				tr, trainAt = b, [2]int{i, j}
			}
		}
	}
	if tr == nil {
		return nil, fmt.Errorf("no train block %s", train)
	}
	if model == nil {
		return nil, fmt.Errorf("train %s: no model %s to override", train, train)
	}
	model, tr = copyBlock(model), copyBlock(tr)
	paths := make([]string, 0, len(overrides))
	for p := range overrides {
		paths = append(paths, p)
	}
	sort.Strings(paths) // deterministic order of the written entries
	mspec, tspec := sch.blocks["model"], sch.blocks["train"]
	for _, p := range paths {
		if p == ArmStage {
			continue
		}
		val, diags := parse.Expr(overrides[p])
		if diags.HasErrors() || val == nil {
			return nil, fmt.Errorf("override %s = %s: cannot parse the value", p, overrides[p])
		}
		sec, rest, dotted := strings.Cut(p, ".")
		switch {
		case mspec.key(p) != nil:
			setKey(model, p, val)
		case dotted && mspec.hasSection(sec) && sch.blocks[sec].key(rest) != nil:
			setSectionKey(model, sec, rest, val)
		case tspec.key(p) != nil:
			setKey(tr, p, val)
		case dotted && tspec.key(sec) != nil && len(tspec.key(sec).typ.ctors) > 0:
			if err := setCtorArg(tr, tspec.key(sec), rest, val); err != nil {
				return nil, fmt.Errorf("train %s: %w", train, err)
			}
		default:
			return nil, fmt.Errorf("override %s: no model or train key has that path", p)
		}
	}
	out[modelAt[0]].Decls[modelAt[1]] = model
	out[trainAt[0]].Decls[trainAt[1]] = tr
	return out, nil
}

func copyBlock(b *ast.Block) *ast.Block {
	cp := *b
	cp.Body = append([]ast.Entry(nil), b.Body...)
	return &cp
}

// setKey replaces every top-level `key = ...` of b with `key = val`.
func setKey(b *ast.Block, key string, val ast.Expr) {
	b.Body = dropAssign(b.Body, key)
	b.Body = append(b.Body, &ast.Assign{Key: &ast.Ident{Name: key}, Value: val})
}

// setSectionKey writes `sec.key = val`, removing the key from any `sec { ... }` block and
// any dotted shorthand of it first (readBody reports a key written twice).
func setSectionKey(b *ast.Block, sec, key string, val ast.Expr) {
	body := dropAssign(b.Body, sec+"."+key)
	for i, e := range body {
		if s, ok := e.(*ast.Block); ok && s.Kind != nil && s.Kind.Name == sec {
			s = copyBlock(s)
			s.Body = dropAssign(s.Body, key)
			body[i] = s
		}
	}
	b.Body = append(body, &ast.Assign{Key: &ast.Ident{Name: sec + "." + key}, Value: val})
}

func dropAssign(body []ast.Entry, key string) []ast.Entry {
	out := body[:0:0]
	for _, e := range body {
		if a, ok := e.(*ast.Assign); ok && a.Key != nil && a.Key.Name == key {
			continue
		}
		out = append(out, e)
	}
	return out
}

// setCtorArg sets one argument of the constructor value of key k (`optimizer.lr`): a
// positional argument in place when it was written positionally, else a named one.
func setCtorArg(b *ast.Block, k *keySpec, arg string, val ast.Expr) error {
	for i, e := range b.Body {
		a, ok := e.(*ast.Assign)
		if !ok || a.Key == nil || a.Key.Name != k.name {
			continue
		}
		var call ast.Call
		switch v := a.Value.(type) {
		case *ast.Call:
			call = *v
		case *ast.Ident: // `optimizer = adamw`: a constructor with every default
			call = ast.Call{Span: v.Span, Fn: v, Braces: true}
		default:
			return fmt.Errorf("cannot override %s.%s: %s is not written as a constructor", k.name, arg, k.name)
		}
		if call.Fn == nil {
			return fmt.Errorf("cannot override %s.%s: %s has no constructor name", k.name, arg, k.name)
		}
		ctor := ctorNamed(k.typ, call.Fn.Name)
		if ctor == nil || ctor.key(arg) == nil {
			return fmt.Errorf("cannot override %s.%s: %s takes no argument %s", k.name, arg, call.Fn.Name, arg)
		}
		call.Args = append([]ast.Expr(nil), call.Args...)
		call.Named = append([]*ast.Assign(nil), call.Named...)
		pos := -1
		for j, name := range ctor.positional {
			if name == arg {
				pos = j
			}
		}
		if pos >= 0 && pos < len(call.Args) {
			call.Args[pos] = val
		} else {
			named := call.Named[:0:0]
			for _, n := range call.Named {
				if n.Key == nil || n.Key.Name != arg {
					named = append(named, n)
				}
			}
			call.Named = append(named, &ast.Assign{Key: &ast.Ident{Name: arg}, Value: val})
		}
		na := *a
		na.Value = &call
		b.Body[i] = &na
		return nil
	}
	return fmt.Errorf("cannot override %s.%s: the train block does not write %s; write `%s = ...` there first", k.name, arg, k.name, k.name)
}
