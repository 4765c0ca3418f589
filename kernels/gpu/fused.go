package gpu

import (
	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/kernels"
)

// The fused kernels of a decode step (src/fused.cu): each gives exactly
// what the kernels it replaces give in turn, in one launch.

// AddRMSNormQ8 is Add(sum, a, b) then RMSNorm(xn, sum, weight) over rows
// of n float32, and, when xq is not 0 (one row only, n a multiple of 32),
// QuantizeActQ8(xn, xq). With b 0 it is RMSNorm(xn, a) (and the
// quantisation), sum unused.
func (k *Kernels) AddRMSNormQ8(s hip.Stream, sum, a, b, xn, xq, weight hip.DevicePtr, rows, n int, eps float32) error {
	switch {
	case rows <= 0 || n <= 0:
		return badArg("AddRMSNormQ8", "%d rows of %d", rows, n)
	case xq != 0 && (rows != 1 || n%32 != 0):
		return badArg("AddRMSNormQ8", "int8 activations of %d rows of %d (want one row, a multiple of 32)", rows, n)
	}
	// normThreads, as RMSNorm: the same sums in the same order.
	return k.launch(s, k.fn("add_rmsnorm_q8"), hip.Dim1(uint32(rows)), hip.Dim1(normThreads(n)), 0,
		hip.Ptr(sum), hip.Ptr(a), hip.Ptr(b), hip.Ptr(xn), hip.Ptr(xq), hip.Ptr(weight), hip.Int32(int32(n)), hip.Float32(eps))
}

// SwiGLUQ8 is SwiGLU(out, gate, up) over one row of n (a multiple of 32)
// then QuantizeActQ8(out, xq).
func (k *Kernels) SwiGLUQ8(s hip.Stream, out, gate, up, xq hip.DevicePtr, n int) error {
	if n <= 0 || n%32 != 0 {
		return badArg("SwiGLUQ8", "%d values (a multiple of 32)", n)
	}
	return k.launch(s, k.fn("swiglu_q8"), hip.Dim1(blocks(n, 256)), hip.Dim1(256), 0,
		hip.Ptr(out), hip.Ptr(gate), hip.Ptr(up), hip.Ptr(xq), hip.Int32(int32(n)))
}

// RopeKVStore is Rope on q (nTok rows of nHead heads) and on k (nKVHead
// heads), then KVStore of k and v, in one launch: the rotated keys are
// written straight into the rows' sequence caches (k itself is left as
// it was).
func (k *Kernels) RopeKVStore(s hip.Stream, r *kernels.Rope, freqFactors, q, kSrc, vSrc, meta hip.DevicePtr,
	nTok, layer, nHead, nKVHead, headDim int) error {
	dims := min(r.Dims, headDim)
	switch {
	case nTok <= 0 || nTok > 65535 || nHead <= 0 || nKVHead <= 0 || nHead+nKVHead > 65535 || layer < 0:
		return badArg("RopeKVStore", "%d rows of %d+%d heads at layer %d", nTok, nHead, nKVHead, layer)
	case (r.FreqFactors != nil) != (freqFactors != 0):
		return badArg("RopeKVStore", "freq factors on the host and device disagree")
	case meta%8 != 0:
		return badArg("RopeKVStore", "metadata at %v is not 8-byte aligned", meta)
	}
	p := ropeParams(r, dims)
	neox := int32(0)
	if r.Mode == kernels.RopeNeoX {
		neox = 1
	}
	return k.launch(s, k.fn("rope_kv_store"), hip.Dim2(uint32(nHead+nKVHead), uint32(nTok)), hip.Dim1(64), 0,
		hip.Ptr(q), hip.Ptr(kSrc), hip.Ptr(vSrc), hip.Ptr(meta), hip.Int32(int32(nTok)), hip.Int32(int32(layer)),
		hip.Int32(int32(nHead)), hip.Int32(int32(nKVHead)), hip.Int32(int32(headDim)), hip.Int32(int32(dims)), hip.Int32(neox),
		hip.Float32(p.thetaScale), hip.Float32(p.freqScale), hip.Ptr(freqFactors),
		hip.Float32(r.ExtFactor), hip.Float32(p.mscale), hip.Float32(p.corrLo), hip.Float32(p.corrHi))
}

// ropeOneHeadRows is the most rows for which AttentionRowsRope gives each
// query head blocks of its own (FORGEPIPE_ATTN_ONE_HEAD_ROWS overrides it,
// for timing: 0 turns it off).
var ropeOneHeadRows = envInt("FORGEPIPE_ATTN_ONE_HEAD_ROWS", 1)

// ropeMerge is whether those rows' heads are merged by their last block
// rather than by a combine launch (FORGEPIPE_ATTN_MERGE=0 turns it off,
// for timing).
var ropeMerge = envInt("FORGEPIPE_ATTN_MERGE", 1) != 0

// AttentionRowsRope is RopeKVStore then AttentionRows (AttentionRowsQ8 when
// xq is not 0) in one split launch plus the combine, one launch fewer: the
// same out, xq and KV caches, bit for bit, except that q is left
// unrotated (nothing else reads it after the attention). Each block of the
// split (src/attention.cu, attn_rows_rope) rotates its own query heads as
// it loads them; the block whose piece of a row's context holds the row's
// position rotates the row's key of its KV head and takes its value,
// attends to that position from them and, for the first block of the KV
// head's query heads, stores them in the cache there (kSrc and vSrc are
// read only, n×nKVHead×headDim each). freqFactors is r.FreqFactors' copy
// on the device, or 0 when r has none (as for Rope); the other arguments
// and the scratch are AttentionRows'. One row takes a block per query
// head, the last of a head's blocks merging it (no combine launch): the
// scratch's arrival counters must be zero before its first use, as
// AttentionRowsScratchBytes says, and each launch leaves them so.
//
// It is valid only when no two of the n rows belong to the same sequence
// (one-row decode steps; batches of distinct sequences): a row attends to
// its earlier positions straight from the cache, which another row of its
// sequence would be writing in the same launch. Prompt chunks and
// multi-row steps of one sequence take RopeKVStore and then AttentionRows
// or AttentionRowsPrefill.
func (k *Kernels) AttentionRowsRope(s hip.Stream, r *kernels.Rope, freqFactors, out, xq, q, kSrc, vSrc, meta, scratch hip.DevicePtr,
	n, layer, nHead, nKVHead, headDim int, scale float32, nSplit int) error {
	const call = "AttentionRowsRope"
	if (r.FreqFactors != nil) != (freqFactors != 0) {
		return badArg(call, "freq factors on the host and device disagree")
	}
	if xq != 0 {
		if err := checkRowsQ8(call, xq, n, nHead, headDim); err != nil {
			return err
		}
	}
	// One row: a block per query head (attn_rows_rope1), whose last block
	// to finish merges the head (attn_rows_rope1m, no combine launch);
	// else blocks of four heads of a KV head and the combine, as
	// AttentionRows.
	gb, kernel, merged := rowsHeadsPerBlock, rowsRopeKernels, false
	if n <= ropeOneHeadRows {
		gb, kernel, merged = 1, rowsRope1Kernels, ropeMerge
		if merged {
			kernel = rowsRope1MKernels
		}
	}
	sp, err := rowsSplit(call, out, q, meta, scratch, n, layer, nHead, nKVHead, headDim, nSplit, gb)
	if err != nil {
		return err
	}
	dims := min(r.Dims, headDim)
	p := ropeParams(r, dims)
	neox := int32(0)
	if r.Mode == kernels.RopeNeoX {
		neox = 1
	}
	err = k.launch(s, k.fn(kernel[sp.d]), sp.grid, hip.Dim1(128), 0,
		hip.Ptr(scratch), hip.Ptr(q), hip.Ptr(meta), hip.Int32(int32(n)), hip.Int32(int32(layer)),
		hip.Int32(int32(nHead)), hip.Int32(int32(nKVHead)), hip.Int32(int32(headDim)), hip.Float32(scale),
		hip.Int32(int32(rowsMinSplit)), hip.Int32(int32(sp.words)), hip.Ptr(kSrc), hip.Ptr(vSrc),
		hip.Int32(int32(dims)), hip.Int32(neox), hip.Float32(p.thetaScale), hip.Float32(p.freqScale), hip.Ptr(freqFactors),
		hip.Float32(r.ExtFactor), hip.Float32(p.mscale), hip.Float32(p.corrLo), hip.Float32(p.corrHi),
		hip.Ptr(out), hip.Ptr(xq)) // read by attn_rows_rope1m only
	if err != nil || merged {
		return err
	}
	return k.rowsCombine(s, sp, out, xq, scratch, n, nHead, headDim)
}
