package hf

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/blas"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// TestFloatToHalf: every finite half comes back to its own bits through float32, and
// values between halves round to nearest, ties to even, into subnormals and up to the
// largest half; past it the conversion says so.
func TestFloatToHalf(t *testing.T) {
	for bits := 0; bits < 1<<16; bits++ {
		if bits&0x7c00 == 0x7c00 {
			continue // Inf and NaN
		}
		raw := make([]byte, 2)
		binary.LittleEndian.PutUint16(raw, uint16(bits))
		enc, err := safetensors.EncodeRaw([]safetensors.RawTensor{{Name: "h", DType: "F16", Shape: []int{1}, Bytes: raw}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		f, err := safetensors.Decode(enc)
		if err != nil {
			t.Fatal(err)
		}
		if h, ok := floatToHalf(f.Tensors[0].Data[0]); !ok || h != uint16(bits) {
			t.Fatalf("half %#04x → %g → %#04x (ok %v)", bits, f.Tensors[0].Data[0], h, ok)
		}
	}
	sub := math.Ldexp(1, -24) // the smallest subnormal half
	for _, c := range []struct {
		x    float64
		want uint16
		ok   bool
	}{
		{1 + math.Ldexp(1, -11), 0x3c00, true},   // halfway between 1 and its successor: even 1
		{1 + 3*math.Ldexp(1, -11), 0x3c02, true}, // halfway above odd 0x3c01: even 0x3c02
		{1 + math.Ldexp(1, -11) + math.Ldexp(1, -20), 0x3c01, true},
		{sub / 2, 0x0000, true},   // halfway between 0 and the smallest subnormal: even 0
		{sub * 1.5, 0x0002, true}, // halfway between subnormals 1 and 2: even 2
		{sub * 0.75, 0x0001, true},
		{-sub * 1023.5, 0x8400, true}, // halfway up to the smallest normal: even, and normal
		{65504, 0x7bff, true},
		{65519, 0x7bff, true},
		{65520, 0x7c00, false},
		{-1e6, 0xfc00, false},
		{math.Inf(1), 0x7c00, true},
	} {
		if h, ok := floatToHalf(float32(c.x)); h != c.want || ok != c.ok {
			t.Errorf("floatToHalf(%g) = %#04x, %v; want %#04x, %v", c.x, h, ok, c.want, c.ok)
		}
	}
}

// TestExportDTypeAndShards: --dtype bf16 and fp16 store the weights rounded, config.json's
// torch_dtype says so, and past the shard size they go in model-0000i-of-0000n files with
// an index naming every tensor's file and the bytes in all; the export verifies, and
// importing it back gives the rounded values (fp32, sharded, the same bits). A value
// beyond fp16's range is refused, not written as infinity.
func TestExportDTypeAndShards(t *testing.T) {
	m := tinyModel(t, "tiny_mixtral")
	dir, orig := saveCheckpoint(t, m)
	want := map[string][]float32{}
	for _, o := range orig {
		want[o.Name] = o.Data
	}
	for _, tc := range []struct {
		dtype, torch, st string
		round            func(float32) float32
	}{
		{"fp32", "float32", "F32", func(x float32) float32 { return x }},
		{"bf16", "bfloat16", "BF16", blas.RoundBF16},
		{"fp16", "float16", "F16", nil},
	} {
		t.Run(tc.dtype, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "hf")
			man, err := ExportWith(dir, out, ExportOptions{DType: tc.dtype, MaxShardBytes: 20_000})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := VerifyExport(out); err != nil {
				t.Fatal(err)
			}
			var cfg map[string]any
			readJSON(t, filepath.Join(out, ConfigFile), &cfg)
			if cfg["torch_dtype"] != tc.torch {
				t.Errorf("torch_dtype %v, want %s", cfg["torch_dtype"], tc.torch)
			}
			var idx weightsIndex
			readJSON(t, filepath.Join(out, WeightsIndexFile), &idx)
			if len(idx.WeightMap) != len(man.Tensors) {
				t.Errorf("the index maps %d tensors, the export has %d", len(idx.WeightMap), len(man.Tensors))
			}
			files, total := map[string]bool{}, int64(0)
			for _, f := range idx.WeightMap {
				files[f] = true
			}
			if len(files) < 2 {
				t.Errorf("one file at a 20 kB shard size: %v", files)
			}
			for f := range files {
				if !strings.HasPrefix(f, "model-") || !strings.HasSuffix(f, "-of-"+fmt.Sprintf("%05d", len(files))+".safetensors") {
					t.Errorf("shard %s is not named model-0000i-of-%s.safetensors", f, fmt.Sprintf("%05d", len(files)))
				}
				b, err := os.ReadFile(filepath.Join(out, f))
				if err != nil {
					t.Fatal(err)
				}
				raw, _, err := safetensors.DecodeRaw(b)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range raw {
					total += int64(len(r.Bytes))
					if r.DType != tc.st {
						t.Errorf("%s is %s, want %s", r.Name, r.DType, tc.st)
					}
					if idx.WeightMap[r.Name] != f {
						t.Errorf("%s is in %s, the index says %s", r.Name, f, idx.WeightMap[r.Name])
					}
				}
			}
			if idx.Metadata["total_size"] != total {
				t.Errorf("total_size %d, the shards hold %d bytes", idx.Metadata["total_size"], total)
			}
			if _, err := os.Stat(filepath.Join(out, WeightsFile)); err == nil {
				t.Errorf("a sharded export also wrote %s", WeightsFile)
			}
			back, err := ImportCheckpoint(out, filepath.Join(t.TempDir(), "back"), Options{})
			if err != nil {
				t.Fatal(err)
			}
			c, err := checkpoint.Load(back.Checkpoint, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, got := range c.Model {
				w := want[got.Name]
				for i, x := range got.Data {
					r := w[i]
					if tc.round != nil {
						r = tc.round(w[i])
					} else if math.Abs(float64(x-w[i])) > math.Max(math.Abs(float64(w[i]))/2048, math.Ldexp(1, -25)) {
						// half a unit in the last place: 2^-11 relative, 2^-25 among subnormals
						t.Fatalf("%s[%d]: fp16 gave %g for %g", got.Name, i, x, w[i])
					}
					if tc.round != nil && math.Float32bits(x) != math.Float32bits(r) {
						t.Fatalf("%s[%d]: %g, want %g", got.Name, i, x, r)
					}
				}
			}
		})
	}
	// The default shard size leaves a tiny model in one model.safetensors, without an index.
	out := filepath.Join(t.TempDir(), "one")
	if _, err := ExportWith(dir, out, ExportOptions{DType: "bf16"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, WeightsFile)); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(out, WeightsIndexFile)); err == nil {
		t.Errorf("an unsharded export wrote %s", WeightsIndexFile)
	}
	if _, err := ExportWith(dir, filepath.Join(t.TempDir(), "x"), ExportOptions{DType: "int8"}); err == nil || !strings.Contains(err.Error(), "fp32, bf16 or fp16") {
		t.Errorf("dtype int8: %v, want a refusal naming the dtypes", err)
	}
}

// TestExportFP16Range: a weight beyond fp16's range is refused naming the tensor.
func TestExportFP16Range(t *testing.T) {
	m := tinyModel(t, "tiny_mixtral")
	dir, orig := saveCheckpoint(t, m)
	c, err := checkpoint.Load(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	c.Model[0].Data[3] = 1e5
	hash, _ := checkpoint.ConfigHash(m)
	c.Manifest.ConfigHash = hash
	big, err := checkpoint.Writer{}.Save(filepath.Join(t.TempDir(), "run", "checkpoints"), c)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ExportWith(big, filepath.Join(t.TempDir(), "x"), ExportOptions{DType: "fp16"})
	if err == nil || !strings.Contains(err.Error(), "beyond fp16's range") || !strings.Contains(err.Error(), c.Model[0].Name) {
		t.Errorf("fp16 export of 1e5 in %s: %v, want a refusal naming the tensor", orig[0].Name, err)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
