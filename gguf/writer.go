package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"path/filepath"
)

// Writer builds a GGUF v3 file: metadata in the order first set, tensors in
// the order added, each tensor's data aligned to the file's alignment (32
// unless SetAlignment or a "general.alignment" key says otherwise) and padded
// with zeros to it, as ggml writes them.
//
// Values are kept by reference until WriteTo; the caller must not modify a
// slice or tensor buffer after handing it over.
type Writer struct {
	kvs     []KV
	index   map[string]int
	tensors []*writerTensor
	names   map[string]bool
	errs    []error // Set errors, reported by WriteTo
}

type writerTensor struct {
	info TensorInfo
	data []byte
	fill func(dst []byte) error
}

// NewWriter returns an empty GGUF v3 writer with alignment 32.
func NewWriter() *Writer {
	return &Writer{index: map[string]int{}, names: map[string]bool{}}
}

// SetAlignment sets the tensor data alignment (a power of two) and records
// it in the "general.alignment" metadata key, as ggml expects.
func (w *Writer) SetAlignment(n uint32) {
	if n == 0 || n&(n-1) != 0 {
		w.errs = append(w.errs, fmt.Errorf("gguf: alignment %d is not a power of two", n))
		return
	}
	w.Set("general.alignment", n)
}

// Set stores a metadata value under key, replacing an earlier value of the
// key in place (its position is kept). value is one of the Go types the
// reader produces: uint8, int8, uint16, int16, uint32, int32, float32, bool,
// string, uint64, int64, float64, a slice of one of those, or an Array
// (whose Values is such a slice or []Array). Any other type is recorded and
// returned as an error by WriteTo.
func (w *Writer) Set(key string, value any) {
	vt, v, err := normalizeValue(value, 0)
	if err != nil {
		w.errs = append(w.errs, fmt.Errorf("gguf: metadata %q: %w", key, err))
		return
	}
	kv := KV{Key: key, Type: vt, Value: v}
	if i, ok := w.index[key]; ok {
		w.kvs[i] = kv
		return
	}
	w.index[key] = len(w.kvs)
	w.kvs = append(w.kvs, kv)
}

// normalizeValue maps a Go value to its GGUF value type, turning plain
// slices into Array, and checks arrays recursively (depth counts enclosing
// arrays, bounded like the reader's).
func normalizeValue(value any, depth int) (ValueType, any, error) {
	switch v := value.(type) {
	case uint8:
		return ValueUint8, v, nil
	case int8:
		return ValueInt8, v, nil
	case uint16:
		return ValueUint16, v, nil
	case int16:
		return ValueInt16, v, nil
	case uint32:
		return ValueUint32, v, nil
	case int32:
		return ValueInt32, v, nil
	case float32:
		return ValueFloat32, v, nil
	case bool:
		return ValueBool, v, nil
	case string:
		return ValueString, v, nil
	case uint64:
		return ValueUint64, v, nil
	case int64:
		return ValueInt64, v, nil
	case float64:
		return ValueFloat64, v, nil
	case Array:
		if err := checkArray(v, depth+1); err != nil {
			return 0, nil, err
		}
		return ValueArray, v, nil
	}
	if elem, ok := sliceElemType(value); ok {
		a := Array{Elem: elem, Values: value}
		if err := checkArray(a, depth+1); err != nil {
			return 0, nil, err
		}
		return ValueArray, a, nil
	}
	return 0, nil, fmt.Errorf("unsupported value type %T (use one of the GGUF scalar types, a slice of one, or gguf.Array)", value)
}

// sliceElemType is the element type of a typed slice the reader produces.
func sliceElemType(values any) (ValueType, bool) {
	switch values.(type) {
	case []uint8:
		return ValueUint8, true
	case []int8:
		return ValueInt8, true
	case []uint16:
		return ValueUint16, true
	case []int16:
		return ValueInt16, true
	case []uint32:
		return ValueUint32, true
	case []int32:
		return ValueInt32, true
	case []float32:
		return ValueFloat32, true
	case []bool:
		return ValueBool, true
	case []string:
		return ValueString, true
	case []uint64:
		return ValueUint64, true
	case []int64:
		return ValueInt64, true
	case []float64:
		return ValueFloat64, true
	case []Array:
		return ValueArray, true
	}
	return 0, false
}

// checkArray verifies that a.Values is the slice type a.Elem names, and
// recursively so for arrays of arrays; depth is this array's nesting level.
func checkArray(a Array, depth int) error {
	if depth > maxArrayDepth {
		return fmt.Errorf("arrays nested deeper than %d", maxArrayDepth)
	}
	elem, ok := sliceElemType(a.Values)
	if !ok {
		return fmt.Errorf("array values of type %T are not a GGUF array", a.Values)
	}
	if elem != a.Elem {
		return fmt.Errorf("array element type %s does not match its values %T", a.Elem, a.Values)
	}
	if inner, ok := a.Values.([]Array); ok {
		for i, x := range inner {
			if err := checkArray(x, depth+1); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
	}
	return nil
}

// AddTensor adds a tensor of type t and shape (ggml order: shape[0] is the
// contiguous dimension) with its encoded data, whose length must be exactly
// the tensor's byte size.
func (w *Writer) AddTensor(name string, t Type, shape []uint64, data []byte) error {
	info, err := w.newTensor(name, t, shape)
	if err != nil {
		return err
	}
	if uint64(len(data)) != info.Size {
		return fmt.Errorf("gguf: tensor %q: %d bytes of data, want %d for %s %v", name, len(data), info.Size, t, shape)
	}
	w.addTensor(&writerTensor{info: info, data: data})
	return nil
}

// AddTensorFunc adds a tensor whose data fill produces at write time into a
// zeroed buffer of exactly the tensor's byte size, so large synthetic models
// can be written without holding every tensor in memory. An error from fill
// aborts WriteTo. To encode float32 values, fill can call
// Quantize(t, dst[:0], values), which writes in place into dst.
func (w *Writer) AddTensorFunc(name string, t Type, shape []uint64, fill func(dst []byte) error) error {
	info, err := w.newTensor(name, t, shape)
	if err != nil {
		return err
	}
	if fill == nil {
		return fmt.Errorf("gguf: tensor %q: nil fill function", name)
	}
	w.addTensor(&writerTensor{info: info, fill: fill})
	return nil
}

func (w *Writer) addTensor(t *writerTensor) {
	w.names[t.info.Name] = true
	w.tensors = append(w.tensors, t)
}

func (w *Writer) newTensor(name string, t Type, shape []uint64) (TensorInfo, error) {
	if w.names[name] {
		return TensorInfo{}, fmt.Errorf("gguf: tensor %q added twice", name)
	}
	if !t.Known() {
		return TensorInfo{}, fmt.Errorf("gguf: tensor %q: unknown type %d", name, uint32(t))
	}
	if len(shape) == 0 || len(shape) > MaxDims {
		return TensorInfo{}, fmt.Errorf("gguf: tensor %q: %d dimensions, want 1..%d", name, len(shape), MaxDims)
	}
	if shape[0]%uint64(t.BlockSize()) != 0 {
		return TensorInfo{}, fmt.Errorf("gguf: tensor %q: dimension 0 (%d) is not a multiple of %s's block size %d", name, shape[0], t, t.BlockSize())
	}
	elems := uint64(1)
	for _, d := range shape {
		hi, lo := bits.Mul64(elems, max(d, 1))
		if hi != 0 || lo > math.MaxInt64 {
			return TensorInfo{}, fmt.Errorf("gguf: tensor %q: shape %v overflows", name, shape)
		}
		elems = lo
	}
	for _, d := range shape {
		if d == 0 {
			elems = 0
		}
	}
	hi, size := bits.Mul64(elems/uint64(t.BlockSize()), uint64(t.TypeSize()))
	if hi != 0 || size > math.MaxInt64 {
		return TensorInfo{}, fmt.Errorf("gguf: tensor %q: byte size overflows", name)
	}
	return TensorInfo{Name: name, Shape: append([]uint64(nil), shape...), Type: t, Size: size}, nil
}

// alignment is the value of general.alignment, or the default.
func (w *Writer) alignment() (uint64, error) {
	i, ok := w.index["general.alignment"]
	if !ok {
		return DefaultAlignment, nil
	}
	a, ok := w.kvs[i].Value.(uint32)
	if !ok || a == 0 || a&(a-1) != 0 {
		return 0, fmt.Errorf("gguf: general.alignment must be a power-of-two uint32, got %v (%T)", w.kvs[i].Value, w.kvs[i].Value)
	}
	return uint64(a), nil
}

// WriteTo writes the file to out and returns the number of bytes written.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	if len(w.errs) > 0 {
		return 0, errors.Join(w.errs...)
	}
	align, err := w.alignment()
	if err != nil {
		return 0, err
	}
	cw := &countingWriter{w: out}
	bw := bufio.NewWriterSize(cw, 1<<20)
	e := &encoder{w: bw}

	e.raw([]byte(Magic))
	e.u32(3)
	e.u64(uint64(len(w.tensors)))
	e.u64(uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		e.str(kv.Key)
		e.u32(uint32(kv.Type))
		e.value(kv.Type, kv.Value)
	}
	offset := uint64(0)
	var maxFill uint64
	for _, t := range w.tensors {
		t.info.Offset = offset
		offset += alignUp(t.info.Size, align)
		if t.fill != nil {
			maxFill = max(maxFill, t.info.Size)
		}
		e.str(t.info.Name)
		e.u32(uint32(len(t.info.Shape)))
		for _, d := range t.info.Shape {
			e.u64(d)
		}
		e.u32(uint32(t.info.Type))
		e.u64(t.info.Offset)
	}
	e.pad(align)
	if e.err != nil {
		return e.n, e.err
	}
	var buf []byte
	if maxFill > 0 {
		if maxFill > uint64(maxInt) {
			return e.n, fmt.Errorf("gguf: tensor of %d bytes does not fit in memory", maxFill)
		}
		buf = make([]byte, maxFill)
	}
	for _, t := range w.tensors {
		data := t.data
		if t.fill != nil {
			data = buf[:t.info.Size]
			clear(data)
			if err := t.fill(data); err != nil {
				return e.n, fmt.Errorf("gguf: filling tensor %q: %w", t.info.Name, err)
			}
		}
		e.raw(data)
		e.pad(align)
		if e.err != nil {
			return e.n, e.err
		}
	}
	if err := bw.Flush(); err != nil {
		return cw.n, err
	}
	return cw.n, nil
}

// WriteFile writes the file to path atomically: to a temporary file in the
// same directory, synced, then renamed over path.
func (w *Writer) WriteFile(path string) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = w.WriteTo(tmp); err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	if err = os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// encoder writes little-endian GGUF fields, keeping the first error and the
// count of bytes handed to w.
type encoder struct {
	w       *bufio.Writer
	n       int64
	err     error
	scratch [8]byte
}

func (e *encoder) raw(b []byte) {
	if e.err != nil {
		return
	}
	_, e.err = e.w.Write(b)
	e.n += int64(len(b))
}

func (e *encoder) u8(v uint8) { e.scratch[0] = v; e.raw(e.scratch[:1]) }
func (e *encoder) u16(v uint16) {
	binary.LittleEndian.PutUint16(e.scratch[:], v)
	e.raw(e.scratch[:2])
}
func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.scratch[:], v)
	e.raw(e.scratch[:4])
}
func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.scratch[:], v)
	e.raw(e.scratch[:8])
}

func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	if e.err == nil {
		_, e.err = e.w.WriteString(s)
		e.n += int64(len(s))
	}
}

var zeros [256]byte

// pad writes zeros up to the next multiple of align.
func (e *encoder) pad(align uint64) {
	for n := alignUp(uint64(e.n), align) - uint64(e.n); n > 0; {
		k := min(n, uint64(len(zeros)))
		e.raw(zeros[:k])
		n -= k
	}
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// value writes a value already checked by normalizeValue.
func (e *encoder) value(t ValueType, v any) {
	switch t {
	case ValueUint8:
		e.u8(v.(uint8))
	case ValueInt8:
		e.u8(uint8(v.(int8)))
	case ValueUint16:
		e.u16(v.(uint16))
	case ValueInt16:
		e.u16(uint16(v.(int16)))
	case ValueUint32:
		e.u32(v.(uint32))
	case ValueInt32:
		e.u32(uint32(v.(int32)))
	case ValueFloat32:
		e.u32(math.Float32bits(v.(float32)))
	case ValueBool:
		e.u8(boolByte(v.(bool)))
	case ValueString:
		e.str(v.(string))
	case ValueUint64:
		e.u64(v.(uint64))
	case ValueInt64:
		e.u64(uint64(v.(int64)))
	case ValueFloat64:
		e.u64(math.Float64bits(v.(float64)))
	case ValueArray:
		e.array(v.(Array))
	}
}

// array writes an array body: element type, count, elements.
func (e *encoder) array(a Array) {
	e.u32(uint32(a.Elem))
	e.u64(uint64(a.Len()))
	switch v := a.Values.(type) {
	case []uint8:
		e.raw(v)
	case []int8:
		for _, x := range v {
			e.u8(uint8(x))
		}
	case []uint16:
		for _, x := range v {
			e.u16(x)
		}
	case []int16:
		for _, x := range v {
			e.u16(uint16(x))
		}
	case []uint32:
		for _, x := range v {
			e.u32(x)
		}
	case []int32:
		for _, x := range v {
			e.u32(uint32(x))
		}
	case []float32:
		for _, x := range v {
			e.u32(math.Float32bits(x))
		}
	case []bool:
		for _, x := range v {
			e.u8(boolByte(x))
		}
	case []string:
		for _, x := range v {
			e.str(x)
		}
	case []uint64:
		for _, x := range v {
			e.u64(x)
		}
	case []int64:
		for _, x := range v {
			e.u64(uint64(x))
		}
	case []float64:
		for _, x := range v {
			e.u64(math.Float64bits(x))
		}
	case []Array:
		for _, x := range v {
			e.array(x)
		}
	}
}
