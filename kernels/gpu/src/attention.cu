// attention.cu: causal grouped-query attention over a float32 KV cache, the
// GPU twin of kernels.Attention, flash-decoding style.
//
// attn_split: grid (nSplit, nHead, nQ), ATT_THREADS threads. Block (s, h, i)
// takes query row i (position pos0+i, attending to positions 0..pos0+i) of
// head h and the positions [s*splitLen, (s+1)*splitLen) of its context.
// Each warp walks every nw-th position: a lane holds headDim/WARP_SIZE
// values of q, the score is a warp sum, and the warp keeps an online
// softmax (running max m, sum l, weighted sum acc of v rows). The block's
// warps are merged in shared memory and written as one partial: m, l,
// acc[headDim]. attn_combine: grid (nHead, nQ), merges the partials of the
// splits: out = Σ e^(m_s-M) acc_s / Σ e^(m_s-M) l_s.
//
// One kernel pair serves decode (nQ = 1, many splits so that a long context
// fills the GPU) and prefill (nQ rows, causal). Query head h reads KV head
// h / (nHead / nKVHead).
#include "compat.h"

#define ATT_THREADS 128
#define ATT_WARPS (ATT_THREADS / WARP_SIZE)
#define ATT_MAXD 256
#define ATT_DPL (ATT_MAXD / WARP_SIZE)

FP_KERNEL void __launch_bounds__(ATT_THREADS)
    attn_split_f32(float* __restrict__ part, const float* __restrict__ q, const float* __restrict__ k,
                   const float* __restrict__ v, int pos0, int nHead, int nKVHead, int headDim, float scale,
                   int splitLen) {
	const int s = blockIdx.x, h = blockIdx.y, i = blockIdx.z;
	const int nSplit = gridDim.x;
	const int n = pos0 + i + 1; // positions this query row attends to
	const int p0 = s * splitLen;
	const int p1 = min(n, p0 + splitLen);
	const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	const int kvh = h / (nHead / nKVHead);
	const long long kvStride = (long long)nKVHead * headDim;
	const float* qh = q + ((long long)i * nHead + h) * headDim;

	float qv[ATT_DPL], acc[ATT_DPL];
#pragma unroll
	for (int j = 0; j < ATT_DPL; j++) {
		const int d = lane + j * WARP_SIZE;
		qv[j] = d < headDim ? qh[d] : 0.f;
		acc[j] = 0.f;
	}
	float m = -fp_inf(), l = 0.f;
	for (int p = p0 + warp; p < p1; p += ATT_WARPS) {
		const float* kr = k + p * kvStride + (long long)kvh * headDim;
		const float* vr = v + p * kvStride + (long long)kvh * headDim;
		float dot = 0.f;
#pragma unroll
		for (int j = 0; j < ATT_DPL; j++) {
			const int d = lane + j * WARP_SIZE;
			if (d < headDim) dot += qv[j] * kr[d];
		}
		const float sc = warp_sum(dot) * scale;
		const float mNew = fmaxf(m, sc);
		const float corr = expf(m - mNew), e = expf(sc - mNew);
		l = l * corr + e;
#pragma unroll
		for (int j = 0; j < ATT_DPL; j++) {
			const int d = lane + j * WARP_SIZE;
			acc[j] = acc[j] * corr + (d < headDim ? e * vr[d] : 0.f);
		}
		m = mNew;
	}

	__shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
	__shared__ float sacc[ATT_WARPS][ATT_MAXD];
	if (lane == 0) sm[warp] = m, sl[warp] = l;
#pragma unroll
	for (int j = 0; j < ATT_DPL; j++) {
		const int d = lane + j * WARP_SIZE;
		if (d < headDim) sacc[warp][d] = acc[j];
	}
	__syncthreads();
	float M = -fp_inf();
	for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, sm[w]);
	float* out = part + (((long long)i * nHead + h) * nSplit + s) * (headDim + 2);
	if (M == -fp_inf()) { // an empty split
		for (int d = threadIdx.x; d < headDim + 2; d += ATT_THREADS) out[d] = d == 0 ? -fp_inf() : 0.f;
		return;
	}
	float L = 0.f;
	for (int w = 0; w < ATT_WARPS; w++) L += sl[w] * expf(sm[w] - M);
	if (threadIdx.x == 0) out[0] = M, out[1] = L;
	for (int d = threadIdx.x; d < headDim; d += ATT_THREADS) {
		float a = 0.f;
		for (int w = 0; w < ATT_WARPS; w++) a += sacc[w][d] * expf(sm[w] - M);
		out[2 + d] = a;
	}
}

FP_KERNEL void attn_combine_f32(float* __restrict__ out, const float* __restrict__ part, int nHead, int headDim,
                                int nSplit) {
	const int h = blockIdx.x, i = blockIdx.y;
	const float* pp = part + ((long long)i * nHead + h) * nSplit * (headDim + 2);
	float M = -fp_inf();
	for (int s = 0; s < nSplit; s++) M = fmaxf(M, pp[s * (headDim + 2)]);
	float L = 0.f;
	for (int s = 0; s < nSplit; s++) L += pp[s * (headDim + 2) + 1] * expf(pp[s * (headDim + 2)] - M);
	const float inv = 1.f / L;
	float* o = out + ((long long)i * nHead + h) * headDim;
	for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
		float a = 0.f;
		for (int s = 0; s < nSplit; s++) a += pp[s * (headDim + 2) + 2 + d] * expf(pp[s * (headDim + 2)] - M);
		o[d] = a * inv;
	}
}
