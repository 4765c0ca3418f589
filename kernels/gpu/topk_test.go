package gpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"testing"

	"github.com/forgepipe/forgepipe/hip"
)

// Tests and benchmark of TopK (src/topk.cu) against a plain Go reference:
// a stable sort by descending logit and float64 sums.

// topKSumTolerance bounds the relative error of TopK's sums: float32
// terms and partial sums against float64 ones.
const topKSumTolerance = 1e-5

// topKRef is the reference result of one row: every id in stable
// descending order of logit (NaN as -Inf), each id's logit as TopK writes
// it, the row's max and its sums.
type topKRef struct {
	ids    []int32
	logits []float32
	max    float32
	s1, sT float64
}

// refTopK computes topKRef for the logits x of one row at inverse
// temperature invT (0: none).
func refTopK(x []float32, invT float32) topKRef {
	ref := topKRef{ids: make([]int32, len(x)), logits: make([]float32, len(x)), max: float32(math.Inf(-1))}
	for i, v := range x {
		if math.IsNaN(float64(v)) {
			v = float32(math.Inf(-1))
		}
		ref.ids[i], ref.logits[i] = int32(i), v
		ref.max = max(ref.max, v)
	}
	sort.SliceStable(ref.ids, func(i, j int) bool { return ref.logits[ref.ids[i]] > ref.logits[ref.ids[j]] })
	t := 1.0
	if invT != 0 {
		t = float64(invT)
	}
	for _, v := range ref.logits {
		if !math.IsInf(float64(v), -1) {
			d := float64(v) - float64(ref.max)
			ref.s1 += math.Exp(d)
			ref.sT += math.Exp(d * t)
		}
	}
	return ref
}

// topKKinds are the kinds of logits topKLogits makes.
var topKKinds = []string{"spread", "ties", "nan"}

// topKLogits returns rows×n logits of kind: spread, normal values of
// spread 4 (never zero); ties, six values only, signed zeros among them,
// so that nearly every logit ties; nan, normal values with about 5 % NaN
// and 3 % -Inf, and, from the third row on, rows of nothing else.
func (e *env) topKLogits(kind string, rows, n int) []float32 {
	ties := []float32{-2.5, -1, float32(math.Copysign(0, -1)), 0, 0.5, 3}
	x := make([]float32, rows*n)
	for i := range x {
		v := float32(4 * e.rng.NormFloat64())
		if v == 0 {
			v = 0.5
		}
		switch {
		case kind == "ties":
			v = ties[e.rng.IntN(len(ties))]
		case kind == "nan" && (i >= 2*n || e.rng.IntN(100) < 8):
			v = float32(math.NaN())
			if e.rng.IntN(8) < 3 {
				v = float32(math.Inf(-1))
			}
		}
		x[i] = v
	}
	return x
}

// checkTopKRows runs TopK over rows×n logits at x for k candidates at the
// rows' inverse temperatures at invT (0: none), into NaN-poisoned output
// and scratch with a guard after each, and compares each row with refs.
// It reports false after the first mismatch.
func (e *env) checkTopKRows(what string, x, invT hip.DevicePtr, refs []topKRef, rows, n, k int) bool {
	e.t.Helper()
	const guard = 64 // words
	const poison = 0x7fc00000
	rowWords := int(TopKRowBytes(k) / 4)
	out := e.poisoned(rows*rowWords + guard)
	var scratch hip.DevicePtr
	scratchWords := int(TopKScratchBytes(rows, n, k) / 4)
	if scratchWords > 0 {
		scratch = e.poisoned(scratchWords + guard)
	}
	e.check(e.k.TopK(e.s, out, scratch, x, invT, rows, n, k))
	got := e.downloadBytes(out, 4*(rows*rowWords+guard))
	word := func(i int) uint32 { return binary.LittleEndian.Uint32(got[4*i:]) }
	for i := rows * rowWords; i < rows*rowWords+guard; i++ {
		if word(i) != poison {
			e.t.Errorf("%s: wrote %#x past the output, at word %d", what, word(i), i)
			return false
		}
	}
	if scratchWords > 0 {
		sb := e.downloadBytes(scratch.Add(4*int64(scratchWords)), 4*guard)
		for i := range guard {
			if v := binary.LittleEndian.Uint32(sb[4*i:]); v != poison {
				e.t.Errorf("%s: wrote %#x past the scratch (TopKScratchBytes %d), at word %d", what, v, 4*scratchWords, i)
				return false
			}
		}
	}
	count := min(k, n)
	for r, ref := range refs {
		w := func(i int) uint32 { return word(r*rowWords + i) }
		f := func(i int) float32 { return math.Float32frombits(w(i)) }
		row := fmt.Sprintf("%s: row %d", what, r)
		if f(0) != ref.max || int(w(3)) != count {
			e.t.Errorf("%s: max %v, count %d; want %v, %d", row, f(0), w(3), ref.max, count)
			return false
		}
		for j, s := range []struct {
			name string
			got  float32
			want float64
		}{{"sum1", f(1), ref.s1}, {"sumT", f(2), ref.sT}} {
			if d := math.Abs(float64(s.got) - s.want); !(d <= topKSumTolerance*s.want) && !(s.want == 0 && s.got == 0) {
				e.t.Errorf("%s: %s %v, want %v (relative error %.3g > %.0e)", row, s.name, s.got, s.want, d/s.want, topKSumTolerance)
				return false
			} else if r == 0 && j == 0 {
				e.t.Logf("%s: sum1 relative error %.3g", what, d/s.want)
			}
		}
		for i := range k {
			id, logit := int32(w(4+i)), w(4+k+i)
			wantID, wantLogit := int32(-1), math.Float32bits(float32(math.Inf(-1)))
			if i < count {
				wantID = ref.ids[i]
				wantLogit = math.Float32bits(ref.logits[wantID])
			}
			if id != wantID || logit != wantLogit {
				e.t.Errorf("%s, place %d: id %d logit %v, want id %d logit %v", row, i, id, math.Float32frombits(logit),
					wantID, math.Float32frombits(wantLogit))
				return false
			}
		}
	}
	return true
}

// checkTopK runs TopK on every kind of logits, for n in 1..151,936 (one
// slice, ragged slices, one and several merge levels), 1 and 3 rows and k
// in 1..256 (k above n included), with per-row inverse temperatures
// (0 among them) and, at a few sizes, no temperature array.
func (e *env) checkTopK(t *testing.T) {
	temps := []float32{0, 1 / 0.7, 2.5, 1 / 1.3}
	for _, n := range []int{1, 7, 31, 2048, 4097, 32000, 128256, 151936} {
		for _, rows := range []int{1, 3} {
			for c, kind := range topKKinds {
				x := e.topKLogits(kind, rows, n)
				invT := make([]float32, rows)
				refs := make([]topKRef, rows)
				for r := range rows {
					invT[r] = temps[(c+r+n)%len(temps)]
					refs[r] = refTopK(x[r*n:(r+1)*n], invT[r])
				}
				xd, invTd := e.uploadF32(x), e.uploadF32(invT)
				for _, k := range []int{1, 40, 64, 256} {
					what := fmt.Sprintf("%s/n%d/rows%d/k%d", kind, n, rows, k)
					if !e.checkTopKRows(what, xd, invTd, refs, rows, n, k) {
						return
					}
				}
			}
		}
	}
	for _, n := range []int{31, 4097, 128256} {
		x := e.topKLogits("spread", 2, n)
		refs := []topKRef{refTopK(x[:n], 0), refTopK(x[n:], 0)}
		if !e.checkTopKRows(fmt.Sprintf("no invT/n%d/rows2/k50", n), e.uploadF32(x), 0, refs, 2, n, 50) {
			return
		}
	}
}

func TestTopK(t *testing.T) { newEnv(t, 51).checkTopK(t) }

func TestEmulatedTopK(t *testing.T) { emulatedEnv(t, 52).checkTopK(t) }

// TestTopKShape checks the launches and scratch TopK plans.
func TestTopKShape(t *testing.T) {
	levels := []struct {
		n, k int
		want []int
	}{
		{1, 1, []int{1}},
		{4096, 256, []int{1}},
		{4097, 1, []int{2, 1}},
		{32000, 40, []int{8, 1}},       // 8 runs of 64
		{128256, 256, []int{32, 2, 1}}, // 16 runs of 256 per merge block
		{151936, 256, []int{38, 3, 1}}, //
		{262144, 256, []int{64, 4, 1}}, //
		{1 << 24, 256, []int{4096, 256, 16, 1}},
	}
	for _, c := range levels {
		if got := topKLevels(c.n, c.k); !slices.Equal(got, c.want) {
			t.Errorf("topKLevels(%d, %d) = %v, want %v", c.n, c.k, got, c.want)
		}
	}
	scratch := []struct {
		rows, n, k int
		want       int64
	}{
		{3, 4096, 256, 0},
		{1, 4097, 40, 2 * (8*64 + 16)},
		{2, 128256, 256, 2 * (32 + 2) * (8*256 + 16)},
		{1, 151936, 200, (38 + 3) * (8*256 + 16)},
		{1, 1 << 24, 1, 4096 * 24}, // runs of 1: one merge block takes all 4096
	}
	for _, c := range scratch {
		if got := TopKScratchBytes(c.rows, c.n, c.k); got != c.want {
			t.Errorf("TopKScratchBytes(%d, %d, %d) = %d, want %d", c.rows, c.n, c.k, got, c.want)
		}
	}
	if got := TopKRowBytes(256); got != 16+8*256 {
		t.Errorf("TopKRowBytes(256) = %d", got)
	}
}

// TestTopKBadArguments checks the arguments TopK refuses before any
// launch (no device needed).
func TestTopKBadArguments(t *testing.T) {
	k := &Kernels{fns: map[string]hip.Function{}}
	var s hip.Stream
	const out, scratch, x = 0x1000, 0x2000, 0x3000
	cases := []struct {
		name string
		err  error
	}{
		{"no rows", k.TopK(s, out, scratch, x, 0, 0, 100, 10)},
		{"65536 rows", k.TopK(s, out, scratch, x, 0, 65536, 100, 10)},
		{"no logits", k.TopK(s, out, scratch, x, 0, 1, 0, 10)},
		{"k 0", k.TopK(s, out, scratch, x, 0, 1, 100, 0)},
		{"k 257", k.TopK(s, out, scratch, x, 0, 1, 100, TopKMax+1)},
		{"no output", k.TopK(s, 0, scratch, x, 0, 1, 100, 10)},
		{"misaligned output", k.TopK(s, out+2, scratch, x, 0, 1, 100, 10)},
		{"misaligned logits", k.TopK(s, out, scratch, x+1, 0, 1, 100, 10)},
		{"misaligned invT", k.TopK(s, out, scratch, x, 2, 1, 100, 10)},
		{"no scratch", k.TopK(s, out, 0, x, 0, 1, 5000, 10)},
		{"misaligned scratch", k.TopK(s, out, scratch+4, x, 0, 1, 5000, 10)},
	}
	for _, c := range cases {
		if !errors.Is(c.err, hip.ErrInvalidValue) {
			t.Errorf("%s: %v, want ErrInvalidValue", c.name, c.err)
		}
	}
}

// BenchmarkTopK times TopK (all its launches) on 1 and 8 rows: a
// Llama 3 vocabulary (128,256 logits) at k = 256, and 4096 logits (one
// block per row) at k = 64. The logits stay in the L2, as they are when
// the output projection has just written them.
func BenchmarkTopK(b *testing.B) {
	e := newEnv(b, 53)
	for _, c := range []struct{ n, k int }{{128256, 256}, {4096, 64}} {
		for _, rows := range []int{1, 8} {
			x := e.uploadF32(e.topKLogits("spread", rows, c.n))
			invT := e.uploadF32(slices.Repeat([]float32{1 / 0.8}, rows))
			out := e.alloc(int64(rows) * TopKRowBytes(c.k))
			scratch := e.alloc(TopKScratchBytes(rows, c.n, c.k))
			launch := func(int) { e.check(e.k.TopK(e.s, out, scratch, x, invT, rows, c.n, c.k)) }
			launch(0)
			e.sync()
			b.Run(fmt.Sprintf("n%d/k%d/rows%d", c.n, c.k, rows), func(b *testing.B) {
				// 100 µs of sleep per call at up to 2 GHz covers the host's enqueueing of its launches.
				ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, launch)
				b.ReportMetric(ms*1e3/float64(b.N), "us/op")
				b.ReportMetric(hostUS, "host-us/op")
			})
		}
	}
}
