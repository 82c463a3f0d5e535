package check

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// resolveServes evaluates every serve block.
func (c *checker) resolveServes() {
	for _, d := range c.declsOf("serve") {
		fb := newFlatBlock()
		path := "serve " + d.name
		c.readBody(d.spec, path, d.block.Body, d.file, fb)
		s := newScope(path, d.spec, d.file, d.block.Name, fb.entries, nil)
		s.incomplete = d.block.Broken
		d.scope = s
		if m := c.lookupDecl("model", d.name, diag.CodeUnknownModel, d.file, d.block.Name, path); m != nil && m.scope != nil {
			s.links["model"] = m.scope
		}
		sv := &program.Serve{Name: d.name, Model: d.name, Decl: declSource(d.file, d.block)}
		if d.block.On != nil {
			sv.Cluster = d.block.On.Name
			c.lookupDecl("cluster", d.block.On.Name, diag.CodeUnknownCluster, d.file, d.block.On, path)
		}
		c.r.evalAll(s)
		if m := c.byKind["model"][d.name]; m != nil && m.scope != nil {
			c.checkLearnedLength(m, s, "context", s.i64("context"))
		}
		sv.Precision = program.Precision(s.str("precision"))
		sv.Batch, sv.ContextLen, sv.Layout, sv.Stage = s.int("batch"), s.i64("context"), s.str("layout"), s.str("stage")
		if sv.Stage != "" && s.links["model"] != nil {
			var names []string
			found := false
			if t := c.prog.Trains[d.name]; t != nil {
				for _, st := range t.Stages {
					names = append(names, st.Name)
					found = found || st.Name == sv.Stage
				}
			}
			if !found {
				dg := c.errorf(diag.CodeUnknownServeStage, s.rangeOf("stage"), "serve %s names stage `%s`, but train %s has no such stage", d.name, sv.Stage, d.name)
				dg.Suggestion = didYouMean(sv.Stage, names)
			}
		}
		sv.Compressed = s.boolean("compressed")
		if sv.Compressed && c.byKind["compress"][d.name] == nil {
			dg := c.errorf(diag.CodeServeNoCompress, s.rangeOf("compressed"), "serve %s is compressed, but model %s has no compress block", d.name, d.name)
			dg.Suggestion = fmt.Sprintf("declare `compress %s { quantize = 8 }` (or int4, keep_experts), or drop compressed", d.name)
		}
		c.prog.Serves[d.name] = sv
		c.prog.ServeOrder = append(c.prog.ServeOrder, d.name)
		d.prov = s.provenance(nil)
	}
}

// resolveCompresses evaluates every compress block.
func (c *checker) resolveCompresses() {
	for _, d := range c.declsOf("compress") {
		fb := newFlatBlock()
		path := "compress " + d.name
		c.readBody(d.spec, path, d.block.Body, d.file, fb)
		s := newScope(path, d.spec, d.file, d.block.Name, fb.entries, nil)
		s.incomplete = d.block.Broken
		d.scope = s
		c.lookupDecl("model", d.name, diag.CodeUnknownModel, d.file, d.block.Name, path)
		c.r.evalAll(s)
		cp := &program.Compress{Name: d.name, Model: d.name, DistillInto: s.str("distill_into"),
			QuantBits: s.int("quantize"), PruneExperts: s.f64("prune_experts"), Decl: declSource(d.file, d.block)}
		if cp.DistillInto != "" {
			c.lookupDecl("model", cp.DistillInto, diag.CodeUnknownModel, d.file, s.rangeNode("distill_into"), path+" distill_into")
		}
		c.resolveQuantization(cp, s)
		c.prog.Compresses[d.name] = cp
		c.prog.CompressOrder = append(c.prog.CompressOrder, d.name)
		d.prov = s.provenance(nil)
	}
}

// rangeNode is the node a diagnostic about key points at.
func (s *scope) rangeNode(key string) ast.Node {
	if e := s.entries[key]; e != nil {
		return e.expr
	}
	return s.at
}

// overrideTargets maps every path an experiment may override to its key: model keys
// and sections, train keys, and the optimizer's and memory strategy's arguments.
func (c *checker) overrideTargets() (map[string]*keySpec, []string) {
	targets := map[string]*keySpec{}
	var order []string
	add := func(prefix string, b *blockSpec) {
		for _, k := range b.keys {
			if _, dup := targets[prefix+k.name]; !dup {
				targets[prefix+k.name] = k
				order = append(order, prefix+k.name)
			}
		}
	}
	model := c.schema.blocks["model"]
	add("", model)
	for _, sec := range model.sections {
		add(sec+".", c.schema.blocks[sec])
	}
	train := c.schema.blocks["train"]
	add("", train)
	for _, k := range train.keys {
		for _, ctor := range k.typ.ctors {
			add(k.name+".", ctor)
		}
	}
	return targets, order
}

// resolveExperiments evaluates every experiment and its overrides.
func (c *checker) resolveExperiments() {
	targets, order := c.overrideTargets()
	for _, d := range c.declsOf("experiment") {
		fb := newFlatBlock()
		path := "experiment " + d.name
		c.readBody(d.spec, path, d.block.Body, d.file, fb)
		s := newScope(path, d.spec, d.file, d.block.Name, fb.entries, nil)
		s.incomplete = d.block.Broken
		d.scope = s
		c.r.evalAll(s)
		ex := &program.Experiment{Name: d.name, Train: s.str("train"), Stage: s.str("stage"), Tokens: s.i64("tokens"),
			Seeds: s.ints64("seeds"), Baseline: map[string]string{}, Equal: s.str("equal")}
		if v, ok := s.val("seeds"); ok {
			c.checkSeeds(s, v)
		}
		if ex.Train != "" {
			t := c.prog.Trains[ex.Train]
			if t == nil {
				dg := c.errorf(diag.CodeUnknownExperimentRef, s.rangeOf("train"), "experiment %s refers to unknown train `%s`", d.name, ex.Train)
				dg.Suggestion = didYouMean(ex.Train, c.prog.TrainOrder)
			} else if ex.Stage != "" {
				var names []string
				found := false
				for _, st := range t.Stages {
					names = append(names, st.Name)
					found = found || st.Name == ex.Stage
				}
				if !found {
					dg := c.errorf(diag.CodeUnknownExperimentRef, s.rangeOf("stage"), "train %s has no stage `%s`", ex.Train, ex.Stage)
					dg.Suggestion = didYouMean(ex.Stage, names)
				}
			}
		}
		d.prov = s.provenance(nil)
		seenBaseline := false
		variants := map[string]bool{}
		for _, b := range fb.named {
			kind := b.Kind.Name
			var written []override
			c.readOverrides(d, b.Body, "", targets, order, &written)
			c.checkArmStage(d.file, ex, written)
			overrides := map[string]string{}
			for _, o := range written {
				overrides[o.path] = o.value
			}
			switch kind {
			case "baseline":
				if b.Name != nil {
					dg := c.errorf(diag.CodeBadHeader, diag.RangeOf(d.file, b.Name), "a baseline block takes no name")
					dg.Suggestion = "write `baseline {`"
				}
				if seenBaseline {
					c.errorf(diag.CodeDuplicateKey, diag.RangeOf(d.file, b.Kind), "experiment %s has two baseline blocks", d.name)
					continue
				}
				seenBaseline = true
				ex.Baseline = overrides
				d.prov = appendOverrides(d.prov, path+".baseline", written)
			case "variant":
				if b.Name == nil {
					c.errorf(diag.CodeBadHeader, diag.RangeOf(d.file, b.Kind), "a variant needs a name: `variant NAME {`")
					continue
				}
				if variants[b.Name.Name] {
					c.errorf(diag.CodeDuplicateDecl, diag.RangeOf(d.file, b.Name), "variant %s is declared twice in experiment %s", b.Name.Name, d.name)
					continue
				}
				variants[b.Name.Name] = true
				ex.Variants = append(ex.Variants, program.ExperimentVariant{Name: b.Name.Name, Overrides: overrides})
				d.prov = appendOverrides(d.prov, path+".variant "+b.Name.Name, written)
			}
		}
		c.prog.Experiments[d.name] = ex
		c.prog.ExperimentOrder = append(c.prog.ExperimentOrder, d.name)
	}
}

// override is one checked `path = value` of a baseline or variant.
type override struct {
	path, value, where string
	key                diag.Range // where the override's key is written
	at                 ast.Node   // the value (set for an arm's stage, which is checked later)
}

func appendOverrides(out []program.Provenance, path string, written []override) []program.Provenance {
	for _, o := range written {
		out = append(out, program.Provenance{Path: path + "." + o.path, Value: o.value, Source: program.Written, From: o.where})
	}
	return out
}

// readOverrides reads `path = value` entries and nested blocks of overrides, checking
// each path and evaluating each value against the key's type. Overrides are values,
// not expressions over other keys: they replace what the train's model would resolve.
func (c *checker) readOverrides(d *decl, body []ast.Entry, prefix string, targets map[string]*keySpec, order []string, out *[]override) {
	for _, en := range body {
		switch en := en.(type) {
		case *ast.Block:
			if en.Kind == nil {
				continue
			}
			if en.Name != nil {
				c.errorf(diag.CodeBadHeader, diag.RangeOf(d.file, en.Name), "an override block takes no name")
			}
			c.readOverrides(d, en.Body, prefix+en.Kind.Name+".", targets, order, out)
		case *ast.Assign:
			if en.Key == nil || en.Value == nil {
				continue
			}
			path := prefix + en.Key.Name
			if path == ArmStage {
				// Not a key but the stage the arm's runs end at (resolveExperiments checks
				// the name against the train's stages).
				id, isIdent := en.Value.(*ast.Ident)
				if !isIdent {
					dg := c.errorf(diag.CodeWrongType, diag.RangeOf(d.file, en.Value), "an arm's stage is the name of a stage of the experiment's train")
					dg.Suggestion = "write `stage = NAME`"
					continue
				}
				if dup := findOverride(*out, path); dup != nil {
					dg := c.errorf(diag.CodeDuplicateKey, diag.RangeOf(d.file, en.Key), "`%s` is overridden twice", path)
					dg.Label(dup.key, "first overridden here")
					continue
				}
				*out = append(*out, override{path: path, value: id.Name, where: fmt.Sprintf("%s:%s", d.file, en.Key.Pos()), key: diag.RangeOf(d.file, en.Key), at: id})
				continue
			}
			spec := targets[path]
			if spec == nil {
				dg := c.errorf(diag.CodeUnknownOverride, diag.RangeOf(d.file, en.Key), "an experiment cannot override `%s`: no model or train key has that path", path)
				dg.Suggestion = didYouMean(path, order)
				continue
			}
			if dup := findOverride(*out, path); dup != nil {
				dg := c.errorf(diag.CodeDuplicateKey, diag.RangeOf(d.file, en.Key), "`%s` is overridden twice", path)
				dg.Label(dup.key, "first overridden here")
				continue
			}
			one := &blockSpec{kind: "override", keys: []*keySpec{spec}}
			s := newScope("experiment "+d.name+"."+strings.TrimSuffix(prefix, "."), one, d.file, en.Key,
				map[string]*entry{spec.name: {key: spec.name, keyNode: en.Key, expr: en.Value, file: d.file, source: program.Written}}, nil)
			if v, ok := c.r.get(s, spec.name); ok {
				*out = append(*out, override{path: path, value: v.String(), where: s.entries[spec.name].where(), key: diag.RangeOf(d.file, en.Key)})
			}
		}
	}
}

func findOverride(list []override, path string) *override {
	for i := range list {
		if list[i].path == path {
			return &list[i]
		}
	}
	return nil
}

// checkSeeds: each seed is one run per arm, so the list must name at least one and no
// seed twice (a repeat would only rerun the same numbers).
func (c *checker) checkSeeds(s *scope, v value) {
	if len(v.list) == 0 {
		dg := c.errorf(diag.CodeOutOfRange, s.rangeOf("seeds"), "seeds is empty: an experiment needs at least one run per arm")
		dg.Suggestion = "write `seeds = [1]`"
		return
	}
	seen := map[string]bool{}
	for _, e := range v.list {
		if e.num.Sign() < 0 {
			c.errorf(diag.CodeOutOfRange, s.rangeOf("seeds"), "seed %s is negative", e)
			return
		}
		if seen[e.String()] {
			c.errorf(diag.CodeOutOfRange, s.rangeOf("seeds"), "seed %s is listed twice", e)
			return
		}
		seen[e.String()] = true
	}
}

// checkArmStage reports an arm's `stage = NAME` that names no stage of the train.
func (c *checker) checkArmStage(file string, ex *program.Experiment, written []override) {
	o := findOverride(written, ArmStage)
	t := c.prog.Trains[ex.Train]
	if o == nil || t == nil {
		return
	}
	var names []string
	for _, st := range t.Stages {
		if st.Name == o.value {
			return
		}
		names = append(names, st.Name)
	}
	dg := c.errorf(diag.CodeUnknownExperimentRef, diag.RangeOf(file, o.at), "train %s has no stage `%s`", ex.Train, o.value)
	dg.Suggestion = didYouMean(o.value, names)
}
