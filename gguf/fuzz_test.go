package gguf

import (
	"bytes"
	"testing"
)

// FuzzParseHeader feeds arbitrary bytes to ParseHeader. Whatever parses must
// be self-consistent: every tensor inside the data, views of the right size,
// supported tensors decodable, metadata readable through every accessor, and
// the writer must reproduce the file's content (written twice, the same
// bytes).
//
// Run it with: go test ./gguf -run '^$' -fuzz FuzzParseHeader -fuzztime 60s
func FuzzParseHeader(f *testing.F) {
	f.Add(smallFile(f))
	for _, align := range []uint32{0, 1} {
		w, _ := sampleWriter(f, align)
		var buf bytes.Buffer
		if _, err := w.WriteTo(&buf); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add(nestedFile(3))
	f.Add(nestedFile(maxArrayDepth + 1))
	f.Add([]byte("GGUF\x03\x00\x00\x00" + "\x00\x00\x00\x00\x00\x00\x00\x00" + "\x00\x00\x00\x00\x00\x00\x00\x00"))

	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHeader(data)
		if err != nil {
			return
		}
		checkHeader(t, h, data)
	})
}

// checkHeader asserts the invariants of a successfully parsed header.
func checkHeader(t *testing.T, h *Header, data []byte) {
	t.Helper()
	if h.Alignment == 0 || h.Alignment&(h.Alignment-1) != 0 || h.DataOffset%h.Alignment != 0 {
		t.Fatalf("alignment %d, data offset %d", h.Alignment, h.DataOffset)
	}
	for _, kv := range h.Metadata.KVs {
		got, ok := h.Metadata.Get(kv.Key)
		if !ok || got.Type != kv.Type {
			t.Fatalf("key %q not found by Get", kv.Key)
		}
		// Accessors must not panic whatever the stored type.
		h.Metadata.String(kv.Key)
		h.Metadata.Uint(kv.Key)
		h.Metadata.Int(kv.Key)
		h.Metadata.Float(kv.Key)
		h.Metadata.Bool(kv.Key)
		h.Metadata.Strings(kv.Key)
		h.Metadata.Float32s(kv.Key)
		h.Metadata.Int32s(kv.Key)
	}
	f, err := FromBytes(data)
	if err != nil {
		t.Fatalf("FromBytes failed where ParseHeader succeeded: %v", err)
	}
	w := NewWriter()
	for _, kv := range h.Metadata.KVs {
		w.Set(kv.Key, kv.Value)
	}
	for _, ti := range h.Tensors {
		end := h.DataOffset + ti.Offset + ti.Size
		if end > uint64(len(data)) || end < h.DataOffset || ti.Offset%h.Alignment != 0 {
			t.Fatalf("tensor %q [%d, +%d) outside the %d-byte file", ti.Name, h.DataOffset+ti.Offset, ti.Size, len(data))
		}
		if want, err := ti.Type.RowSize(int(ti.Elements())); err != nil || uint64(want) != ti.Size {
			t.Fatalf("tensor %q: size %d, want %d (%v)", ti.Name, ti.Size, want, err)
		}
		if got, ok := h.Tensor(ti.Name); !ok || got != ti {
			t.Fatalf("tensor %q not found by name", ti.Name)
		}
		ti.Rows()
		view := f.TensorData(ti)
		if uint64(len(view)) != ti.Size {
			t.Fatalf("tensor %q: view of %d bytes, want %d", ti.Name, len(view), ti.Size)
		}
		if ti.Type.Supported() && ti.Elements() <= 1<<16 {
			if _, err := DequantizeTensor(f, ti); err != nil {
				t.Fatalf("tensor %q: %v", ti.Name, err)
			}
		}
		if err := w.AddTensor(ti.Name, ti.Type, ti.Shape, view); err != nil {
			t.Fatalf("writer refuses parsed tensor %q: %v", ti.Name, err)
		}
	}
	if h.Alignment > 1<<16 {
		return // valid, but rewriting would pad to the alignment: too slow for fuzzing
	}
	var first, second bytes.Buffer
	if _, err := w.WriteTo(&first); err != nil {
		t.Fatalf("writer refuses parsed metadata: %v", err)
	}
	g, err := ParseHeader(first.Bytes())
	if err != nil {
		t.Fatalf("rewritten file does not parse: %v", err)
	}
	w2 := NewWriter()
	for _, kv := range g.Metadata.KVs {
		w2.Set(kv.Key, kv.Value)
	}
	gf, _ := FromBytes(first.Bytes())
	for _, ti := range g.Tensors {
		if err := w2.AddTensor(ti.Name, ti.Type, ti.Shape, gf.TensorData(ti)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w2.WriteTo(&second); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Fatal("writing the parsed file twice gives different bytes")
	}
}
