// topk.cu: the k largest logits of each row and the row's softmax
// normalisers, so that a sampler drawing from the few most likely tokens
// copies back TopKRowBytes(k) per row instead of the whole vocabulary.
//
// A logit becomes a 64-bit key: its float bits made orderable as unsigned
// (NaN taken as -Inf, -0 as +0) in the high word, the bitwise inverse of
// its index in the low word. Keys are unique, and descending key order is
// descending logit with the lower index first on ties: a stable sort by
// descending logit. Key 0 (padding) is below every logit's key.
//
// topk_slice_f32: grid (ceil(n / TOPK_SLICE), rows), TOPK_THREADS threads.
// A block loads its slice of up to TOPK_SLICE logits of one row as keys
// into shared memory, sums its softmax terms relative to its own maximum,
// and keeps the top R keys (R = 2^lk, the power of two at or above k) by
// bitonic sorting: runs of R keys are sorted, then pairs of runs are
// reduced to the top R of the two until one run is left (topk_sort,
// topk_reduce). It writes that run and its stats (max, sum1, sumT) as one
// record of the scratch, or, when it is the row's only block, the result.
// topk_merge_f32: grid (ceil(nIn / (TOPK_SLICE / R)), rows): a block loads
// up to TOPK_SLICE / R records of the level before, reduces their runs in
// the same way and merges their stats (sums rescaled by e^(m - M) and
// e^((m - M)·invT)), writing a record or the result. The Go side launches
// merges until one block per row is left (three levels at 262,144 logits
// and k = 256).
//
// A record is R u64 keys, then float max, sum1, sumT and 4 unused bytes.
// The result of row r, at out + r*(16 + 8k): float max, sum1, sumT, u32
// count = min(k, n), then k i32 ids and k float logits (the input's value,
// NaN as -Inf), slots from count on holding id -1 and -Inf. -Inf and NaN
// logits add nothing to the sums: a row without a finite logit has sums 0.
//
// Every loop over keys is a whole-block loop ended by __syncthreads, with
// no warp-synchronous step, so the code is the same for 32- and 64-lane
// warps.
#include "compat.h"

#define TOPK_THREADS 1024
#define TOPK_SLICE 4096 // keys a block sorts: 32 KB of shared memory
#define TOPK_PER (TOPK_SLICE / TOPK_THREADS)

// topk_logit is v with NaN taken as -Inf.
FP_DEVICE float topk_logit(float v) {
	return (__float_as_uint(v) & 0x7fffffffu) > 0x7f800000u ? -fp_inf() : v;
}

// topk_key is the key of logit v (NaN already -Inf) at index id.
FP_DEVICE u64 topk_key(float v, int id) {
	u32 b = __float_as_uint(v);
	if (b == 0x80000000u) b = 0; // -0 ties with +0
	b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
	return ((u64)b << 32) | (u64)(~(u32)id);
}

FP_DEVICE int topk_id(u64 key) { return (int)~(u32)key; }

// topk_order puts the larger of keys[i] and keys[j] at i.
FP_DEVICE void topk_order(u64* keys, int i, int j) {
	const u64 a = keys[i], b = keys[j];
	if (a < b) keys[i] = b, keys[j] = a;
}

// topk_clean sorts each of nruns bitonic runs of 2^ll keys, run q at
// keys[q << lg], into descending order (the half-cleaners of a bitonic
// merge).
FP_DEVICE void topk_clean(u64* keys, int nruns, int lg, int ll) {
	if (ll == 0) return;
	const int pairs = nruns << (ll - 1), per = (1 << (ll - 1)) - 1;
	for (int ls = ll - 1; ls >= 0; ls--) {
		for (int t = threadIdx.x; t < pairs; t += TOPK_THREADS) {
			const int o = t & per;
			const int i = ((t >> (ll - 1)) << lg) + ((o >> ls) << (ls + 1)) + (o & ((1 << ls) - 1));
			topk_order(keys, i, i + (1 << ls));
		}
		__syncthreads();
	}
}

// topk_sort sorts every run of 2^lr keys of keys[0, len) into descending
// order. Each step merges pairs of sorted runs of h keys: key i of the
// first against key h-1-i of the second leaves two bitonic runs, every
// key of the first above every key of the second, which topk_clean sorts.
FP_DEVICE void topk_sort(u64* keys, int len, int lr) {
	for (int lh = 0; lh < lr; lh++) {
		const int h = 1 << lh;
		for (int t = threadIdx.x; t < len / 2; t += TOPK_THREADS) {
			const int base = (t >> lh) << (lh + 1), o = t & (h - 1);
			topk_order(keys, base + o, base + 2 * h - 1 - o);
		}
		__syncthreads();
		topk_clean(keys, len >> lh, lh, lh);
	}
}

// topk_reduce leaves the top 2^lk keys of keys[0, len) at keys[0, 2^lk),
// in descending order, given runs of 2^lk keys sorted so (len a power of
// two, at least 2^lk). Each round keeps, of each pair of runs, the larger
// of key i of the first and key R-1-i of the second in the first's place:
// a bitonic run holding the top R of the pair, which topk_clean sorts.
// Runs stay where they were, 2^lg keys apart after a round.
FP_DEVICE void topk_reduce(u64* keys, int len, int lk) {
	const int run = 1 << lk;
	for (int lg = lk; (1 << lg) < len; lg++) {
		const int npairs = len >> (lg + 1);
		for (int t = threadIdx.x; t < npairs << lk; t += TOPK_THREADS) {
			const int base = (t >> lk) << (lg + 1), o = t & (run - 1);
			const u64 a = keys[base + o], b = keys[base + (1 << lg) + run - 1 - o];
			if (a < b) keys[base + o] = b;
		}
		__syncthreads();
		topk_clean(keys, npairs, lg + 1, lk);
	}
}

// topk_pow2 is the smallest power of two at or above v (v >= 1).
FP_DEVICE int topk_pow2(int v) {
	int p = 1;
	while (p < v) p <<= 1;
	return p;
}

// topk_block_max is the largest v over the block (fmaxf: NaN ignored);
// every thread gets it.
FP_DEVICE float topk_block_max(float v, float* red) {
	const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	v = warp_max(v);
	__syncthreads(); // red may still be read by a previous call
	if (lane == 0) red[warp] = v;
	__syncthreads();
	float m = red[0];
	for (int w = 1; w < TOPK_THREADS / WARP_SIZE; w++) m = fmaxf(m, red[w]);
	return m;
}

// topk_block_sum2 adds a and b over the block; every thread gets the sums.
FP_DEVICE void topk_block_sum2(float* a, float* b, float* red) {
	const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	const int nw = TOPK_THREADS / WARP_SIZE;
	const float sa = warp_sum(*a), sb = warp_sum(*b);
	__syncthreads();
	if (lane == 0) red[warp] = sa, red[nw + warp] = sb;
	__syncthreads();
	float ta = 0.f, tb = 0.f;
	for (int w = 0; w < nw; w++) ta += red[w], tb += red[nw + w];
	*a = ta, *b = tb;
}

// topk_inv_t is row r's inverse temperature, 1 where there is none (the
// array null, or its entry 0): sumT is then sum1.
FP_DEVICE float topk_inv_t(const float* invT, int r) {
	const float t = invT ? invT[r] : 0.f;
	return t != 0.f ? t : 1.f;
}

// topk_finish writes the block's top keys (keys[0, 2^lk)) and stats: as
// record blockIdx.x of its row in part when the row has other blocks,
// else as the row's result in out.
FP_DEVICE void topk_finish(u8* out, u8* part, const u64* keys, const float* xr, int n, int k, int lk, float m,
                           float s1, float sT) {
	const int run = 1 << lk;
	if (gridDim.x > 1) {
		u8* rec = part + ((long long)blockIdx.y * gridDim.x + blockIdx.x) * (8 * run + 16);
		for (int i = threadIdx.x; i < run; i += TOPK_THREADS) ((u64*)rec)[i] = keys[i];
		if (threadIdx.x == 0) {
			float* st = (float*)(rec + 8 * run);
			st[0] = m, st[1] = s1, st[2] = sT;
		}
		return;
	}
	u8* o = out + (long long)blockIdx.y * (16 + 8 * (long long)k);
	const int count = min(k, n);
	if (threadIdx.x == 0) {
		((float*)o)[0] = m, ((float*)o)[1] = s1, ((float*)o)[2] = sT;
		((u32*)o)[3] = (u32)count;
	}
	i32* ids = (i32*)(o + 16);
	float* logits = (float*)(o + 16 + 4 * (long long)k);
	for (int i = threadIdx.x; i < k; i += TOPK_THREADS) {
		int id = -1;
		float v = -fp_inf();
		if (i < count) id = topk_id(keys[i]), v = topk_logit(xr[id]);
		ids[i] = id, logits[i] = v;
	}
}

// topk_slice_f32: block (b, r) takes logits [b*TOPK_SLICE, (b+1)*TOPK_SLICE)
// of row r of x (rows of n), keeping the top 2^lk (see the top of the
// file); invT may be null.
FP_KERNEL void __launch_bounds__(TOPK_THREADS)
    topk_slice_f32(u8* __restrict__ out, u8* __restrict__ part, const float* __restrict__ x,
                   const float* __restrict__ invT, int n, int k, int lk) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	__shared__ u64 keys[TOPK_SLICE];
	__shared__ float red[2 * (TOPK_THREADS / 16)];
	const float* xr = x + (long long)blockIdx.y * n;
	const int base = blockIdx.x * TOPK_SLICE;
	const int cnt = min(TOPK_SLICE, n - base); // logits of this slice
	const int len = topk_pow2(max(cnt, 1 << lk));
	float v[TOPK_PER];
	float m = -fp_inf();
#pragma unroll
	for (int j = 0; j < TOPK_PER; j++) {
		const int i = threadIdx.x + j * TOPK_THREADS;
		v[j] = -fp_inf();
		u64 key = 0;
		if (i < cnt) v[j] = topk_logit(xr[base + i]), key = topk_key(v[j], base + i), m = fmaxf(m, v[j]);
		if (i < len) keys[i] = key;
	}
	m = topk_block_max(m, red);
	const float t = topk_inv_t(invT, blockIdx.y);
	float s1 = 0.f, sT = 0.f;
#pragma unroll
	for (int j = 0; j < TOPK_PER; j++) {
		if (v[j] == -fp_inf()) continue;
		s1 += expf(v[j] - m);
		sT += expf((v[j] - m) * t);
	}
	topk_block_sum2(&s1, &sT, red); // its barriers also publish keys
	topk_sort(keys, len, lk);
	topk_reduce(keys, len, lk);
	__syncthreads();
	topk_finish(out, part, keys, xr, n, k, lk, m, s1, sT);
}

// topk_merge_f32: block (b, r) merges records [b*c, (b+1)*c) of the nIn
// records of row r in `in` (c = TOPK_SLICE >> lk), the level before's, into
// one record of part or, as the row's only block, its result.
FP_KERNEL void __launch_bounds__(TOPK_THREADS)
    topk_merge_f32(u8* __restrict__ out, u8* __restrict__ part, const u8* __restrict__ in,
                   const float* __restrict__ x, const float* __restrict__ invT, int n, int nIn, int k, int lk) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	__shared__ u64 keys[TOPK_SLICE];
	__shared__ float red[2 * (TOPK_THREADS / 16)];
	const int run = 1 << lk, recBytes = 8 * run + 16;
	const int first = blockIdx.x * (TOPK_SLICE >> lk);
	const int cnt = max(0, min(TOPK_SLICE >> lk, nIn - first)); // records of this block
	const int len = topk_pow2(max(cnt, 1)) << lk;
	const u8* recs = in + ((long long)blockIdx.y * nIn + first) * recBytes;
	for (int i = threadIdx.x; i < len; i += TOPK_THREADS) {
		const int q = i >> lk;
		keys[i] = q < cnt ? ((const u64*)(recs + (long long)q * recBytes))[i & (run - 1)] : 0;
	}
	float m = -fp_inf();
	for (int q = threadIdx.x; q < cnt; q += TOPK_THREADS) m = fmaxf(m, ((const float*)(recs + (long long)q * recBytes + 8 * run))[0]);
	m = topk_block_max(m, red);
	const float t = topk_inv_t(invT, blockIdx.y);
	float s1 = 0.f, sT = 0.f;
	for (int q = threadIdx.x; q < cnt; q += TOPK_THREADS) {
		const float* st = (const float*)(recs + (long long)q * recBytes + 8 * run);
		if (st[0] == -fp_inf()) continue; // nothing but -Inf: sums 0
		s1 += st[1] * expf(st[0] - m);
		sT += st[2] * expf((st[0] - m) * t);
	}
	topk_block_sum2(&s1, &sT, red); // its barriers also publish keys
	topk_reduce(keys, len, lk);
	__syncthreads();
	topk_finish(out, part, keys, x + (long long)blockIdx.y * n, n, k, lk, m, s1, sT);
}
