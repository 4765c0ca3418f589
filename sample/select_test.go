package sample

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSelectTopMatchesSort: under top-k, Sample's selection of the best k
// draws the same tokens as sorting the whole row, on rows with many ties
// (logits rounded to a coarse grid), with -Inf, with penalties, and with
// top-p and min-p after the cut; a row with a NaN takes the sort.
func TestSelectTopMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	row := func(n int, grid float32) []float32 {
		l := make([]float32, n)
		for i := range l {
			v := float32(rng.NormFloat64() * 3)
			if grid > 0 {
				v = float32(math.Round(float64(v/grid))) * grid
			}
			l[i] = v
		}
		if n > 10 {
			l[rng.IntN(n)] = float32(math.Inf(-1))
		}
		return l
	}
	params := []Params{
		{Temperature: 0.8, TopK: 1, TopP: 1},
		{Temperature: 0.8, TopK: 5, TopP: 1},
		{Temperature: 1.2, TopK: 40, TopP: 0.95, MinP: 0.05},
		{Temperature: 0.7, TopK: 40, TopP: 0.5, RepeatPenalty: 1.3},
		{Temperature: 2, TopK: 999, TopP: 1},
		// No top-k: sampleHead on rows of 3,000 (the draw past the head
		// falls back to the sort).
		{Temperature: 0.8, TopP: 1},
		{Temperature: 1, TopP: 0.9},
		{Temperature: 0.5, TopP: 0.95, MinP: 0.05},
		{Temperature: 3, TopP: 1, PresencePenalty: 0.5},
	}
	n := 0
	for _, p := range params {
		for _, grid := range []float32{0, 0.5, 2} {
			fast, ref := New(p), New(p)
			fast.p.Seed, ref.p.Seed = 7, 7
			fast.rng, ref.rng = rand.New(rand.NewPCG(7, 7)), rand.New(rand.NewPCG(7, 7))
			ref.wholeSort = true
			for i := range 200 {
				l := row(1000+i%7, grid)
				if p.TopK == 0 {
					l = row(3000+i%7, grid)
				}
				a, b := fast.Sample(append([]float32(nil), l...)), ref.Sample(append([]float32(nil), l...))
				if a != b {
					t.Fatalf("%+v grid %v row %d: selectTop drew %d, the sort %d", p, grid, i, a, b)
				}
				fast.Accept(a)
				ref.Accept(b)
				n++
			}
		}
	}
	// Exact heads against the sort, including k = the whole row but one.
	for _, k := range []int{1, 2, 17, 999} {
		l := row(1000, 1)
		c, want := cands(l), cands(l)
		if !selectTop(c, k) {
			t.Fatal("selectTop refused a row without NaN")
		}
		sortStable(want)
		for i := range k {
			if c[i].id != want[i].id {
				t.Fatalf("k %d: head[%d] is %d, the sort's %d", k, i, c[i].id, want[i].id)
			}
		}
	}
	nan := row(100, 0)
	nan[50] = float32(math.NaN())
	if selectTop(cands(nan), 10) {
		t.Error("selectTop took a row with a NaN")
	}
	t.Logf("%d draws compared", n)
}

func cands(l []float32) []candidate {
	c := make([]candidate, len(l))
	for i, x := range l {
		c[i] = candidate{id: int32(i), logit: x}
	}
	return c
}

func sortStable(c []candidate) {
	for i := 1; i < len(c); i++ { // insertion sort: obviously stable
		for j := i; j > 0 && c[j].logit > c[j-1].logit; j-- {
			c[j], c[j-1] = c[j-1], c[j]
		}
	}
}

// BenchmarkSample: one draw from a Llama 3-sized row (128,256 logits
// drawn from N(0, σ²)), under top-k 40 (the CLI's default: selectTop),
// the same sorting the whole row, and without top-k (OpenAI's defaults,
// temperature 1, and top-p 0.95: sampleHead), on a flat row (σ 3: the
// best 256 hold about half the mass, so most draws fall back to the sort)
// and a peaked one (σ 6, as a trained model's usually are).
func BenchmarkSample(b *testing.B) {
	row := func(sigma float64) []float32 {
		rng := rand.New(rand.NewPCG(1, 2))
		l := make([]float32, 128256)
		for i := range l {
			l[i] = float32(rng.NormFloat64() * sigma)
		}
		return l
	}
	flat, peaked := row(3), row(6)
	for _, bc := range []struct {
		name string
		p    Params
		sort bool
		l    []float32
	}{
		{"topk40", Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05}, false, flat},
		{"topk40-sorted", Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05}, true, flat},
		{"t1-flat", Params{Temperature: 1, TopP: 1}, false, flat},
		{"t1-peaked", Params{Temperature: 1, TopP: 1}, false, peaked},
		{"t1-peaked-sorted", Params{Temperature: 1, TopP: 1}, true, peaked},
		{"topp-peaked", Params{Temperature: 1, TopP: 0.95}, false, peaked},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := New(bc.p)
			s.wholeSort = bc.sort
			for b.Loop() {
				s.Sample(bc.l)
			}
		})
	}
}
