package gguf

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/internal/testutil"
)

// sampleKVs is one metadata entry of every value type the format has,
// including empty strings and arrays and arrays of arrays, in the
// representation the reader produces.
func sampleKVs() []KV {
	nested := Array{Elem: ValueArray, Values: []Array{
		{Elem: ValueInt32, Values: []int32{1, -2, 3}},
		{Elem: ValueString, Values: []string{"", "x"}},
		{Elem: ValueArray, Values: []Array{{Elem: ValueBool, Values: []bool{true}}, {Elem: ValueFloat64, Values: []float64{}}}},
		{Elem: ValueUint8, Values: []uint8{}},
	}}
	return []KV{
		{"general.architecture", ValueString, "llama"},
		{"t.u8", ValueUint8, uint8(200)},
		{"t.i8", ValueInt8, int8(-100)},
		{"t.u16", ValueUint16, uint16(65000)},
		{"t.i16", ValueInt16, int16(-30000)},
		{"t.u32", ValueUint32, uint32(4000000000)},
		{"t.i32", ValueInt32, int32(-2000000000)},
		{"t.f32", ValueFloat32, float32(-1.5e-7)},
		{"t.bool.true", ValueBool, true},
		{"t.bool.false", ValueBool, false},
		{"t.string", ValueString, "héllo, wörld"},
		{"t.string.empty", ValueString, ""},
		{"t.u64", ValueUint64, uint64(math.MaxUint64)},
		{"t.i64", ValueInt64, int64(math.MinInt64)},
		{"t.f64", ValueFloat64, math.Inf(-1)},
		{"", ValueString, "empty key"},
		{"a.u8", ValueArray, Array{ValueUint8, []uint8{0, 1, 255}}},
		{"a.i8", ValueArray, Array{ValueInt8, []int8{-128, 127}}},
		{"a.u16", ValueArray, Array{ValueUint16, []uint16{1, 65535}}},
		{"a.i16", ValueArray, Array{ValueInt16, []int16{-1}}},
		{"a.u32", ValueArray, Array{ValueUint32, []uint32{7, 8, 9}}},
		{"a.i32", ValueArray, Array{ValueInt32, []int32{-7}}},
		{"a.f32", ValueArray, Array{ValueFloat32, []float32{0.5, float32(math.Inf(1))}}},
		{"a.bool", ValueArray, Array{ValueBool, []bool{true, false, true}}},
		{"a.string", ValueArray, Array{ValueString, []string{"a", "", "ccc"}}},
		{"a.u64", ValueArray, Array{ValueUint64, []uint64{1 << 63}}},
		{"a.i64", ValueArray, Array{ValueInt64, []int64{-1 << 62}}},
		{"a.f64", ValueArray, Array{ValueFloat64, []float64{math.Pi}}},
		{"a.empty.string", ValueArray, Array{ValueString, []string{}}},
		{"a.empty.u32", ValueArray, Array{ValueUint32, []uint32{}}},
		{"a.empty.array", ValueArray, Array{ValueArray, []Array{}}},
		{"a.nested", ValueArray, nested},
	}
}

type sampleTensor struct {
	name  string
	typ   Type
	shape []uint64
}

var sampleTensors = []sampleTensor{
	{"token_embd.weight", TypeF16, []uint64{32, 3}},
	{"norm", TypeF32, []uint64{5}}, // 20 bytes: forces padding
	{"q4", TypeQ4_0, []uint64{64, 2}},
	{"q4k", TypeQ4_K, []uint64{256, 1, 1, 2}},
	{"q8k", TypeQ8_K, []uint64{256}},
	{"bf", TypeBF16, []uint64{3, 1, 1}},
	{"iq", TypeIQ2_XXS, []uint64{256}}, // unsupported types are written as opaque bytes
	{"empty", TypeF32, []uint64{0, 4}},
}

// sampleWriter builds a writer holding sampleKVs and sampleTensors with
// deterministic pseudo-random tensor bytes; align 0 keeps the default.
func sampleWriter(tb testing.TB, align uint32) (*Writer, map[string][]byte) {
	tb.Helper()
	w := NewWriter()
	if align != 0 {
		w.SetAlignment(align)
	}
	for _, kv := range sampleKVs() {
		w.Set(kv.Key, kv.Value)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	data := map[string][]byte{}
	for _, st := range sampleTensors {
		ti := TensorInfo{Shape: st.shape}
		size, err := st.typ.RowSize(int(ti.Elements()))
		if err != nil {
			tb.Fatal(err)
		}
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		data[st.name] = b
		if err := w.AddTensor(st.name, st.typ, st.shape, b); err != nil {
			tb.Fatal(err)
		}
	}
	return w, data
}

func TestWriterRoundTrip(t *testing.T) {
	for _, align := range []uint32{0, 1, 8, 64, 4096} {
		t.Run("align"+itoa(int(align)), func(t *testing.T) {
			w, data := sampleWriter(t, align)
			var buf bytes.Buffer
			n, err := w.WriteTo(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(buf.Len()) {
				t.Errorf("WriteTo returned %d, wrote %d bytes", n, buf.Len())
			}
			h, err := ParseHeader(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			wantAlign := uint64(align)
			wantKVs := sampleKVs()
			if align == 0 {
				wantAlign = DefaultAlignment
			} else {
				wantKVs = append([]KV{{"general.alignment", ValueUint32, align}}, wantKVs...)
			}
			if h.Version != 3 || h.Alignment != wantAlign {
				t.Errorf("version %d alignment %d, want 3 and %d", h.Version, h.Alignment, wantAlign)
			}
			if !reflect.DeepEqual(h.Metadata.KVs, wantKVs) {
				for i := range max(len(wantKVs), len(h.Metadata.KVs)) {
					var got, want KV
					if i < len(h.Metadata.KVs) {
						got = h.Metadata.KVs[i]
					}
					if i < len(wantKVs) {
						want = wantKVs[i]
					}
					if !reflect.DeepEqual(got, want) {
						t.Errorf("KV %d: got %#v, want %#v", i, got, want)
					}
				}
			}
			if h.DataOffset%wantAlign != 0 || uint64(buf.Len())%wantAlign != 0 {
				t.Errorf("data offset %d / file size %d not aligned to %d", h.DataOffset, buf.Len(), wantAlign)
			}
			f, err := FromBytes(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if len(h.Tensors) != len(sampleTensors) {
				t.Fatalf("%d tensors, want %d", len(h.Tensors), len(sampleTensors))
			}
			for i, st := range sampleTensors {
				ti := h.Tensors[i]
				if ti.Name != st.name || ti.Type != st.typ || !reflect.DeepEqual(ti.Shape, st.shape) {
					t.Errorf("tensor %d: %s %s %v, want %s %s %v", i, ti.Name, ti.Type, ti.Shape, st.name, st.typ, st.shape)
				}
				if ti.Offset%wantAlign != 0 {
					t.Errorf("%s: offset %d not aligned", ti.Name, ti.Offset)
				}
				if !bytes.Equal(f.TensorData(ti), data[st.name]) {
					t.Errorf("%s: data differs", ti.Name)
				}
			}
		})
	}
}

func itoa(i int) string {
	if i == 0 {
		return "default"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

func TestWriterSetReplacesInPlace(t *testing.T) {
	w := NewWriter()
	w.Set("a", uint32(1))
	w.Set("b", "x")
	w.Set("a", []string{"replaced"})
	w.Set("c", false)
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []KV{{"a", ValueArray, Array{ValueString, []string{"replaced"}}}, {"b", ValueString, "x"}, {"c", ValueBool, false}}
	if !reflect.DeepEqual(h.Metadata.KVs, want) {
		t.Errorf("got %#v, want %#v", h.Metadata.KVs, want)
	}
}

func TestWriterErrors(t *testing.T) {
	deep := Array{Elem: ValueUint8, Values: []uint8{1}}
	for i := 0; i < maxArrayDepth; i++ {
		deep = Array{Elem: ValueArray, Values: []Array{deep}}
	}
	tests := []struct {
		name  string
		build func(w *Writer) error // returns an immediate error, if any
		want  string                // in the error from build or WriteTo
	}{
		{"int", func(w *Writer) error { w.Set("k", 5); return nil }, `"k": unsupported value type int`},
		{"[]int", func(w *Writer) error { w.Set("k", []int{5}); return nil }, "unsupported value type []int"},
		{"map", func(w *Writer) error { w.Set("k", map[string]int{}); return nil }, "unsupported value type map"},
		{"nil", func(w *Writer) error { w.Set("k", nil); return nil }, "unsupported value type <nil>"},
		{"array elem mismatch", func(w *Writer) error { w.Set("k", Array{ValueInt32, []uint32{1}}); return nil }, "does not match"},
		{"array bad values", func(w *Writer) error { w.Set("k", Array{ValueInt32, 5}); return nil }, "not a GGUF array"},
		{"array inner bad", func(w *Writer) error {
			w.Set("k", Array{ValueArray, []Array{{ValueBool, []int8{1}}}})
			return nil
		}, "element 0"},
		{"too deep", func(w *Writer) error { w.Set("k", deep); return nil }, "nested deeper"},
		{"alignment 3", func(w *Writer) error { w.SetAlignment(3); return nil }, "power of two"},
		{"alignment 0", func(w *Writer) error { w.SetAlignment(0); return nil }, "power of two"},
		{"alignment as int32", func(w *Writer) error { w.Set("general.alignment", int32(32)); return nil }, "general.alignment"},
		{"short data", func(w *Writer) error { return w.AddTensor("t", TypeQ4_0, []uint64{32}, make([]byte, 17)) }, "17 bytes of data, want 18"},
		{"duplicate tensor", func(w *Writer) error {
			w.AddTensor("t", TypeF32, []uint64{1}, make([]byte, 4))
			return w.AddTensor("t", TypeF32, []uint64{1}, make([]byte, 4))
		}, "added twice"},
		{"no dims", func(w *Writer) error { return w.AddTensor("t", TypeF32, nil, nil) }, "0 dimensions"},
		{"5 dims", func(w *Writer) error { return w.AddTensor("t", TypeF32, []uint64{1, 1, 1, 1, 1}, make([]byte, 4)) }, "5 dimensions"},
		{"block size", func(w *Writer) error { return w.AddTensor("t", TypeQ4_K, []uint64{128}, make([]byte, 72)) }, "block size 256"},
		{"unknown type", func(w *Writer) error { return w.AddTensor("t", Type(77), []uint64{1}, make([]byte, 4)) }, "unknown type 77"},
		{"overflow", func(w *Writer) error {
			return w.AddTensorFunc("t", TypeF32, []uint64{1 << 40, 1 << 30}, func([]byte) error { return nil })
		}, "overflows"},
		{"nil fill", func(w *Writer) error { return w.AddTensorFunc("t", TypeF32, []uint64{1}, nil) }, "nil fill"},
		{"fill error", func(w *Writer) error {
			return w.AddTensorFunc("t", TypeF32, []uint64{1}, func([]byte) error { return errors.New("boom") })
		}, `filling tensor "t": boom`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWriter()
			err := tt.build(w)
			if err == nil {
				_, err = w.WriteTo(&bytes.Buffer{})
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestWriterAddTensorFunc(t *testing.T) {
	w := NewWriter()
	var sizes []int
	for i, shape := range [][]uint64{{64, 2}, {8}, {32, 4}} {
		err := w.AddTensorFunc("t"+itoa(i+1), TypeF32, shape, func(dst []byte) error {
			sizes = append(sizes, len(dst))
			for j, b := range dst {
				if b != 0 {
					t.Errorf("fill buffer not zeroed at %d", j)
					break
				}
				dst[j] = byte(i + 1)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sizes, []int{512, 32, 512}) {
		t.Errorf("fill buffer sizes %v, want [512 32 512]", sizes)
	}
	f, err := FromBytes(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for i, ti := range f.Tensors {
		if !bytes.Equal(f.TensorData(ti), bytes.Repeat([]byte{byte(i + 1)}, int(ti.Size))) {
			t.Errorf("%s: data not what fill wrote", ti.Name)
		}
	}
}

func TestWriterWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.gguf")
	w, data := sampleWriter(t, 0)
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ti, _ := f.Tensor("q4k")
	if !bytes.Equal(f.TensorData(ti), data["q4k"]) {
		t.Error("q4k data differs")
	}
	// A failing write leaves the old file alone and no temporary behind.
	bad := NewWriter()
	bad.AddTensorFunc("t", TypeF32, []uint64{1}, func([]byte) error { return errors.New("boom") })
	if err := bad.WriteFile(path); err == nil {
		t.Fatal("failing fill did not fail WriteFile")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "m.gguf" {
		t.Errorf("directory holds %v, want only m.gguf", entries)
	}
	if _, err := Open(path); err != nil {
		t.Errorf("old file damaged: %v", err)
	}
}

// TestWriterRewritesBundledModel reads the bundled model and writes it
// again, KV by KV and tensor by tensor: every KV and tensor must survive,
// and since the model was written with ggml's layout, the bytes too.
func TestWriterRewritesBundledModel(t *testing.T) {
	for _, path := range []string{testutil.BundledModel(t), testutil.Testdata(t, "stories260K.gguf")} {
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := FromBytes(orig)
		if err != nil {
			t.Fatal(err)
		}
		w := NewWriter()
		for _, kv := range f.Metadata.KVs {
			w.Set(kv.Key, kv.Value)
		}
		for _, ti := range f.Tensors {
			if err := w.AddTensor(ti.Name, ti.Type, ti.Shape, f.TensorData(ti)); err != nil {
				t.Fatal(err)
			}
		}
		var buf bytes.Buffer
		if _, err := w.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		g, err := FromBytes(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(f.Metadata.KVs, g.Metadata.KVs) {
			t.Errorf("%s: metadata differs after rewrite", path)
		}
		if len(f.Tensors) != len(g.Tensors) {
			t.Fatalf("%s: %d tensors after rewrite, want %d", path, len(g.Tensors), len(f.Tensors))
		}
		for i, ti := range f.Tensors {
			tj := g.Tensors[i]
			if ti.Name != tj.Name || ti.Type != tj.Type || !reflect.DeepEqual(ti.Shape, tj.Shape) || !bytes.Equal(f.TensorData(ti), g.TensorData(tj)) {
				t.Errorf("%s: tensor %s differs after rewrite", path, ti.Name)
			}
		}
		if !bytes.Equal(orig, buf.Bytes()) {
			t.Errorf("%s: rewrite is not byte-identical (%d vs %d bytes)", path, len(orig), buf.Len())
		}
	}
}

// TestWriterFillWithQuantize checks the documented pattern of encoding in
// place inside a fill function.
func TestWriterFillWithQuantize(t *testing.T) {
	x := datasets[0].gen(rand.New(rand.NewPCG(5, 5)), 2*QK_K)
	want, err := Quantize(TypeQ4_K, nil, x)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter()
	w.AddTensorFunc("big", TypeF32, []uint64{1024}, func(dst []byte) error { return nil }) // larger buffer first
	err = w.AddTensorFunc("q", TypeQ4_K, []uint64{QK_K, 2}, func(dst []byte) error {
		_, err := Quantize(TypeQ4_K, dst[:0], x)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := FromBytes(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	ti, _ := f.Tensor("q")
	if !bytes.Equal(f.TensorData(ti), want) {
		t.Error("tensor encoded in the fill buffer differs from Quantize's output")
	}
}
