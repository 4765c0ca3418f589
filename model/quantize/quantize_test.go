package quantize_test

import (
	"bytes"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/rs/zerolog/log"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model/quantize"
)

func TestFileType(t *testing.T) {
	// LLAMA_FTYPE numbers from llama.cpp's include/llama.h.
	tests := []struct {
		typ  gguf.Type
		want uint32
	}{
		{gguf.TypeF32, 0}, {gguf.TypeF16, 1}, {gguf.TypeQ4_0, 2}, {gguf.TypeQ4_1, 3},
		{gguf.TypeQ8_0, 7}, {gguf.TypeQ5_0, 8}, {gguf.TypeQ5_1, 9}, {gguf.TypeQ2_K, 10},
		{gguf.TypeQ3_K, 11}, {gguf.TypeQ4_K, 14}, {gguf.TypeQ5_K, 16}, {gguf.TypeQ6_K, 18},
		{gguf.TypeBF16, 32},
	}
	for _, tt := range tests {
		got, err := quantize.FileType(tt.typ)
		if err != nil || got != tt.want {
			t.Errorf("FileType(%s) = %d, %v; want %d", tt.typ, got, err, tt.want)
		}
	}
	for _, bad := range []gguf.Type{gguf.TypeQ8_K, gguf.TypeIQ2_XXS, gguf.TypeI32} {
		if _, err := quantize.FileType(bad); err == nil {
			t.Errorf("FileType(%s) gave no error", bad)
		}
	}
	if got := len(quantize.Targets()); got != len(tests) {
		t.Errorf("Targets() has %d types, want %d", got, len(tests))
	}
}

func TestForRow(t *testing.T) {
	tests := []struct {
		typ  gguf.Type
		n    int
		want gguf.Type
	}{
		{gguf.TypeQ4_K, 256, gguf.TypeQ4_K},
		{gguf.TypeQ4_K, 4096, gguf.TypeQ4_K},
		{gguf.TypeQ4_K, 64, gguf.TypeQ5_0},
		{gguf.TypeQ4_K, 172, gguf.TypeF16},
		{gguf.TypeQ5_K, 96, gguf.TypeQ5_1},
		{gguf.TypeQ6_K, 96, gguf.TypeQ8_0},
		{gguf.TypeQ6_K, 100, gguf.TypeF16},
		{gguf.TypeQ2_K, 64, gguf.TypeQ4_0},
		{gguf.TypeQ3_K, 32, gguf.TypeQ4_0},
		{gguf.TypeQ8_0, 64, gguf.TypeQ8_0},
		{gguf.TypeQ8_0, 172, gguf.TypeF16},
		{gguf.TypeQ4_0, 48, gguf.TypeF16},
		{gguf.TypeF16, 172, gguf.TypeF16},
		{gguf.TypeBF16, 7, gguf.TypeBF16},
	}
	for _, tt := range tests {
		if got := quantize.ForRow(tt.typ, tt.n); got != tt.want {
			t.Errorf("ForRow(%s, %d) = %s, want %s", tt.typ, tt.n, got, tt.want)
		}
	}
}

// relErr is the RMS difference of got and want relative to want's RMS.
func relErr(got, want []float32) float64 {
	var diff, norm float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		diff += d * d
		norm += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(diff / norm)
}

// convertAndCheck quantises in to typ and checks every tensor of the result
// against the input: same names and shapes, the expected type (wantType),
// and values within maxErr (relative RMS) of the input's.
func convertAndCheck(t *testing.T, in string, typ gguf.Type, wantType func(*gguf.TensorInfo) gguf.Type, maxErr func(gguf.Type) float64) *gguf.File {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.gguf")
	var last, total int64
	progress := func(done, tot int64) {
		if done < last || done > tot {
			t.Errorf("progress went from %d to %d of %d", last, done, tot)
		}
		last, total = done, tot
	}
	if err := quantize.File(in, out, typ, progress); err != nil {
		t.Fatalf("File: %v", err)
	}
	if last == 0 || last != total {
		t.Errorf("progress ended at %d of %d", last, total)
	}
	src, err := gguf.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	dst, err := gguf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })

	if len(dst.Tensors) != len(src.Tensors) {
		t.Fatalf("%d tensors, want %d", len(dst.Tensors), len(src.Tensors))
	}
	for i, st := range src.Tensors {
		dt := dst.Tensors[i]
		if dt.Name != st.Name || fmt.Sprint(dt.Shape) != fmt.Sprint(st.Shape) {
			t.Errorf("tensor %d: %s %v, want %s %v", i, dt.Name, dt.Shape, st.Name, st.Shape)
			continue
		}
		if want := wantType(st); dt.Type != want {
			t.Errorf("%s: type %s, want %s", st.Name, dt.Type, want)
		}
		a, err := gguf.DequantizeTensor(src, st)
		if err != nil {
			t.Fatal(err)
		}
		b, err := gguf.DequantizeTensor(dst, dt)
		if err != nil {
			t.Fatal(err)
		}
		if e := relErr(b, a); e > maxErr(dt.Type) {
			t.Errorf("%s (%s): relative error %.4f, want <= %.4f", st.Name, dt.Type, e, maxErr(dt.Type))
		}
	}

	// Metadata: every key copied unchanged but the file type, which is set.
	wantFtype, _ := quantize.FileType(typ)
	if got, _ := dst.Metadata.Uint("general.file_type"); got != uint64(wantFtype) {
		t.Errorf("general.file_type = %d, want %d", got, wantFtype)
	}
	for _, kv := range src.Metadata.KVs {
		if kv.Key == "general.file_type" || kv.Key == "general.quantization_version" {
			continue
		}
		got, ok := dst.Metadata.Get(kv.Key)
		if !ok || got.Type != kv.Type || !reflect.DeepEqual(got.Value, kv.Value) {
			t.Errorf("metadata %s not copied unchanged", kv.Key)
		}
	}
	return dst
}

// Relative RMS errors of the formats on weights like these (measured on
// normally distributed values they are about 0.4%, 1%, 4%, 7% and 9%).
func typeErr(t gguf.Type) float64 {
	switch t {
	case gguf.TypeF32:
		return 0
	case gguf.TypeF16, gguf.TypeBF16:
		return 0.005
	case gguf.TypeQ8_0:
		return 0.01
	case gguf.TypeQ6_K:
		return 0.03
	case gguf.TypeQ5_0, gguf.TypeQ5_1:
		return 0.06
	}
	return 0.12
}

// TestFileBundledModel converts the bundled model (dim 256, FFN 704): its
// matrices become the requested type, except that ffn_down's 704-wide rows
// do not fit Q4_K's 256-element blocks and fall back to Q5_0.
func TestFileBundledModel(t *testing.T) {
	for _, typ := range []gguf.Type{gguf.TypeQ8_0, gguf.TypeQ4_K} {
		t.Run(typ.String(), func(t *testing.T) {
			wantType := func(ti *gguf.TensorInfo) gguf.Type {
				switch {
				case len(ti.Shape) == 1:
					return gguf.TypeF32
				case typ == gguf.TypeQ4_K && ti.Shape[0] == 704:
					return gguf.TypeQ5_0
				}
				return typ
			}
			dst := convertAndCheck(t, testutil.BundledModel(t), typ, wantType, typeErr)
			if v, ok := dst.Metadata.Uint("general.quantization_version"); !ok || v != 2 {
				t.Errorf("general.quantization_version = %d (present %v), want 2", v, ok)
			}
		})
	}
}

// TestFileFallback converts stories260K, whose rows are 64 wide (and 172 for
// ffn_down), to Q4_K: nothing fits 256-element blocks, so the 64-wide
// matrices fall back to Q5_0 and the 172-wide ones to F16, with a warning.
func TestFileFallback(t *testing.T) {
	var logs bytes.Buffer
	prev := log.Logger
	log.Logger = zerolog.New(&logs)
	t.Cleanup(func() { log.Logger = prev })

	wantType := func(ti *gguf.TensorInfo) gguf.Type {
		switch {
		case len(ti.Shape) == 1:
			return gguf.TypeF32
		case ti.Shape[0] == 172:
			return gguf.TypeF16
		}
		return gguf.TypeQ5_0
	}
	dst := convertAndCheck(t, testutil.Testdata(t, "stories260K.gguf"), gguf.TypeQ4_K, wantType, typeErr)

	ffnDown := 0
	for _, ti := range dst.Tensors {
		if strings.HasSuffix(ti.Name, "ffn_down.weight") {
			ffnDown++
			if !strings.Contains(logs.String(), `"tensor":"`+ti.Name+`"`) {
				t.Errorf("no warning names %s", ti.Name)
			}
		}
	}
	if ffnDown != 5 {
		t.Errorf("%d ffn_down tensors, want 5", ffnDown)
	}
	if !strings.Contains(logs.String(), `"level":"warn"`) {
		t.Errorf("no warning logged: %s", logs.String())
	}
}

func TestFileF16ToF32KeepsValues(t *testing.T) {
	wantType := func(*gguf.TensorInfo) gguf.Type { return gguf.TypeF32 }
	exact := func(gguf.Type) float64 { return 0 }
	convertAndCheck(t, testutil.BundledModel(t), gguf.TypeF32, wantType, exact)
}

func TestFileErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		in   string
		typ  gguf.Type
		want string
	}{
		{"missing input", filepath.Join(dir, "nope.gguf"), gguf.TypeQ8_0, "no such file"},
		{"not a file type", testutil.BundledModel(t), gguf.TypeQ8_K, "not a model file type"},
		{"IQ type", testutil.BundledModel(t), gguf.TypeIQ2_XXS, "not a model file type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := quantize.File(tt.in, filepath.Join(dir, "out.gguf"), tt.typ, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("File() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
