package synth_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/synth"
)

// TestForwardStaysFinite loads deep synthetic models into the engine and
// checks that the logits are finite, neither vanishing nor exploding, and
// depend on the input tokens.
func TestForwardStaysFinite(t *testing.T) {
	tok, err := synth.TokenizerFrom(testutil.BundledModel(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, arch := range synth.Architectures {
		t.Run(arch, func(t *testing.T) {
			s := synth.Spec{
				Arch: arch, Dim: 128, Layers: 32, Heads: 4, KVHeads: 2, FFN: 256, Context: 64,
				Type: gguf.TypeQ8_0, Seed: 5, Tokenizer: tok,
			}
			path := filepath.Join(t.TempDir(), arch+".gguf")
			if err := synth.Write(path, s, nil); err != nil {
				t.Fatal(err)
			}
			m, err := model.Open(path, model.Options{NoPrefault: true})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()

			ids := []int32{0, 17, 900, 4000, 33, 2500, 1, 77, 77, 77, 3000, 12, 640, 2, 9, 4095}
			logits, err := m.Forward(m.NewState(), ids, true)
			if err != nil {
				t.Fatal(err)
			}
			vocab := s.VocabSize()
			for p := range ids {
				row := logits[p*vocab : (p+1)*vocab]
				mean, std, _, finite := stats(row)
				maxAbs := 0.0
				for _, v := range row {
					maxAbs = math.Max(maxAbs, math.Abs(float64(v)))
				}
				// The output projection is scaled for logits of std about 2.
				if !finite || std < 0.5 || std > 8 || maxAbs > 60 || math.Abs(mean) > std {
					t.Errorf("position %d: finite %v, mean %.3f, std %.3f, max |logit| %.2f", p, finite, mean, std, maxAbs)
				}
			}
			_, std0, _, _ := stats(logits[:vocab])
			_, stdN, _, _ := stats(logits[(len(ids)-1)*vocab:])
			corr := correlation(logits[:vocab], logits[vocab:2*vocab])
			t.Logf("logit std: first position %.2f, last %.2f; correlation of positions 0 and 1: %.3f", std0, stdN, corr)
			if corr > 0.99 {
				t.Errorf("logits of different tokens correlate %.4f: the input is washed out", corr)
			}
		})
	}
}

func correlation(a, b []float32) float64 {
	ma, sa, _, _ := stats(a)
	mb, sb, _, _ := stats(b)
	var c float64
	for i := range a {
		c += (float64(a[i]) - ma) * (float64(b[i]) - mb)
	}
	return c / float64(len(a)) / (sa * sb)
}
