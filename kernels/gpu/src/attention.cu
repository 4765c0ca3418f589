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
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
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
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
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

// ------------------------------------------------------------ rows of many sequences
//
// The kernels below serve a batch of n query rows drawn from many sequences,
// each with its own KV cache, and read everything that changes per token from
// the row metadata in device memory, so one launch sequence can be captured
// once into a graph and replayed. The metadata of n rows is a structure of
// arrays (written by gpu.PutRowMeta):
//   int32 pos[n]  at byte 0:   the row's position in its sequence,
//   int32 cap[n]  at byte 4n:  the capacity, in positions, of its cache,
//   uint64 base[n] at byte 8n: the device address of its sequence's KV block.
// A KV block holds every layer: layer l's K rows at base + l*2*cap*kvDim
// floats, its V rows cap*kvDim floats after, row p = position p. A row whose
// base is 0 or whose pos is outside [0, cap) is padding: kv_store writes
// nothing for it and the attention kernels write zeros.

#define ROWS_THREADS 128
#define ROWS_WARPS (ROWS_THREADS / WARP_SIZE)
#define ROWS_GB 4          // query heads (of one KV head) per block of attn_rows_split
#define ROWS_MAX_SPLIT 256 // most context pieces per row

// row_kv reads row r's metadata and returns whether the row is live, its
// position and capacity, and its layer's K rows (V rows follow at cap*kvDim).
FP_DEVICE bool row_kv(const i32* __restrict__ meta, int n, int r, int layer, int kvDim, int* pos, int* cap,
                      const float** k) {
	const int p = meta[r], c = meta[n + r];
	const u64 base = ((const u64*)(meta + 2 * n))[r];
	*pos = p, *cap = c;
	*k = (const float*)base + (i64)layer * 2 * c * kvDim;
	return base != 0 && p >= 0 && p < c;
}

// kv_store: grid (kvDim/256 rounded up, n). Copies row r of k and v into its
// sequence's cache for layer at the row's position.
FP_KERNEL void kv_store_f32(const i32* __restrict__ meta, const float* __restrict__ k,
                            const float* __restrict__ v, int n, int layer, int kvDim) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	const int r = blockIdx.y, i = blockIdx.x * blockDim.x + threadIdx.x;
	int pos, cap;
	const float* kc;
	if (i >= kvDim || !row_kv(meta, n, r, layer, kvDim, &pos, &cap, &kc)) return;
	float* kd = (float*)kc + (i64)pos * kvDim + i;
	kd[0] = k[(i64)r * kvDim + i];
	kd[(i64)cap * kvDim] = v[(i64)r * kvDim + i];
}

FP_DEVICE float4 f4_zero() { return make_float4(0.f, 0.f, 0.f, 0.f); }
// The batched attention's sums are written out as explicit fused or
// separately rounded operations, never left for the compiler to contract:
// x*a + y*b may become fma(x, a, y*b) or fma(y, b, x*a), and the choice
// changed between instantiations of one template (attn_rows_rope1 against
// attn_rows_rope, TestAttentionRowsRope on an H100), so that the kernels
// that must agree bit for bit did not.
FP_DEVICE float f4_dot(float4 a, float4 b) { return fmaf(a.w, b.w, fmaf(a.z, b.z, fmaf(a.y, b.y, __fmul_rn(a.x, b.x)))); }
// f4_fma returns a*s + b*t, component-wise, as fma(b, t, a*s).
FP_DEVICE float4 f4_fma(float4 a, float s, float4 b, float t) {
	return make_float4(fmaf(b.x, t, __fmul_rn(a.x, s)), fmaf(b.y, t, __fmul_rn(a.y, s)), fmaf(b.z, t, __fmul_rn(a.z, s)),
	                   fmaf(b.w, t, __fmul_rn(a.w, s)));
}
FP_DEVICE float4 f4_shfl_xor(float4 a, int m) {
	return make_float4(shfl_xor(a.x, m), shfl_xor(a.y, m), shfl_xor(a.z, m), shfl_xor(a.w, m));
}
// exp_from is e^(x-m), 0 when x is -inf (also when m is).
FP_DEVICE float exp_from(float x, float m) { return x == -fp_inf() ? 0.f : expf(__fsub_rn(x, m)); }

// RowsRope is what attn_rows_rope adds to attn_rows_piece: rope_kv_store's
// new keys and values k and v (n×nKVHead×headDim) and its rotation
// (rope_cs's constants, over the first dims values of a head).
struct RowsRope {
	const float* k;
	const float* v;
	const float* freqFactors;
	int dims, neox;
	float thetaScale, freqScale, extFactor, mscale, corrLo, corrHi;
};

// rope_at is value d of head x after rope_kv_store's rotation, with the
// float operations it makes: of the first 2*half values, the pairs (2i,
// 2i+1), or (i, i+half) when neox, turned by cs[2i] (cosine) and cs[2i+1]
// (sine) of rope_cs; the rest kept.
FP_DEVICE float rope_at(const float* x, int d, int half, int neox, const float* cs) {
	if (d >= 2 * half) return x[d];
	const int i = neox ? (d < half ? d : d - half) : d / 2;
	const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
	const float c = cs[2 * i], s = cs[2 * i + 1], x0 = x[a], x1 = x[b];
	return d == a ? __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s)) : __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

// The scratch of attn_rows_split holds rowStride 32-bit words per row r
// (at part + r*rowStride): nHead arrival counters (u32, one per block
// column y of the row; zero between launches), then the row's partials,
// head h's piece s at nHead + (h*nSplit + s)*(headDim+2). A row's place
// depends on rowStride alone, never on n or the launch's nSplit (at most
// the one rowStride was sized for), so launches of any n share one scratch
// and never overwrite each other's counters.
//
// attn_rows_piece: grid (nSplit, nKVHead * ceil(group/GB), n),
// ROWS_THREADS threads; D is the head size rounded up to 64, 128 or 256.
// Block (s, y, r) takes row r, up to GB query heads of one KV head (the
// group's heads share every K and V load), and piece s of the row's context:
// positions [s*len, (s+1)*len) of 0..pos, len = max(minSplit,
// ceil((pos+1)/nSplit)), so pieces past the context are empty. LP lanes hold
// one position (a float4 each), a warp takes PW positions side by side and U
// of those steps at once (all loads issued before any is used), and each lane
// group keeps an online softmax per head; groups and warps are merged at the
// end into one partial per head: m, l, acc[headDim] (m = -inf when empty,
// the rest then left stale).
//
// With ROPE (attn_rows_rope) the block first does rope_kv_store's work for
// its part of the row, the row being the only one of its sequence in the
// launch: it rotates its query heads as it loads them (q itself is left as
// it was), and, when its piece holds the row's position pos, rotates the
// row's key of its KV head (rope.k) and takes its value (rope.v), both into
// shared memory. The first block of the KV head's heads (chunk 0) also
// writes them into the cache at pos; every block holding pos attends to
// that position from its shared copy, never from the cache, so no block
// reads what another block of the launch writes, and no block's L1 can
// give a stale line of it. The rotation's float operations are
// rope_kv_store's (rope_cs, rope_at), and the attention's are those of the
// plain piece on the stored rows: the same bits.
template <int D, bool ROPE, int GB = ROWS_GB>
FP_DEVICE void attn_rows_piece(float* __restrict__ part, const float* __restrict__ q, const i32* __restrict__ meta,
                               int n, int layer, int nHead, int nKVHead, int headDim, float scale, int minSplit,
                               int rowStride, const RowsRope& rope) {
	enum {
		LP = D / 4 < WARP_SIZE ? D / 4 : WARP_SIZE, // lanes per position
		VPL = D / (4 * LP),                         // float4 per lane
		PW = WARP_SIZE / LP,                        // positions per warp step
		U = 4 / VPL,                                // steps per iteration
	};
	const int s = blockIdx.x, r = blockIdx.z, nSplit = gridDim.x;
	const int group = nHead / nKVHead, chunks = (group + GB - 1) / GB;
	const int kvh = blockIdx.y / chunks, g0 = (blockIdx.y % chunks) * GB;
	const int h0 = kvh * group + g0, gn = min(GB, group - g0);
	const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	const int sg = lane / LP, j = lane % LP;
	const int kvDim = nKVHead * headDim;
	const long long hstride = (long long)nSplit * (headDim + 2);
	float* pp = part + (long long)r * rowStride + nHead + h0 * hstride + (long long)s * (headDim + 2);

	int pos, cap;
	const float* kb;
	const int ctx = row_kv(meta, n, r, layer, kvDim, &pos, &cap, &kb) ? pos + 1 : 0;
	const int len = max(minSplit, (ctx + nSplit - 1) / nSplit);
	const int p0 = min(ctx, s * len), p1 = min(ctx, p0 + len);
	if (p0 >= p1) { // an empty piece (or a padding row): only m is read
		if ((int)threadIdx.x < gn) pp[threadIdx.x * hstride] = -fp_inf();
		return;
	}
	kb += kvh * headDim;
	const float* vb = kb + (long long)cap * kvDim;

	// ROPE: the block's rotated query heads, then the row's rotated key and
	// its value at pos (when the piece holds pos).
	enum { RH = ROPE ? GB + 2 : 1, RD = ROPE ? D / 4 : 1, RK = ROPE ? GB : 0, RV = ROPE ? GB + 1 : 0 };
	__shared__ float4 srot[RH][RD];
	if (ROPE) {
		enum { E = ROPE ? (RH * RD * 4 + ROWS_THREADS - 1) / ROWS_THREADS : 1 }; // values per thread, at most
		__shared__ float sraw[RH][RD * 4], scs[RD * 4]; // the values as loaded; each pair's cosine and sine
		const int half = rope.dims / 2;
		const bool holds = p1 == ctx, writes = holds && blockIdx.y % chunks == 0;
		const int nv = (gn + (holds ? 2 : 0)) * headDim;
		const float* qh = q + ((long long)r * nHead + h0) * headDim;
		const long long kvs = ((long long)r * nKVHead + kvh) * headDim; // the row's new key and value
		// The loads are issued first, to fly while rope_cs computes.
		float x[E];
#pragma unroll
		for (int e = 0; e < E; e++) {
			const int t = threadIdx.x + e * ROWS_THREADS, g = t / headDim, d = t % headDim;
			x[e] = t >= nv ? 0.f : g < gn ? qh[g * headDim + d] : g == gn ? rope.k[kvs + d] : rope.v[kvs + d];
		}
		for (int i = threadIdx.x; i < half; i += ROWS_THREADS)
			rope_cs(i, pos, rope.thetaScale, rope.freqScale, rope.freqFactors, rope.extFactor, rope.mscale,
			        rope.corrLo, rope.corrHi, &scs[2 * i], &scs[2 * i + 1]);
#pragma unroll
		for (int e = 0; e < E; e++) {
			const int t = threadIdx.x + e * ROWS_THREADS, g = t / headDim, d = t % headDim;
			if (t < nv) sraw[g < gn ? g : g == gn ? RK : RV][d] = x[e];
		}
		__syncthreads();
		float* kd = (float*)kb + (long long)pos * kvDim;
		for (int t = threadIdx.x; t < nv; t += ROWS_THREADS) {
			const int g = t / headDim, d = t % headDim, h = g < gn ? g : g == gn ? RK : RV;
			const float y = h == RV ? sraw[RV][d] : rope_at(sraw[h], d, half, rope.neox, scs);
			((float*)srot[h])[d] = y;
			if (writes && h == RK) kd[d] = y;
			if (writes && h == RV) kd[(long long)cap * kvDim + d] = y;
		}
		__syncthreads();
	}

	float4 qv[GB][VPL], acc[GB][VPL];
	float m[GB], l[GB];
#pragma unroll
	for (int g = 0; g < GB; g++) {
		m[g] = -fp_inf(), l[g] = 0.f;
#pragma unroll
		for (int i = 0; i < VPL; i++) {
			const int d = (i * LP + j) * 4;
			qv[g][i] = g < gn && d < headDim
			               ? ROPE ? srot[g][d / 4] : *(const float4*)(q + ((long long)r * nHead + h0 + g) * headDim + d)
			               : f4_zero();
			acc[g][i] = f4_zero();
		}
	}

	for (int it = p0 + warp * PW * U; it < p1; it += ROWS_WARPS * PW * U) {
		float4 kr[U][VPL], vr[U][VPL];
#pragma unroll
		for (int u = 0; u < U; u++) {
			const int p = it + u * PW + sg;
#pragma unroll
			for (int i = 0; i < VPL; i++) {
				const int d = (i * LP + j) * 4;
				const bool ok = p < p1 && d < headDim;
				const bool fresh = ROPE && p == pos; // with ok, only in a piece that holds pos
				kr[u][i] = ok ? fresh ? srot[RK][d / 4] : *(const float4*)(kb + (long long)p * kvDim + d) : f4_zero();
				vr[u][i] = ok ? fresh ? srot[RV][d / 4] : *(const float4*)(vb + (long long)p * kvDim + d) : f4_zero();
			}
		}
#pragma unroll
		for (int g = 0; g < GB; g++) {
			if (g >= gn) continue; // uniform over the block
			float sc[U], mx = -fp_inf();
#pragma unroll
			for (int u = 0; u < U; u++) {
				float dot = 0.f;
#pragma unroll
				for (int i = 0; i < VPL; i++) dot = __fadd_rn(dot, f4_dot(qv[g][i], kr[u][i]));
#pragma unroll
				for (int o = LP / 2; o > 0; o >>= 1) dot = __fadd_rn(dot, shfl_xor(dot, o));
				sc[u] = it + u * PW + sg < p1 ? __fmul_rn(dot, scale) : -fp_inf();
				mx = fmaxf(mx, sc[u]);
			}
			const float mNew = fmaxf(m[g], mx); // -inf while nothing is seen: corr = e = 0
			const float corr = exp_from(m[g], mNew);
			l[g] = __fmul_rn(l[g], corr);
#pragma unroll
			for (int i = 0; i < VPL; i++) acc[g][i] = f4_fma(acc[g][i], corr, f4_zero(), 0.f);
#pragma unroll
			for (int u = 0; u < U; u++) {
				const float e = exp_from(sc[u], mNew);
				l[g] = __fadd_rn(l[g], e);
#pragma unroll
				for (int i = 0; i < VPL; i++) acc[g][i] = f4_fma(acc[g][i], 1.f, vr[u][i], e);
			}
			m[g] = mNew;
		}
	}

	// Merge the lane groups of each warp, then the warps.
#pragma unroll
	for (int o = LP; o < WARP_SIZE; o <<= 1) {
#pragma unroll
		for (int g = 0; g < GB; g++) {
			const float m2 = shfl_xor(m[g], o), l2 = shfl_xor(l[g], o);
			const float M = fmaxf(m[g], m2);
			const float a = M == -fp_inf() ? 0.f : exp_from(m[g], M), b = M == -fp_inf() ? 0.f : exp_from(m2, M);
			l[g] = fmaf(l2, b, __fmul_rn(l[g], a));
#pragma unroll
			for (int i = 0; i < VPL; i++) acc[g][i] = f4_fma(acc[g][i], a, f4_shfl_xor(acc[g][i], o), b);
			m[g] = M;
		}
	}
	__shared__ float sm[ROWS_WARPS][GB], sl[ROWS_WARPS][GB];
	__shared__ float4 sacc[ROWS_WARPS][GB][D / 4];
	if (sg == 0) {
#pragma unroll
		for (int g = 0; g < GB; g++) {
			if (j == 0) sm[warp][g] = m[g], sl[warp][g] = l[g];
#pragma unroll
			for (int i = 0; i < VPL; i++) sacc[warp][g][i * LP + j] = acc[g][i];
		}
	}
	__syncthreads();
	for (int t = threadIdx.x; t < gn * headDim; t += ROWS_THREADS) {
		const int g = t / headDim, d = t % headDim;
		float M = -fp_inf();
		for (int w = 0; w < ROWS_WARPS; w++) M = fmaxf(M, sm[w][g]);
		float L = 0.f, a = 0.f;
		for (int w = 0; w < ROWS_WARPS; w++) {
			const float e = exp_from(sm[w][g], M);
			L = fmaf(e, sl[w][g], L);
			a = fmaf(e, ((const float*)sacc[w][g])[d], a);
		}
		float* o = pp + g * hstride;
		if (d == 0) o[0] = M, o[1] = L;
		o[2 + d] = a;
	}
}

// q8_group is in fused.cu (one translation unit): quantize_act_q8 of one
// value per thread of a group of 32.
FP_DEVICE void q8_group(i8* __restrict__ xq, int n, int idx, float v);

// ld_l2 loads a float another block of the grid wrote before its arrival
// (attn_rows_split): from the L2 (ld.global.cg), never from this SM's L1,
// which may hold a stale line of it; on AMD a volatile load, which the
// compiler makes coherent at the device level (glc), the same.
FP_DEVICE float ld_l2(const float* p) {
#if defined(FP_AMD)
	return *(const volatile float*)p;
#else
	return __ldcg(p);
#endif
}

// attn_rows_merge: the block's ROWS_THREADS threads merge the nSplit pieces
// of query heads h0..h0+gn-1 (gn <= ROWS_GB) of row r of n, rp being the
// row's partials (head h's at rp + h*nSplit*(headDim+2)): out = Σ e^(m_s-M)
// acc_s / Σ e^(m_s-M) l_s over the non-empty pieces; zeros for a padding row
// (every piece empty). The pieces are read side by side (a thread per piece,
// then a thread per output value with every piece's load independent of the
// others), never one after another, and an empty piece's stale acc is never
// loaded. When xq is not null (headDim a multiple of 32) it also writes the
// int8 form of out, as quantize_act_q8 over all n rows at once:
// n*nHead*headDim int8, then a float scale per 32. A 32-group is 32 dims of
// one head, whole warps of the output loop, so its shuffles see every lane.
// A head's sums are made in the same order whatever gn and h0, so
// attn_rows_split's merge and attn_rows_combine_f32 give the same bits.
FP_DEVICE void attn_rows_merge(float* __restrict__ out, i8* __restrict__ xq, const float* rp, int n, int r,
                               int nHead, int h0, int gn, int headDim, int nSplit) {
	enum { SPT = ROWS_MAX_SPLIT / ROWS_THREADS }; // pieces per thread
	const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	const int stride = headDim + 2;
	const long long hstride = (long long)nSplit * stride;
	__shared__ float w[ROWS_GB][ROWS_MAX_SPLIT], red[2][ROWS_GB][ROWS_WARPS];
	float ms[ROWS_GB][SPT], lv[ROWS_GB][SPT];
#pragma unroll
	for (int g = 0; g < ROWS_GB; g++) { // m and l of each piece of every head, in one trip
		if (g >= gn) continue; // uniform over the block
		const float* pp = rp + (h0 + g) * hstride;
#pragma unroll
		for (int i = 0; i < SPT; i++) {
			const int s = threadIdx.x + i * ROWS_THREADS;
			ms[g][i] = s < nSplit ? ld_l2(pp + s * stride) : -fp_inf();
			lv[g][i] = s < nSplit ? ld_l2(pp + s * stride + 1) : 0.f; // an empty piece's is stale: never used
		}
	}
#pragma unroll
	for (int g = 0; g < ROWS_GB; g++) {
		if (g >= gn) continue;
		float mx = -fp_inf();
#pragma unroll
		for (int i = 0; i < SPT; i++) mx = fmaxf(mx, ms[g][i]);
		mx = warp_max(mx);
		if (lane == 0) red[0][g][warp] = mx;
	}
	__syncthreads();
#pragma unroll
	for (int g = 0; g < ROWS_GB; g++) {
		if (g >= gn) continue;
		float M = -fp_inf(), ls = 0.f;
		for (int i = 0; i < ROWS_WARPS; i++) M = fmaxf(M, red[0][g][i]);
#pragma unroll
		for (int i = 0; i < SPT; i++) {
			const int s = threadIdx.x + i * ROWS_THREADS;
			const float e = M == -fp_inf() ? 0.f : exp_from(ms[g][i], M);
			if (s < nSplit) w[g][s] = e;
			ls = e != 0.f ? fmaf(e, lv[g][i], ls) : ls;
		}
		ls = warp_sum(ls);
		if (lane == 0) red[1][g][warp] = ls;
	}
	__syncthreads();
	for (int t = threadIdx.x; t < gn * headDim; t += ROWS_THREADS) {
		const int g = t / headDim, d = t % headDim;
		float L = 0.f;
		for (int i = 0; i < ROWS_WARPS; i++) L += red[1][g][i];
		const float inv = L > 0.f ? 1.f / L : 0.f;
		const float* pp = rp + (h0 + g) * hstride + 2 + d;
		float a = 0.f;
#pragma unroll 16
		for (int s = 0; s < nSplit; s++) {
			const float ws = w[g][s]; // 0 for an empty piece: its stale acc is neither loaded nor multiplied
			const float v = ws != 0.f ? ld_l2(pp + s * stride) : 0.f;
			a = ws != 0.f ? fmaf(ws, v, a) : a;
		}
		const float y = __fmul_rn(a, inv);
		const long long o = ((long long)r * nHead + h0 + g) * headDim + d;
		out[o] = y;
		if (xq) q8_group(xq, n * nHead * headDim, (int)o, y); // within int: see the launcher
	}
}

// attn_rows_split: attn_rows_piece, then, when out is not null, the merge
// (attn_rows_arrive, for blocks of GB heads):
// the block that completes a (row, column y) (its last piece) merges the
// pieces of the column's heads (attn_rows_merge) into out and xq. Each
// block, empty or not (padding rows too), publishes its partials (block
// barrier, fence) and then arrives: one atomicAdd on the column's counter.
// The block that sees nSplit-1 arrivals before its own is the last: it
// returns the counter to zero for the next launch (which its FP_GRID_WAIT
// orders after this one's end, also in a replayed graph), fences (acquire)
// and reads the other blocks' partials from the L2. With out null the
// partials are left to attn_rows_combine_f32 and the counters untouched.
template <int GB>
FP_DEVICE void attn_rows_arrive(float* __restrict__ part, int n, int nHead, int nKVHead, int headDim, int rowStride,
                                float* __restrict__ out, i8* __restrict__ xq) {
	const int r = blockIdx.z, nSplit = gridDim.x;
	const int group = nHead / nKVHead, chunks = (group + GB - 1) / GB;
	const int y = blockIdx.y, g0 = y % chunks * GB; // the heads of attn_rows_piece
	const int h0 = y / chunks * group + g0, gn = min(GB, group - g0);
	float* rp = part + (long long)r * rowStride;
	u32* count = (u32*)rp + y;
	__shared__ int last;
	// Cooperative groups' grid barrier does the same: the block barrier
	// orders every thread's partial stores before thread 0's fence, which
	// (cumulative) orders them before its arrival; the last block's fence
	// after the atomic, then the barrier, order its threads' loads after
	// every other block's arrival.
	__syncthreads();
	if (threadIdx.x == 0) {
		__threadfence(); // release
		last = atomicAdd(count, 1u) == (u32)nSplit - 1;
		if (last) {
			atomicExch(count, 0u); // every piece has arrived: none touches it again in this launch
			__threadfence();       // acquire
		}
	}
	__syncthreads();
	if (!last) return;
	attn_rows_merge(out, xq, rp + nHead, n, r, nHead, h0, gn, headDim, nSplit);
}

template <int D>
FP_DEVICE void attn_rows_split(float* __restrict__ part, const float* __restrict__ q, const i32* __restrict__ meta,
                               int n, int layer, int nHead, int nKVHead, int headDim, float scale, int minSplit,
                               int rowStride, float* __restrict__ out, i8* __restrict__ xq) {
	attn_rows_piece<D, false>(part, q, meta, n, layer, nHead, nKVHead, headDim, scale, minSplit, rowStride,
	                          RowsRope());
	if (out) attn_rows_arrive<ROWS_GB>(part, n, nHead, nKVHead, headDim, rowStride, out, xq);
}

#define FP_ATTN_ROWS_SPLIT(D)                                                                                  \
	FP_KERNEL void __launch_bounds__(ROWS_THREADS)                                                             \
	    attn_rows_split_f32_d##D(float* __restrict__ part, const float* __restrict__ q,                        \
	                             const i32* __restrict__ meta, int n, int layer, int nHead, int nKVHead,       \
	                             int headDim, float scale, int minSplit, int rowStride,                        \
	                             float* __restrict__ out, i8* __restrict__ xq) {                               \
		FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();                                                       \
		attn_rows_split<D>(part, q, meta, n, layer, nHead, nKVHead, headDim, scale, minSplit, rowStride,   \
		                   out, xq);                                                                       \
	}
FP_ATTN_ROWS_SPLIT(64)
FP_ATTN_ROWS_SPLIT(128)
FP_ATTN_ROWS_SPLIT(256)

// attn_rows_rope: rope_kv_store (its arguments from k on) and attn_rows_split
// without the merge in one launch, for rows of distinct sequences
// (attn_rows_piece with ROPE): the same partials, left to
// attn_rows_combine_f32, and the same cache rows at each row's position.
// q is read, never rotated in place.
//
// attn_rows_rope1: the same with one query head per block (GB = 1), group
// times the blocks: for one row, whose few blocks otherwise each work
// through every head of their KV head one after another (ncu, H100, 1B
// shape: 4 warps a busy SM, ~6 cycles per issued instruction). The blocks
// of one KV head each load its K and V (from the L2 after the first).
// Each head's sums are made in the same order: the same bits.
//
// attn_rows_rope1m: attn_rows_rope1 followed by attn_rows_split's merge
// (attn_rows_arrive): the block that completes a query head merges its
// pieces into out and xq, one head per block as attn_rows_combine_f32 has,
// so that one-row steps need no combine launch. The arrival counters must
// be zero before the first launch, as for attn_rows_split.
//
// All three take out and xq after corrHi; only the merging one reads them.
#define FP_ATTN_ROWS_ROPE(NAME, D, GB, MERGE)                                                                  \
	FP_KERNEL void __launch_bounds__(ROWS_THREADS)                                                             \
	    NAME##_f32_d##D(float* __restrict__ part, const float* __restrict__ q, const i32* __restrict__ meta,    \
	                    int n, int layer, int nHead, int nKVHead, int headDim, float scale, int minSplit,      \
	                    int rowStride, const float* __restrict__ k, const float* __restrict__ v, int dims,     \
	                    int neox, float thetaScale, float freqScale, const float* __restrict__ freqFactors,    \
	                    float extFactor, float mscale, float corrLo, float corrHi, float* __restrict__ out,    \
	                    i8* __restrict__ xq) {                                                                 \
		FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();                                                       \
		const RowsRope rope = {k, v, freqFactors, dims, neox, thetaScale, freqScale, extFactor, mscale,    \
		                       corrLo, corrHi};                                                            \
		attn_rows_piece<D, true, GB>(part, q, meta, n, layer, nHead, nKVHead, headDim, scale, minSplit,    \
		                             rowStride, rope);                                                     \
		if (MERGE) attn_rows_arrive<GB>(part, n, nHead, nKVHead, headDim, rowStride, out, xq);             \
	}
#define FP_ATTN_ROWS_ROPES(D)                                                                                  \
	FP_ATTN_ROWS_ROPE(attn_rows_rope, D, ROWS_GB, false)                                                       \
	FP_ATTN_ROWS_ROPE(attn_rows_rope1, D, 1, false)                                                            \
	FP_ATTN_ROWS_ROPE(attn_rows_rope1m, D, 1, true)
FP_ATTN_ROWS_ROPES(64)
FP_ATTN_ROWS_ROPES(128)
FP_ATTN_ROWS_ROPES(256)

// attn_rows_combine: grid (nHead, n), the merge of attn_rows_split as a
// kernel of its own (attn_rows_merge of one head per block), for partials
// written with out null: the same bits as the merged launch, kept to time
// and test against it.
FP_KERNEL void __launch_bounds__(ROWS_THREADS)
    attn_rows_combine_f32(float* __restrict__ out, const float* __restrict__ part, int nHead, int headDim,
                          int nSplit, i8* __restrict__ xq, int rowStride) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	const int r = blockIdx.y;
	attn_rows_merge(out, xq, part + (long long)r * rowStride + nHead, (int)gridDim.y, r, nHead, blockIdx.x, 1,
	                headDim, nSplit);
}

// attn_rows_prefill: grid (ceil(n/QB), nHead), KS*ROWS_THREADS threads; the
// tiled (flash-attention) kernel for prompt chunks. Block (x, h) takes QB =
// R*ROWS_THREADS/TD consecutive rows (the heaviest tiles first) of query
// head h. TD threads share R rows, each holding D/TD of their dims (float4s
// i*TD + j): a K or V value read from shared memory (a broadcast to the
// warp's threads with the same j) serves R rows. The rows are taken in
// groups that share one sequence (one group per tile in a prompt chunk):
// the group's K and V stream through shared memory once in tiles of BK
// positions, and every row of the group scores them (causal: positions up to
// its own) in chunks of CH positions per online-softmax update. KS sets of
// ROWS_THREADS threads take interleaved chunks of each tile for the same
// rows (a shorter path per block) and are merged at the end. Scores are
// kept in base 2 (scale*log2 e folded in, exp2f).
template <int D, int TD, int R, int KS, int CH>
FP_DEVICE void attn_rows_prefill(float* __restrict__ out, const float* __restrict__ q, const i32* __restrict__ meta,
                                 int n, int layer, int nHead, int nKVHead, int headDim, float scale) {
	enum {
		QB = R * ROWS_THREADS / TD, // rows per block
		DPT = D / TD / 4,           // float4 per thread and row
		BK = 4096 / D,              // positions per K/V tile (16 KiB each)
		F4 = D / 4,                 // float4 per K/V row in shared memory
		NT = KS * ROWS_THREADS,
	};
	static_assert(BK % (KS * CH) == 0, "a tile is not a whole number of chunks per set");
	__shared__ float4 kvs[2 * BK * F4]; // the K tile, then the V tile
	float4* ks = kvs;
	float4* vs = kvs + BK * F4;
	__shared__ int spos[QB], scap[QB], sdone[QB];
	__shared__ u64 sbase[QB];
	__shared__ u64 slead;
	__shared__ int sctx, scapl;

	const int h = blockIdx.y, r0 = (gridDim.x - 1 - blockIdx.x) * QB;
	const int kset = threadIdx.x / ROWS_THREADS, tt = threadIdx.x % ROWS_THREADS;
	const int qi = tt / TD * R, j = tt % TD; // rows r0+qi .. r0+qi+R-1
	const int kvDim = nKVHead * headDim, kvOff = h / (nHead / nKVHead) * headDim;
	const float scale2 = scale * 1.4426950408889634f; // log2 e
	for (int i = threadIdx.x; i < QB; i += NT) {
		const int rr = r0 + i;
		int pos = -1, cap = 0;
		const float* kc = 0;
		const bool live = rr < n && row_kv(meta, n, rr, layer, kvDim, &pos, &cap, &kc);
		spos[i] = live ? pos : -1;
		scap[i] = cap;
		sbase[i] = live ? ((const u64*)(meta + 2 * n))[rr] : 0;
		sdone[i] = !live;
	}
	__syncthreads();

	int myPos[R];
	float4 qv[R][DPT], acc[R][DPT];
	float m[R], l[R];
#pragma unroll
	for (int k = 0; k < R; k++) {
		myPos[k] = spos[qi + k];
		m[k] = -fp_inf(), l[k] = 0.f;
#pragma unroll
		for (int i = 0; i < DPT; i++) {
			const int d = (i * TD + j) * 4;
			qv[k][i] = myPos[k] >= 0 && d < headDim
			               ? *(const float4*)(q + ((long long)(r0 + qi + k) * nHead + h) * headDim + d)
			               : f4_zero();
			acc[k][i] = f4_zero();
		}
	}

	for (;;) {
		if (threadIdx.x == 0) { // the next group: the rows of the first row not done
			int lead = -1;
			for (int i = 0; i < QB && lead < 0; i++)
				if (!sdone[i]) lead = i;
			int ctx = 0;
			if (lead >= 0) {
				for (int i = lead; i < QB; i++)
					if (!sdone[i] && sbase[i] == sbase[lead]) ctx = max(ctx, spos[i] + 1), sdone[i] = 1;
				slead = sbase[lead], scapl = scap[lead];
			}
			sctx = ctx;
		}
		__syncthreads();
		const int ctx = sctx;
		if (ctx == 0) break;
		// lastPos[k]: the last position row k attends to in this group (-1: none).
		int lastPos[R], wmax = -1;
#pragma unroll
		for (int k = 0; k < R; k++) {
			lastPos[k] = myPos[k] >= 0 && sbase[qi + k] == slead ? myPos[k] : -1;
			wmax = max(wmax, lastPos[k]);
		}
		// The last position any row of this warp attends to, so that chunks
		// past the diagonal are skipped by the whole warp.
#pragma unroll
		for (int o = WARP_SIZE / 2; o > 0; o >>= 1) wmax = max(wmax, shfl_xor_int(wmax, o));
		const float* kb = (const float*)slead + (long long)layer * 2 * scapl * kvDim + kvOff;
		const float* vb = kb + (long long)scapl * kvDim;

		for (int t0 = 0; t0 < ctx; t0 += BK) {
			for (int idx = threadIdx.x; idx < BK * F4; idx += NT) {
				const int p = t0 + idx / F4, d = (idx % F4) * 4;
				const bool ok = p < ctx && d < headDim;
				ks[idx] = ok ? *(const float4*)(kb + (long long)p * kvDim + d) : f4_zero();
				vs[idx] = ok ? *(const float4*)(vb + (long long)p * kvDim + d) : f4_zero();
			}
			__syncthreads();
			for (int c0 = kset * CH; c0 < BK && t0 + c0 <= wmax; c0 += KS * CH) {
				float sc[R][CH];
#pragma unroll
				for (int c = 0; c < CH; c++) {
					float4 kr[DPT];
#pragma unroll
					for (int i = 0; i < DPT; i++) kr[i] = ks[(c0 + c) * F4 + i * TD + j];
#pragma unroll
					for (int k = 0; k < R; k++) {
						float dot = 0.f;
#pragma unroll
						for (int i = 0; i < DPT; i++) dot += f4_dot(qv[k][i], kr[i]);
#pragma unroll
						for (int o = TD / 2; o > 0; o >>= 1) dot += shfl_xor(dot, o);
						sc[k][c] = t0 + c0 + c <= lastPos[k] ? dot * scale2 : -fp_inf();
					}
				}
#pragma unroll
				for (int k = 0; k < R; k++) {
					float mx = -fp_inf();
#pragma unroll
					for (int c = 0; c < CH; c++) mx = fmaxf(mx, sc[k][c]);
					const float mNew = fmaxf(m[k], mx); // -inf while nothing is seen: corr = e = 0
					const float corr = m[k] == -fp_inf() ? 0.f : exp2f(m[k] - mNew);
					l[k] *= corr;
#pragma unroll
					for (int i = 0; i < DPT; i++) acc[k][i] = f4_fma(acc[k][i], corr, f4_zero(), 0.f);
#pragma unroll
					for (int c = 0; c < CH; c++) {
						sc[k][c] = sc[k][c] == -fp_inf() ? 0.f : exp2f(sc[k][c] - mNew); // the weight
						l[k] += sc[k][c];
					}
					m[k] = mNew;
				}
#pragma unroll
				for (int c = 0; c < CH; c++) {
					float4 vr[DPT];
#pragma unroll
					for (int i = 0; i < DPT; i++) vr[i] = vs[(c0 + c) * F4 + i * TD + j];
#pragma unroll
					for (int k = 0; k < R; k++)
#pragma unroll
						for (int i = 0; i < DPT; i++) acc[k][i] = f4_fma(acc[k][i], 1.f, vr[i], sc[k][c]);
				}
			}
			__syncthreads();
		}
	}

	if (KS > 1) { // merge the sets through shared memory (the tiles')
		enum { W = R * (4 * DPT + 4) }; // per row: m, l, 2 unused, acc
		static_assert((KS - 1) * ROWS_THREADS * W <= 2 * BK * D, "merge buffer larger than the tiles");
		float* xs = (float*)kvs;
		if (kset > 0) {
			float* x = xs + ((kset - 1) * ROWS_THREADS + tt) * W;
#pragma unroll
			for (int k = 0; k < R; k++, x += 4 * DPT + 4) {
				x[0] = m[k], x[1] = l[k];
#pragma unroll
				for (int i = 0; i < DPT; i++) ((float4*)(x + 4))[i] = acc[k][i];
			}
		}
		__syncthreads();
		if (kset > 0) return;
		for (int s = 0; s < KS - 1; s++) {
			const float* x = xs + (s * ROWS_THREADS + tt) * W;
#pragma unroll
			for (int k = 0; k < R; k++, x += 4 * DPT + 4) {
				const float M = fmaxf(m[k], x[0]);
				const float a = m[k] == -fp_inf() ? 0.f : exp2f(m[k] - M);
				const float b = x[0] == -fp_inf() ? 0.f : exp2f(x[0] - M);
				l[k] = l[k] * a + x[1] * b;
#pragma unroll
				for (int i = 0; i < DPT; i++) acc[k][i] = f4_fma(acc[k][i], a, ((const float4*)(x + 4))[i], b);
				m[k] = M;
			}
		}
	}
#pragma unroll
	for (int k = 0; k < R; k++) {
		const int r = r0 + qi + k;
		if (r >= n) break;
		const float inv = l[k] > 0.f ? 1.f / l[k] : 0.f;
#pragma unroll
		for (int i = 0; i < DPT; i++) {
			const int d = (i * TD + j) * 4;
			if (d < headDim)
				*(float4*)(out + ((long long)r * nHead + h) * headDim + d) = f4_fma(acc[k][i], inv, f4_zero(), 0.f);
		}
	}
}

#define FP_ATTN_ROWS_PREFILL(name, D, TD, R, KS, CH)                                                           \
	FP_KERNEL void __launch_bounds__(KS * ROWS_THREADS)                                                        \
	    name(float* __restrict__ out, const float* __restrict__ q, const i32* __restrict__ meta, int n,        \
	         int layer, int nHead, int nKVHead, int headDim, float scale) {                                    \
		FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();                                                       \
		attn_rows_prefill<D, TD, R, KS, CH>(out, q, meta, n, layer, nHead, nKVHead, headDim, scale);       \
	}
FP_ATTN_ROWS_PREFILL(attn_rows_prefill_f32_d64, 64, 2, 1, 2, 16)
FP_ATTN_ROWS_PREFILL(attn_rows_prefill_f32_d128, 128, 4, 1, 2, 16)
FP_ATTN_ROWS_PREFILL(attn_rows_prefill_f32_d256, 256, 8, 1, 2, 8)
