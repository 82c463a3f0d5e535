package safetensors

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func sample() []Tensor {
	return []Tensor{
		{Name: "model.embed_tokens.weight", Shape: []int{3, 2}, Data: []float32{1, -2, 3.5, 0, float32(math.Inf(1)), -0.25}},
		{Name: "lm_head.weight", Shape: []int{2}, Data: []float32{7, 8}},
		{Name: "scalar", Shape: []int{}, Data: []float32{42}},
		{Name: "empty", Shape: []int{0, 4}, Data: []float32{}},
	}
}

func TestRoundTrip(t *testing.T) {
	in := sample()
	b, err := Encode(in, map[string]string{"format": "pt", "step": "12"})
	if err != nil {
		t.Fatal(err)
	}
	hlen := binary.LittleEndian.Uint64(b)
	if (8+hlen)%8 != 0 {
		t.Errorf("data starts at %d, not 8-byte aligned", 8+hlen)
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"format": "pt", "step": "12"}, f.Metadata); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	// The empty tensor has a zero-length range at the same offset as its neighbour; order
	// among equal offsets is by name, so compare by name.
	for _, want := range in {
		got, ok := f.Get(want.Name)
		if !ok {
			t.Fatalf("tensor %q missing", want.Name)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("tensor %q (-want +got):\n%s", want.Name, diff)
		}
	}
}

// TestKnownBytes decodes a file written byte by byte from the format's description, so the
// reader is checked against the spec and not only against our own writer.
func TestKnownBytes(t *testing.T) {
	header := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]},"c":{"dtype":"F16","shape":[2],"data_offsets":[10,14]},"__metadata__":{"k":"v"}}`
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(1.5))
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(-3))
	b = binary.LittleEndian.AppendUint16(b, 0x4049)        // bf16 3.140625
	b = binary.LittleEndian.AppendUint16(b, 0x3c00)        // f16 1.0
	b = binary.LittleEndian.AppendUint16(b, 0xc000|0x0200) // f16 -3.0
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]float32{"a": {1.5, -3}, "b": {3.140625}, "c": {1, -3}}
	for name, w := range want {
		got, _ := f.Get(name)
		if diff := cmp.Diff(w, got.Data); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	if f.Metadata["k"] != "v" {
		t.Errorf("metadata = %v", f.Metadata)
	}
}

func TestHalfToFloat(t *testing.T) {
	for _, c := range []struct {
		h    uint16
		want float32
	}{{0x0000, 0}, {0x3c00, 1}, {0x7bff, 65504}, {0x0001, 5.960464477539063e-08}, {0xbc00, -1}, {0x3555, 0.333251953125}} {
		if got := halfToFloat(c.h); got != c.want {
			t.Errorf("halfToFloat(%#04x) = %v, want %v", c.h, got, c.want)
		}
	}
	if !math.IsInf(float64(halfToFloat(0x7c00)), 1) || !math.IsNaN(float64(halfToFloat(0x7e00))) {
		t.Error("inf/nan not preserved")
	}
}

func withHeader(h string, data int) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, uint64(len(h)))
	b = append(b, h...)
	return append(b, make([]byte, data)...)
}

func TestHostile(t *testing.T) {
	good, _ := Encode(sample(), nil)
	huge := make([]byte, 8)
	binary.LittleEndian.PutUint64(huge, math.MaxUint64)
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "shorter than the 8-byte header"},
		{"truncated data", good[:len(good)-3], "data_offsets"},
		{"truncated header", good[:20], "runs past the end"},
		{"huge header length", huge, "exceeds"},
		{"not json", withHeader("nope", 0), "not a JSON object"},
		{"trailing json", withHeader(`{} {}`, 0), "trailing data"},
		{"bad dtype", withHeader(`{"x":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}}`, 1), `tensor "x": unsupported dtype`},
		{"negative dim", withHeader(`{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), "negative dimension"},
		{"shape/offset mismatch", withHeader(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4), "needs 8 bytes"},
		{"overflowing shape", withHeader(`{"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}`, 0), "larger than the file"},
		{"overflowing product", withHeader(`{"x":{"dtype":"F32","shape":[2,4611686018427387904,4],"data_offsets":[0,0]}}`, 0), "larger than the file"},
		{"hole", withHeader(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), "unused data"},
		{"overlap", withHeader(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4), "overlaps"},
		{"tail", withHeader(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 8), "after the last tensor"},
		{"offsets count", withHeader(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`, 4), "2 entries"},
		{"unknown field", withHeader(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"zz":1}}`, 4), "unknown field"},
		{"bad metadata", withHeader(`{"__metadata__":{"a":1}}`, 0), "__metadata__"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.in)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Decode error = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestEncodeRejects(t *testing.T) {
	for _, ts := range [][]Tensor{
		{{Name: "a", Shape: []int{2}, Data: []float32{1}}},
		{{Name: "a", Shape: []int{1}, Data: []float32{1}}, {Name: "a", Shape: []int{1}, Data: []float32{1}}},
		{{Name: "", Shape: []int{1}, Data: []float32{1}}},
		{{Name: "__metadata__", Shape: []int{1}, Data: []float32{1}}},
	} {
		if _, err := Encode(ts, nil); err == nil {
			t.Errorf("Encode(%v) succeeded", ts)
		}
	}
}

// FuzzSafetensors checks that Decode never panics on hostile input and that whatever it
// accepts re-encodes to a file it decodes to the same tensors.
func FuzzSafetensors(f *testing.F) {
	good, _ := Encode(sample(), map[string]string{"a": "b"})
	f.Add(good)
	f.Add(withHeader(`{"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, 4))
	f.Add(withHeader(`{"x":{"dtype":"F64","shape":[1,1],"data_offsets":[0,8]}}`, 8))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Decode(b)
		if err != nil {
			return
		}
		total := 0
		for _, ts := range file.Tensors {
			n := 1
			for _, d := range ts.Shape {
				n *= d
			}
			if n != len(ts.Data) {
				t.Fatalf("tensor %q: shape %v but %d values", ts.Name, ts.Shape, len(ts.Data))
			}
			total += n
		}
		if total > len(b) {
			t.Fatalf("decoded %d values from %d bytes", total, len(b))
		}
		again, err := Encode(file.Tensors, file.Metadata)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		file2, err := Decode(again)
		if err != nil {
			t.Fatalf("decode of re-encoded file: %v", err)
		}
		if len(file2.Tensors) != len(file.Tensors) {
			t.Fatalf("re-decode has %d tensors, want %d", len(file2.Tensors), len(file.Tensors))
		}
		for _, ts := range file.Tensors {
			t2, ok := file2.Get(ts.Name)
			if !ok || !cmp.Equal(ts.Shape, t2.Shape) || len(ts.Data) != len(t2.Data) {
				t.Fatalf("tensor %q changed on re-encode", ts.Name)
			}
			for i := range ts.Data {
				if math.Float32bits(ts.Data[i]) != math.Float32bits(t2.Data[i]) {
					t.Fatalf("tensor %q value %d changed on re-encode", ts.Name, i)
				}
			}
		}
	})
}
