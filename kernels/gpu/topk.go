package gpu

import (
	"math"
	"math/bits"

	"github.com/forgepipe/forgepipe/hip"
)

// Top-k selection on the device (src/topk.cu): a sampler that draws from
// the most likely tokens copies back TopKRowBytes(k) per row, not the
// vocabulary's logits.

// TopKMax is the most candidates TopK keeps per row.
const TopKMax = 256

// topkThreads and topkSlice are topk.cu's TOPK_THREADS and TOPK_SLICE: a
// block's threads and the most keys it sorts in shared memory.
const (
	topkThreads = 1024
	topkSlice   = 4096
)

// TopKRowBytes is the size of one row's result of TopK for k candidates:
// a 16-byte header then k int32 ids then k float32 logits.
func TopKRowBytes(k int) int64 { return 16 + 8*int64(k) }

// topKRun is the candidates each block of TopK keeps for k: the power of
// two at or above k.
func topKRun(k int) int { return 1 << bits.Len(uint(k-1)) }

// topKRecordBytes is the size of one block's partial result in the
// scratch: topKRun(k) 64-bit keys, then the block's max, sum1 and sumT
// and 4 unused bytes.
func topKRecordBytes(k int) int64 { return 8*int64(topKRun(k)) + 16 }

// topKLevels returns the blocks per row of each of TopK's launches for
// rows of n logits: topk_slice_f32's, then each topk_merge_f32's, the last
// being 1.
func topKLevels(n, k int) []int {
	levels := []int{int(blocks(n, topkSlice))}
	for nb := levels[0]; nb > 1; {
		nb = int(blocks(nb, topkSlice/topKRun(k)))
		levels = append(levels, nb)
	}
	return levels
}

// TopKScratchBytes is the device scratch TopK needs for rows rows of n
// logits: the partial results of its first two launches (later ones reuse
// the first's space). It is 0 when n fits one block (4096 logits). A k
// outside 1..TopKMax is taken as TopKMax.
func TopKScratchBytes(rows, n, k int) int64 {
	if k < 1 || k > TopKMax {
		k = TopKMax
	}
	levels := topKLevels(max(n, 1), k)
	var recs int64
	for _, nb := range levels[:min(2, len(levels))] {
		if nb > 1 { // a launch of one block per row writes the result instead
			recs += int64(nb)
		}
	}
	return int64(rows) * recs * topKRecordBytes(k)
}

// TopK selects, for each of rows rows of n float32 logits at x (row-major,
// row r at x + 4*n*r), the k largest, and writes at out + r*TopKRowBytes(k):
//
//	header: float32 max (the row's largest logit), float32 sum1 = Σ_i exp(x_i - max)
//	        over the whole row, float32 sumT = Σ_i exp((x_i - max) * invT[r]) over the
//	        whole row, uint32 count (= min(k, n));
//	then k int32 ids, then k float32 logits, in descending order of logit,
//	ties broken by the lower id first (so the order equals a stable sort by
//	descending logit); slots past count hold id -1 and logit -Inf.
//
// invT is a device array of rows float32 inverse temperatures (≥ 0; 0
// means: no invT, sumT = sum1; invT itself may be 0 for none at all). NaN
// logits count as -Inf: they rank with -Inf, are written as -Inf, and, as
// -Inf logits, add nothing to the sums (a row without a finite logit has
// max -Inf and sums 0). 1 <= k <= TopKMax, n >= 1.
//
// scratch (8-byte aligned) holds TopKScratchBytes(rows, n, k); its
// contents do not matter. The launches (up to three for n ≤ 262,144 at k =
// 256) depend on rows, n and k only, so they can be captured in a graph.
func (k *Kernels) TopK(s hip.Stream, out, scratch, x, invT hip.DevicePtr, rows, n, kk int) error {
	const call = "TopK"
	switch {
	case rows < 1 || rows > 65535 || n < 1 || n > math.MaxInt32-topkSlice:
		return badArg(call, "%d rows of %d logits", rows, n)
	case kk < 1 || kk > TopKMax:
		return badArg(call, "k = %d (1..%d)", kk, TopKMax)
	case out == 0 || out%4 != 0 || x%4 != 0 || invT%4 != 0:
		return badArg(call, "output at %v, logits at %v, inverse temperatures at %v (want 4-byte aligned)", out, x, invT)
	case TopKScratchBytes(rows, n, kk) > 0 && (scratch == 0 || scratch%8 != 0):
		return badArg(call, "scratch at %v (want an 8-byte aligned address)", scratch)
	}
	levels := topKLevels(n, kk)
	lk := hip.Int32(int32(bits.TrailingZeros(uint(topKRun(kk)))))
	// The levels alternate between two areas of the scratch: the first's
	// records, then the second's.
	areas := [2]hip.DevicePtr{scratch, scratch.Add(int64(rows) * int64(levels[0]) * topKRecordBytes(kk))}
	err := k.launch(s, k.fn("topk_slice_f32"), hip.Dim2(uint32(levels[0]), uint32(rows)), hip.Dim1(topkThreads), 0,
		hip.Ptr(out), hip.Ptr(areas[0]), hip.Ptr(x), hip.Ptr(invT), hip.Int32(int32(n)), hip.Int32(int32(kk)), lk)
	for i := 1; i < len(levels) && err == nil; i++ {
		err = k.launch(s, k.fn("topk_merge_f32"), hip.Dim2(uint32(levels[i]), uint32(rows)), hip.Dim1(topkThreads), 0,
			hip.Ptr(out), hip.Ptr(areas[i%2]), hip.Ptr(areas[(i-1)%2]), hip.Ptr(x), hip.Ptr(invT),
			hip.Int32(int32(n)), hip.Int32(int32(levels[i-1])), hip.Int32(int32(kk)), lk)
	}
	return err
}
