// Package sample turns a vector of logits into the next token: greedy,
// temperature, top-k, top-p, min-p and repetition penalties, with a seeded
// random source so a run is reproducible.
//
// The chain follows llama.cpp's default order: penalties, top-k, top-p,
// min-p, temperature, then a draw from the remaining distribution.
package sample

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
)

// Params are one sequence's sampling parameters. The zero value is greedy
// decoding with no penalties; each filter is off at its zero value.
type Params struct {
	Temperature      float32 // <= 0: greedy (argmax)
	TopK             int     // 0: off
	TopP             float32 // 0 or 1: off; else keep the smallest set with probability mass >= TopP
	MinP             float32 // 0: off; else drop tokens with p < MinP * p(max)
	RepeatPenalty    float32 // 0 or 1: off; >1 penalises tokens in the last RepeatLastN
	RepeatLastN      int     // window for the penalties; 0 means 64
	FrequencyPenalty float32 // subtracted once per occurrence in the window
	PresencePenalty  float32 // subtracted once if present in the window
	Seed             uint64
}

// ErrInvalid is wrapped by every parameter validation error.
var ErrInvalid = errors.New("invalid sampling parameter")

// Validate reports the first parameter out of range.
func (p Params) Validate() error {
	bad := func(name string, v any, want string) error {
		return fmt.Errorf("%w: %s = %v, want %s", ErrInvalid, name, v, want)
	}
	switch {
	case isBad(p.Temperature) || p.Temperature < 0:
		return bad("temperature", p.Temperature, "a finite value >= 0")
	case p.TopK < 0:
		return bad("top_k", p.TopK, ">= 0")
	case isBad(p.TopP) || p.TopP < 0 || p.TopP > 1:
		return bad("top_p", p.TopP, "in [0, 1]")
	case isBad(p.MinP) || p.MinP < 0 || p.MinP > 1:
		return bad("min_p", p.MinP, "in [0, 1]")
	case isBad(p.RepeatPenalty) || p.RepeatPenalty < 0:
		return bad("repeat_penalty", p.RepeatPenalty, "a finite value >= 0")
	case p.RepeatLastN < 0:
		return bad("repeat_last_n", p.RepeatLastN, ">= 0")
	case isBad(p.FrequencyPenalty) || isBad(p.PresencePenalty):
		return bad("frequency/presence penalty", [2]float32{p.FrequencyPenalty, p.PresencePenalty}, "finite values")
	}
	return nil
}

func isBad(f float32) bool { return math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) }

// Sampler draws tokens for one sequence. Not safe for concurrent use.
type Sampler struct {
	p       Params
	rng     *rand.Rand
	history []int32
	cands   []candidate
	// drawn is a draw SampleTop made but could not place among its
	// candidates: the next Sample uses it instead of drawing again, so the
	// sequence of draws is the same whichever way a token was sampled.
	drawn    float32
	hasDrawn bool
	// wholeSort makes Sample sort the whole row even under top-k (tests
	// compare selectTop's path with it).
	wholeSort bool
}

type candidate struct {
	id    int32
	logit float32
	p     float32
}

// New returns a sampler for p (which must be valid).
func New(p Params) *Sampler {
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15))}
}

// Accept records a token in the penalty window (prompt tokens too).
func (s *Sampler) Accept(id int32) { s.history = append(s.history, id) }

// Greedy returns the index of the largest logit (the lowest index on ties).
func Greedy(logits []float32) int32 {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return int32(best)
}

// Sample picks the next token from logits. logits is not modified.
func (s *Sampler) Sample(logits []float32) int32 {
	penalised := s.p.penalties()
	if s.p.Temperature <= 0 && !penalised {
		return Greedy(logits)
	}
	c := s.cands[:0]
	for i, l := range logits {
		c = append(c, candidate{id: int32(i), logit: l})
	}
	s.cands = c
	if penalised {
		s.applyPenalties(c)
	}
	if s.p.Temperature <= 0 {
		best := 0
		for i := range c {
			if c[i].logit > c[best].logit {
				best = i
			}
		}
		return c[best].id
	}
	switch k := s.p.TopK; {
	case s.wholeSort:
		slices.SortStableFunc(c, byLogit)
	case k > 0 && k < len(c):
		if !selectTop(c, k) {
			slices.SortStableFunc(c, byLogit)
			break
		}
		c = c[:k] // the head a stable sort would give: the same token
	default:
		id, ok, permuted := s.sampleHead(c)
		if ok {
			return id
		}
		if permuted { // no NaN: the total order is the stable sort's
			slices.SortFunc(c, byLogitID)
		} else {
			slices.SortStableFunc(c, byLogit)
		}
	}
	id, _ := s.choose(c, nil) // the whole row (or its top k): always chosen
	return id
}

// sampleHead is Sample without top-k on a long row: the row's sums in one
// pass, its best sampleHeadLen candidates selected (selectTop), and the
// draw made among them as SampleTop makes it from the device's; ok is
// false when the filters or the draw need tokens past them (the draw is
// then kept for the whole row's). The probabilities are the whole row's
// (its sums are made in row order rather than sorted order: SampleTop's
// agreement with Sample rests on the same rounding). permuted says
// whether c was reordered. Rows with a NaN, and short rows, are left to
// the sort.
func (s *Sampler) sampleHead(c []candidate) (id int32, ok, permuted bool) {
	if len(c) < 4*sampleHeadLen {
		return 0, false, false
	}
	t := Top{Max: c[0].logit, Vocab: len(c)}
	for _, x := range c {
		t.Max = max(t.Max, x.logit) // NaN with a NaN: selectTop then refuses the row
	}
	for _, x := range c {
		e := math.Exp(float64(x.logit - t.Max))
		t.Sum1 += e
		if s.p.Temperature != 1 {
			e = math.Exp(float64((x.logit - t.Max) / s.p.Temperature))
		}
		t.SumT += e
	}
	if !selectTop(c, sampleHeadLen) {
		return 0, false, false
	}
	id, ok = s.choose(c[:sampleHeadLen], &t)
	return id, ok, true
}

// sampleHeadLen is how many candidates sampleHead draws among: the
// device's (gpu.TopKMax).
const sampleHeadLen = 256

// byLogitID is the stable sort's order as a total order (before).
func byLogitID(a, b candidate) int {
	if before(a, b) {
		return -1
	}
	if before(b, a) {
		return 1
	}
	return 0
}

// byLogit orders candidates by descending logit, as Sample's stable sort
// (which keeps equal logits in id order).
func byLogit(a, b candidate) int {
	switch {
	case a.logit > b.logit:
		return -1
	case a.logit < b.logit:
		return 1
	}
	return 0
}

// before is the total order of a stable sort by descending logit: ties go
// to the lower id. It needs logits that are not NaN.
func before(a, b candidate) bool {
	return a.logit > b.logit || (a.logit == b.logit && a.id < b.id)
}

// selectTop moves the k candidates a stable sort by descending logit
// would put first into c[:k], in that order, in O(n log k) rather than
// sorting the row (Llama 3's 128,256 logits for top-k 40: see
// BenchmarkSample). It reports false, leaving c unsorted, when a logit is
// NaN: there is no total order then, and Sample sorts the row as before.
func selectTop(c []candidate, k int) bool {
	for _, x := range c {
		if x.logit != x.logit {
			return false
		}
	}
	h := c[:k] // a heap whose root is the worst of the best k so far
	for i := k/2 - 1; i >= 0; i-- {
		siftWorst(h, i)
	}
	for i := k; i < len(c); i++ {
		if before(c[i], h[0]) {
			h[0], c[i] = c[i], h[0]
			siftWorst(h, 0)
		}
	}
	slices.SortFunc(h, byLogitID)
	return true
}

// siftWorst restores the heap property below i: every node comes after
// (is worse than) neither of its children.
func siftWorst(h []candidate, i int) {
	for {
		w, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && before(h[w], h[l]) {
			w = l
		}
		if r < len(h) && before(h[w], h[r]) {
			w = r
		}
		if w == i {
			return
		}
		h[i], h[w] = h[w], h[i]
		i = w
	}
}

// choose runs the filters (top-k, top-p, min-p, temperature) over c,
// sorted by descending logit, and draws. c is the whole row when t is nil;
// otherwise t describes the row and c may be its head only, whose
// probabilities then come from t's sums over the whole row, and choose
// returns false when the filters or the draw need tokens past c (a draw
// landing past c is kept for the next Sample).
func (s *Sampler) choose(c []candidate, t *Top) (int32, bool) {
	vocab := len(c)
	if t != nil {
		vocab = t.Vocab
	}
	whole := len(c) < vocab // c stands for the whole row, of which it holds the head
	if k := s.p.TopK; k > 0 && k < vocab {
		if k > len(c) {
			return 0, false
		}
		c, whole = c[:k], false
	}
	if whole {
		rowProbs(c, t.Max, 1, t.Sum1)
	} else {
		softmax(c, 1)
	}
	if s.p.TopP > 0 && s.p.TopP < 1 {
		cum, cut := float32(0), false
		for i := range c {
			cum += c[i].p
			if cum >= s.p.TopP {
				c, cut = c[:i+1], true
				break
			}
		}
		if whole && !cut {
			return 0, false
		}
		whole = whole && !cut
	}
	if s.p.MinP > 0 {
		limit := c[0].p * s.p.MinP
		n := 1
		for n < len(c) && c[n].p >= limit {
			n++
		}
		if whole && n == len(c) {
			return 0, false // the next token past the candidates may pass too
		}
		c, whole = c[:n], false
	}
	if whole {
		rowProbs(c, t.Max, s.p.Temperature, t.SumT)
	} else {
		softmax(c, s.p.Temperature)
	}
	r := s.draw()
	if id, ok := pick(c, r); ok {
		return id, true
	}
	if whole {
		s.drawn, s.hasDrawn = r, true // in the tail: Sample places it
		return 0, false
	}
	return c[len(c)-1].id, true
}

// rowProbs sets p over the head c of a row at temperature temp, from the
// row's largest logit and its Σ exp((l - max)/temp), rounding as softmax.
func rowProbs(c []candidate, maxL, temp float32, sum float64) {
	for i := range c {
		c[i].p = float32(float64(float32(math.Exp(float64((c[i].logit-maxL)/temp)))) / sum)
	}
}

// pick returns the first candidate whose cumulative probability passes
// the draw r; false when rounding leaves r past them all.
func pick(c []candidate, r float32) (int32, bool) {
	cum := float32(0)
	for i := range c {
		cum += c[i].p
		if r < cum {
			return c[i].id, true
		}
	}
	return 0, false
}

// draw is the next uniform draw: the one SampleTop left, or a new one.
func (s *Sampler) draw() float32 {
	if s.hasDrawn {
		s.hasDrawn = false
		return s.drawn
	}
	return s.rng.Float32()
}

func (p Params) penalties() bool {
	return (p.RepeatPenalty != 0 && p.RepeatPenalty != 1) || p.FrequencyPenalty != 0 || p.PresencePenalty != 0
}

// applyPenalties follows llama.cpp: a positive logit is divided by the
// repeat penalty, a negative one multiplied; then frequency and presence.
func (s *Sampler) applyPenalties(c []candidate) {
	n := s.p.RepeatLastN
	if n == 0 {
		n = 64
	}
	window := s.history
	if len(window) > n {
		window = window[len(window)-n:]
	}
	counts := make(map[int32]int, len(window))
	for _, id := range window {
		counts[id]++
	}
	for id, k := range counts {
		if id < 0 || int(id) >= len(c) {
			continue
		}
		l := c[id].logit
		if rp := s.p.RepeatPenalty; rp != 0 && rp != 1 {
			if l <= 0 {
				l *= rp
			} else {
				l /= rp
			}
		}
		l -= float32(k)*s.p.FrequencyPenalty + s.p.PresencePenalty
		c[id].logit = l
	}
}

// softmax sets p over c (sorted or not) at temperature t.
func softmax(c []candidate, t float32) {
	maxL := c[0].logit
	for _, x := range c {
		maxL = max(maxL, x.logit)
	}
	sum := float64(0)
	for i := range c {
		e := math.Exp(float64((c[i].logit - maxL) / t))
		c[i].p = float32(e)
		sum += e
	}
	for i := range c {
		c[i].p = float32(float64(c[i].p) / sum)
	}
}

// IsGreedy reports whether Sample is plain argmax for these parameters
// (no temperature, no penalties): the GPU backend then picks the token on
// the device and copies back only its id.
func (s *Sampler) IsGreedy() bool { return s.p.Temperature <= 0 && !s.p.penalties() }

// Top is a row of logits reduced to its most likely tokens and the
// normalisers of its softmax, as a GPU computes them (kernels/gpu TopK), so
// that only a few hundred bytes come back per token.
type Top struct {
	IDs    []int32   // the largest logits' tokens, by descending logit, ties by lower id
	Logits []float32 // their logits
	Max    float32   // the row's largest logit
	Sum1   float64   // Σ exp(l - Max) over the whole row
	SumT   float64   // Σ exp((l - Max) / Temperature) over the whole row
	Vocab  int       // the row's length
}

// TopOK reports whether SampleTop can serve these parameters at all: a
// temperature draw without penalties (whose window may reach tokens
// outside the candidates). Greedy sequences need only the argmax.
func (s *Sampler) TopOK() bool { return s.p.Temperature > 0 && !s.p.penalties() }

// Temperature is the sampler's temperature (SumT's).
func (s *Sampler) Temperature() float32 { return s.p.Temperature }

// SampleTop is Sample for a row known only by its top candidates. It
// returns false when the draw needs tokens past them: top-k wider than
// the candidates with no top-p or min-p cut inside them, or a draw that
// lands in the tail. Then the caller calls Sample with the row's logits,
// which takes the same draw (a draw made here is kept for it), so the
// tokens are those Sample alone gives, but for rounding: over the whole
// row the probabilities come from Sum1 and SumT, summed on the device in
// another order than the host's.
func (s *Sampler) SampleTop(t *Top) (int32, bool) {
	if !s.TopOK() || len(t.IDs) == 0 || len(t.IDs) != len(t.Logits) {
		return 0, false
	}
	c := s.cands[:0]
	for i, id := range t.IDs {
		c = append(c, candidate{id: id, logit: t.Logits[i]})
	}
	s.cands = c
	return s.choose(c, t)
}

// TopOf is Top computed on the host from a whole row: the reference for
// the device's, and the way to feed SampleTop from full logits.
func TopOf(logits []float32, k int, temperature float32) *Top {
	ids := make([]int32, len(logits))
	for i := range ids {
		ids[i] = int32(i)
	}
	sort.SliceStable(ids, func(i, j int) bool { return logits[ids[i]] > logits[ids[j]] })
	ids = ids[:min(k, len(ids))]
	t := &Top{IDs: ids, Logits: make([]float32, len(ids)), Vocab: len(logits)}
	for i, id := range ids {
		t.Logits[i] = logits[id]
	}
	if len(ids) == 0 {
		return t
	}
	t.Max = t.Logits[0]
	for _, l := range logits {
		t.Sum1 += math.Exp(float64(l - t.Max))
		if temperature > 0 {
			t.SumT += math.Exp(float64((l - t.Max) / temperature))
		}
	}
	return t
}
