package sample

import (
	"math/rand/v2"
	"testing"
)

// TestSampleTopMatchesSample draws the same sequence of tokens two ways
// with the same seed: Sample over the whole row, and SampleTop over the
// row's top candidates, falling back to Sample when it says so. The tokens
// must agree, and both ways must have been taken.
func TestSampleTopMatchesSample(t *testing.T) {
	const vocab, k, steps = 2000, 64, 250
	cases := []Params{
		{Temperature: 0.8},
		{Temperature: 1, TopK: 40},
		{Temperature: 0.7, TopP: 0.9},
		{Temperature: 1.2, MinP: 0.05},
		{Temperature: 1, TopK: 100, TopP: 0.95},
		{Temperature: 0.5, TopK: 300},
		{Temperature: 1, TopP: 0.5, MinP: 0.1},
		{Temperature: 2, TopK: 64, MinP: 0.01},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rows := make([][]float32, steps)
	for i := range rows {
		rows[i] = make([]float32, vocab)
		spread := float32(1 + rng.IntN(6)) // from flat rows to peaked ones
		for j := range rows[i] {
			rows[i][j] = float32(rng.NormFloat64()) * spread
		}
		if i%7 == 0 { // ties at the top
			rows[i][5], rows[i][9] = 30, 30
		}
	}
	for _, p := range cases {
		p.Seed = 42
		whole, top := New(p), New(p)
		var viaTop, fallbacks int
		for i, row := range rows {
			want := whole.Sample(row)
			got, ok := top.SampleTop(TopOf(row, k, p.Temperature))
			if ok {
				viaTop++
			} else {
				fallbacks++
				got = top.Sample(row)
			}
			if got != want {
				t.Fatalf("%+v step %d: SampleTop path gave %d, Sample %d (ok %v)", p, i, got, want, ok)
			}
		}
		if p.TopK > 0 && p.TopK <= k && fallbacks != 0 {
			t.Errorf("%+v: %d fallbacks with top-k inside the candidates", p, fallbacks)
		}
		if p.TopK > k && p.TopP == 0 && p.MinP == 0 && viaTop != 0 {
			t.Errorf("%+v: %d tokens from too few candidates", p, viaTop)
		}
		t.Logf("%+v: %d via the candidates, %d fell back", p, viaTop, fallbacks)
	}
}

// TestSampleTopRefuses: greedy and penalised samplers need more than the
// candidates, and a malformed Top is refused rather than read.
func TestSampleTopRefuses(t *testing.T) {
	row := []float32{1, 2, 3, 4}
	for _, p := range []Params{{}, {Temperature: 1, RepeatPenalty: 1.1}, {Temperature: 1, PresencePenalty: 0.5}} {
		if _, ok := New(p).SampleTop(TopOf(row, 4, p.Temperature)); ok {
			t.Errorf("%+v: SampleTop served it", p)
		}
	}
	bad := TopOf(row, 2, 1)
	bad.Logits = bad.Logits[:1]
	if _, ok := New(Params{Temperature: 1}).SampleTop(bad); ok {
		t.Error("SampleTop read a Top whose ids and logits differ in length")
	}
	// Every token a candidate: served whatever the filters.
	if id, ok := New(Params{Temperature: 1, Seed: 3}).SampleTop(TopOf(row, 8, 1)); !ok || id < 0 || id > 3 {
		t.Errorf("whole row as candidates: %d, %v", id, ok)
	}
}
