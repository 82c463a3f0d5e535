package safetensors

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"
)

// TestFloat8MatchesTorch checks E4M3 and E5M2 on all 256 byte values against the float32
// bit patterns torch's float8_e4m3fn and float8_e5m2 give them (testdata/float8.json,
// written by testdata/float8.py): zeros of both signs, subnormals, the largest finite
// values (±448 and ±57344), E5M2's infinities and every NaN, bit for bit.
func TestFloat8MatchesTorch(t *testing.T) {
	b, err := os.ReadFile("testdata/float8.json")
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		E4M3FN []string `json:"e4m3fn"`
		E5M2   []string `json:"e5m2"`
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		want   []string
		decode func(byte) float32
	}{{"e4m3fn", want.E4M3FN, E4M3}, {"e5m2", want.E5M2, E5M2}} {
		if len(c.want) != 256 {
			t.Fatalf("%s: the fixture has %d values, want 256", c.name, len(c.want))
		}
		for code := 0; code < 256; code++ {
			if got := fmt.Sprintf("%08x", math.Float32bits(c.decode(byte(code)))); got != c.want[code] {
				t.Errorf("%s 0x%02x: got bits %s (%v), torch %s", c.name, code, got, c.decode(byte(code)), c.want[code])
			}
		}
	}
	// Landmarks, so that a regenerated fixture cannot quietly change the format.
	for _, c := range []struct {
		code byte
		want float64
	}{{0x7e, 448}, {0xfe, -448}, {0x01, 1.0 / 512}, {0x08, 1.0 / 64}, {0x38, 1}, {0x80, math.Copysign(0, -1)}} {
		if got := E4M3(c.code); float64(got) != c.want || math.Signbit(float64(got)) != math.Signbit(c.want) {
			t.Errorf("E4M3(0x%02x) = %v, want %v", c.code, got, c.want)
		}
	}
	if !math.IsNaN(float64(E4M3(0x7f))) || !math.IsNaN(float64(E4M3(0xff))) || !math.IsInf(float64(E5M2(0x7c)), 1) {
		t.Error("E4M3's 0x7F and 0xFF must be NaN and E5M2's 0x7C +Inf")
	}
}

// TestRawReadsFloat8: F8_E4M3 and F8_E5M2 tensors round-trip through EncodeRaw and
// DecodeRaw as one byte a value, while Decode, which hands out floats, still refuses them
// (an FP8 weight means nothing without its scale).
func TestRawReadsFloat8(t *testing.T) {
	in := []RawTensor{
		{Name: "w", DType: "F8_E4M3", Shape: []int{2, 3}, Bytes: []byte{0x38, 0xb8, 0x7e, 0x01, 0x00, 0x80}},
		{Name: "w.weight_scale_inv", DType: "F32", Shape: []int{1, 1}, Bytes: []byte{0, 0, 0x80, 0x3f}},
		{Name: "v", DType: "F8_E5M2", Shape: []int{2}, Bytes: []byte{0x3c, 0x7c}},
	}
	b, err := EncodeRaw(in, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := DecodeRaw(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if o.Name != in[i].Name || o.DType != in[i].DType || fmt.Sprint(o.Shape) != fmt.Sprint(in[i].Shape) || string(o.Bytes) != string(in[i].Bytes) {
			t.Errorf("tensor %d: got %s %s %v % x, want %s %s %v % x", i, o.Name, o.DType, o.Shape, o.Bytes, in[i].Name, in[i].DType, in[i].Shape, in[i].Bytes)
		}
	}
	if _, err := Decode(b); err == nil {
		t.Error("Decode read an F8_E4M3 tensor as floats")
	}
}
