package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the tensor data alignment when general.alignment is absent.
const DefaultAlignment = 32

// MaxDims is the largest number of dimensions a ggml tensor has.
const MaxDims = 4

// maxArrayDepth bounds nesting of arrays of arrays, so that a hostile file
// cannot exhaust the stack.
const maxArrayDepth = 16

// ErrFormat is wrapped by every error about a malformed file.
var ErrFormat = errors.New("malformed GGUF")

// FormatError says which field of the file is wrong and at which byte offset.
type FormatError struct {
	Field  string // e.g. `tensor "blk.0.attn_q.weight" offset`
	Offset int64  // byte offset in the file where the field starts
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("gguf: %s at offset %d: %s", e.Field, e.Offset, e.Msg)
}

// Unwrap makes errors.Is(err, ErrFormat) true.
func (e *FormatError) Unwrap() error { return ErrFormat }

// TensorInfo describes one tensor. Shape is in ggml order: Shape[0] is the
// innermost (contiguous) dimension, so a weight matrix of R rows and C
// columns has Shape {C, R}.
type TensorInfo struct {
	Name   string
	Shape  []uint64
	Type   Type
	Offset uint64 // relative to the start of the data section
	Size   uint64 // bytes
}

// Elements is the total number of elements.
func (t *TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Dim returns Shape[i], or 1 past the last dimension (as ggml pads to 4).
func (t *TensorInfo) Dim(i int) int {
	if i < len(t.Shape) {
		return int(t.Shape[i])
	}
	return 1
}

// Rows is the number of rows: the product of all dimensions but the first.
func (t *TensorInfo) Rows() int {
	n := 1
	for _, d := range t.Shape[1:] {
		n *= int(d)
	}
	return n
}

// Header is everything before the tensor data: version, metadata, tensor index.
type Header struct {
	Version    uint32
	Metadata   *Metadata
	Tensors    []*TensorInfo
	Alignment  uint64
	DataOffset uint64 // start of the data section in the file
	byName     map[string]*TensorInfo
}

// Tensor returns the tensor named name.
func (h *Header) Tensor(name string) (*TensorInfo, bool) {
	t, ok := h.byName[name]
	return t, ok
}

// Architecture returns general.architecture, or "".
func (h *Header) Architecture() string {
	s, _ := h.Metadata.String("general.architecture")
	return s
}

// ParseHeader parses the header, metadata and tensor index of a GGUF file
// held in data, and checks every tensor's extent against len(data). It never
// reads outside data and never panics on malformed input.
func ParseHeader(data []byte) (*Header, error) {
	r := &reader{buf: data}
	magic, err := r.bytes("magic", 4)
	if err != nil {
		return nil, err
	}
	if string(magic) != Magic {
		return nil, &FormatError{"magic", 0, fmt.Sprintf("got %q, want %q: not a GGUF file", magic, Magic)}
	}
	h := &Header{}
	verOff := r.off
	if h.Version, err = r.u32("version"); err != nil {
		return nil, err
	}
	switch {
	case h.Version == 2 || h.Version == 3:
	case h.Version == 1:
		return nil, &FormatError{"version", int64(verOff), "GGUF v1 is not supported (convert the file to v3)"}
	case bits.ReverseBytes32(h.Version) == 2 || bits.ReverseBytes32(h.Version) == 3:
		return nil, &FormatError{"version", int64(verOff), "big-endian GGUF files are not supported"}
	default:
		return nil, &FormatError{"version", int64(verOff), fmt.Sprintf("unknown version %d", h.Version)}
	}
	tensorCountOff := r.off
	tensorCount, err := r.u64("tensor count")
	if err != nil {
		return nil, err
	}
	kvCountOff := r.off
	kvCount, err := r.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// Every entry takes at least 12 bytes (key length + type), every tensor
	// info at least 24: a count that cannot fit in the rest of the file is
	// corrupt, and we must not allocate for it.
	if kvCount > uint64(r.remaining())/12 {
		return nil, &FormatError{"metadata count", int64(kvCountOff), fmt.Sprintf("%d entries cannot fit in the %d bytes left", kvCount, r.remaining())}
	}
	kvs := make([]KV, 0, kvCount)
	seen := make(map[string]bool, kvCount)
	alignOff := int64(0) // where general.alignment's type tag is, for errors
	for i := uint64(0); i < kvCount; i++ {
		keyOff := r.off
		key, err := r.str(fmt.Sprintf("metadata key #%d", i))
		if err != nil {
			return nil, err
		}
		if seen[key] {
			return nil, &FormatError{fmt.Sprintf("metadata key %q", key), int64(keyOff), "duplicate key"}
		}
		seen[key] = true
		field := fmt.Sprintf("metadata %q", key)
		typOff := r.off
		if key == "general.alignment" {
			alignOff = int64(typOff)
		}
		vt, err := r.u32(field + " type")
		if err != nil {
			return nil, err
		}
		v, err := r.value(field, ValueType(vt), int64(typOff), 0)
		if err != nil {
			return nil, err
		}
		kvs = append(kvs, KV{Key: key, Type: ValueType(vt), Value: v})
	}
	h.Metadata = newMetadata(kvs)

	h.Alignment = DefaultAlignment
	if kv, ok := h.Metadata.Get("general.alignment"); ok {
		a, isU32 := kv.Value.(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 {
			return nil, &FormatError{"metadata \"general.alignment\"", alignOff, fmt.Sprintf("must be a power-of-two uint32, got %v (%s)", kv.Value, kv.Type)}
		}
		h.Alignment = uint64(a)
	}

	if tensorCount > uint64(r.remaining())/24 {
		return nil, &FormatError{"tensor count", int64(tensorCountOff), fmt.Sprintf("%d tensors cannot fit in the %d bytes left", tensorCount, r.remaining())}
	}
	h.Tensors = make([]*TensorInfo, 0, tensorCount)
	h.byName = make(map[string]*TensorInfo, tensorCount)
	infoOffsets := make([]int, 0, tensorCount)
	for i := uint64(0); i < tensorCount; i++ {
		infoOffsets = append(infoOffsets, r.off)
		t, err := r.tensorInfo(i)
		if err != nil {
			return nil, err
		}
		if _, dup := h.byName[t.Name]; dup {
			return nil, &FormatError{fmt.Sprintf("tensor %q", t.Name), int64(infoOffsets[i]), "duplicate tensor name"}
		}
		h.byName[t.Name] = t
		h.Tensors = append(h.Tensors, t)
	}

	h.DataOffset = alignUp(uint64(r.off), h.Alignment)
	if len(h.Tensors) > 0 && h.DataOffset > uint64(len(data)) {
		return nil, &FormatError{"data section", int64(r.off), fmt.Sprintf("starts at %d, past the end of the file (%d bytes)", h.DataOffset, len(data))}
	}
	dataLen := uint64(0)
	if h.DataOffset <= uint64(len(data)) {
		dataLen = uint64(len(data)) - h.DataOffset
	}
	for i, t := range h.Tensors {
		field := fmt.Sprintf("tensor %q offset", t.Name)
		if t.Offset%h.Alignment != 0 {
			return nil, &FormatError{field, int64(infoOffsets[i]), fmt.Sprintf("%d is not a multiple of the alignment %d", t.Offset, h.Alignment)}
		}
		if t.Offset > dataLen || t.Size > dataLen-t.Offset {
			return nil, &FormatError{field, int64(infoOffsets[i]), fmt.Sprintf("data [%d, %d) runs past the end of the data section (%d bytes): file truncated?", t.Offset, t.Offset+t.Size, dataLen)}
		}
	}
	return h, nil
}

func alignUp(x, a uint64) uint64 { return (x + a - 1) / a * a }

// reader is a bounds-checked little-endian cursor.
type reader struct {
	buf []byte
	off int
}

func (r *reader) remaining() int { return len(r.buf) - r.off }

func (r *reader) bytes(field string, n uint64) ([]byte, error) {
	if n > uint64(r.remaining()) {
		return nil, &FormatError{field, int64(r.off), fmt.Sprintf("needs %d bytes, only %d left: file truncated?", n, r.remaining())}
	}
	b := r.buf[r.off : r.off+int(n)]
	r.off += int(n)
	return b, nil
}

func (r *reader) u32(field string) (uint32, error) {
	b, err := r.bytes(field, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *reader) u64(field string) (uint64, error) {
	b, err := r.bytes(field, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (r *reader) str(field string) (string, error) {
	lenOff := r.off
	n, err := r.u64(field + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(r.remaining()) {
		return "", &FormatError{field, int64(lenOff), fmt.Sprintf("string length %d exceeds the %d bytes left", n, r.remaining())}
	}
	b, _ := r.bytes(field, n)
	return string(b), nil
}

func (r *reader) value(field string, t ValueType, off int64, depth int) (any, error) {
	switch t {
	case ValueString:
		return r.str(field)
	case ValueArray:
		if depth >= maxArrayDepth {
			return nil, &FormatError{field, off, fmt.Sprintf("arrays nested deeper than %d", maxArrayDepth)}
		}
		return r.array(field, depth+1)
	}
	size := t.size()
	if size == 0 {
		return nil, &FormatError{field + " type", off, fmt.Sprintf("unknown value type %d", uint32(t))}
	}
	b, err := r.bytes(field, uint64(size))
	if err != nil {
		return nil, err
	}
	return scalar(t, b, field, off)
}

func scalar(t ValueType, b []byte, field string, off int64) (any, error) {
	le := binary.LittleEndian
	switch t {
	case ValueUint8:
		return b[0], nil
	case ValueInt8:
		return int8(b[0]), nil
	case ValueUint16:
		return le.Uint16(b), nil
	case ValueInt16:
		return int16(le.Uint16(b)), nil
	case ValueUint32:
		return le.Uint32(b), nil
	case ValueInt32:
		return int32(le.Uint32(b)), nil
	case ValueFloat32:
		return math.Float32frombits(le.Uint32(b)), nil
	case ValueBool:
		if b[0] > 1 {
			return nil, &FormatError{field, off, fmt.Sprintf("bool byte is %d, want 0 or 1", b[0])}
		}
		return b[0] == 1, nil
	case ValueUint64:
		return le.Uint64(b), nil
	case ValueInt64:
		return int64(le.Uint64(b)), nil
	case ValueFloat64:
		return math.Float64frombits(le.Uint64(b)), nil
	}
	return nil, &FormatError{field, off, fmt.Sprintf("unknown value type %d", uint32(t))}
}

func (r *reader) array(field string, depth int) (Array, error) {
	elemOff := r.off
	et, err := r.u32(field + " element type")
	if err != nil {
		return Array{}, err
	}
	elem := ValueType(et)
	countOff := r.off
	n, err := r.u64(field + " element count")
	if err != nil {
		return Array{}, err
	}
	minSize := uint64(elem.size())
	switch elem {
	case ValueString:
		minSize = 8
	case ValueArray:
		minSize = 12
	}
	if minSize == 0 {
		return Array{}, &FormatError{field + " element type", int64(elemOff), fmt.Sprintf("unknown value type %d", et)}
	}
	if n > uint64(r.remaining())/minSize {
		return Array{}, &FormatError{field + " element count", int64(countOff), fmt.Sprintf("%d elements of %s cannot fit in the %d bytes left", n, elem, r.remaining())}
	}
	a := Array{Elem: elem}
	le := binary.LittleEndian
	switch elem {
	case ValueString:
		v := make([]string, n)
		for i := range v {
			if v[i], err = r.str(field); err != nil {
				return Array{}, err
			}
		}
		a.Values = v
	case ValueArray:
		// Check the depth before recursing: a hostile file could otherwise
		// nest arrays until the stack overflows (a fatal error, not a panic).
		if depth >= maxArrayDepth {
			return Array{}, &FormatError{field + " element type", int64(elemOff), fmt.Sprintf("arrays nested deeper than %d", maxArrayDepth)}
		}
		v := make([]Array, n)
		for i := range v {
			if v[i], err = r.array(field, depth+1); err != nil {
				return Array{}, err
			}
		}
		a.Values = v
	default:
		raw, _ := r.bytes(field, n*minSize) // bounds checked above
		switch elem {
		case ValueUint8:
			v := make([]uint8, n)
			copy(v, raw)
			a.Values = v
		case ValueInt8:
			v := make([]int8, n)
			for i := range v {
				v[i] = int8(raw[i])
			}
			a.Values = v
		case ValueBool:
			v := make([]bool, n)
			for i := range v {
				if raw[i] > 1 {
					return Array{}, &FormatError{field, int64(r.off) - int64(len(raw)) + int64(i), fmt.Sprintf("bool byte is %d", raw[i])}
				}
				v[i] = raw[i] == 1
			}
			a.Values = v
		case ValueUint16:
			v := make([]uint16, n)
			for i := range v {
				v[i] = le.Uint16(raw[2*i:])
			}
			a.Values = v
		case ValueInt16:
			v := make([]int16, n)
			for i := range v {
				v[i] = int16(le.Uint16(raw[2*i:]))
			}
			a.Values = v
		case ValueUint32:
			v := make([]uint32, n)
			for i := range v {
				v[i] = le.Uint32(raw[4*i:])
			}
			a.Values = v
		case ValueInt32:
			v := make([]int32, n)
			for i := range v {
				v[i] = int32(le.Uint32(raw[4*i:]))
			}
			a.Values = v
		case ValueFloat32:
			v := make([]float32, n)
			for i := range v {
				v[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
			}
			a.Values = v
		case ValueUint64:
			v := make([]uint64, n)
			for i := range v {
				v[i] = le.Uint64(raw[8*i:])
			}
			a.Values = v
		case ValueInt64:
			v := make([]int64, n)
			for i := range v {
				v[i] = int64(le.Uint64(raw[8*i:]))
			}
			a.Values = v
		case ValueFloat64:
			v := make([]float64, n)
			for i := range v {
				v[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
			}
			a.Values = v
		}
	}
	return a, nil
}

func (r *reader) tensorInfo(i uint64) (*TensorInfo, error) {
	start := r.off
	name, err := r.str(fmt.Sprintf("tensor #%d name", i))
	if err != nil {
		return nil, err
	}
	field := fmt.Sprintf("tensor %q", name)
	ndOff := r.off
	nd, err := r.u32(field + " dimension count")
	if err != nil {
		return nil, err
	}
	if nd == 0 || nd > MaxDims {
		return nil, &FormatError{field + " dimension count", int64(ndOff), fmt.Sprintf("%d dimensions, want 1..%d", nd, MaxDims)}
	}
	t := &TensorInfo{Name: name, Shape: make([]uint64, nd)}
	// elems is the element count; bound is the product of the dimensions
	// with zeros counted as ones, which must fit too, so that no dimension
	// product a caller computes (rows, Dim(i)) can overflow.
	elems, bound := uint64(1), uint64(1)
	for d := range t.Shape {
		dimOff := r.off
		if t.Shape[d], err = r.u64(fmt.Sprintf("%s dimension %d", field, d)); err != nil {
			return nil, err
		}
		hi, lo := bits.Mul64(bound, max(t.Shape[d], 1))
		if hi != 0 || lo > math.MaxInt64 {
			return nil, &FormatError{fmt.Sprintf("%s dimension %d", field, d), int64(dimOff), fmt.Sprintf("%d: element count overflows", t.Shape[d])}
		}
		bound = lo
		elems *= t.Shape[d] // <= bound
	}
	typOff := r.off
	typ, err := r.u32(field + " type")
	if err != nil {
		return nil, err
	}
	t.Type = Type(typ)
	if !t.Type.Known() {
		return nil, &FormatError{field + " type", int64(typOff), fmt.Sprintf("unknown tensor type %d", typ)}
	}
	bs := uint64(t.Type.BlockSize())
	if t.Shape[0]%bs != 0 {
		return nil, &FormatError{field + " dimension 0", int64(ndOff + 4), fmt.Sprintf("%d is not a multiple of %s's block size %d", t.Shape[0], t.Type, bs)}
	}
	hi, size := bits.Mul64(elems/bs, uint64(t.Type.TypeSize()))
	if hi != 0 || size > math.MaxInt64 {
		return nil, &FormatError{field, int64(start), "byte size overflows"}
	}
	t.Size = size
	if t.Offset, err = r.u64(field + " offset"); err != nil {
		return nil, err
	}
	return t, nil
}
