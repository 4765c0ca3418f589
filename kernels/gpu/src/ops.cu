// ops.cu: the element-wise and per-row operations of a transformer block,
// each the GPU twin of a host kernel in package kernels (ops.go, rope.go).
#include "compat.h"

// block_sum adds v over the block (blockDim.x a multiple of WARP_SIZE, at
// most 1024 threads); every thread gets the result.
FP_DEVICE float block_sum(float v, float* red) {
	const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	const int nw = blockDim.x / WARP_SIZE;
	v = warp_sum(v);
	__syncthreads(); // red may still be read by a previous call
	if (lane == 0) red[warp] = v;
	__syncthreads();
	float s = 0.f;
	for (int k = 0; k < nw; k++) s += red[k];
	return s;
}

// rms_vec reports whether rows of n float32 at these pointers (null ones
// ignored) can be read as float4: n a multiple of 4 and every pointer
// 16-byte aligned. The same for the whole block, so it picks a branch.
FP_DEVICE bool rms_vec(int n, const void* p0, const void* p1, const void* p2, const void* p3, const void* p4) {
	return (n & 3) == 0 && (((u64)p0 | (u64)p1 | (u64)p2 | (u64)p3 | (u64)p4) & 15) == 0;
}

// sq4 adds the squares of v to s, x to w in turn: the one order of the
// float4 norms (rmsnorm_f32 and add_rmsnorm_q8 must sum alike).
FP_DEVICE float sq4(float s, float4 v) {
	s += v.x * v.x;
	s += v.y * v.y;
	s += v.z * v.z;
	s += v.w * v.w;
	return s;
}

// norm4 is v * scale * w, each value rounded as rmsnorm_f32's scalar form.
FP_DEVICE float4 norm4(float4 v, float scale, float4 w) {
	v.x = __fmul_rn(v.x, scale) * w.x;
	v.y = __fmul_rn(v.y, scale) * w.y;
	v.z = __fmul_rn(v.z, scale) * w.z;
	v.w = __fmul_rn(v.w, scale) * w.w;
	return v;
}

// rmsnorm: one block per row: out = x / sqrt(mean(x²) + eps) * weight
// (kernels.RMSNorm; out may alias x). Each thread reads its values with
// as few loads as it can (float4 where aligned; the launcher gives a row
// about n/4 threads), so a row costs one trip to memory, not n/blockDim.
FP_KERNEL void rmsnorm_f32(float* out, const float* x, const float* __restrict__ weight, int n, float eps) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	__shared__ float red[1024 / 16];
	const float* xr = x + (long long)blockIdx.x * n;
	float* o = out + (long long)blockIdx.x * n;
	float s = 0.f;
	if (rms_vec(n, x, out, weight, 0, 0)) {
		const int n4 = n >> 2;
		const float4* x4 = (const float4*)xr;
#pragma unroll 4
		for (int i = threadIdx.x; i < n4; i += blockDim.x) s = sq4(s, x4[i]);
		s = block_sum(s, red);
		const float scale = 1.f / sqrtf(s / (float)n + eps);
		const float4* w4 = (const float4*)weight;
#pragma unroll 4
		for (int i = threadIdx.x; i < n4; i += blockDim.x) ((float4*)o)[i] = norm4(x4[i], scale, w4[i]);
		return;
	}
	for (int i = threadIdx.x; i < n; i += blockDim.x) s += xr[i] * xr[i];
	s = block_sum(s, red);
	const float scale = 1.f / sqrtf(s / (float)n + eps);
	for (int i = threadIdx.x; i < n; i += blockDim.x) o[i] = __fmul_rn(xr[i], scale) * weight[i];
}

// add: dst = a + b (kernels.Add; any may alias).
FP_KERNEL void add_f32(float* dst, const float* a, const float* b, int n) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) dst[i] = a[i] + b[i];
}

// add_rows: each of the rows of y (n wide) += b (n): a bias over a batch.
FP_KERNEL void add_rows_f32(float* y, const float* b, int rows, int n) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	const long total = (long)rows * n;
	for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)blockDim.x * gridDim.x) y[i] += b[i % n];
}

// swiglu: out = silu(gate) * up, silu(x) = x / (1 + e^-x) (kernels.SwiGLU).
FP_KERNEL void swiglu_f32(float* out, const float* gate, const float* up, int n) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
		const float g = gate[i];
		out[i] = __fmul_rn(g / (1.f + expf(-g)), up[i]);
	}
}

// rope: rotary position embedding in place over nTok rows of nHeads heads
// of headDim values, row t at position pos[t] (kernels.Rope.Apply). One
// thread per (pair, head, row); theta is built by the host's float32
// recurrence theta_i = pos * thetaScale^i, one multiply at a time, so the
// angles are the host's bits. freqFactors may be null. extFactor 0 turns
// YaRN off; mscale is the magnitude factor with YaRN's correction included.
// rope_cs is the cosine and sine (scaled by mscale) of pair i at position p.
FP_DEVICE void rope_cs(int i, int p, float thetaScale, float freqScale, const float* __restrict__ freqFactors,
                       float extFactor, float mscale, float corrLo, float corrHi, float* c, float* s) {
	float theta = (float)p;
	for (int k = 0; k < i; k++) theta = __fmul_rn(theta, thetaScale);
	float thetaExtrap = theta;
	if (freqFactors) thetaExtrap = theta / freqFactors[i];
	const float thetaInterp = __fmul_rn(freqScale, thetaExtrap);
	float th = thetaInterp;
	if (extFactor != 0.f) {
		const float y = ((float)i - corrLo) / fmaxf(0.001f, corrHi - corrLo);
		const float ramp = (1.f - fminf(1.f, fmaxf(0.f, y))) * extFactor;
		th = __fadd_rn(__fmul_rn(thetaInterp, 1.f - ramp), __fmul_rn(thetaExtrap, ramp));
	}
	*c = __fmul_rn(cosf(th), mscale), *s = __fmul_rn(sinf(th), mscale);
}

FP_KERNEL void rope_f32(float* x, const i32* __restrict__ pos, int nTok, int nHeads, int headDim, int dims,
                        int neox, float thetaScale, float freqScale, const float* __restrict__ freqFactors,
                        float extFactor, float mscale, float corrLo, float corrHi) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	const int half = dims / 2;
	const int i = blockIdx.x * blockDim.x + threadIdx.x;
	const int h = blockIdx.y, t = blockIdx.z;
	if (i >= half || h >= nHeads || t >= nTok) return;
	float c, s;
	rope_cs(i, pos[t], thetaScale, freqScale, freqFactors, extFactor, mscale, corrLo, corrHi, &c, &s);
	float* head = x + ((long long)t * nHeads + h) * headDim;
	const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
	const float x0 = head[a], x1 = head[b];
	head[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
	head[b] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

// argmax: one block per row of n values; out[row] = {index, value bits} of
// the largest value, the first index on ties (NaN is never chosen).
FP_KERNEL void argmax_f32(i32* out, const float* __restrict__ x, int n) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	__shared__ float bv[1024 / 16];
	__shared__ int bi[1024 / 16];
	const float* xr = x + (long long)blockIdx.x * n;
	float best = -fp_inf();
	int idx = 0x7fffffff;
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		const float v = xr[i];
		if (v > best) best = v, idx = i; // strided, so the first larger index wins per thread
	}
#pragma unroll
	for (int m = WARP_SIZE / 2; m > 0; m >>= 1) {
		const float ov = shfl_xor(best, m);
		const int oi = shfl_xor_int(idx, m);
		if (ov > best || (ov == best && oi < idx)) best = ov, idx = oi;
	}
	const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	if (lane == 0) bv[warp] = best, bi[warp] = idx;
	__syncthreads();
	if (threadIdx.x == 0) {
		for (int k = 1; k < (int)(blockDim.x / WARP_SIZE); k++)
			if (bv[k] > best || (bv[k] == best && bi[k] < idx)) best = bv[k], idx = bi[k];
		if (idx == 0x7fffffff) idx = 0;
		out[2 * blockIdx.x] = idx;
		out[2 * blockIdx.x + 1] = __float_as_int(best);
	}
}

// f32_to_f16 and f32_to_bf16 convert activations for GEMM (round to nearest even).
FP_KERNEL void f32_to_f16(u16* out, const float* __restrict__ x, long long n) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)
		out[i] = float_to_half(x[i]);
}

FP_KERNEL void f32_to_bf16(u16* out, const float* __restrict__ x, long long n) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)
		out[i] = float_to_bf16(x[i]);
}
