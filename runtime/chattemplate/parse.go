package chattemplate

import (
	"fmt"
	"strconv"
	"strings"
)

// Nodes of a template.
type (
	node     interface{}
	textNode struct{ text string }
	outNode  struct{ e expr }
	ifNode   struct {
		conds  []expr
		bodies [][]node
		els    []node
	}
	forNode struct {
		targets []string
		iter    expr
		filter  expr
		body    []node
		els     []node
	}
	setNode struct {
		name, attr string // attr: a namespace attribute (set ns.attr = …)
		e          expr
	}
	loopCtl struct{ brk bool }
	macroNd struct {
		name     string
		params   []string
		defaults map[string]expr
		body     []node
	}
)

// Expressions.
type (
	expr    interface{}
	litExpr struct{ v any }
	nameExp struct{ name string }
	listExp struct{ items []expr }
	dictExp struct{ keys, vals []expr }
	attrExp struct {
		x    expr
		name string
	}
	itemExp struct{ x, key expr }
	sliceEx struct{ x, lo, hi, step expr }
	callExp struct {
		fn     expr
		args   []expr
		kwargs map[string]expr
		kwKeys []string
	}
	filterE struct {
		x      expr
		name   string
		args   []expr
		kwargs map[string]expr
	}
	testExp struct {
		x    expr
		name string
		args []expr
		not  bool
	}
	binExp struct {
		op   string
		a, b expr
	}
	notExp  struct{ x expr }
	negExp  struct{ x expr }
	condExp struct{ cond, a, b expr }
)

// parser reads the statements of a template.
type parser struct {
	segs []segment
	pos  int
}

func parseTemplate(src string) ([]node, error) {
	segs, err := split(src)
	if err != nil {
		return nil, err
	}
	p := &parser{segs: segs}
	nodes, end, err := p.block()
	if err != nil {
		return nil, err
	}
	if end != "" {
		return nil, fmt.Errorf("line %d: {%% %s %%} without its opening tag", p.segs[p.pos-1].line, end)
	}
	return nodes, nil
}

// block reads nodes up to a closing statement (endif, else, …), which it returns with its
// tokens consumed; "" at the end of the template.
func (p *parser) block(ends ...string) ([]node, string, error) {
	var out []node
	for p.pos < len(p.segs) {
		s := p.segs[p.pos]
		p.pos++
		switch s.kind {
		case segText:
			if s.text != "" {
				out = append(out, textNode{s.text})
			}
		case segComment:
		case segExpr:
			e, err := parseExprString(s.text)
			if err != nil {
				return nil, "", fmt.Errorf("line %d: {{%s}}: %w", s.line, s.text, err)
			}
			out = append(out, outNode{e})
		case segStmt:
			toks, err := lexExpr(s.text)
			if err != nil {
				return nil, "", fmt.Errorf("line %d: {%%%s%%}: %w", s.line, s.text, err)
			}
			if len(toks) == 0 || toks[0].kind != 'n' {
				return nil, "", fmt.Errorf("line %d: an empty or malformed statement {%%%s%%}", s.line, s.text)
			}
			word := toks[0].text
			for _, e := range ends {
				if word == e {
					p.segs[p.pos-1].text = strings.TrimSpace(s.text)
					return out, word, nil
				}
			}
			n, err := p.statement(word, toks[1:], s.line)
			if err != nil {
				return nil, "", fmt.Errorf("line %d: %w", s.line, err)
			}
			out = append(out, n)
		}
	}
	if len(ends) > 0 {
		return nil, "", fmt.Errorf("the template ends inside a block: want {%% %s %%}", ends[len(ends)-1])
	}
	return out, "", nil
}

func (p *parser) statement(word string, toks []token, line int) (node, error) {
	switch word {
	case "if":
		n := ifNode{}
		cond, err := parseExprTokens(toks)
		if err != nil {
			return nil, err
		}
		for {
			body, end, err := p.block("elif", "else", "endif")
			if err != nil {
				return nil, err
			}
			n.conds, n.bodies = append(n.conds, cond), append(n.bodies, body)
			switch end {
			case "endif":
				return n, nil
			case "else":
				if n.els, _, err = p.block("endif"); err != nil {
					return nil, err
				}
				return n, nil
			case "elif":
				etoks, _ := lexExpr(p.segs[p.pos-1].text)
				if cond, err = parseExprTokens(etoks[1:]); err != nil {
					return nil, err
				}
			}
		}
	case "for":
		n := forNode{}
		i := 0
		for ; i < len(toks) && !(toks[i].kind == 'n' && toks[i].text == "in"); i++ {
			if toks[i].kind == 'n' {
				n.targets = append(n.targets, toks[i].text)
			} else if toks[i].text != "," && toks[i].text != "(" && toks[i].text != ")" {
				return nil, fmt.Errorf("for: unexpected %q in the loop target", toks[i].text)
			}
		}
		if i == len(toks) || len(n.targets) == 0 {
			return nil, fmt.Errorf("for without \"in\"")
		}
		rest := toks[i+1:]
		// A trailing "if cond" filters the items (and "recursive" is not supported).
		depth, cut := 0, -1
		for j, t := range rest {
			switch {
			case t.kind == 'o' && (t.text == "(" || t.text == "[" || t.text == "{"):
				depth++
			case t.kind == 'o' && (t.text == ")" || t.text == "]" || t.text == "}"):
				depth--
			case t.kind == 'n' && t.text == "if" && depth == 0 && cut < 0:
				// The first top-level "if" not part of a conditional expression: a
				// conditional expression needs an "else" after it.
				hasElse := false
				for _, u := range rest[j+1:] {
					if u.kind == 'n' && u.text == "else" {
						hasElse = true
					}
				}
				if !hasElse {
					cut = j
				}
			case t.kind == 'n' && t.text == "recursive" && depth == 0:
				return nil, fmt.Errorf("recursive loops are not supported")
			}
		}
		iterToks := rest
		if cut >= 0 {
			iterToks = rest[:cut]
			f, err := parseExprTokens(rest[cut+1:])
			if err != nil {
				return nil, err
			}
			n.filter = f
		}
		var err error
		if n.iter, err = parseExprTokens(iterToks); err != nil {
			return nil, err
		}
		body, end, err := p.block("else", "endfor")
		if err != nil {
			return nil, err
		}
		n.body = body
		if end == "else" {
			if n.els, _, err = p.block("endfor"); err != nil {
				return nil, err
			}
		}
		return n, nil
	case "set":
		eq := -1
		for i, t := range toks {
			if t.kind == 'o' && t.text == "=" {
				eq = i
				break
			}
		}
		if eq < 0 {
			return nil, fmt.Errorf("block set ({%% set x %%}…{%% endset %%}) is not supported")
		}
		n := setNode{}
		switch {
		case eq == 1 && toks[0].kind == 'n':
			n.name = toks[0].text
		case eq == 3 && toks[0].kind == 'n' && toks[1].text == "." && toks[2].kind == 'n':
			n.name, n.attr = toks[0].text, toks[2].text
		default:
			return nil, fmt.Errorf("set: want `set name = …` or `set namespace.attr = …`")
		}
		var err error
		n.e, err = parseExprTokens(toks[eq+1:])
		return n, err
	case "macro":
		if len(toks) < 3 || toks[0].kind != 'n' || toks[1].text != "(" {
			return nil, fmt.Errorf("macro: want `macro name(params)`")
		}
		m := macroNd{name: toks[0].text, defaults: map[string]expr{}}
		ep := &exprParser{toks: toks[1:]}
		args, kwargs, keys, err := ep.args()
		if err != nil {
			return nil, fmt.Errorf("macro %s: %w", m.name, err)
		}
		for _, a := range args {
			n, ok := a.(nameExp)
			if !ok {
				return nil, fmt.Errorf("macro %s: a parameter must be a name", m.name)
			}
			m.params = append(m.params, n.name)
		}
		for _, k := range keys {
			m.params = append(m.params, k)
			m.defaults[k] = kwargs[k]
		}
		if m.body, _, err = p.block("endmacro"); err != nil {
			return nil, err
		}
		return m, nil
	case "break", "continue":
		return loopCtl{brk: word == "break"}, nil
	case "generation":
		// transformers' {% generation %} marks the assistant's text for masks; it renders
		// its body as is.
		body, _, err := p.block("endgeneration")
		if err != nil {
			return nil, err
		}
		return ifNode{conds: []expr{litExpr{true}}, bodies: [][]node{body}}, nil
	}
	return nil, fmt.Errorf("the statement {%% %s %%} is not supported by moec's chat templates", word)
}

// exprParser is a recursive-descent parser with Jinja's precedence.
type exprParser struct {
	toks []token
	pos  int
}

func parseExprString(s string) (expr, error) {
	toks, err := lexExpr(s)
	if err != nil {
		return nil, err
	}
	return parseExprTokens(toks)
}

func parseExprTokens(toks []token) (expr, error) {
	p := &exprParser{toks: toks}
	e, err := p.expr()
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.toks) {
		return nil, fmt.Errorf("unexpected %q", p.toks[p.pos].text)
	}
	return e, nil
}

func (p *exprParser) peek() token {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return token{}
}

func (p *exprParser) isOp(s string) bool   { t := p.peek(); return t.kind == 'o' && t.text == s }
func (p *exprParser) isWord(s string) bool { t := p.peek(); return t.kind == 'n' && t.text == s }

func (p *exprParser) expect(s string) error {
	if !p.isOp(s) {
		return fmt.Errorf("want %q, got %q", s, p.peek().text)
	}
	p.pos++
	return nil
}

func (p *exprParser) expr() (expr, error) {
	a, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.isWord("if") {
		p.pos++
		cond, err := p.or()
		if err != nil {
			return nil, err
		}
		var b expr = litExpr{undefined{}}
		if p.isWord("else") {
			p.pos++
			if b, err = p.expr(); err != nil {
				return nil, err
			}
		}
		return condExp{cond, a, b}, nil
	}
	return a, nil
}

func (p *exprParser) or() (expr, error) {
	a, err := p.and()
	for err == nil && p.isWord("or") {
		p.pos++
		var b expr
		b, err = p.and()
		a = binExp{"or", a, b}
	}
	return a, err
}

func (p *exprParser) and() (expr, error) {
	a, err := p.not()
	for err == nil && p.isWord("and") {
		p.pos++
		var b expr
		b, err = p.not()
		a = binExp{"and", a, b}
	}
	return a, err
}

func (p *exprParser) not() (expr, error) {
	if p.isWord("not") {
		p.pos++
		x, err := p.not()
		return notExp{x}, err
	}
	return p.compare()
}

func (p *exprParser) compare() (expr, error) {
	a, err := p.math1()
	for err == nil {
		t := p.peek()
		var op string
		switch {
		case t.kind == 'o' && (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == ">" || t.text == "<=" || t.text == ">="):
			op = t.text
			p.pos++
		case t.kind == 'n' && t.text == "in":
			op = "in"
			p.pos++
		case t.kind == 'n' && t.text == "not" && p.pos+1 < len(p.toks) && p.toks[p.pos+1].text == "in":
			op = "not in"
			p.pos += 2
		default:
			return a, nil
		}
		var b expr
		b, err = p.math1()
		a = binExp{op, a, b}
	}
	return a, err
}

func (p *exprParser) math1() (expr, error) {
	a, err := p.concat()
	for err == nil && (p.isOp("+") || p.isOp("-")) {
		op := p.peek().text
		p.pos++
		var b expr
		b, err = p.concat()
		a = binExp{op, a, b}
	}
	return a, err
}

func (p *exprParser) concat() (expr, error) {
	a, err := p.math2()
	for err == nil && p.isOp("~") {
		p.pos++
		var b expr
		b, err = p.math2()
		a = binExp{"~", a, b}
	}
	return a, err
}

func (p *exprParser) math2() (expr, error) {
	a, err := p.unary()
	for err == nil && (p.isOp("*") || p.isOp("/") || p.isOp("//") || p.isOp("%")) {
		op := p.peek().text
		p.pos++
		var b expr
		b, err = p.unary()
		a = binExp{op, a, b}
	}
	return a, err
}

func (p *exprParser) unary() (expr, error) {
	if p.isOp("-") {
		p.pos++
		x, err := p.unary()
		return negExp{x}, err
	}
	if p.isOp("+") {
		p.pos++
		return p.unary()
	}
	x, err := p.primary()
	if err != nil {
		return nil, err
	}
	if x, err = p.postfix(x); err != nil {
		return nil, err
	}
	return p.filters(x)
}

func (p *exprParser) primary() (expr, error) {
	t := p.peek()
	p.pos++
	switch t.kind {
	case 's':
		s := t.text
		for p.peek().kind == 's' { // adjacent strings are one
			s += p.peek().text
			p.pos++
		}
		return litExpr{s}, nil
	case 'i':
		v, err := strconv.ParseInt(t.text, 10, 64)
		return litExpr{v}, err
	case 'f':
		v, err := strconv.ParseFloat(t.text, 64)
		return litExpr{v}, err
	case 'n':
		switch t.text {
		case "true", "True":
			return litExpr{true}, nil
		case "false", "False":
			return litExpr{false}, nil
		case "none", "None":
			return litExpr{nil}, nil
		}
		return nameExp{t.text}, nil
	case 'o':
		switch t.text {
		case "(":
			e, err := p.expr()
			if err != nil {
				return nil, err
			}
			if p.isOp(",") { // a tuple: a list here
				items := []expr{e}
				for p.isOp(",") {
					p.pos++
					if p.isOp(")") {
						break
					}
					x, err := p.expr()
					if err != nil {
						return nil, err
					}
					items = append(items, x)
				}
				e = listExp{items}
			}
			return e, p.expect(")")
		case "[":
			var items []expr
			for !p.isOp("]") {
				x, err := p.expr()
				if err != nil {
					return nil, err
				}
				items = append(items, x)
				if !p.isOp(",") {
					break
				}
				p.pos++
			}
			return listExp{items}, p.expect("]")
		case "{":
			d := dictExp{}
			for !p.isOp("}") {
				k, err := p.expr()
				if err != nil {
					return nil, err
				}
				if err := p.expect(":"); err != nil {
					return nil, err
				}
				v, err := p.expr()
				if err != nil {
					return nil, err
				}
				d.keys, d.vals = append(d.keys, k), append(d.vals, v)
				if !p.isOp(",") {
					break
				}
				p.pos++
			}
			return d, p.expect("}")
		}
	}
	if t.kind == 0 {
		return nil, fmt.Errorf("the expression ends too soon")
	}
	return nil, fmt.Errorf("unexpected %q", t.text)
}

func (p *exprParser) postfix(x expr) (expr, error) {
	for {
		switch {
		case p.isOp("."):
			p.pos++
			t := p.peek()
			if t.kind != 'n' && t.kind != 'i' {
				return nil, fmt.Errorf("want an attribute name after \".\"")
			}
			p.pos++
			x = attrExp{x, t.text}
		case p.isOp("["):
			p.pos++
			var parts [3]expr
			n, colon := 0, false
			for !p.isOp("]") {
				if p.isOp(":") {
					p.pos++
					n++
					colon = true
					if n > 2 {
						return nil, fmt.Errorf("a slice has at most three parts")
					}
					continue
				}
				e, err := p.expr()
				if err != nil {
					return nil, err
				}
				parts[n] = e
			}
			p.pos++
			if colon {
				x = sliceEx{x, parts[0], parts[1], parts[2]}
			} else {
				x = itemExp{x, parts[0]}
			}
		case p.isOp("("):
			args, kwargs, keys, err := p.args()
			if err != nil {
				return nil, err
			}
			x = callExp{x, args, kwargs, keys}
		default:
			return x, nil
		}
	}
}

func (p *exprParser) args() ([]expr, map[string]expr, []string, error) {
	if err := p.expect("("); err != nil {
		return nil, nil, nil, err
	}
	var args []expr
	kwargs := map[string]expr{}
	var keys []string
	for !p.isOp(")") {
		if p.peek().kind == 'n' && p.pos+1 < len(p.toks) && p.toks[p.pos+1].text == "=" && p.toks[p.pos+1].kind == 'o' {
			name := p.peek().text
			p.pos += 2
			e, err := p.expr()
			if err != nil {
				return nil, nil, nil, err
			}
			kwargs[name] = e
			keys = append(keys, name)
		} else {
			e, err := p.expr()
			if err != nil {
				return nil, nil, nil, err
			}
			args = append(args, e)
		}
		if !p.isOp(",") {
			break
		}
		p.pos++
	}
	return args, kwargs, keys, p.expect(")")
}

// filters reads `| name(args)` filters and `is [not] test` tests after a value.
func (p *exprParser) filters(x expr) (expr, error) {
	for {
		switch {
		case p.isOp("|"):
			p.pos++
			t := p.peek()
			if t.kind != 'n' {
				return nil, fmt.Errorf("want a filter name after |")
			}
			p.pos++
			f := filterE{x: x, name: t.text}
			if p.isOp("(") {
				var err error
				if f.args, f.kwargs, _, err = p.args(); err != nil {
					return nil, err
				}
			}
			x = f
		case p.isWord("is"):
			p.pos++
			te := testExp{x: x}
			if p.isWord("not") {
				te.not = true
				p.pos++
			}
			t := p.peek()
			if t.kind != 'n' {
				return nil, fmt.Errorf("want a test name after is")
			}
			p.pos++
			te.name = t.text
			if p.isOp("(") {
				var err error
				if te.args, _, _, err = p.args(); err != nil {
					return nil, err
				}
			} else if k := p.peek().kind; k == 's' || k == 'i' || k == 'f' || (k == 'n' && !isKeyword(p.peek().text)) {
				// `is equalto 3`, `is sameas none`: one argument without parentheses.
				arg, err := p.primary()
				if err != nil {
					return nil, err
				}
				te.args = []expr{arg}
			}
			x = te
		default:
			return x, nil
		}
	}
}

func isKeyword(s string) bool {
	switch s {
	case "and", "or", "not", "in", "is", "if", "else":
		return true
	}
	return false
}
