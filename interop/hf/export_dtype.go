package hf

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/blas"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// ExportOptions are what `moec export hf` may choose about the weights it writes.
type ExportOptions struct {
	// DType is the stored precision: "fp32" (the default, bit-exact), "bf16" or "fp16"
	// (rounded to nearest, ties to even; fp16 refuses a value beyond its range).
	DType string
	// MaxShardBytes splits the weights into model-0000i-of-0000n.safetensors files of at
	// most this many bytes each (a larger tensor alone in its file) with
	// model.safetensors.index.json, as transformers' save_pretrained does; 0 is
	// DefaultMaxShardBytes, a negative value one file whatever its size.
	MaxShardBytes int64
}

// DefaultMaxShardBytes is transformers' save_pretrained default (max_shard_size "5GB").
const DefaultMaxShardBytes = 5_000_000_000

// WeightsIndexFile maps each tensor of a sharded export to its file.
const WeightsIndexFile = "model.safetensors.index.json"

// exportDTypes are the precisions an export may store: safetensors' dtype and
// transformers' torch_dtype of each.
var exportDTypes = map[string]struct{ safetensors, torch string }{
	"fp32": {"F32", "float32"}, "bf16": {"BF16", "bfloat16"}, "fp16": {"F16", "float16"},
}

// ExportDTypes names the precisions an export may store, for messages.
func ExportDTypes() string { return "fp32, bf16 or fp16" }

// normalized returns o with its defaults filled in, or an error naming what is wrong.
func (o ExportOptions) normalized() (ExportOptions, error) {
	if o.DType == "" {
		o.DType = "fp32"
	}
	if _, ok := exportDTypes[o.DType]; !ok {
		return o, diag.Runtimef(diag.CodeNotExportable, "dtype %q: an export stores %s", o.DType, ExportDTypes())
	}
	if o.MaxShardBytes == 0 {
		o.MaxShardBytes = DefaultMaxShardBytes
	}
	return o, nil
}

// storedTensor narrows t to dtype (fp32, bf16 or fp16) and returns its bytes and the
// float32 values they read back as (which the manifest hashes).
func storedTensor(t safetensors.Tensor, dtype string) (safetensors.RawTensor, []float32, error) {
	st := exportDTypes[dtype].safetensors
	raw := safetensors.RawTensor{Name: t.Name, DType: st, Shape: t.Shape}
	switch dtype {
	case "bf16":
		raw.Bytes = make([]byte, 2*len(t.Data))
		back := make([]float32, len(t.Data))
		for i, x := range t.Data {
			r := blas.RoundBF16(x)
			binary.LittleEndian.PutUint16(raw.Bytes[2*i:], uint16(math.Float32bits(r)>>16))
			back[i] = r
		}
		return raw, back, nil
	case "fp16":
		raw.Bytes = make([]byte, 2*len(t.Data))
		for i, x := range t.Data {
			h, ok := floatToHalf(x)
			if !ok {
				return raw, nil, fmt.Errorf("tensor %s: %g is beyond fp16's range (±65504); export it as bf16 or fp32", t.Name, x)
			}
			binary.LittleEndian.PutUint16(raw.Bytes[2*i:], h)
		}
		enc, err := safetensors.EncodeRaw([]safetensors.RawTensor{raw}, nil)
		if err != nil {
			return raw, nil, err
		}
		back, err := safetensors.Decode(enc) // widened as every reader widens it
		if err != nil {
			return raw, nil, err
		}
		return raw, back.Tensors[0].Data, nil
	}
	raw.Bytes = make([]byte, 4*len(t.Data))
	for i, x := range t.Data {
		binary.LittleEndian.PutUint32(raw.Bytes[4*i:], math.Float32bits(x))
	}
	return raw, t.Data, nil
}

// floatToHalf rounds f to IEEE 754 binary16, to nearest with ties to even, subnormals
// included; ok is false when a finite f rounds beyond the largest half (65504).
func floatToHalf(f float32) (h uint16, ok bool) {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00, true // a quiet NaN
		}
		return sign | 0x7c00, true
	}
	e := exp - 127 + 15 // the half's biased exponent
	if e <= 0 {
		// A subnormal half: m·2^-24 with m = (1.mant)·2^(exp-126), shifted right by 14-e.
		s := uint32(14 - e)
		if exp == 0 || s >= 25 {
			return sign, true // below half the smallest subnormal (or a float32 subnormal)
		}
		full := mant | 0x800000
		m := full >> s
		rem, halfway := full&(1<<s-1), uint32(1)<<(s-1)
		if rem > halfway || (rem == halfway && m&1 == 1) {
			m++ // m may reach 0x400: the smallest normal half, as the bits say
		}
		return sign | uint16(m), true
	}
	v := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && v&1 == 1) {
		v++ // a carry into the exponent is the next binade's value
	}
	if v >= 0x7c00 {
		return sign | 0x7c00, false
	}
	return sign | uint16(v), true
}

// shardFiles lays tensors out in files of at most max bytes (in order; a tensor larger
// than max alone in its file): one model.safetensors when they fit in one, else
// model-0000i-of-0000n.safetensors files, as transformers names them.
func shardFiles(tensors []safetensors.RawTensor, max int64) (names []string, groups [][]safetensors.RawTensor) {
	var cur []safetensors.RawTensor
	var size int64
	for _, t := range tensors {
		n := int64(len(t.Bytes))
		if max > 0 && len(cur) > 0 && size+n > max {
			groups, cur, size = append(groups, cur), nil, 0
		}
		cur, size = append(cur, t), size+n
	}
	if len(cur) > 0 || len(groups) == 0 {
		groups = append(groups, cur)
	}
	if len(groups) == 1 {
		return []string{WeightsFile}, groups
	}
	for i := range groups {
		names = append(names, fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(groups)))
	}
	return names, groups
}

// weightsIndex is model.safetensors.index.json: the tensors' bytes and each one's file.
type weightsIndex struct {
	Metadata  map[string]int64  `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// encodeIndex returns the index of a sharded export.
func encodeIndex(names []string, groups [][]safetensors.RawTensor) ([]byte, error) {
	idx := weightsIndex{Metadata: map[string]int64{"total_size": 0}, WeightMap: map[string]string{}}
	for i, g := range groups {
		for _, t := range g {
			idx.Metadata["total_size"] += int64(len(t.Bytes))
			idx.WeightMap[t.Name] = names[i]
		}
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("hf: encoding %s: %w", WeightsIndexFile, err)
	}
	return append(b, '\n'), nil
}

// readExportWeights reads an export's tensors (widened to float32): model.safetensors, or
// every file model.safetensors.index.json names, each tensor in the file the index says.
func readExportWeights(dir string) (*safetensors.File, error) {
	b, err := os.ReadFile(filepath.Join(dir, WeightsIndexFile))
	if os.IsNotExist(err) {
		return safetensors.ReadFile(filepath.Join(dir, WeightsFile))
	}
	if err != nil {
		return nil, err
	}
	var idx weightsIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w", WeightsIndexFile, err)
	}
	var files []string
	for _, f := range idx.WeightMap {
		if !slices.Contains(files, f) {
			files = append(files, f)
		}
	}
	slices.Sort(files)
	all := &safetensors.File{}
	for _, f := range files {
		if f != filepath.Base(f) || !strings.HasSuffix(f, ".safetensors") {
			return nil, fmt.Errorf("%s names %q, not a safetensors file beside it", WeightsIndexFile, f)
		}
		wf, err := safetensors.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		for _, t := range wf.Tensors {
			if idx.WeightMap[t.Name] != f {
				return nil, fmt.Errorf("%s holds %s, which %s places in %q", f, t.Name, WeightsIndexFile, idx.WeightMap[t.Name])
			}
			all.Tensors = append(all.Tensors, t)
		}
	}
	return all, nil
}
