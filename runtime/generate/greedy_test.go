package generate

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/atomicfile"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/quant"
)

var update = flag.Bool("update", false, "rewrite testdata/greedy.txt from the current decoder")

const greedyGolden = "testdata/greedy.txt"

// tinyHunYuan is examples/hunyuan_tiny.moe's eight-expert stage (talking heads, shared
// attention weights, token-embedding routing, GELU experts), initialised from seed 1 with
// its weights scaled up so that greedy decoding has clear winners.
func tinyHunYuan(t *testing.T) (*program.Model, *nn.Model) {
	t.Helper()
	prog, _, diags := check.Load("../../examples/hunyuan_tiny.moe", os.ReadFile)
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	var st *program.Stage
	for _, s := range prog.Trains["hunyuan_tiny"].Stages {
		if s.Name == "eight" {
			st = s
		}
	}
	if st == nil {
		t.Fatal("examples/hunyuan_tiny.moe has no stage eight")
	}
	cfg := program.StageModel(prog.Models["hunyuan_tiny"], st)
	m, err := nn.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m.Params() {
		if len(p.Shape) == 2 {
			for i := range p.W {
				p.W[i] *= 4
			}
		}
	}
	return cfg, m
}

// quantizeAll quantises every matrix that moec compress would with bits (int4: groups of
// 128) and returns them by name.
func quantizeAll(t *testing.T, cfg *program.Model, m *nn.Model, bits int) map[string]*quant.Matrix {
	t.Helper()
	layout, err := params.Walk(cfg)
	if err != nil {
		t.Fatal(err)
	}
	quantised := map[string]bool{}
	for _, p := range layout {
		if params.QuantKind(p.ID) != "" && len(p.Shape) == 2 {
			quantised[p.Name] = true
		}
	}
	qs := map[string]*quant.Matrix{}
	for _, p := range m.Params() {
		if !quantised[p.Name] {
			continue
		}
		q, err := quant.Quantize(p.W, p.Shape[0], p.Shape[1], bits, map[int]int{8: 0, 4: 128}[bits])
		if err != nil {
			t.Fatal(err)
		}
		qs[p.Name] = q
	}
	return qs
}

// greedyRun decodes batch sequences greedily for n steps from distinct first tokens and
// writes, per step, each sequence's token and the gap between its best and second logit.
func greedyRun(t *testing.T, m *nn.Model, batch, n int) []string {
	t.Helper()
	dec := m.NewDecoder(batch, n)
	vocab := int(m.Config().PaddedVocab())
	toks := make([]int32, batch)
	for i := range toks {
		toks[i] = int32('a' + 7*i)
	}
	var lines []string
	for step := 0; step < n; step++ {
		logits, err := dec.Step(toks)
		if err != nil {
			t.Fatal(err)
		}
		var fields []string
		for i := range toks {
			row := logits[i*vocab : i*vocab+256]
			best := slices.Index(row, slices.Max(row))
			second := float32(-1e30)
			for j, v := range row {
				if j != best {
					second = max(second, v)
				}
			}
			toks[i] = int32(best)
			fields = append(fields, fmt.Sprintf("%d:%.5f", best, row[best]-second))
		}
		lines = append(lines, strings.Join(fields, " "))
	}
	return lines
}

// TestGreedyTokensPinned: greedy decoding of the tiny HunYuan in float32, int8 and int4
// g128, at batch 1 and 4, gives the tokens recorded in testdata/greedy.txt (written by
// -update before the decoder's speed work), so that work changed no generated token. A
// step whose recorded gap between the best and second logit is below 1e-2 ends the
// comparison of its sequence's later steps: rounding may reorder a near-tie.
func TestGreedyTokensPinned(t *testing.T) {
	const steps = 48
	var got []string
	for _, bits := range []int{32, 8, 4} {
		for _, batch := range []int{1, 4} {
			cfg, m := tinyHunYuan(t)
			if bits != 32 {
				if err := m.SetQuantized(quantizeAll(t, cfg, m, bits)); err != nil {
					t.Fatal(err)
				}
			}
			got = append(got, fmt.Sprintf("# bits %d batch %d", bits, batch))
			got = append(got, greedyRun(t, m, batch, steps)...)
		}
	}
	if *update {
		if err := atomicfile.WriteFile(greedyGolden, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	raw, err := os.ReadFile(greedyGolden)
	if err != nil {
		t.Fatalf("%v (go test -run TestGreedyTokensPinned -update writes it)", err)
	}
	want := strings.Split(string(bytes.TrimSpace(raw)), "\n")
	if len(want) != len(got) {
		t.Fatalf("%s has %d lines, the run %d", greedyGolden, len(want), len(got))
	}
	var stopped map[int]bool
	compared, total := 0, 0
	for l := range want {
		if strings.HasPrefix(want[l], "#") {
			stopped = map[int]bool{}
			continue
		}
		wf, gf := strings.Fields(want[l]), strings.Fields(got[l])
		total += len(wf)
		for i := range wf {
			if stopped[i] {
				continue
			}
			wt, wgap, _ := strings.Cut(wf[i], ":")
			gt, _, _ := strings.Cut(gf[i], ":")
			if wt != gt {
				t.Fatalf("line %d (%s) sequence %d: greedy token %s, recorded %s", l+1, got[l], i, gt, wt)
			}
			compared++
			if gap, err := strconv.ParseFloat(wgap, 64); err != nil || gap < 1e-2 {
				stopped[i] = true
			}
		}
	}
	if compared < total/2 {
		t.Errorf("only %d of %d greedy tokens compared: too many near-ties in %s", compared, total, greedyGolden)
	}
}
