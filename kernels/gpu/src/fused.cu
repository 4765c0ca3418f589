#include "compat.h"

// Fused steps of a decode step: each does in one launch, with the same
// float operations in the same order, what two or three kernels above do
// in turn, so a one-row step reads and writes its activations fewer times
// and the GPU runs fewer, fuller kernels.

// q8_group quantises v, one value per thread of a group of 32 consecutive
// threads holding block blk of a row, into xq (row of n: n int8 then n/32
// float scales), as quantize_act_q8.
FP_DEVICE void q8_group(i8* __restrict__ xq, int n, int idx, float v) {
	float amax = fabsf(v);
#pragma unroll
	for (int m = 16; m > 0; m >>= 1) amax = fmaxf(amax, shfl_xor(amax, m));
	const float d = amax / 127.f;
	const float id = d != 0.f ? 1.f / d : 0.f;
	xq[idx] = (i8)(int)roundf(v * id);
	if (idx % 32 == 0) ((float*)(xq + n))[idx / 32] = d;
}

// q8_group4 is q8_group for float4 values: value i of the row's float4s
// (values 4i..4i+3), eight threads of consecutive i to a group of 32.
// Every thread of the group calls it; those with in false only lend zeros
// to the group's amax (their group is all out, as n is a multiple of 32).
FP_DEVICE void q8_group4(i8* __restrict__ xq, int n, int i, float4 v, bool in) {
	float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
	for (int m = 4; m > 0; m >>= 1) amax = fmaxf(amax, shfl_xor(amax, m));
	const float d = amax / 127.f;
	const float id = d != 0.f ? 1.f / d : 0.f;
	if (!in) return;
	const u32 q = (u32)(u8)(i8)(int)roundf(v.x * id) | (u32)(u8)(i8)(int)roundf(v.y * id) << 8 |
	              (u32)(u8)(i8)(int)roundf(v.z * id) << 16 | (u32)(u8)(i8)(int)roundf(v.w * id) << 24;
	((u32*)xq)[i] = q;
	if ((i & 7) == 0) ((float*)(xq + n))[i >> 3] = d;
}

// add_rmsnorm_q8: one block per row. sum = a + b (b null: sum = a, which
// may then alias it), xn = rmsnorm(sum) * weight as rmsnorm_f32 (the same
// branch and sums, given the same block size), and, when xq is set (one
// row, n a multiple of 32), xq = quantize_act_q8(xn).
FP_KERNEL void add_rmsnorm_q8(float* sum, const float* a, const float* b, float* __restrict__ xn,
                              i8* __restrict__ xq, const float* __restrict__ weight, int n, float eps) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	__shared__ float red[1024 / 16];
	const long long row = (long long)blockIdx.x * n;
	float s = 0.f;
	if (rms_vec(n, a, b, b ? sum : 0, xn, weight) && ((u64)xq & 3) == 0) {
		const int n4 = n >> 2;
		const float4* a4 = (const float4*)(a + row);
		const float4* b4 = (const float4*)(b + row);
		float4* sum4 = (float4*)(sum + row);
#pragma unroll 4
		for (int i = threadIdx.x; i < n4; i += blockDim.x) {
			float4 v = a4[i];
			if (b) {
				const float4 w = b4[i];
				v.x = v.x + w.x;
				v.y = v.y + w.y;
				v.z = v.z + w.z;
				v.w = v.w + w.w;
				sum4[i] = v;
			}
			s = sq4(s, v);
		}
		s = block_sum(s, red);
		const float scale = 1.f / sqrtf(s / (float)n + eps);
		// Each thread reads back only what it wrote above.
		const float4* x4 = b ? (const float4*)sum4 : a4;
		const float4* w4 = (const float4*)weight;
		float4* xn4 = (float4*)(xn + row);
		// Whole rounds of the block, so that q8_group4's shuffles see every lane.
		for (int base = 0; base < n4; base += blockDim.x) {
			const int i = base + threadIdx.x;
			const bool in = i < n4;
			const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
			const float4 v = in ? norm4(x4[i], scale, w4[i]) : z;
			if (in) xn4[i] = v;
			if (xq) q8_group4(xq, n, i, v, in);
		}
		return;
	}
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		float v = a[row + i];
		if (b) {
			v = v + b[row + i];
			sum[row + i] = v;
		}
		s += v * v;
	}
	s = block_sum(s, red);
	const float scale = 1.f / sqrtf(s / (float)n + eps);
	const float* x = b ? sum : a;
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		const float v = __fmul_rn(x[row + i], scale) * weight[i];
		xn[row + i] = v;
		if (xq) q8_group(xq, n, i, v);
	}
}

// swiglu_q8: out = silu(gate) * up as swiglu_f32 over one row of n, and
// xq = quantize_act_q8(out). One thread per value (n a multiple of 32).
FP_KERNEL void swiglu_q8(float* out, const float* gate, const float* up, i8* __restrict__ xq, int n) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	const int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return; // whole 32-groups leave together
	const float g = gate[i];
	const float v = __fmul_rn(g / (1.f + expf(-g)), up[i]);
	out[i] = v;
	q8_group(xq, n, i, v);
}

// rope_kv_store: grid (nHead + nKVHead, nTok), one block of 64 threads per
// head of a row. Query heads are rotated in place (rope_f32); key heads are
// rotated into the row's sequence cache at its position, and value heads
// copied there (kv_store_f32), from k and v (nTok×nKVHead×headDim each).
FP_KERNEL void rope_kv_store(float* q, const float* __restrict__ k, const float* __restrict__ v,
                             const i32* __restrict__ meta, int nTok, int layer, int nHead, int nKVHead,
                             int headDim, int dims, int neox, float thetaScale, float freqScale,
                             const float* __restrict__ freqFactors, float extFactor, float mscale, float corrLo,
                             float corrHi) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	const int h = blockIdx.x, t = blockIdx.y, half = dims / 2;
	const int p = meta[t];
	if (h < nHead) {
		float* head = q + ((long long)t * nHead + h) * headDim;
		for (int i = threadIdx.x; i < half; i += blockDim.x) {
			float c, s;
			rope_cs(i, p, thetaScale, freqScale, freqFactors, extFactor, mscale, corrLo, corrHi, &c, &s);
			const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
			const float x0 = head[a], x1 = head[b];
			head[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
			head[b] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
		}
		return;
	}
	const int kh = h - nHead, kvDim = nKVHead * headDim;
	int pos, cap;
	const float* kc;
	if (!row_kv(meta, nTok, t, layer, kvDim, &pos, &cap, &kc)) return;
	float* kd = (float*)kc + (i64)pos * kvDim + (i64)kh * headDim;
	float* vd = kd + (i64)cap * kvDim;
	const float* ks = k + ((i64)t * nKVHead + kh) * headDim;
	const float* vs = v + ((i64)t * nKVHead + kh) * headDim;
	for (int i = threadIdx.x; i < half; i += blockDim.x) {
		float c, s;
		rope_cs(i, p, thetaScale, freqScale, freqFactors, extFactor, mscale, corrLo, corrHi, &c, &s);
		const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
		const float x0 = ks[a], x1 = ks[b];
		kd[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
		kd[b] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
	}
	for (int i = 2 * half + threadIdx.x; i < headDim; i += blockDim.x) kd[i] = ks[i]; // not rotated
	for (int i = threadIdx.x; i < headDim; i += blockDim.x) vd[i] = vs[i];
}
