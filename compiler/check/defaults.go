package check

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/moec-dev/moec/lang/ast"
)

// parseDefault reads a default written in the schema tables ("d_model / heads",
// "top_k > 1", "zero(1)", "[]", `""`) into the same AST the parser builds, so defaults
// go through the one evaluator (units, references, cycles) that user values go through.
// The grammar is the language's expression grammar plus `>` for conditional defaults;
// nodes carry no positions because defaults have no place in a file.
func parseDefault(src string) (ast.Expr, error) {
	p := &defaultParser{src: src}
	e, err := p.compare()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.src) {
		return nil, fmt.Errorf("default %q: unexpected %q", src, p.src[p.i:])
	}
	return e, nil
}

type defaultParser struct {
	src string
	i   int
}

func (p *defaultParser) space() {
	for p.i < len(p.src) && p.src[p.i] == ' ' {
		p.i++
	}
}

func (p *defaultParser) peek() byte {
	p.space()
	if p.i < len(p.src) {
		return p.src[p.i]
	}
	return 0
}

func (p *defaultParser) compare() (ast.Expr, error) {
	x, err := p.sum()
	if err != nil || p.peek() != '>' {
		return x, err
	}
	p.i++
	y, err := p.sum()
	return &ast.Binary{Op: ">", X: x, Y: y}, err
}

func (p *defaultParser) sum() (ast.Expr, error) {
	x, err := p.product()
	for err == nil && (p.peek() == '+' || p.peek() == '-') {
		op := string(p.src[p.i])
		p.i++
		var y ast.Expr
		y, err = p.product()
		x = &ast.Binary{Op: op, X: x, Y: y}
	}
	return x, err
}

func (p *defaultParser) product() (ast.Expr, error) {
	x, err := p.primary()
	for err == nil && (p.peek() == '*' || p.peek() == '/') {
		op := string(p.src[p.i])
		p.i++
		var y ast.Expr
		y, err = p.primary()
		x = &ast.Binary{Op: op, X: x, Y: y}
	}
	return x, err
}

func (p *defaultParser) primary() (ast.Expr, error) {
	c := p.peek()
	start := p.i
	switch {
	case c == '[':
		p.i++
		list := &ast.List{}
		for p.peek() != ']' {
			if p.peek() == 0 {
				return nil, fmt.Errorf("default %q: unterminated list", p.src)
			}
			x, err := p.sum()
			if err != nil {
				return nil, err
			}
			list.Elems = append(list.Elems, x)
			if p.peek() == ',' {
				p.i++
			}
		}
		p.i++
		return list, nil
	case c == '"':
		end := strings.IndexByte(p.src[p.i+1:], '"')
		if end < 0 {
			return nil, fmt.Errorf("default %q: unterminated string", p.src)
		}
		p.i += end + 2
		return &ast.String{Value: p.src[start+1 : p.i-1]}, nil
	case c >= '0' && c <= '9':
		for p.i < len(p.src) && (isDigit(p.src[p.i]) || p.src[p.i] == '.' ||
			(p.src[p.i] == 'e' && p.i+1 < len(p.src) && (p.src[p.i+1] == '-' || isDigit(p.src[p.i+1])))) {
			if p.src[p.i] == 'e' {
				p.i++
			}
			p.i++
		}
		numEnd := p.i
		for p.i < len(p.src) && (unicode.IsLetter(rune(p.src[p.i])) || p.src[p.i] == '/') {
			p.i++
		}
		return &ast.Number{Text: p.src[start:p.i], Suffix: p.src[numEnd:p.i]}, nil
	case c == '_' || unicode.IsLetter(rune(c)):
		for p.i < len(p.src) && (p.src[p.i] == '_' || p.src[p.i] == '.' || isDigit(p.src[p.i]) || unicode.IsLetter(rune(p.src[p.i]))) {
			p.i++
		}
		id := &ast.Ident{Name: p.src[start:p.i]}
		if p.peek() != '(' {
			return id, nil
		}
		p.i++
		call := &ast.Call{Fn: id}
		for p.peek() != ')' {
			if p.peek() == 0 {
				return nil, fmt.Errorf("default %q: unterminated call", p.src)
			}
			arg, err := p.sum()
			if err != nil {
				return nil, err
			}
			call.Args = append(call.Args, arg)
			if p.peek() == ',' {
				p.i++
			}
		}
		p.i++
		return call, nil
	}
	return nil, fmt.Errorf("default %q: unexpected %q at %d", p.src, c, p.i)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
