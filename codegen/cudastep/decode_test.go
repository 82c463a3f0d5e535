package cudastep

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/compiler/step"
)

func lowerDecoding(t *testing.T, m *program.Model, batch, prompt, maxLen int) (*Decoding, error) {
	t.Helper()
	prefill, err := step.LowerPrefill(m, batch, prompt, maxLen)
	if err != nil {
		t.Fatal(err)
	}
	decode, err := step.LowerDecode(m, batch, maxLen)
	if err != nil {
		t.Fatal(err)
	}
	return LowerDecoding(prefill, decode, m, Options{})
}

// TestDecodingLowers: a dense and an MoE model's prefill and decoding-step programs lower
// to launches (the caches' writes, rotary positions and attention at each sequence's
// position and each prompt's last row to kernels_decode.cu), the host program has both
// entry points, the two programs' workspaces lie after the shared arena apart from each
// other, and only the kernel files the programs launch are compiled (not the bf16
// tensor-core products of fp32 decoding).
func TestDecodingLowers(t *testing.T) {
	for name, m := range map[string]*program.Model{"dense": programtest.Tiny(), "moe": programtest.TinyMoE()} {
		dec, err := lowerDecoding(t, m, 2, 3, 8)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, l := range []*Lowered{dec.Prefill, dec.Decode} {
			chains := flashChains(l.Program, m) // a fused core's scores and softmax launch nothing
			for i, op := range l.Program.Ops {
				if len(l.Ops[i].Launches) == 0 && chains[i] == nil {
					t.Errorf("%s: op %d (%s) launches nothing", name, i, op.Kind)
				}
				if isDecodeOp(&l.Program.Ops[i]) && op.Kind != step.OpEmbed && !strings.HasPrefix(l.Ops[i].Launches[0].Kernel, "decode_") {
					t.Errorf("%s: op %d (%s) launches %s", name, i, op.Kind, l.Ops[i].Launches[0].Kernel)
				}
			}
		}
		host, err := DecodingHostProgram(dec)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, want := range []string{"moec_decode_prefill", "moec_decode_step", "decode_attention", "decode_kv_write", "decode_kv_append", "decode_last_rows", "decode_rotary_at"} {
			if !strings.Contains(host, want) {
				t.Errorf("%s: the host program has no %s", name, want)
			}
		}
		arena, work, total := dec.Memory()
		type span struct{ at, end int64 }
		var spans []span
		for i, l := range []*Lowered{dec.Prefill, dec.Decode} {
			_, ws, _ := l.Memory()
			for _, w := range ws {
				at := work[i][w.Name]
				spans = append(spans, span{at, at + w.Bytes})
			}
		}
		for i, a := range spans {
			if a.at < arena || a.end > total {
				t.Errorf("%s: a workspace at [%d, %d) outside [arena %d, total %d)", name, a.at, a.end, arena, total)
			}
			for _, b := range spans[i+1:] {
				if a.at < b.end && b.at < a.end {
					t.Errorf("%s: workspaces [%d, %d) and [%d, %d) overlap", name, a.at, a.end, b.at, b.end)
				}
			}
		}
		for _, f := range dec.KernelFiles() {
			if f.Name == "kernels_mma.cu" {
				t.Errorf("%s: fp32 decoding compiles %s, which it does not launch", name, f.Name)
			}
		}
	}
}

// TestDecodingTalkingHeads: talking heads lower to decode_attention_mixed in the decoding
// step and the feeding program (the mixing needs every head's scores of a row at once,
// in a workspace of [rows, 2, heads, positions]).
func TestDecodingTalkingHeads(t *testing.T) {
	m := programtest.Tiny(func(m *program.Model) { m.Attention.TalkingHeads = true })
	dec, err := lowerDecoding(t, m, 1, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	feed, err := step.LowerFeed(m, 2, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := LowerWith(feed, m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []*Lowered{dec.Decode, fl} {
		mixed := 0
		for i, op := range l.Program.Ops {
			if op.Kind != step.OpAttnDecode && op.Kind != step.OpAttnRows {
				continue
			}
			if k := l.Ops[i].Launches[0].Kernel; k != "decode_attention_mixed" {
				t.Errorf("%s op %d (%s) launches %s", l.Program.Model, i, op.Kind, k)
			}
			mixed++
		}
		if mixed != int(m.Layers) {
			t.Errorf("%d attention ops launch decode_attention_mixed, want one per layer (%d)", mixed, m.Layers)
		}
	}
}

// TestDecodingHostCompiles compiles the decoding host program (a prefill and a decoding
// step) and the serving one (feeding programs of 2 and 8 rows) with the libcuda.so.1
// filling of the driver table, warnings as errors.
func TestDecodingHostCompiles(t *testing.T) {
	clang := cuda.FindClang()
	if clang == "" {
		t.Skip("no clang++ on PATH")
	}
	m := programtest.TinyMoE()
	dec, err := lowerDecoding(t, m, 1, 4, 8)
	if err != nil {
		t.Fatal(err)
	}
	var feeds []*step.Program
	for _, rows := range []int{2, 8} {
		p, err := step.LowerFeed(m, 2, rows, 8)
		if err != nil {
			t.Fatal(err)
		}
		feeds = append(feeds, p)
	}
	serving, err := LowerServing(feeds, m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*Decoding{dec, serving} {
		files, err := DecodingSources(d)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		for n, text := range files {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.CommandContext(context.Background(), clang, "-std=c++17", "-O0", "-Wall", "-Werror", "-fPIC", "-shared", "-I", ".",
			HostName, DriverDlopenName, "-o", "libdecode.so", "-ldl", "-lm")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	if _, err := LowerServing([]*step.Program{feeds[1], feeds[0]}, m, Options{}); err == nil || !strings.Contains(err.Error(), "fewest rows first") {
		t.Errorf("feeds of 8 then 2 rows: got %v, want a refusal", err)
	}
}

// TestDecodeAttentionMasksAndSinks runs decode_attention under the emulation with a
// sliding window, chunks and sink logits against a float64 reference of runtime/exec's
// attnDecode.
func TestDecodeAttentionMasksAndSinks(t *testing.T) {
	lib := emulatedLibrary(t, map[string]string{
		"kernels_decode.cu":    DecodeSource(),
		DeviceHeaderName:       deviceHeader,
		"decode_trampolines.h": flashTrampolines(DecodeKernels()),
		"driver.cpp":           "#include \"kernels_decode.cu\"\n#include \"decode_trampolines.h\"\n",
	}, "-O1")
	f, err := lib.Func("emu_decode_attention")
	if err != nil {
		t.Fatal(err)
	}
	const B, H, KV, Dh, maxLen = 2, 4, 2, 40, 12 // Dh over one warp's 32 lanes
	r := rand.New(rand.NewPCG(3, 4))
	fill := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	q, kc, vc, sinks := fill(B*H*Dh), fill(B*maxLen*KV*Dh), fill(B*maxLen*KV*Dh), fill(H)
	pos := []int32{9, 4}
	scale := attnScale(Dh)
	for _, c := range []struct {
		name          string
		window, chunk int
		sinks         bool
	}{{"causal", 0, 0, false}, {"window 3", 3, 0, false}, {"chunk 4", 0, 4, false}, {"sinks", 0, 0, true}, {"window 5 and sinks", 5, 0, true}} {
		out := make([]float32, B*H*Dh)
		var sk []float32 // none: a null address
		if c.sinks {
			sk = sinks
		}
		args := []any{int32(B * H), int32(1), int32(1), int32(32 * decodeWarps), int32(1), int32(1), int64(0),
			q, kc, vc, pos, []int32(nil), sk, out, int32(B), int32(H), int32(KV), int32(Dh), int32(maxLen), scale, int32(c.window), int32(c.chunk)}
		if err := f.Call(0, 0, args...); err != nil {
			t.Fatal(err)
		}
		var worst float64
		for b := 0; b < B; b++ {
			i := int(pos[b])
			lo := 0
			switch {
			case c.chunk > 0:
				lo = i - i%c.chunk
			case c.window > 0:
				lo = max(0, i-c.window+1)
			}
			for h := 0; h < H; h++ {
				g := h / (H / KV)
				s := make([]float64, 0, i+1-lo)
				mx := math.Inf(-1)
				if c.sinks {
					mx = float64(sinks[h])
				}
				for j := lo; j <= i; j++ {
					var dot float64
					for e := 0; e < Dh; e++ {
						dot += float64(q[(b*H+h)*Dh+e]) * float64(kc[((b*maxLen+j)*KV+g)*Dh+e])
					}
					s = append(s, dot*float64(scale))
					mx = math.Max(mx, dot*float64(scale))
				}
				var sum float64
				if c.sinks {
					sum = math.Exp(float64(sinks[h]) - mx)
				}
				for j := range s {
					s[j] = math.Exp(s[j] - mx)
					sum += s[j]
				}
				for e := 0; e < Dh; e++ {
					var want float64
					for j := range s {
						want += s[j] / sum * float64(vc[((b*maxLen+lo+j)*KV+g)*Dh+e])
					}
					worst = math.Max(worst, math.Abs(float64(out[(b*H+h)*Dh+e])-want))
				}
			}
		}
		if worst > 1e-5 {
			t.Errorf("%s: the output is %.3g from the reference", c.name, worst)
		}
	}
}
