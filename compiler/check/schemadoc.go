package check

// KeyDoc describes one key of a block for editors (completion, hover): its name, type,
// default and the words it accepts.
type KeyDoc struct {
	Name     string
	Type     string   // "an integer", "one of rmsnorm | layernorm", ...
	Default  string   // the default as an expression ("" when required, optional or computed)
	Required bool     // the user must write it
	Doc      string   // one line
	Values   []string // the words the key accepts (enum values, true/false, constructors)
}

// BlockDoc describes one block kind or constructor.
type BlockDoc struct {
	Kind     string
	Keys     []KeyDoc
	Sections []string // nested unnamed blocks (attention, ffn, moe)
	Named    []string // nested named blocks (stage, variant)
	TopLevel bool     // a declaration kind
}

// Key returns the key called name, if the block has one.
func (b BlockDoc) Key(name string) (KeyDoc, bool) {
	for _, k := range b.Keys {
		if k.Name == name {
			return k, true
		}
	}
	return KeyDoc{}, false
}

// Schema returns the checker's tables as documentation, by block kind: the same tables
// the checker reads, so an editor completes exactly what check accepts.
func Schema() map[string]BlockDoc {
	s := newSchema()
	top := map[string]bool{}
	for _, k := range s.topLevel {
		top[k] = true
	}
	out := make(map[string]BlockDoc, len(s.blocks))
	for kind, b := range s.blocks {
		bd := BlockDoc{Kind: kind, Sections: append([]string(nil), b.sections...), Named: append([]string(nil), b.named...), TopLevel: top[kind]}
		for _, k := range b.keys {
			bd.Keys = append(bd.Keys, KeyDoc{Name: k.name, Type: k.typ.String(), Default: k.def, Required: k.required, Doc: k.doc, Values: k.typ.words()})
		}
		out[kind] = bd
	}
	return out
}

// TopLevel lists the declaration kinds in the order the checker lists them.
func TopLevel() []string { return append([]string(nil), newSchema().topLevel...) }

// words are the bare words a value of type t may be.
func (t keyType) words() []string {
	switch t.kind {
	case tyBool:
		return append([]string{"true", "false"}, t.enums...)
	case tyEnum, tyFloat:
		return append([]string(nil), t.enums...)
	case tyCtor:
		out := make([]string, len(t.ctors))
		for i, c := range t.ctors {
			out[i] = c.kind
		}
		return out
	}
	return nil
}
