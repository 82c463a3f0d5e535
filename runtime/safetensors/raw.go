package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// RawTensor is a tensor of any dtype the format names, held as its little-endian bytes:
// what a compressed checkpoint stores (I8 and U8 quantised values beside F32 scales, FP8
// weights beside their block scales; E4M3 and E5M2 decode their bytes).
type RawTensor struct {
	Name  string
	DType string // F32, F64, F16, BF16, I8, U8, I16, I32, I64, F8_E4M3, F8_E5M2
	Shape []int
	Bytes []byte
}

var rawSize = map[string]int64{"F32": 4, "F64": 8, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "I16": 2, "I32": 4, "I64": 8, "F8_E4M3": 1, "F8_E5M2": 1}

func dtypeList(sizes map[string]int64) string {
	names := make([]string, 0, len(sizes))
	for n := range sizes {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// EncodeRaw is Encode for tensors of any dtype: laid out in the order given, names unique
// and non-empty, byte lengths matching shape and dtype.
func EncodeRaw(tensors []RawTensor, metadata map[string]string) ([]byte, error) {
	header := make(map[string]any, len(tensors)+1)
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off int64
	for _, t := range tensors {
		if t.Name == "" || t.Name == "__metadata__" {
			return nil, errf(t.Name, "invalid tensor name")
		}
		if _, dup := header[t.Name]; dup {
			return nil, errf(t.Name, "duplicate tensor name")
		}
		size, ok := rawSize[t.DType]
		if !ok {
			return nil, errf(t.Name, "unsupported dtype %q (want %s)", t.DType, dtypeList(rawSize))
		}
		n := int64(1)
		shape := make([]int64, len(t.Shape))
		for i, d := range t.Shape {
			if d < 0 {
				return nil, errf(t.Name, "negative dimension in shape %v", t.Shape)
			}
			n *= int64(d)
			shape[i] = int64(d)
		}
		if n*size != int64(len(t.Bytes)) {
			return nil, errf(t.Name, "shape %v of %s needs %d bytes but data has %d", t.Shape, t.DType, n*size, len(t.Bytes))
		}
		header[t.Name] = headerEntry{DType: t.DType, Shape: shape, DataOffsets: []int64{off, off + n*size}}
		off += n * size
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return nil, fmt.Errorf("safetensors: encoding header: %w", err)
	}
	if pad := (8 - len(hj)%8) % 8; pad > 0 {
		hj = append(hj, bytes.Repeat([]byte{' '}, pad)...)
	}
	out := make([]byte, 8, 8+len(hj)+int(off))
	binary.LittleEndian.PutUint64(out, uint64(len(hj)))
	out = append(out, hj...)
	for _, t := range tensors {
		out = append(out, t.Bytes...)
	}
	return out, nil
}

// DecodeRaw parses a safetensors file of any of the dtypes RawTensor names, with Decode's
// checks; the tensors' bytes are slices of b, in data order.
func DecodeRaw(b []byte) ([]RawTensor, map[string]string, error) {
	meta, spans, data, err := parse(b, rawSize)
	if err != nil {
		return nil, nil, err
	}
	out := make([]RawTensor, len(spans))
	for i, s := range spans {
		out[i] = RawTensor{Name: s.name, DType: s.dtype, Shape: s.shape, Bytes: data[s.begin:s.end]}
	}
	return out, meta, nil
}
