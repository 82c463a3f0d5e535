package gogen

import (
	"fmt"

	"github.com/dave/jennifer/jen"

	"github.com/moec-dev/moec/compiler/program"
)

// genSchedule writes forwardBackward: one micro-batch unrolled layer by layer into the
// runtime's schedule calls (nn.Schedule), so a reader sees the plan's order of work.
func genSchedule(f *jen.File, cfg Config, lay *layout) {
	stats := jen.Qual(pkgNN, "Stats").Values()
	f.Comment("forwardBackward runs one micro-batch: the forward pass layer by layer, the loss, then")
	f.Comment("the backward pass in reverse order, accumulating every parameter's gradient.")
	f.Comment("With k set, the kernels it covers run compiled (nn.Kernels); nil runs the Go kernels.")
	f.Func().Id("forwardBackward").Params(jen.Id("m").Op("*").Qual(pkgNN, "Model"), jen.Id("b").Qual(pkgNN, "Batch"), jen.Id("o").Qual(pkgNN, "StepOptions"), jen.Id("k").Qual(pkgNN, "Kernels")).
		Params(jen.Qual(pkgNN, "Stats"), jen.Error()).BlockFunc(func(g *jen.Group) {
		g.Comment("Token embeddings into the residual stream; this step's attention-sharing dice.")
		g.List(jen.Id("s"), jen.Err()).Op(":=").Id("m").Dot("BeginStepWith").Call(jen.Id("b"), jen.Id("o"), jen.Id("k"))
		g.If(jen.Err().Op("!=").Nil()).Block(jen.Return(stats, jen.Err()))
		for li := range lay.layers {
			g.Comment(layerSummary(cfg, li))
			g.If(jen.Err().Op(":=").Id("s").Dot("LayerForward").Call(jen.Lit(li)), jen.Err().Op("!=").Nil()).Block(jen.Return(stats, jen.Err()))
		}
		g.Comment("Final norm, head and cross-entropy (plus the balance and z losses).")
		g.List(jen.Id("st"), jen.Err()).Op(":=").Id("s").Dot("HeadForward").Call()
		g.If(jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Id("st"), jen.Err()))
		g.If(jen.Err().Op(":=").Id("s").Dot("HeadBackward").Call(), jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Id("st"), jen.Err()))
		for li := len(lay.layers) - 1; li >= 0; li-- {
			g.If(jen.Err().Op(":=").Id("s").Dot("LayerBackward").Call(jen.Lit(li)), jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Id("st"), jen.Err()))
		}
		g.Return(jen.Id("st"), jen.Id("s").Dot("EmbedBackward").Call())
	})
	f.Line()
}

// genMain writes main and run: flags, data, optimizer, the training loop and generation.
func genMain(f *jen.File, cfg Config) {
	grows := cfg.FromStage != ""
	// With auxiliary-loss-free balancing the loop sums each micro-batch's expert loads and
	// moves the selection bias after the optimizer step, as train.Run does.
	auxFree := cfg.Model.MoE != nil && cfg.Model.MoE.Experts > 0 && cfg.Model.MoE.AuxFreeBias > 0
	addLoads := jen.Null()
	if auxFree {
		addLoads = jen.Id("loads").Op("=").Id("addLoads").Call(jen.Id("loads"), jen.Id("st").Dot("ExpertTokens"))
		f.Comment("addLoads adds one micro-batch's expert loads (per MoE layer, per expert) to sum.")
		f.Func().Id("addLoads").Params(jen.Id("sum"), jen.Id("add").Index().Index().Int()).Index().Index().Int().Block(
			jen.If(jen.Id("sum").Op("==").Nil()).Block(
				jen.Id("sum").Op("=").Make(jen.Index().Index().Int(), jen.Len(jen.Id("add"))),
				jen.For(jen.Id("i").Op(":=").Range().Id("add")).Block(
					jen.Id("sum").Index(jen.Id("i")).Op("=").Make(jen.Index().Int(), jen.Len(jen.Id("add").Index(jen.Id("i")))))),
			jen.For(jen.List(jen.Id("i"), jen.Id("l")).Op(":=").Range().Id("add")).Block(
				jen.For(jen.List(jen.Id("e"), jen.Id("v")).Op(":=").Range().Id("l")).Block(
					jen.Id("sum").Index(jen.Id("i")).Index(jen.Id("e")).Op("+=").Id("v"))),
			jen.Return(jen.Id("sum")))
		f.Line()
	}
	f.Func().Id("main").Params().BlockFunc(func(g *jen.Group) {
		g.Id("steps").Op(":=").Qual("flag", "Int64").Call(jen.Lit("steps"), jen.Id("stageSteps"), jen.Lit("optimizer steps to train"))
		g.Id("seed").Op(":=").Qual("flag", "Int64").Call(jen.Lit("seed"), jen.Id("stageSeed"), jen.Lit("seed of initialisation, data order and sharing dice"))
		g.Id("glob").Op(":=").Qual("flag", "String").Call(jen.Lit("data"), jen.Id("dataGlob"), jen.Lit("training text glob"))
		if cfg.SourceDir != "" {
			g.Id("base").Op(":=").Qual("flag", "String").Call(jen.Lit("base"), jen.Id("defaultBase").Call(), jen.Lit("directory that relative data globs are taken from (default: the .moe file's folder)"))
		} else {
			g.Id("base").Op(":=").Qual("flag", "String").Call(jen.Lit("base"), jen.Lit("."), jen.Lit("directory that relative data globs are taken from"))
		}
		if grows {
			g.Id("from").Op(":=").Qual("flag", "String").Call(jen.Lit("from"), jen.Lit(""),
				jen.Lit(fmt.Sprintf("final checkpoint (or run directory) of stage %s, which this stage grows from", cfg.FromStage)))
		} else {
			g.Id("from").Op(":=").Id("new").Call(jen.String())
		}
		g.Id("lib").Op(":=").Qual("flag", "String").Call(jen.Lit("llvm"), jen.Lit(""),
			jen.Lit("compiled kernel library to use in place of the Go kernels, e.g. ../llvm/libmoe_kernels.so, which moec build compiles when clang is installed"))
		g.Id("gen").Op(":=").Qual("flag", "Int").Call(jen.Lit("generate"), jen.Lit(128), jen.Lit("bytes to generate after training (0 = none)"))
		g.Id("prompt").Op(":=").Qual("flag", "String").Call(jen.Lit("prompt"), jen.Lit("\n"), jen.Lit("prompt for generation"))
		g.Qual("flag", "Parse").Call()
		g.If(jen.Err().Op(":=").Id("run").Call(jen.Op("*").Id("steps"), jen.Op("*").Id("seed"), jen.Op("*").Id("glob"), jen.Op("*").Id("base"),
			jen.Op("*").Id("from"), jen.Op("*").Id("lib"), jen.Op("*").Id("gen"), jen.Op("*").Id("prompt")), jen.Err().Op("!=").Nil()).Block(
			jen.Qual("fmt", "Fprintln").Call(jen.Qual("os", "Stderr"), jen.Lit(cfg.Name+":"), jen.Err()),
			jen.Qual("os", "Exit").Call(jen.Lit(1)),
		)
	})
	f.Line()
	if cfg.SourceDir != "" {
		f.Comment("defaultBase is the .moe file's folder, the base `moec run` takes relative data globs")
		f.Comment("from: sourceDir joined to the folder this file was compiled from, so the program")
		f.Comment("finds it from any working directory. Built with -trimpath the folder is unknown,")
		f.Comment("and sourceDir is taken from the working directory.")
		f.Func().Id("defaultBase").Params().String().Block(
			jen.List(jen.Id("_"), jen.Id("file"), jen.Id("_"), jen.Id("ok")).Op(":=").Qual("runtime", "Caller").Call(jen.Lit(0)),
			jen.If(jen.Op("!").Id("ok").Op("||").Op("!").Qual("path/filepath", "IsAbs").Call(jen.Id("file")).Op("||").Qual("path/filepath", "IsAbs").Call(jen.Id("sourceDir"))).Block(
				jen.Return(jen.Qual("path/filepath", "FromSlash").Call(jen.Id("sourceDir")))),
			jen.Return(jen.Qual("path/filepath", "Join").Call(jen.Qual("path/filepath", "Dir").Call(jen.Id("file")), jen.Qual("path/filepath", "FromSlash").Call(jen.Id("sourceDir")))),
		)
		f.Line()
	}
	f.Comment("run trains the stage as `moec run` does and prints each step's loss with every digit,")
	f.Comment("so the two can be compared exactly.")
	f.Func().Id("run").Params(jen.List(jen.Id("steps"), jen.Id("seed")).Int64(), jen.List(jen.Id("glob"), jen.Id("base"), jen.Id("from"), jen.Id("lib")).String(),
		jen.Id("gen").Int(), jen.Id("prompt").String()).Error().BlockFunc(func(g *jen.Group) {
		g.Var().Id("cfg").Qual(pkgProgram, "Model")
		g.If(jen.Err().Op(":=").Qual("encoding/json", "Unmarshal").Call(jen.Index().Byte().Parens(jen.Id("modelJSON")), jen.Op("&").Id("cfg")), jen.Err().Op("!=").Nil()).Block(
			jen.Return(jen.Qual("fmt", "Errorf").Call(jen.Lit("embedded model: %w"), jen.Err())))
		g.List(jen.Id("m"), jen.Err()).Op(":=").Qual(pkgNN, "New").Call(jen.Op("&").Id("cfg"), jen.Id("seed"))
		g.If(jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Err()))
		if cfg.Products == program.BF16 {
			g.Id("m").Dot("SetBF16Products").Call(jen.True()).Comment("precision = bf16: bfloat16 products, float32 sums")
		}
		g.List(jen.Id("p"), jen.Err()).Op(":=").Id("bindParams").Call(jen.Id("m"))
		g.If(jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Err()))
		if grows {
			g.If(jen.Id("from").Op("==").Lit("")).Block(jen.Return(jen.Qual("errors", "New").Call(
				jen.Lit(fmt.Sprintf("this stage grows from stage %s: pass -from with its final checkpoint (moec run --stage %s writes one)", cfg.FromStage, cfg.FromStage)))))
			g.List(jen.Id("dir"), jen.Err()).Op(":=").Qual(pkgTrain, "ResolveCheckpoint").Call(jen.Id("from"))
			g.If(jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Err()))
			g.List(jen.Id("c"), jen.Err()).Op(":=").Qual(pkgCkpt, "Load").Call(jen.Id("dir"), jen.False())
			g.If(jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Err()))
			g.If(jen.Op("!").Id("c").Dot("Manifest").Dot("Final")).Block(jen.Return(jen.Qual("fmt", "Errorf").Call(jen.Lit("checkpoint %s is not the final one of its stage"), jen.Id("dir"))))
			g.If(jen.List(jen.Id("_"), jen.Err()).Op(":=").Qual(pkgTrain, "Grow").Call(jen.Id("c").Dot("Model"), jen.Id("c").Dot("Manifest").Dot("Model"), jen.Op("&").Id("cfg"), jen.Id("m").Dot("Params").Call(),
				jen.Qual(pkgProgram, "Grow").Values(jen.Dict{jen.Id("Kind"): jen.Lit(cfg.Grow.Kind), jen.Id("Noise"): jen.Lit(cfg.Grow.Noise)}), jen.Id("seed")), jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Err()))
		} else {
			g.Id("_").Op("=").Id("from").Comment("a first stage starts from its initialisation")
		}
		g.List(jen.Id("corpus"), jen.Err()).Op(":=").Qual(pkgData, "Open").Call(jen.Qual(pkgData, "Options").Values(jen.Dict{
			jen.Id("Glob"): jen.Id("glob"), jen.Id("ValGlob"): jen.Id("valGlob"), jen.Id("BaseDir"): jen.Id("base")}))
		g.If(jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Err()))
		g.Id("ps").Op(":=").Id("m").Dot("Params").Call()
		g.Id("op").Op(":=").Make(jen.Index().Qual(pkgOptim, "Param"), jen.Len(jen.Id("ps")))
		g.For(jen.List(jen.Id("i"), jen.Id("q")).Op(":=").Range().Id("ps")).Block(
			jen.Id("op").Index(jen.Id("i")).Op("=").Qual(pkgOptim, "Param").Values(jen.Dict{jen.Id("Name"): jen.Id("q").Dot("Name"), jen.Id("Shape"): jen.Id("q").Dot("Shape"), jen.Id("W"): jen.Id("q").Dot("W"), jen.Id("G"): jen.Id("q").Dot("G")}))
		g.Comment("The Go kernels and optim.AdamW, or with -llvm the compiled kernels and AdamW.")
		g.Var().Id("k").Qual(pkgNN, "Kernels")
		g.Var().Id("adam").Id("optimizer")
		g.If(jen.Id("lib").Op("==").Lit("")).Block(
			jen.List(jen.Id("a"), jen.Err()).Op(":=").Qual(pkgOptim, "NewAdamW").Call(jen.Id("optimizerConfig").Call(jen.Id("steps")), jen.Id("op")),
			jen.If(jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Err())),
			jen.Id("adam").Op("=").Id("a"),
		).Else().Block(
			jen.List(jen.Id("l"), jen.Err()).Op(":=").Qual(pkgKernelSel, "Open").Call(jen.Id("lib"), jen.Op("&").Id("cfg")),
			jen.If(jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Err())),
			jen.Defer().Id("l").Dot("Close").Call(),
			jen.List(jen.Id("a"), jen.Err()).Op(":=").Id("l").Dot("NewAdamW").Call(jen.Id("optimizerConfig").Call(jen.Id("steps")), jen.Id("op")),
			jen.If(jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Err())),
			jen.List(jen.Id("k"), jen.Id("adam")).Op("=").List(jen.Id("l"), jen.Id("a")),
			jen.Qual("fmt", "Printf").Call(jen.Lit("kernels: compiled (%s)\n"), jen.Id("lib")),
		)
		g.Qual("fmt", "Printf").Call(jen.Lit(cfg.Name+": %d parameters in %d layers; %d steps of %d x %d x %d tokens\n"),
			jen.Id("paramCount"), jen.Id("layers"), jen.Id("steps"), jen.Id("accum"), jen.Id("microBatch"), jen.Id("seqLen"))
		g.For(jen.Id("step").Op(":=").Int64().Parens(jen.Lit(0)), jen.Id("step").Op("<").Id("steps"), jen.Id("step").Op("++")).BlockFunc(func(g *jen.Group) {
			g.Id("m").Dot("ZeroGrad").Call()
			g.Var().List(jen.Id("loss"), jen.Id("ce")).Float64()
			if auxFree {
				g.Var().Id("loads").Index().Index().Int().Comment("the step's expert loads, for the selection bias")
			}
			g.For(jen.Id("micro").Op(":=").Lit(0), jen.Id("micro").Op("<").Id("accum"), jen.Id("micro").Op("++")).Block(
				jen.List(jen.Id("toks"), jen.Err()).Op(":=").Id("corpus").Dot("Batch").Call(jen.Id("seed"), jen.Id("step"), jen.Id("micro").Op("*").Id("microBatch"), jen.Id("microBatch"), jen.Id("seqLen")),
				jen.If(jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Err())),
				jen.List(jen.Id("st"), jen.Err()).Op(":=").Id("forwardBackward").Call(jen.Id("m"),
					jen.Qual(pkgNN, "Batch").Values(jen.Dict{jen.Id("B"): jen.Id("microBatch"), jen.Id("T"): jen.Id("seqLen"), jen.Id("Tokens"): jen.Id("toks")}),
					jen.Qual(pkgNN, "StepOptions").Values(jen.Dict{jen.Id("Seed"): jen.Id("seed"), jen.Id("Step"): jen.Id("step"), jen.Id("Train"): jen.True()}), jen.Id("k")),
				jen.If(jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Qual("fmt", "Errorf").Call(jen.Lit("step %d: %w"), jen.Id("step").Op("+").Lit(1), jen.Err()))),
				jen.Id("loss").Op("+=").Id("st").Dot("Loss").Op("/").Id("accum"),
				jen.Id("ce").Op("+=").Id("st").Dot("CE").Op("/").Id("accum"),
				addLoads,
			)
			g.If(jen.Qual("math", "IsNaN").Call(jen.Id("loss")).Op("||").Qual("math", "IsInf").Call(jen.Id("loss"), jen.Lit(0))).Block(
				jen.Return(jen.Qual("fmt", "Errorf").Call(jen.Lit("loss is %v at step %d; lower the learning rate or check the data"), jen.Id("loss"), jen.Id("step").Op("+").Lit(1))))
			g.List(jen.Id("info"), jen.Err()).Op(":=").Id("adam").Dot("Step").Call(jen.Lit(1).Op("/").Float64().Parens(jen.Id("accum")))
			g.If(jen.Err().Op("!=").Nil()).Block(jen.Return(jen.Qual("fmt", "Errorf").Call(jen.Lit("step %d: %w"), jen.Id("step").Op("+").Lit(1), jen.Err())))
			if auxFree {
				g.Comment("Auxiliary-loss-free balancing: the selection bias moves by the step's loads.")
				g.If(jen.Err().Op(":=").Id("m").Dot("UpdateRouterBias").Call(jen.Id("loads")), jen.Err().Op("!=").Nil()).Block(
					jen.Return(jen.Qual("fmt", "Errorf").Call(jen.Lit("step %d: %w"), jen.Id("step").Op("+").Lit(1), jen.Err())))
			}
			g.Qual("fmt", "Printf").Call(jen.Lit("step %d loss %s ce %s lr %s grad_norm %s\n"), jen.Id("step").Op("+").Lit(1),
				jen.Id("full").Call(jen.Id("loss")), jen.Id("full").Call(jen.Id("ce")), jen.Id("full").Call(jen.Id("info").Dot("LR")), jen.Id("full").Call(jen.Id("info").Dot("GradNorm")))
		})
		g.Qual("fmt", "Printf").Call(jen.Lit("token embedding rms %.6f\n"), jen.Id("rms").Call(jen.Id("p").Dot("EmbedTokens").Dot("W")))
		g.If(jen.Id("gen").Op("<=").Lit(0)).Block(jen.Return(jen.Nil()))
		g.Id("out").Op(":=").Qual("bufio", "NewWriter").Call(jen.Qual("os", "Stdout"))
		g.Qual("fmt", "Fprint").Call(jen.Id("out"), jen.Lit("generated: "))
		g.Id("err").Op("=").Qual(pkgGenerate, "Generate").Call(jen.Qual("context", "Background").Call(), jen.Id("m"), jen.Index().Byte().Parens(jen.Id("prompt")), jen.Id("gen"),
			jen.Qual(pkgGenerate, "Sampler").Values(), jen.Func().Params(jen.Id("c").Byte()).Error().Block(jen.Return(jen.Id("out").Dot("WriteByte").Call(jen.Id("c")))))
		g.Qual("fmt", "Fprintln").Call(jen.Id("out"))
		g.Return(jen.Qual("errors", "Join").Call(jen.Err(), jen.Id("out").Dot("Flush").Call()))
	})
	f.Line()
	f.Comment("optimizer is what the loop needs of optim.AdamW or kernelsel's compiled AdamW.")
	f.Type().Id("optimizer").Interface(jen.Id("Step").Params(jen.Id("gradScale").Float64()).Params(jen.Qual(pkgOptim, "StepInfo"), jen.Error()))
	f.Line()
	f.Comment("full prints a float with the fewest digits that read back to the same value.")
	f.Func().Id("full").Params(jen.Id("x").Float64()).String().Block(
		jen.Return(jen.Qual("strconv", "FormatFloat").Call(jen.Id("x"), jen.LitRune('g'), jen.Lit(-1), jen.Lit(64))))
	f.Line()
	f.Func().Id("rms").Params(jen.Id("w").Index().Float32()).Float64().Block(
		jen.Var().Id("s").Float64(),
		jen.For(jen.List(jen.Id("_"), jen.Id("v")).Op(":=").Range().Id("w")).Block(jen.Id("s").Op("+=").Float64().Parens(jen.Id("v")).Op("*").Float64().Parens(jen.Id("v"))),
		jen.Return(jen.Qual("math", "Sqrt").Call(jen.Id("s").Op("/").Float64().Parens(jen.Len(jen.Id("w"))))),
	)
}
