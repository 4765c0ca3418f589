package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Hostile files: every malformed input must give an error wrapping ErrFormat
// that names the offending field, never a panic, a huge allocation or a
// stack overflow.

// smallFile is a compact valid file whose fields the corruption tests patch:
// a string, a bool, an array, an array of arrays, an alignment, and three
// tensors (F32, Q4_0, F16).
func smallFile(tb testing.TB) []byte {
	tb.Helper()
	w := NewWriter()
	w.SetAlignment(32)
	w.Set("s", "xyz")
	w.Set("b", true)
	w.Set("arr", []uint32{1, 2})
	w.Set("nest", Array{ValueArray, []Array{{ValueInt8, []int8{-1}}}})
	must := func(err error) {
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(w.AddTensor("t", TypeF32, []uint64{4, 2}, make([]byte, 32)))
	must(w.AddTensor("q", TypeQ4_0, []uint64{32}, make([]byte, 18)))
	must(w.AddTensor("h", TypeF16, []uint64{16}, bytes.Repeat([]byte{0x3c, 0}, 16)))
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func TestTruncatedEverywhere(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{{"small", smallFile(t)}, {"sample", func() []byte {
		w, _ := sampleWriter(t, 64)
		var buf bytes.Buffer
		if _, err := w.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}()}} {
		t.Run(tc.name, func(t *testing.T) {
			full := tc.data
			h, err := ParseHeader(full)
			if err != nil {
				t.Fatal(err)
			}
			// Truncation may only succeed past the end of the last tensor's
			// data: the zero padding after it is optional.
			dataEnd := h.DataOffset
			for _, ti := range h.Tensors {
				dataEnd = max(dataEnd, h.DataOffset+ti.Offset+ti.Size)
			}
			for n := 0; n < len(full); n++ {
				// A fresh copy of exactly n bytes, so that reading past it is
				// caught by the race detector / bounds checks.
				cut := append([]byte(nil), full[:n]...)
				_, err := ParseHeader(cut)
				if uint64(n) >= dataEnd {
					if err != nil {
						t.Errorf("truncated at %d (in trailing padding): %v", n, err)
					}
					continue
				}
				if err == nil {
					t.Fatalf("truncated at %d of %d: no error", n, len(full))
				}
				if !errors.Is(err, ErrFormat) {
					t.Fatalf("truncated at %d: error %v does not wrap ErrFormat", n, err)
				}
			}
		})
	}
}

// patch returns a copy of data with b written at off.
func patch(data []byte, off int, b []byte) []byte {
	out := append([]byte(nil), data...)
	copy(out[off:], b)
	return out
}

func u32le(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64le(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// keyAt is the offset of the first byte after the length-prefixed string s
// in data (the string's bytes preceded by their u64 length).
func keyAt(tb testing.TB, data []byte, s string) int {
	tb.Helper()
	needle := append(u64le(uint64(len(s))), s...)
	i := bytes.Index(data, needle)
	if i < 0 {
		tb.Fatalf("string %q not in file", s)
	}
	return i + len(needle)
}

func TestCorruptFields(t *testing.T) {
	good := smallFile(t)
	if _, err := ParseHeader(good); err != nil {
		t.Fatal(err)
	}
	at := func(s string) int { return keyAt(t, good, s) }
	// Layout after a tensor name: u32 dims, u64 per dim, u32 type, u64 offset.
	tests := []struct {
		name  string
		data  []byte
		field string // must appear in the error message
	}{
		{"magic", patch(good, 0, []byte("GGUG")), "magic"},
		{"version 1", patch(good, 4, u32le(1)), "version"},
		{"version big-endian", patch(good, 4, []byte{0, 0, 0, 3}), "big-endian"},
		{"version 99", patch(good, 4, u32le(99)), "version"},
		{"tensor count 2^62", patch(good, 8, u64le(1<<62)), "tensor count"},
		{"tensor count +1", patch(good, 8, u64le(4)), `tensor "" dimension count`},
		{"metadata count 2^62", patch(good, 16, u64le(1<<62)), "metadata count"},
		{"metadata count +1", patch(good, 16, u64le(6)), "tensor #0 name"},
		{"key length 2^62", patch(good, 24, u64le(1<<62)), "metadata key #0"},
		{"key length max", patch(good, 24, u64le(^uint64(0))), "metadata key #0"},
		{"value type 99", patch(good, at("s"), u32le(99)), `metadata "s" type`},
		{"string length 2^62", patch(good, at("s")+4, u64le(1<<62)), `metadata "s"`},
		{"bool byte 2", patch(good, at("b")+4, []byte{2}), `metadata "b"`},
		{"array elem type 99", patch(good, at("arr")+4, u32le(99)), `metadata "arr" element type`},
		{"array count 2^62", patch(good, at("arr")+8, u64le(1<<62)), `metadata "arr" element count`},
		{"array count max", patch(good, at("arr")+8, u64le(^uint64(0))), `metadata "arr" element count`},
		{"nested count 2^62", patch(good, at("nest")+20, u64le(1<<62)), `metadata "nest" element count`},
		{"alignment 3", patch(good, at("general.alignment")+4, u32le(3)), `"general.alignment"`},
		{"alignment 0", patch(good, at("general.alignment")+4, u32le(0)), `"general.alignment"`},
		{"alignment as int32", patch(good, at("general.alignment"), u32le(uint32(ValueInt32))), `"general.alignment"`},
		{"alignment 2^31", patch(good, at("general.alignment")+4, u32le(1<<31)), "data section"},
		{"duplicate key", patch(good, at("b")-1, []byte("s")), `metadata key "s"`},
		{"dims 0", patch(good, at("t"), u32le(0)), `tensor "t" dimension count`},
		{"dims 5", patch(good, at("t"), u32le(5)), `tensor "t" dimension count`},
		{"dims 2^31", patch(good, at("t"), u32le(1<<31)), `tensor "t" dimension count`},
		{"dim overflow", patch(patch(good, at("t")+4, u64le(1<<40)), at("t")+12, u64le(1<<40)), `tensor "t" dimension 1`},
		{"dim overflow past zero", patch(patch(good, at("t")+4, u64le(0)), at("t")+12, u64le(1<<63)), `tensor "t" dimension 1`},
		{"dim too big for data", patch(good, at("t")+4, u64le(1<<20)), `tensor "t" offset`},
		{"block size", patch(good, at("q")+4, u64le(33)), `tensor "q" dimension 0`},
		{"tensor type 99", patch(good, at("t")+4+16, u32le(99)), `tensor "t" type`},
		{"tensor type 4 (removed)", patch(good, at("t")+4+16, u32le(4)), `tensor "t" type`},
		{"offset unaligned", patch(good, at("q")+4+8+4, u64le(33)), `tensor "q" offset`},
		{"offset past end", patch(good, at("q")+4+8+4, u64le(1<<20)), `tensor "q" offset`},
		{"offset 2^63", patch(good, at("q")+4+8+4, u64le(1<<63)), `tensor "q" offset`},
		{"tensor name length 2^62", patch(good, at("t")-1-8, u64le(1<<62)), "tensor #0 name"},
		{"duplicate tensor", patch(good, at("q")-1, []byte("t")), `tensor "t"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseHeader(tt.data)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error %v does not wrap ErrFormat", err)
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Errorf("error %T is not a *FormatError", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %q", err, tt.field)
			}
		})
	}
}

// nestedFile is a file with one metadata key "deep" holding depth arrays,
// each the only element of the one around it, around an empty uint8 array.
func nestedFile(depth int) []byte {
	var b []byte
	b = append(b, Magic...)
	b = binary.LittleEndian.AppendUint32(b, 3)
	b = binary.LittleEndian.AppendUint64(b, 0) // tensors
	b = binary.LittleEndian.AppendUint64(b, 1) // kvs
	b = binary.LittleEndian.AppendUint64(b, 4)
	b = append(b, "deep"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(ValueArray))
	for i := 1; i < depth; i++ {
		b = binary.LittleEndian.AppendUint32(b, uint32(ValueArray))
		b = binary.LittleEndian.AppendUint64(b, 1)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(ValueUint8))
	b = binary.LittleEndian.AppendUint64(b, 0)
	return b
}

func TestNestedArrayDepth(t *testing.T) {
	for _, depth := range []int{1, 2, maxArrayDepth, maxArrayDepth + 1, 1000, 2_000_000} {
		t.Run(fmt.Sprint(depth), func(t *testing.T) {
			h, err := ParseHeader(nestedFile(depth))
			if depth <= maxArrayDepth {
				if err != nil {
					t.Fatalf("depth %d rejected: %v", depth, err)
				}
				a, _ := h.Metadata.Array("deep")
				n := 1
				for a.Elem == ValueArray {
					a = a.Values.([]Array)[0]
					n++
				}
				if n != depth {
					t.Errorf("parsed depth %d, want %d", n, depth)
				}
				// And the writer writes it back identically.
				w := NewWriter()
				w.Set("deep", h.Metadata.KVs[0].Value)
				var buf bytes.Buffer
				if _, err := w.WriteTo(&buf); err != nil {
					t.Fatal(err)
				}
				want := nestedFile(depth)
				if got := buf.Bytes(); !bytes.Equal(got[:len(want)], want) {
					t.Error("writer output differs")
				}
				return
			}
			if err == nil || !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), `metadata "deep"`) || !strings.Contains(err.Error(), "nested deeper") {
				t.Fatalf("depth %d: error %v, want a format error about nesting of \"deep\"", depth, err)
			}
		})
	}
}

func TestUnsupportedTensorType(t *testing.T) {
	w, _ := sampleWriter(t, 0) // holds "iq", an IQ2_XXS tensor
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := FromBytes(buf.Bytes())
	if err != nil {
		t.Fatalf("a file with an IQ2_XXS tensor must parse: %v", err)
	}
	ti, ok := f.Tensor("iq")
	if !ok || ti.Type != TypeIQ2_XXS {
		t.Fatalf("tensor iq: %v %v", ti, ok)
	}
	const want = `unsupported tensor type IQ2_XXS in tensor "iq"`
	for name, err := range map[string]error{
		"CheckSupported":   CheckSupported(ti),
		"DequantizeTensor": func() error { _, err := DequantizeTensor(f, ti); return err }(),
	} {
		if err == nil || !errors.Is(err, ErrUnsupportedType) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one wrapping ErrUnsupportedType containing %q", name, err, want)
		}
	}
}
