package parse

import (
	"errors"
	"io"
	"sync"

	"github.com/alecthomas/participle/v2"
	"github.com/alecthomas/participle/v2/lexer"
)

// The participle grammar. These types are private to the package: convert.go turns them
// into lang/ast values with exact spans. Every node records the tokens it matched, so a
// span runs from its first token to just past its last one.
//
// Newlines are tokens only where they separate entries (at the top level and directly
// inside `{ }`); inside `( )` and `[ ]` the lexer drops them, so lists and argument lists
// may span lines.

type gFile struct {
	Items []*gItem `parser:"( NL | ';' )* @@*"`
}

// gItem is a declaration with the separators after it. A block's closing brace ends it,
// so `a { } b { }` on one line is two declarations.
type gItem struct {
	Import *gImport `parser:"@@ ( NL | ';' )*"`
	Block  *gBlock  `parser:"| @@ ( NL | ';' )*"`
}

type gImport struct {
	Tokens []lexer.Token
	Path   *gString `parser:"'import' @@"`
}

type gHeader struct {
	Kind    *gIdent   `parser:"@@"`
	Name    *gIdent   `parser:"( (?! 'extends' | 'on' | 'from' ) @@ )?"`
	Extends *gIdent   `parser:"( 'extends' @@ )?"`
	On      *gIdent   `parser:"( 'on' @@ )?"`
	Distill *gDistill `parser:"@@?"`
	From    *gIdent   `parser:"( 'from' @@ )?"`
}

// gDistill is the `distill` of a distillation stage's header: `stage NAME distill from
// TEACHER`. A stage named distill (`stage distill from x`) is still a name: the keyword
// only follows one.
type gDistill struct {
	Tokens []lexer.Token
	Name   string `parser:"@'distill'"`
}

type gBlock struct {
	Tokens []lexer.Token
	Header *gHeader  `parser:"@@"`
	Body   []*gEntry `parser:"'{' ( NL | ';' )* @@* '}'"`
}

// gEntry is an entry with the separators after it. An assignment needs a newline or `;`
// unless the block ends (a nested block's `}` is separator enough); participle cannot say
// "a separator or a following `}`", so the converter checks it (see converter.needSep).
type gEntry struct {
	Assign *gAssign `parser:"@@ ( NL | ';' )*"`
	Block  *gBlock  `parser:"| @@ ( NL | ';' )*"`
}

type gAssign struct {
	Tokens []lexer.Token
	Key    *gIdent `parser:"@@ '='"`
	Value  *gExpr  `parser:"@@"`
}

type gExpr struct {
	Left *gTerm     `parser:"@@"`
	Rest []*gOpTerm `parser:"@@*"`
}

type gOpTerm struct {
	Op string `parser:"@( '+' | '-' )"`
	X  *gTerm `parser:"@@"`
}

type gTerm struct {
	Left *gUnary     `parser:"@@"`
	Rest []*gOpUnary `parser:"@@*"`
}

type gOpUnary struct {
	Op string  `parser:"@( '*' | '/' )"`
	X  *gUnary `parser:"@@"`
}

type gUnary struct {
	Tokens []lexer.Token
	Sign   string    `parser:"@( '-' | '+' )?"`
	X      *gPrimary `parser:"@@"`
}

type gPrimary struct {
	Tokens    []lexer.Token
	Number    *string     `parser:"@Number"`
	String    *gString    `parser:"| @@"`
	Call      *gCall      `parser:"| @@"`
	BraceCall *gBraceCall `parser:"| @@"`
	Ident     *gIdent     `parser:"| @@"`
	List      *gList      `parser:"| @@"`
	Paren     *gExpr      `parser:"| '(' @@ ')'"`
}

type gCall struct {
	Tokens []lexer.Token
	Fn     *gIdent `parser:"@@ '('"`
	Args   []*gArg `parser:"( @@ ( ',' @@ )* )? ')'"`
}

type gArg struct {
	Named *gAssign `parser:"@@"`
	Value *gExpr   `parser:"| @@"`
}

type gBraceCall struct {
	Tokens []lexer.Token
	Fn     *gIdent       `parser:"@@ '{'"`
	Named  []*gCallEntry `parser:"( NL | ';' )* @@* '}'"`
}

type gCallEntry struct {
	Assign *gAssign `parser:"@@ ( NL | ';' )*"`
}

type gList struct {
	Tokens []lexer.Token
	Elems  []*gExpr `parser:"'[' ( @@ ( ',' @@ )* )? ']'"`
}

type gIdent struct {
	Tokens []lexer.Token
	Name   string `parser:"@Ident"`
}

type gString struct {
	Tokens []lexer.Token
	Raw    string `parser:"@String"`
}

// tokenDefinition tells participle the names of our token types. Lexing itself happens in
// scan, before participle runs, so that one scan serves every sub-parse of the recovery.
type tokenDefinition struct{}

func (tokenDefinition) Symbols() map[string]lexer.TokenType {
	return map[string]lexer.TokenType{
		"EOF": tokEOF, "Ident": tokIdent, "Number": tokNumber,
		"String": tokString, "NL": tokNL, "Punct": tokPunct,
	}
}

func (tokenDefinition) Lex(string, io.Reader) (lexer.Lexer, error) {
	return nil, errLexerUnused
}

var errLexerUnused = errors.New("moec scans before parsing; participle's own lexing is not used")

// sliceLexer replays already scanned tokens to participle.
type sliceLexer struct {
	toks []lexer.Token
	eof  lexer.Position
	i    int
}

func (l *sliceLexer) Next() (lexer.Token, error) {
	if l.i >= len(l.toks) {
		return lexer.EOFToken(l.eof), nil
	}
	t := l.toks[l.i]
	l.i++
	return t, nil
}

// parsers holds one participle parser per entry point of the recovery. They are built
// once and never changed afterwards, so sharing them between goroutines is safe.
type parsers struct {
	file   *participle.Parser[gFile]
	block  *participle.Parser[gBlock]
	header *participle.Parser[gHeader]
	assign *participle.Parser[gAssign]
	imp    *participle.Parser[gImport]
	expr   *participle.Parser[gExpr]
}

var grammar = sync.OnceValue(func() *parsers {
	opts := []participle.Option{participle.Lexer(tokenDefinition{}), participle.UseLookahead(2)}
	return &parsers{
		file:   participle.MustBuild[gFile](opts...),
		block:  participle.MustBuild[gBlock](opts...),
		header: participle.MustBuild[gHeader](opts...),
		assign: participle.MustBuild[gAssign](opts...),
		imp:    participle.MustBuild[gImport](opts...),
		expr:   participle.MustBuild[gExpr](opts...),
	}
})

// run parses toks (followed by an EOF at eof) with p.
func run[G any](p *participle.Parser[G], toks []lexer.Token, eof lexer.Position) (*G, error) {
	peek, err := lexer.Upgrade(&sliceLexer{toks: toks, eof: eof})
	if err != nil {
		return nil, err
	}
	return p.ParseFromLexer(peek)
}
