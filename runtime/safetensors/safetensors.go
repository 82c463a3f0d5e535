package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
)

// MaxHeaderSize bounds the JSON header. The reference implementation uses 100 MB; a header
// larger than that is refused before anything is allocated for it.
const MaxHeaderSize = 100 << 20

// Tensor is one named float32 tensor, row-major.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// File is a decoded safetensors file.
type File struct {
	Metadata map[string]string
	Tensors  []Tensor // in file (data offset) order
}

// Get returns the tensor called name.
func (f *File) Get(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// Names returns the tensor names in file order.
func (f *File) Names() []string {
	out := make([]string, len(f.Tensors))
	for i, t := range f.Tensors {
		out[i] = t.Name
	}
	return out
}

// Error is a malformed-file error. Tensor names the tensor involved, when there is one.
type Error struct {
	Tensor string
	Msg    string
}

func (e *Error) Error() string {
	if e.Tensor != "" {
		return fmt.Sprintf("safetensors: tensor %q: %s", e.Tensor, e.Msg)
	}
	return "safetensors: " + e.Msg
}

func errf(tensor, format string, args ...any) error {
	return &Error{Tensor: tensor, Msg: fmt.Sprintf(format, args...)}
}

type headerEntry struct {
	DType       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// Encode returns the safetensors encoding of tensors (F32) with metadata. Tensors are laid
// out in the order given; names must be unique and non-empty and shapes must match the data.
func Encode(tensors []Tensor, metadata map[string]string) ([]byte, error) {
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
		n := int64(1)
		shape := make([]int64, len(t.Shape))
		for i, d := range t.Shape {
			if d < 0 {
				return nil, errf(t.Name, "negative dimension in shape %v", t.Shape)
			}
			n *= int64(d)
			shape[i] = int64(d)
		}
		if n != int64(len(t.Data)) {
			return nil, errf(t.Name, "shape %v holds %d values but data has %d", t.Shape, n, len(t.Data))
		}
		header[t.Name] = headerEntry{DType: "F32", Shape: shape, DataOffsets: []int64{off, off + 4*n}}
		off += 4 * n
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return nil, fmt.Errorf("safetensors: encoding header: %w", err)
	}
	// Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
	if pad := (8 - len(hj)%8) % 8; pad > 0 {
		hj = append(hj, bytes.Repeat([]byte{' '}, pad)...)
	}
	out := make([]byte, 8+len(hj)+int(off))
	binary.LittleEndian.PutUint64(out, uint64(len(hj)))
	copy(out[8:], hj)
	p := out[8+len(hj):]
	for _, t := range tensors {
		for _, v := range t.Data {
			binary.LittleEndian.PutUint32(p, math.Float32bits(v))
			p = p[4:]
		}
	}
	return out, nil
}

// Write writes the encoding of tensors to w.
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	b, err := Encode(tensors, metadata)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ReadFile reads and decodes the safetensors file at path.
func ReadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

var dtypeSize = map[string]int64{"F32": 4, "F64": 8, "F16": 2, "BF16": 2}

// Decode parses a safetensors file held in b. It checks every field against the file and
// never allocates more than the file's own size for tensor data.
func Decode(b []byte) (*File, error) {
	meta, spans, data, err := parse(b, dtypeSize)
	if err != nil {
		return nil, err
	}
	f := &File{Metadata: meta, Tensors: make([]Tensor, len(spans))}
	for i, s := range spans {
		f.Tensors[i] = Tensor{Name: s.name, Shape: s.shape, Data: convert(s.dtype, data[s.begin:s.end])}
	}
	return f, nil
}

// span is one tensor's entry in a parsed header.
type span struct {
	name       string
	begin, end int64
	dtype      string
	shape      []int
}

// parse checks the header of b against the file, accepting the dtypes of sizes, and
// returns the metadata, the tensors' spans in data order and the data region.
func parse(b []byte, sizes map[string]int64) (map[string]string, []span, []byte, error) {
	if len(b) < 8 {
		return nil, nil, nil, errf("", "file is %d bytes, shorter than the 8-byte header length", len(b))
	}
	hlen := binary.LittleEndian.Uint64(b)
	if hlen > MaxHeaderSize {
		return nil, nil, nil, errf("", "header length %d exceeds the %d-byte limit", hlen, MaxHeaderSize)
	}
	if hlen > uint64(len(b)-8) {
		return nil, nil, nil, errf("", "header length %d runs past the end of the %d-byte file (truncated?)", hlen, len(b))
	}
	hj := b[8 : 8+hlen]
	data := b[8+hlen:]
	if len(bytes.TrimSpace(hj)) == 0 || bytes.TrimSpace(hj)[0] != '{' {
		return nil, nil, nil, errf("", "header is not a JSON object")
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(hj))
	if err := dec.Decode(&raw); err != nil {
		return nil, nil, nil, errf("", "header JSON: %v", err)
	}
	if dec.More() {
		return nil, nil, nil, errf("", "header has trailing data after the JSON object")
	}
	var meta map[string]string
	if m, ok := raw["__metadata__"]; ok {
		if err := json.Unmarshal(m, &meta); err != nil {
			return nil, nil, nil, errf("", "__metadata__ must map strings to strings: %v", err)
		}
		delete(raw, "__metadata__")
	}
	spans := make([]span, 0, len(raw))
	for name, msg := range raw {
		var e headerEntry
		d := json.NewDecoder(bytes.NewReader(msg))
		d.DisallowUnknownFields()
		if err := d.Decode(&e); err != nil {
			return nil, nil, nil, errf(name, "header entry: %v", err)
		}
		size, ok := sizes[e.DType]
		if !ok {
			return nil, nil, nil, errf(name, "unsupported dtype %q (want %s)", e.DType, dtypeList(sizes))
		}
		if len(e.DataOffsets) != 2 {
			return nil, nil, nil, errf(name, "data_offsets must have 2 entries, has %d", len(e.DataOffsets))
		}
		begin, end := e.DataOffsets[0], e.DataOffsets[1]
		if begin < 0 || end < begin || end > int64(len(data)) {
			return nil, nil, nil, errf(name, "data_offsets [%d, %d] outside the %d-byte data region", begin, end, len(data))
		}
		n := int64(1)
		shape := make([]int, len(e.Shape))
		for i, dim := range e.Shape {
			if dim < 0 {
				return nil, nil, nil, errf(name, "negative dimension in shape %v", e.Shape)
			}
			// Every element takes at least one byte of the data region, so a running product
			// above its length is wrong; checking here also keeps the product from overflowing.
			if dim > 0 && n > int64(len(data))/dim {
				return nil, nil, nil, errf(name, "shape %v is larger than the file", e.Shape)
			}
			n *= dim
			shape[i] = int(dim)
		}
		if n*size != end-begin {
			return nil, nil, nil, errf(name, "shape %v of %s needs %d bytes but data_offsets span %d", e.Shape, e.DType, n*size, end-begin)
		}
		spans = append(spans, span{name, begin, end, e.DType, shape})
	}
	// The data region must be covered exactly, with no holes or overlaps.
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].begin != spans[j].begin {
			return spans[i].begin < spans[j].begin
		}
		return spans[i].name < spans[j].name
	})
	var pos int64
	for _, s := range spans {
		if s.begin != pos {
			if s.begin < pos {
				return nil, nil, nil, errf(s.name, "data overlaps the previous tensor (begins at %d, previous ends at %d)", s.begin, pos)
			}
			return nil, nil, nil, errf(s.name, "%d bytes of unused data before this tensor", s.begin-pos)
		}
		pos = s.end
	}
	if pos != int64(len(data)) {
		return nil, nil, nil, errf("", "%d bytes of data after the last tensor (file has %d data bytes, tensors cover %d)", int64(len(data))-pos, len(data), pos)
	}
	return meta, spans, data, nil
}

func convert(dtype string, b []byte) []float32 {
	switch dtype {
	case "F32":
		out := make([]float32, len(b)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return out
	case "F64":
		out := make([]float32, len(b)/8)
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
		}
		return out
	case "BF16":
		out := make([]float32, len(b)/2)
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
		return out
	case "F16":
		out := make([]float32, len(b)/2)
		for i := range out {
			out[i] = halfToFloat(binary.LittleEndian.Uint16(b[2*i:]))
		}
		return out
	}
	panic("safetensors: unreachable dtype " + strings.ToUpper(dtype))
}

// halfToFloat converts an IEEE 754 binary16 value to float32.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: value = frac * 2^-24
		v := float32(frac) / (1 << 24)
		if sign != 0 {
			v = -v
		}
		return v
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}
