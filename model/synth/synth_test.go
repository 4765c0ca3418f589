package synth_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model/synth"
)

// tinySpec is the tiny preset with the given arch and type and a 512-token
// vocabulary without a tokenizer.
func tinySpec(t *testing.T, arch string, typ gguf.Type) synth.Spec {
	t.Helper()
	s, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	s.Arch, s.Type, s.Vocab = arch, typ, 512
	return s
}

func writeSpec(t *testing.T, s synth.Spec) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%s.gguf", s.Arch, s.Type))
	if err := synth.Write(path, s, nil); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return path
}

func TestPresets(t *testing.T) {
	tests := []struct {
		name                             string
		dim, layers, heads, kvHeads, ffn int
	}{
		{"tiny", 256, 2, 8, 4, 512},
		{"1b", 2048, 16, 32, 8, 8192},
		{"8b", 4096, 32, 32, 8, 14336},
	}
	for _, tt := range tests {
		s, err := synth.Preset(tt.name)
		if err != nil {
			t.Fatalf("Preset(%q): %v", tt.name, err)
		}
		got := [5]int{s.Dim, s.Layers, s.Heads, s.KVHeads, s.FFN}
		want := [5]int{tt.dim, tt.layers, tt.heads, tt.kvHeads, tt.ffn}
		if got != want {
			t.Errorf("Preset(%q) = %v, want %v", tt.name, got, want)
		}
	}
	if _, err := synth.Preset("70b"); !errors.Is(err, synth.ErrInvalidSpec) {
		t.Errorf("Preset(70b) error = %v, want ErrInvalidSpec", err)
	}
	// 8b with a 4096-token vocabulary: 32 blocks of 4096² (q, o) + 2·4096·1024
	// (k, v) + 3·4096·14336 (ffn) + 2 norms, plus 2·4096·4096 + 4096.
	s, _ := synth.Preset("8b")
	s.Vocab = 4096
	block := int64(2*4096*4096 + 2*4096*1024 + 3*4096*14336 + 2*4096)
	if got, want := s.Params(), 32*block+2*4096*4096+4096; got != want {
		t.Errorf("8b Params() = %d, want %d", got, want)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*synth.Spec)
	}{
		{"unknown arch", func(s *synth.Spec) { s.Arch = "gpt2" }},
		{"zero layers", func(s *synth.Spec) { s.Layers = 0 }},
		{"negative ffn", func(s *synth.Spec) { s.FFN = -1 }},
		{"dim not multiple of heads", func(s *synth.Spec) { s.Heads = 7 }},
		{"heads not multiple of kv heads", func(s *synth.Spec) { s.KVHeads = 3 }},
		{"odd head dim", func(s *synth.Spec) { s.Dim, s.Heads, s.KVHeads, s.Type = 24, 8, 8, gguf.TypeF32 }},
		{"dim not a multiple of the q4_k block", func(s *synth.Spec) { s.Dim, s.Type = 128, gguf.TypeQ4_K }},
		{"ffn not a multiple of the q8_0 block", func(s *synth.Spec) { s.FFN, s.Type = 100, gguf.TypeQ8_0 }},
		{"type that is no file type", func(s *synth.Spec) { s.Type = gguf.TypeQ8_K }},
		{"unsupported type", func(s *synth.Spec) { s.Type = gguf.TypeIQ2_XS }},
		{"no vocabulary", func(s *synth.Spec) { s.Vocab = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tinySpec(t, "llama", gguf.TypeF16)
			if err := s.Validate(); err != nil {
				t.Fatalf("unmodified spec: %v", err)
			}
			tt.modify(&s)
			if err := s.Validate(); !errors.Is(err, synth.ErrInvalidSpec) {
				t.Fatalf("Validate() = %v, want ErrInvalidSpec", err)
			}
			if err := synth.Write(filepath.Join(t.TempDir(), "x.gguf"), s, nil); err == nil {
				t.Fatal("Write accepted an invalid spec")
			}
		})
	}
}

// wantTensors lists the expected tensor names, shapes (ggml order) and
// whether each is a matrix, for the tiny preset with a 512 vocabulary.
func wantTensors(arch string) []struct {
	name   string
	shape  []uint64
	matrix bool
} {
	type tt = struct {
		name   string
		shape  []uint64
		matrix bool
	}
	out := []tt{{"token_embd.weight", []uint64{256, 512}, true}}
	for i := 0; i < 2; i++ {
		p := fmt.Sprintf("blk.%d.", i)
		out = append(out,
			tt{p + "attn_norm.weight", []uint64{256}, false},
			tt{p + "attn_q.weight", []uint64{256, 256}, true},
			tt{p + "attn_k.weight", []uint64{256, 128}, true},
			tt{p + "attn_v.weight", []uint64{256, 128}, true},
		)
		if arch == "qwen2" {
			out = append(out,
				tt{p + "attn_q.bias", []uint64{256}, false},
				tt{p + "attn_k.bias", []uint64{128}, false},
				tt{p + "attn_v.bias", []uint64{128}, false},
			)
		}
		out = append(out,
			tt{p + "attn_output.weight", []uint64{256, 256}, true},
			tt{p + "ffn_norm.weight", []uint64{256}, false},
			tt{p + "ffn_gate.weight", []uint64{256, 512}, true},
			tt{p + "ffn_up.weight", []uint64{256, 512}, true},
			tt{p + "ffn_down.weight", []uint64{512, 256}, true},
		)
	}
	return append(out, tt{"output_norm.weight", []uint64{256}, false}, tt{"output.weight", []uint64{256, 512}, true})
}

func TestWriteLayoutAndMetadata(t *testing.T) {
	tests := []struct {
		arch     string
		typ      gguf.Type
		ftype    uint64
		eps      float64
		ropeBase float64
	}{
		{"llama", gguf.TypeF32, 0, 1e-5, 10000},
		{"llama", gguf.TypeF16, 1, 1e-5, 10000},
		{"llama", gguf.TypeQ4_K, 14, 1e-5, 10000},
		{"qwen2", gguf.TypeQ8_0, 7, 1e-6, 1000000},
		{"qwen2", gguf.TypeBF16, 32, 1e-6, 1000000},
		{"qwen2", gguf.TypeQ6_K, 18, 1e-6, 1000000},
	}
	for _, tt := range tests {
		t.Run(tt.arch+"/"+tt.typ.String(), func(t *testing.T) {
			f, err := gguf.Open(writeSpec(t, tinySpec(t, tt.arch, tt.typ)))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()

			want := wantTensors(tt.arch)
			if len(f.Tensors) != len(want) {
				t.Fatalf("%d tensors, want %d", len(f.Tensors), len(want))
			}
			for i, w := range want {
				got := f.Tensors[i]
				wantType := gguf.TypeF32
				if w.matrix {
					wantType = tt.typ
				}
				if got.Name != w.name || !slices.Equal(got.Shape, w.shape) || got.Type != wantType {
					t.Errorf("tensor %d = %s %v %s, want %s %v %s", i, got.Name, got.Shape, got.Type, w.name, w.shape, wantType)
				}
			}

			md := f.Metadata
			uints := map[string]uint64{
				"general.file_type": tt.ftype, "general.alignment": 32,
				tt.arch + ".block_count": 2, tt.arch + ".embedding_length": 256,
				tt.arch + ".feed_forward_length": 512, tt.arch + ".attention.head_count": 8,
				tt.arch + ".attention.head_count_kv": 4, tt.arch + ".rope.dimension_count": 32,
				tt.arch + ".context_length": 512, tt.arch + ".vocab_size": 512,
			}
			for k, want := range uints {
				if got, ok := md.Uint(k); !ok || got != want {
					t.Errorf("%s = %d (present %v), want %d", k, got, ok, want)
				}
			}
			if got, _ := md.String("general.architecture"); got != tt.arch {
				t.Errorf("general.architecture = %q, want %q", got, tt.arch)
			}
			if got, _ := md.Float(tt.arch + ".attention.layer_norm_rms_epsilon"); float32(got) != float32(tt.eps) {
				t.Errorf("rms eps = %g, want %g", got, tt.eps)
			}
			if got, _ := md.Float(tt.arch + ".rope.freq_base"); got != tt.ropeBase {
				t.Errorf("rope.freq_base = %g, want %g", got, tt.ropeBase)
			}
		})
	}
}

// stats returns the mean, standard deviation, minimum |x| and whether all
// values are finite.
func stats(x []float32) (mean, std, minAbs float64, finite bool) {
	finite = true
	minAbs = math.Inf(1)
	for _, v := range x {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			finite = false
		}
		mean += f
		minAbs = math.Min(minAbs, math.Abs(f))
	}
	mean /= float64(len(x))
	for _, v := range x {
		d := float64(v) - mean
		std += d * d
	}
	return mean, math.Sqrt(std / float64(len(x))), minAbs, finite
}

func TestWriteValues(t *testing.T) {
	for _, typ := range []gguf.Type{gguf.TypeF32, gguf.TypeF16, gguf.TypeBF16} {
		t.Run(typ.String(), func(t *testing.T) {
			f, err := gguf.Open(writeSpec(t, tinySpec(t, "qwen2", typ)))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			residual := 1 / math.Sqrt(2*2) // 2 layers
			for _, ti := range f.Tensors {
				vals, err := gguf.DequantizeTensor(f, ti)
				if err != nil {
					t.Fatal(err)
				}
				mean, std, minAbs, finite := stats(vals)
				if !finite || minAbs == 0 {
					t.Errorf("%s: finite %v, min |x| %g: want finite, never zero", ti.Name, finite, minAbs)
				}
				var wantMean, wantStd float64
				switch name := ti.Name; {
				case name == "token_embd.weight":
					wantStd = 1
				case name == "output.weight":
					wantStd = 2 / math.Sqrt(256)
				case filepath.Ext(name) == ".bias":
					wantStd = 0.1 / math.Sqrt(3)
				case len(ti.Shape) == 1: // norms: 1 ± 0.1
					wantMean, wantStd = 1, 0.1/math.Sqrt(3)
				case strings.Contains(name, "attn_output"), strings.Contains(name, "ffn_down"):
					wantStd = residual / math.Sqrt(float64(ti.Shape[0]))
				default:
					wantStd = 1 / math.Sqrt(float64(ti.Shape[0]))
				}
				// The sample std of n uniform values is within a few percent
				// for these sizes (n >= 128).
				if math.Abs(std-wantStd) > 0.15*wantStd || math.Abs(mean-wantMean) > 0.3*wantStd {
					t.Errorf("%s: mean %.4f std %.4f, want mean %.4f std %.4f", ti.Name, mean, std, wantMean, wantStd)
				}
			}
		})
	}
}

// TestQuantizedMatchesF32 checks that a quantised model holds the same
// values as the F32 model of the same seed, within the type's error.
func TestQuantizedMatchesF32(t *testing.T) {
	ref, err := gguf.Open(writeSpec(t, tinySpec(t, "llama", gguf.TypeF32)))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	tests := []struct {
		typ    gguf.Type
		maxErr float64 // relative RMS error of the matrices
	}{
		{gguf.TypeF16, 1e-3},
		{gguf.TypeQ8_0, 0.01},
		{gguf.TypeQ6_K, 0.03},
		{gguf.TypeQ4_K, 0.12},
		{gguf.TypeQ4_0, 0.15},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			f, err := gguf.Open(writeSpec(t, tinySpec(t, "llama", tt.typ)))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for i, ti := range f.Tensors {
				got, err := gguf.DequantizeTensor(f, ti)
				if err != nil {
					t.Fatal(err)
				}
				want, err := gguf.DequantizeTensor(ref, ref.Tensors[i])
				if err != nil {
					t.Fatal(err)
				}
				var diff, norm float64
				for j := range want {
					d := float64(got[j] - want[j])
					diff += d * d
					norm += float64(want[j]) * float64(want[j])
				}
				maxErr := tt.maxErr
				if ti.Type == gguf.TypeF32 {
					maxErr = 0 // norms are stored exactly
				}
				if rel := math.Sqrt(diff / norm); rel > maxErr {
					t.Errorf("%s: relative error %.4f, want <= %.4f", ti.Name, rel, maxErr)
				}
			}
		})
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestDeterministic(t *testing.T) {
	s := tinySpec(t, "qwen2", gguf.TypeQ4_K)
	first := fileHash(t, writeSpec(t, s))

	// The bytes do not depend on the number of goroutines.
	prev := runtime.GOMAXPROCS(1)
	single := fileHash(t, writeSpec(t, s))
	runtime.GOMAXPROCS(prev)
	if single != first {
		t.Error("GOMAXPROCS=1 wrote different bytes")
	}
	if again := fileHash(t, writeSpec(t, s)); again != first {
		t.Error("the same spec wrote different bytes")
	}
	s.Seed++
	if other := fileHash(t, writeSpec(t, s)); other == first {
		t.Error("another seed wrote the same bytes")
	}
}

func TestTokenizerCopied(t *testing.T) {
	src, err := gguf.Open(testutil.BundledModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	s := tinySpec(t, "llama", gguf.TypeQ8_0)
	s.Vocab = 0
	if s.Tokenizer, err = synth.TokenizerFrom(src.Path); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(writeSpec(t, s))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	n := 0
	for _, kv := range src.Metadata.KVs {
		if !strings.HasPrefix(kv.Key, "tokenizer.") {
			continue
		}
		n++
		got, ok := f.Metadata.Get(kv.Key)
		if !ok || got.Type != kv.Type || fmt.Sprint(got.Value) != fmt.Sprint(kv.Value) {
			t.Errorf("%s not copied unchanged", kv.Key)
		}
	}
	if n < 3 {
		t.Fatalf("bundled model has only %d tokenizer keys", n)
	}
	tokens, _ := src.Metadata.Strings("tokenizer.ggml.tokens")
	emb, _ := f.Tensor("token_embd.weight")
	if v, _ := f.Metadata.Uint("llama.vocab_size"); int(v) != len(tokens) || int(emb.Shape[1]) != len(tokens) {
		t.Errorf("vocab_size %d, embedding rows %d, want %d", v, emb.Shape[1], len(tokens))
	}
	s.Vocab = len(tokens) + 1
	if err := s.Validate(); !errors.Is(err, synth.ErrInvalidSpec) {
		t.Errorf("a Vocab disagreeing with the tokenizer: %v, want ErrInvalidSpec", err)
	}
}

func TestWriteProgress(t *testing.T) {
	s := tinySpec(t, "llama", gguf.TypeQ8_0)
	var calls int
	var last, total int64
	err := synth.Write(filepath.Join(t.TempDir(), "p.gguf"), s, func(done, tot int64) {
		if done < last || done > tot {
			t.Errorf("progress %d/%d after %d", done, tot, last)
		}
		calls++
		last, total = done, tot
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 21 || last != total {
		t.Errorf("%d calls ending at %d/%d, want 21 ending at the total", calls, last, total)
	}
}
