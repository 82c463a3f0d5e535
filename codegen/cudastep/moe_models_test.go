package cudastep

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// TestLowerMoEShippedModels lowers the MoE ops of every shipped model (and each of its
// training stages) that the step program lowers, at two layers to keep the memory plan
// quick: hunyuan1t's 1536 experts and mixtral's top-2 among them. Every launch is held to
// its kernel's signature and to CUDA's grid and block limits.
func TestLowerMoEShippedModels(t *testing.T) {
	files, err := filepath.Glob("../../models/*.moe")
	if err != nil {
		t.Fatal(err)
	}
	table := map[string]Kernel{}
	for _, k := range moeKernels() {
		table[k.Name] = k
	}
	lowered := 0
	for _, f := range append(files, "../../examples/hunyuan_tiny.moe") {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		prog, _, ds := check.Load(filepath.Base(f), func(string) ([]byte, error) { return src, nil })
		if ds.HasErrors() {
			t.Fatalf("%s: %v", f, ds)
		}
		for name, m := range prog.Models {
			stages := map[string]*program.Model{"model": m}
			for _, tr := range prog.Trains {
				for _, st := range tr.Stages {
					stages[st.Name] = program.StageModel(m, st)
				}
			}
			for stage, sm := range stages {
				if sm.MoE == nil || sm.MoE.Experts < 2 {
					continue
				}
				small := *sm
				small.Layers = min(small.Layers, 2)
				progs, err := step.Lower(&small, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
				if err != nil {
					t.Logf("%s %s: not lowered by the step program: %v", name, stage, err)
					continue
				}
				p := progs[0]
				n := 0
				for i := range p.Ops {
					if !isMoEOp(p, i) {
						continue
					}
					ls, err := lowerMoE(p, &small, i)
					if err != nil {
						t.Errorf("%s %s: %v", name, stage, err)
						continue
					}
					for _, l := range ls {
						if err := checkLaunch(l, table, p); err != nil {
							t.Errorf("%s %s op %d (%s): %v", name, stage, i, p.Ops[i].Kind, err)
						}
					}
					n++
				}
				if n == 0 {
					t.Errorf("%s %s: no MoE op lowered", name, stage)
				}
				lowered++
				t.Logf("%s %s: %d experts, top-%d: %d MoE ops", name, stage, small.MoE.Experts, small.MoE.TopK, n)
			}
		}
	}
	if lowered == 0 {
		t.Fatal("no shipped MoE stage lowered")
	}
}

// checkLaunch holds a launch to its kernel's signature (argument kinds, int buffers for
// int pointers) and to CUDA's launch limits.
func checkLaunch(l Launch, table map[string]Kernel, p *step.Program) error {
	k, ok := table[l.Kernel]
	if !ok {
		return fmt.Errorf("launch of %s, which the kernel table it was checked against lacks", l.Kernel)
	}
	if len(k.Params) != len(l.Args) {
		return fmt.Errorf("launch of %s with %d arguments, the kernel takes %d", l.Kernel, len(l.Args), len(k.Params))
	}
	threads := l.Block[0] * l.Block[1] * l.Block[2]
	if threads <= 0 || threads > 1024 || threads%32 != 0 || l.Grid[0] <= 0 || l.Grid[1] <= 0 || l.Grid[2] <= 0 ||
		l.Grid[0] > 1<<31-1 || l.Grid[1] > 65535 || l.Grid[2] > 65535 || l.Shared > 48<<10 {
		return fmt.Errorf("launch of %s: grid %v, block %v, shared %d bytes out of CUDA's limits", l.Kernel, l.Grid, l.Block, l.Shared)
	}
	for i, a := range l.Args {
		if a.Kind != k.Params[i] {
			return fmt.Errorf("launch of %s: argument %d is a %s, the kernel takes a %s", l.Kernel, i, a.Kind.CType(), k.Params[i].CType())
		}
		if a.Kind.Pointer() && a.Buf >= 0 {
			if buf := p.Buffers[a.Buf]; buf.Int != (a.Kind == PtrI32) {
				return fmt.Errorf("launch of %s: argument %d passes %s (int %v) as a %s", l.Kernel, i, buf.Name, buf.Int, a.Kind.CType())
			}
		}
		for _, b := range a.Table {
			if p.Buffers[b].Int {
				return fmt.Errorf("launch of %s: argument %d's table holds the int buffer %s", l.Kernel, i, p.Buffers[b].Name)
			}
		}
	}
	return nil
}
