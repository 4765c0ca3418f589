package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// attentionRef64 is causal grouped-query attention in float64, written
// directly from the definition: for query row i and head h, softmax over
// positions p <= pos0+i of scale * q·k_p, then the weighted sum of v_p.
func attentionRef64(q, k, v []float32, nQ, pos0, nHead, nKVHead, headDim int, scale float32) (out, mag []float64) {
	out = make([]float64, nQ*nHead*headDim)
	mag = make([]float64, len(out)) // sum of |weight * v|, the error scale
	for i := 0; i < nQ; i++ {
		for h := 0; h < nHead; h++ {
			kvh := h / (nHead / nKVHead)
			qv := q[(i*nHead+h)*headDim:][:headDim]
			n := pos0 + i + 1
			s := make([]float64, n)
			m := math.Inf(-1)
			for p := 0; p < n; p++ {
				kv := k[(p*nKVHead+kvh)*headDim:][:headDim]
				for d := range qv {
					s[p] += float64(qv[d]) * float64(kv[d])
				}
				s[p] *= float64(scale)
				m = math.Max(m, s[p])
			}
			var sum float64
			for p := range s {
				s[p] = math.Exp(s[p] - m)
				sum += s[p]
			}
			o := out[(i*nHead+h)*headDim:][:headDim]
			g := mag[(i*nHead+h)*headDim:][:headDim]
			for p := range s {
				vv := v[(p*nKVHead+kvh)*headDim:][:headDim]
				for d := range o {
					o[d] += s[p] / sum * float64(vv[d])
					g[d] += math.Abs(s[p] / sum * float64(vv[d]))
				}
			}
		}
	}
	return out, mag
}

type attnCase struct {
	name                                   string
	nQ, pos0, nHead, nKVHead, headDim, nKV int
}

var attnCases = []attnCase{
	{"mha-single", 1, 0, 4, 4, 16, 1},
	{"mha-decode", 1, 9, 4, 4, 16, 10},
	{"gqa2-prefill", 7, 0, 4, 2, 32, 7},
	{"gqa4-chunk", 5, 11, 8, 2, 64, 16},
	{"gqa4-odd-headdim", 3, 4, 4, 1, 20, 7},
	{"gqa2-long", 4, 200, 4, 2, 64, 204},
}

func TestAttention(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, c := range attnCases {
		t.Run(c.name, func(t *testing.T) {
			q := opsRandVec(rng, c.nQ*c.nHead*c.headDim, 0.01, 1.5)
			k := opsRandVec(rng, c.nKV*c.nKVHead*c.headDim, 0.01, 1.5)
			v := opsRandVec(rng, c.nKV*c.nKVHead*c.headDim, 0.01, 2)
			scale := float32(1 / math.Sqrt(float64(c.headDim)))
			out := make([]float32, len(q))
			Attention(out, q, k, v, c.nQ, c.pos0, c.nHead, c.nKVHead, c.headDim, scale)
			want, mag := attentionRef64(q, k, v, c.nQ, c.pos0, c.nHead, c.nKVHead, c.headDim, scale)
			for i := range out {
				// float32 scores, softmax and sum: a few ulps of the magnitude.
				if d := math.Abs(float64(out[i]) - want[i]); d > 2e-6*mag[i]+1e-7 {
					t.Fatalf("out[%d] = %g, want %g (diff %g, magnitude %g)", i, out[i], want[i], d, mag[i])
				}
			}
		})
	}
}

// TestAttentionBatchIdentity checks that every query row computed in a batch
// has the same bits as the row computed alone, and that future KV rows (the
// causal mask) do not influence it, under GOMAXPROCS 1 and 2.
func TestAttentionBatchIdentity(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	defer func(old int) { parallelThreshold = old }(parallelThreshold)
	parallelThreshold = 1 << 12 // split even these small problems
	rng := rand.New(rand.NewPCG(23, 24))
	for _, c := range attnCases {
		t.Run(c.name, func(t *testing.T) {
			stride := c.nHead * c.headDim
			kvStride := c.nKVHead * c.headDim
			q := opsRandVec(rng, c.nQ*stride, 0.01, 1.5)
			// Three spare KV rows past the batch, as a cache with room to grow.
			k := opsRandVec(rng, (c.nKV+3)*kvStride, 0.01, 1.5)
			v := opsRandVec(rng, (c.nKV+3)*kvStride, 0.01, 2)
			scale := float32(1 / math.Sqrt(float64(c.headDim)))
			var batch []float32
			for _, procs := range []int{1, 2} {
				runtime.GOMAXPROCS(procs)
				out := make([]float32, len(q))
				Attention(out, q, k, v, c.nQ, c.pos0, c.nHead, c.nKVHead, c.headDim, scale)
				if batch == nil {
					batch = out
				} else if i := firstDiff(batch, out); i >= 0 {
					t.Fatalf("GOMAXPROCS 2 differs from 1 at [%d]", i)
				}
			}
			for i := 0; i < c.nQ; i++ {
				pos := c.pos0 + i
				// Perturb every KV row after pos: query i must not see them.
				k2 := append([]float32(nil), k...)
				v2 := append([]float32(nil), v...)
				for j := (pos + 1) * kvStride; j < len(k2); j++ {
					k2[j] += 3
					v2[j] = -v2[j] * 5
				}
				one := make([]float32, stride)
				Attention(one, q[i*stride:(i+1)*stride], k2, v2, 1, pos, c.nHead, c.nKVHead, c.headDim, scale)
				if j := firstDiff(batch[i*stride:(i+1)*stride], one); j >= 0 {
					t.Fatalf("row %d alone (future KV perturbed) differs at [%d]: %g vs batch %g", i, j, one[j], batch[i*stride+j])
				}
			}
			// Sanity: perturbing a visible row does change the output.
			k3 := append([]float32(nil), k...)
			for j := 0; j < kvStride; j++ {
				k3[j] += 3
			}
			out3 := make([]float32, len(q))
			Attention(out3, q, k3, v, c.nQ, c.pos0, c.nHead, c.nKVHead, c.headDim, scale)
			if c.pos0+c.nQ > 1 && firstDiff(batch, out3) < 0 {
				t.Fatal("perturbing KV row 0 changed nothing")
			}
		})
	}
}

// firstDiff returns the first index where a and b differ in bits, or -1.
func firstDiff(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// BenchmarkAttention is llama-3-8B-shaped attention (32 query heads, 8 KV
// heads of 128): one decode step, and a 64-token prompt chunk, at several
// context lengths. GFLOP/s counts the q·k and weight·v multiply-adds.
func BenchmarkAttention(b *testing.B) {
	const nHead, nKVHead, headDim = 32, 8, 128
	for _, nQ := range []int{1, 64} {
		for _, ctx := range []int{256, 2048} {
			b.Run(fmt.Sprintf("nQ=%d/ctx=%d", nQ, ctx), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 2))
				q := opsRandVec(rng, nQ*nHead*headDim, 0.01, 1)
				k := opsRandVec(rng, ctx*nKVHead*headDim, 0.01, 1)
				v := opsRandVec(rng, ctx*nKVHead*headDim, 0.01, 1)
				out := make([]float32, len(q))
				pos0 := ctx - nQ
				scale := float32(1 / math.Sqrt(headDim))
				b.ResetTimer()
				for b.Loop() {
					Attention(out, q, k, v, nQ, pos0, nHead, nKVHead, headDim, scale)
				}
				s := b.Elapsed().Seconds() / float64(b.N)
				flops := 0.0
				for i := 0; i < nQ; i++ {
					flops += 4 * float64(nHead*headDim*(pos0+i+1))
				}
				b.ReportMetric(flops/s/1e9, "GFLOP/s")
			})
		}
	}
}

// TestAttentionFastMatchesRef checks the tiled AVX2 path against the Go
// reference bit for bit: head sizes that exercise the 64- and 8-column
// chunks, contexts that cross tile boundaries and leave every count of
// leftover positions, GQA ratios 1 to 8, batches, GOMAXPROCS 1 to 3.
func TestAttentionFastMatchesRef(t *testing.T) {
	if !attnAVX2 {
		t.Skip("no AVX2 attention kernels on this CPU")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	defer func(old int) { parallelThreshold = old }(parallelThreshold)
	parallelThreshold = 1 << 12 // split even these small problems
	rng := rand.New(rand.NewPCG(25, 26))
	cases := []struct{ nQ, pos0, nHead, nKVHead, headDim int }{
		{1, 0, 1, 1, 8},
		{1, 4, 2, 1, 16},
		{3, 2, 4, 4, 64},
		{1, 300, 8, 2, 72},
		{17, 70, 8, 1, 128},
		{5, 130, 4, 2, 200},
		{2, 5, 2, 2, 256},
		{33, 0, 8, 2, 32},
		{4, 600, 16, 2, 64},
	}
	for _, c := range cases {
		kvStride := c.nKVHead * c.headDim
		nCtx := c.pos0 + c.nQ
		q := opsRandVec(rng, c.nQ*c.nHead*c.headDim, 0.01, 1.5)
		k := opsRandVec(rng, nCtx*kvStride, 0.01, 1.5)
		v := opsRandVec(rng, nCtx*kvStride, 0.01, 2)
		scale := float32(1 / math.Sqrt(float64(c.headDim)))
		want := make([]float32, len(q))
		attentionRef(want, q, k, v, c.nQ, c.pos0, c.nHead, c.nKVHead, c.headDim, scale)
		for _, procs := range []int{1, 2, 3} {
			runtime.GOMAXPROCS(procs)
			got := make([]float32, len(q))
			Attention(got, q, k, v, c.nQ, c.pos0, c.nHead, c.nKVHead, c.headDim, scale)
			if i := firstDiff(got, want); i >= 0 {
				t.Fatalf("%+v GOMAXPROCS %d: [%d] = %g, reference %g", c, procs, i, got[i], want[i])
			}
		}
	}
}
