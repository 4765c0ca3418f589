package kernels

import (
	"fmt"
	"runtime"
)

// Attention computes causal grouped-query attention for nQ consecutive query
// positions pos0 .. pos0+nQ-1.
//
// q holds nQ rows of nHead*headDim values; k and v are a layer's KV cache,
// row p (position p) holding nKVHead*headDim values, with at least pos0+nQ
// rows. Query head h reads KV head h / (nHead/nKVHead). Query row i attends
// to positions 0 .. pos0+i: scores = q·k * scale, softmax, weighted sum of
// v. out receives nQ rows of nHead*headDim values; it must not alias q, k
// or v. scale is normally 1/sqrt(headDim).
//
// Each (query row, head) pair is computed by one goroutine with the same
// float32 operations in the same order whatever nQ, GOMAXPROCS or the path
// taken (the AVX2 path reproduces attentionRef bit for bit), so a row is
// bit-identical whether computed in a batch or alone. It panics when nHead
// is not a multiple of nKVHead or a slice is too short.
func Attention(out, q, k, v []float32, nQ, pos0, nHead, nKVHead, headDim int, scale float32) {
	if nQ <= 0 {
		return
	}
	if nKVHead <= 0 || nHead%nKVHead != 0 {
		panic(fmt.Sprintf("kernels: Attention: %d query heads do not share %d KV heads evenly", nHead, nKVHead))
	}
	// Bounds the fast path's assembly relies on, checked once.
	nCtx := pos0 + nQ
	_, _ = out[nQ*nHead*headDim-1], q[nQ*nHead*headDim-1]
	_, _ = k[nCtx*nKVHead*headDim-1], v[nCtx*nKVHead*headDim-1]
	if attnAVX2 && headDim%8 == 0 {
		attentionTiled(out, q, k, v, nQ, pos0, nHead, nKVHead, headDim, scale)
		return
	}
	attentionRef(out, q, k, v, nQ, pos0, nHead, nKVHead, headDim, scale)
}

// attentionWork is Attention's cost in multiply-adds (q·k and weight·v).
func attentionWork(nQ, pos0, nHead, headDim int) int {
	return nQ * nHead * headDim * 2 * (pos0 + (nQ+1)/2)
}

// attentionRef is the reference Attention: each (query row, head) pair on
// its own (attendOneRef), pairs spread over goroutines.
func attentionRef(out, q, k, v []float32, nQ, pos0, nHead, nKVHead, headDim int, scale float32) {
	group := nHead / nKVHead
	qStride := nHead * headDim
	kvStride := nKVHead * headDim
	parallelFor(nQ*nHead, attentionWork(nQ, pos0, nHead, headDim), 1, func(lo, hi int) {
		scores := make([]float32, pos0+nQ)
		for job := lo; job < hi; job++ {
			i, h := job/nHead, job%nHead
			attendOneRef(
				out[i*qStride+h*headDim:][:headDim],
				q[i*qStride+h*headDim:][:headDim],
				k, v, (h/group)*headDim, kvStride, headDim, pos0+i+1, scale, scores,
			)
		}
	})
}

// attnMaxItems bounds how many (query row, head) pairs one job of
// attentionTiled handles: enough to reuse each K and V tile many times, few
// enough that their scores stay small.
const attnMaxItems = 16

// attnTileBytes is the size of the K or V tile (positions x one KV head)
// attentionTiled keeps in L1 while every pair of a job uses it.
const attnTileBytes = 32 << 10

// attentionTiled is the fast Attention (AVX2, headDim a multiple of 8). The
// pairs (query row, head) that read one KV head are grouped into jobs; a job
// walks the context in tiles of positions and runs all its pairs over each
// tile while it is in cache, so grouped-query heads and batched query rows
// share one read of the KV cache. Per pair, every score is the same
// independent dot product and every output the same in-order sum as in
// attendOneRef, so the bits are the reference's.
func attentionTiled(out, q, k, v []float32, nQ, pos0, nHead, nKVHead, headDim int, scale float32) {
	group := nHead / nKVHead
	qStride := nHead * headDim
	kvStride := nKVHead * headDim
	nCtx := pos0 + nQ
	items := nQ * group // pairs per KV head, ordered (query row, head)
	// Enough jobs to keep every core busy, each at most attnMaxItems pairs.
	chunks := max((items+attnMaxItems-1)/attnMaxItems, min(items, (4*runtime.GOMAXPROCS(0)+nKVHead-1)/nKVHead))
	per := (items + chunks - 1) / chunks
	chunks = (items + per - 1) / per
	tile := max(8, attnTileBytes/(headDim*4))

	parallelFor(nKVHead*chunks, attentionWork(nQ, pos0, nHead, headDim), 1, func(lo, hi int) {
		scores := make([]float32, per*nCtx)
		for job := lo; job < hi; job++ {
			g, c := job/chunks, job%chunks
			it0, it1 := c*per, min((c+1)*per, items)
			kvOff := g * headDim
			// pair returns the query, output and scores of pair it and
			// the number of positions it attends to.
			pair := func(it int) (qv, o, s []float32, n int) {
				i, h := it/group, g*group+it%group
				n = pos0 + i + 1
				return q[i*qStride+h*headDim:][:headDim], out[i*qStride+h*headDim:][:headDim], scores[(it-it0)*nCtx:][:n], n
			}
			nMax := pos0 + (it1-1)/group + 1
			for t0 := 0; t0 < nMax; t0 += tile {
				for it := it0; it < it1; it++ {
					qv, _, s, n := pair(it)
					if t0 < n {
						attnScoresAVX2(&s[t0], &qv[0], &k[t0*kvStride+kvOff], kvStride*4, min(t0+tile, n)-t0, headDim)
					}
				}
			}
			for it := it0; it < it1; it++ {
				_, o, s, _ := pair(it)
				for p := range s {
					s[p] *= scale
				}
				Softmax(s)
				clear(o)
			}
			for t0 := 0; t0 < nMax; t0 += tile {
				for it := it0; it < it1; it++ {
					_, o, s, n := pair(it)
					if t0 < n {
						attnAccumulateAVX2(&o[0], &s[t0], &v[t0*kvStride+kvOff], kvStride*4, min(t0+tile, n)-t0, headDim)
					}
				}
			}
		}
	})
}

// attendOneRef is the reference for attendOne: scores in float32 (dot
// products with a fixed 8-way split of the sum), softmax, then the float32
// sum of the weighted value rows in position order.
func attendOneRef(out, q, k, v []float32, kvOff, kvStride, headDim, n int, scale float32, scores []float32) {
	for p := 0; p < n; p++ {
		kr := k[p*kvStride+kvOff:][:headDim]
		scores[p] = attnDot(q[:headDim], kr) * scale
	}
	Softmax(scores[:n])
	out = out[:headDim]
	clear(out)
	for p := 0; p < n; p++ {
		attnAxpy(out, v[p*kvStride+kvOff:][:headDim], scores[p])
	}
}

// attnDot is the float32 dot product of a and b (len(b) >= len(a)), summed in
// eight interleaved partial sums that are combined in a fixed order.
func attnDot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		s0 += float32(a[i] * b[i])
		s1 += float32(a[i+1] * b[i+1])
		s2 += float32(a[i+2] * b[i+2])
		s3 += float32(a[i+3] * b[i+3])
		s4 += float32(a[i+4] * b[i+4])
		s5 += float32(a[i+5] * b[i+5])
		s6 += float32(a[i+6] * b[i+6])
		s7 += float32(a[i+7] * b[i+7])
	}
	for ; i < len(a); i++ {
		s0 += float32(a[i] * b[i])
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

// attnAxpy sets y[i] += a * x[i] (len(x) >= len(y)).
func attnAxpy(y, x []float32, a float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += float32(a * x[i])
	}
}
