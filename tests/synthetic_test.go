package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/synth"
)

// TestSyntheticModelsAgainstPyTorch: synthetic llama and qwen2 models in
// F32, F16, Q8_0 and Q4_K, written by our generator (tiny preset, seed 7,
// stories260K's tokenizer) exactly as `pipeline gen-model` wrote the files
// that scripts/reference/forward.py read on the GPU machine. The file's
// sha256 must match the one the reference recorded, so the comparison is
// of the same weights.
//
// Tolerances, relative to the largest |logit| at a position: F32/F16 are
// float32 rounding only. Q8_0/Q4_K are further off because we quantise the
// activations to 8 bits (Q8_0 or Q8_K blocks) as llama.cpp's CPU backend
// does, while the reference multiplies the dequantised weights with float32
// activations.
func TestSyntheticModelsAgainstPyTorch(t *testing.T) {
	vocab, err := synth.TokenizerFrom(testutil.Testdata(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		typ    gguf.Type
		relTol float64
	}{
		{gguf.TypeF32, 1e-4},
		{gguf.TypeF16, 1e-4},
		{gguf.TypeQ8_0, 2e-2},
		{gguf.TypeQ4_K, 2e-2},
	}
	for _, arch := range []string{"llama", "qwen2"} {
		for _, c := range cases {
			name := arch + "-" + lower(c.typ.String())
			t.Run(name, func(t *testing.T) {
				spec, err := synth.Preset("tiny")
				if err != nil {
					t.Fatal(err)
				}
				spec.Arch, spec.Type, spec.Seed, spec.Tokenizer = arch, c.typ, 7, vocab
				path := filepath.Join(t.TempDir(), name+".gguf")
				if err := synth.Write(path, spec, nil); err != nil {
					t.Fatal(err)
				}
				ref := loadReference(t, "synth-"+name+".json")
				if sum := fileSHA256(t, path); sum != ref.SHA256 {
					t.Fatalf("generated model sha256 %s, the reference was computed on %s: the generator changed; regenerate testdata/reference/synth-*.json (see its README)", sum, ref.SHA256)
				}
				m, err := model.Open(path, model.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				worst := compareWithReference(t, m, ref, c.relTol)
				t.Logf("%s: max relative logit error %.3g", name, worst)
			})
		}
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
