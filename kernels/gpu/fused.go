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
