package sample

import (
	"errors"
	"math"
	"testing"
)

func TestGreedyPicksMaxLowestOnTie(t *testing.T) {
	cases := []struct {
		logits []float32
		want   int32
	}{
		{[]float32{0.1, 3, -2, 2.9}, 1},
		{[]float32{5, 5, 1}, 0},
		{[]float32{-3, -1, -2}, 1},
	}
	for _, c := range cases {
		if got := New(Params{}).Sample(c.logits); got != c.want {
			t.Errorf("Sample(%v) = %d, want %d", c.logits, got, c.want)
		}
		if got := Greedy(c.logits); got != c.want {
			t.Errorf("Greedy(%v) = %d, want %d", c.logits, got, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	nan := float32(math.NaN())
	bad := []Params{
		{Temperature: -0.1}, {Temperature: nan}, {Temperature: float32(math.Inf(1))},
		{TopK: -1}, {TopP: 1.5}, {TopP: -0.1}, {TopP: nan}, {MinP: 2}, {MinP: nan},
		{RepeatPenalty: -1}, {RepeatPenalty: nan}, {RepeatLastN: -3}, {FrequencyPenalty: nan},
	}
	for _, p := range bad {
		if err := p.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid", p, err)
		}
	}
	good := []Params{{}, {Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1, Seed: 7}}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", p, err)
		}
	}
}

// TestDistributionMatchesSoftmax draws many samples at temperature 1 and
// compares the frequencies with the softmax probabilities.
func TestDistributionMatchesSoftmax(t *testing.T) {
	logits := []float32{1, 2, 0.5, -1}
	s := New(Params{Temperature: 1, Seed: 42})
	counts := make([]int, len(logits))
	const draws = 200000
	for i := 0; i < draws; i++ {
		counts[s.Sample(logits)]++
	}
	var z float64
	for _, l := range logits {
		z += math.Exp(float64(l))
	}
	for i, l := range logits {
		p := math.Exp(float64(l)) / z
		got := float64(counts[i]) / draws
		if math.Abs(got-p) > 0.005 {
			t.Errorf("token %d: frequency %.4f, want %.4f", i, got, p)
		}
	}
}

func TestFiltersRestrictSupport(t *testing.T) {
	logits := []float32{4, 3.9, 1, 0, -1, -2}
	cases := []struct {
		name    string
		p       Params
		allowed map[int32]bool
	}{
		{"top-k 2", Params{Temperature: 5, TopK: 2}, map[int32]bool{0: true, 1: true}},
		{"top-p 0.5", Params{Temperature: 5, TopP: 0.5}, map[int32]bool{0: true}},
		{"min-p 0.5", Params{Temperature: 5, MinP: 0.5}, map[int32]bool{0: true, 1: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.p.Seed = 1
			s := New(c.p)
			seen := map[int32]bool{}
			for i := 0; i < 2000; i++ {
				id := s.Sample(logits)
				if !c.allowed[id] {
					t.Fatalf("sampled %d, outside %v", id, c.allowed)
				}
				seen[id] = true
			}
			if len(seen) != len(c.allowed) {
				t.Errorf("saw %v, want every one of %v", seen, c.allowed)
			}
		})
	}
}

func TestSeedReproducible(t *testing.T) {
	logits := []float32{0.3, 0.1, 0.2, 0.25, 0.15}
	run := func(seed uint64) []int32 {
		s := New(Params{Temperature: 1, Seed: seed})
		var out []int32
		for i := 0; i < 50; i++ {
			out = append(out, s.Sample(logits))
		}
		return out
	}
	a, b, c := run(3), run(3), run(4)
	same := func(x, y []int32) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Error("same seed gave different draws")
	}
	if same(a, c) {
		t.Error("different seeds gave identical draws")
	}
}

func TestRepeatPenalty(t *testing.T) {
	// Token 0 leads; once it is in the window, a strong penalty makes 1 win.
	logits := []float32{2, 1.5, -1}
	s := New(Params{RepeatPenalty: 2})
	if got := s.Sample(logits); got != 0 {
		t.Fatalf("before any history: got %d, want 0", got)
	}
	s.Accept(0)
	if got := s.Sample(logits); got != 1 {
		t.Fatalf("with 0 penalised (2/2=1 < 1.5): got %d, want 1", got)
	}
	// A negative logit is multiplied, so it falls further.
	s2 := New(Params{RepeatPenalty: 2})
	s2.Accept(2)
	neg := []float32{-1.5, -1.6, -1}
	if got := s2.Sample(neg); got != 0 {
		t.Fatalf("penalised negative logit: got %d, want 0", got)
	}
	if logits[0] != 2 || neg[2] != -1 {
		t.Fatal("Sample modified its input")
	}
}
