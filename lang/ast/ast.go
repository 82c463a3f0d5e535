package ast

import "fmt"

// Pos is a position in a source file. Line and Col are 1-based; Col counts bytes.
// Offset is the 0-based byte offset. The zero Pos means "no position".
type Pos struct {
	Offset int
	Line   int
	Col    int
}

// IsValid reports whether p refers to a real place in a file.
func (p Pos) IsValid() bool { return p.Line > 0 }

func (p Pos) String() string { return fmt.Sprintf("%d:%d", p.Line, p.Col) }

// Span is the half-open source range [Start, End) of a node.
type Span struct {
	Start Pos
	End   Pos
}

// Pos returns the first byte of the node.
func (s Span) Pos() Pos { return s.Start }

// EndPos returns the position just past the node.
func (s Span) EndPos() Pos { return s.End }

// Node is implemented by every AST node.
type Node interface {
	Pos() Pos
	EndPos() Pos
}

// File is one parsed .moe file.
type File struct {
	Span
	Name     string     // path as given to the parser
	Imports  []*Import  // in source order
	Decls    []*Block   // top-level declarations in source order
	Comments []*Comment // every comment in the file, in source order (for the formatter)
}

// Import is `import "path.moe"`.
type Import struct {
	Span
	Path *String
}

// Comment is a `//` line comment (Text includes the slashes) .
type Comment struct {
	Span
	Text string
}

// Ident is a bare identifier: a name, a key, an enum value or a reference.
type Ident struct {
	Span
	Name string
}

// Block is a declaration or a nested section:
//
//	model NAME [extends BASE] { ... }
//	train NAME on CLUSTER { ... }
//	stage NAME [from OTHER] { ... }
//	stage NAME distill from TEACHER { ... }
//	attention { ... }
//
// Kind is the leading keyword (model, cluster, train, serve, compress, experiment, stage,
// attention, ffn, moe, ...). Name, Extends, On, Distill and From are nil when absent.
type Block struct {
	Span
	Kind    *Ident
	Name    *Ident
	Extends *Ident
	On      *Ident
	// Distill is the `distill` keyword of a distillation stage's header (its From is the
	// teacher).
	Distill *Ident
	From    *Ident
	Body    []Entry
	RBrace  Pos // position of the closing brace
	// Broken marks a block the parser could read only in part: a syntax error inside it
	// dropped an entry, a nested block or the header's tail. Later phases treat what is
	// missing from it as a consequence of that error, not as a second one.
	Broken bool
}

// Entry is an element of a block body: *Assign or *Block.
type Entry interface {
	Node
	entryNode()
}

// Assign is `key = value`.
type Assign struct {
	Span
	Key   *Ident
	Value Expr
}

func (*Assign) entryNode() {}
func (*Block) entryNode()  {}

// Expr is a value expression: *Number, *String, *Ident, *List, *Unary, *Binary, *Paren, *Call.
type Expr interface {
	Node
	exprNode()
}

// Number is a numeric literal with an optional unit or count suffix, exactly as written:
// 150k, 3B, 1.6T, 40GiB, 1TB, 1.6Tbps, 2TB/s, 1e-4, 0.5, 2048.
// Value is the number without the suffix (1.6 for 1.6T); Suffix is "" when absent.
type Number struct {
	Span
	Text   string // literal text including suffix
	Value  float64
	Suffix string
}

// String is a double-quoted string literal; Value is unquoted.
type String struct {
	Span
	Value string
}

// List is `[a, b, c]`.
type List struct {
	Span
	Elems []Expr
}

// Unary is `-x` or `+x`.
type Unary struct {
	Span
	Op string
	X  Expr
}

// Binary is `x op y` with op one of + - * /.
type Binary struct {
	Span
	Op string
	X  Expr
	Y  Expr
}

// Paren is `(x)`.
type Paren struct {
	Span
	X Expr
}

// Call is a constructor value: `copy(noise = 0.01)`, `zero(3, offload = cpu)`,
// `adamw { lr = 1e-4; weight_decay = 0.1 }`. Braces reports which form was written.
type Call struct {
	Span
	Fn     *Ident
	Args   []Expr    // positional arguments
	Named  []*Assign // named arguments, in source order
	Braces bool
}

func (*Number) exprNode() {}
func (*String) exprNode() {}
func (*Ident) exprNode()  {}
func (*List) exprNode()   {}
func (*Unary) exprNode()  {}
func (*Binary) exprNode() {}
func (*Paren) exprNode()  {}
func (*Call) exprNode()   {}
