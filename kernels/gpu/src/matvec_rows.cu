// matvec_rows.cu: int8 matrix-vector products for several activation rows
// at once (batched decode: one token of each of 2..8 sequences), as
// llama.cpp's mmvq does for few columns: each weight block is read from
// memory once and multiplied with the int8 activations of all N rows.
//
// mvrows_<t>_r<R>_n<N>  y[j] = W·x[j] for j < N: a block of 64 or 128
//                       threads takes R weight rows; its threads stride
//                       over the rows' 32-value chunks (consecutive
//                       threads, consecutive chunks: each row is read as
//                       one contiguous stream). A thread loads a chunk of
//                       each of its R rows into registers once, then, for
//                       each activation row j, that chunk's 32 int8
//                       activations (two 16-byte loads) and multiplies
//                       them with all R weight chunks (dp4a, four
//                       products per instruction). The R·N sums are
//                       reduced across the warp by a butterfly that halves
//                       the values each lane holds at every step, then
//                       across warps in shared memory.
//
// Activations come from quantize_act_q8 over all N rows at once: row j's
// int8 values at xq + j·cols, its float scales at (float*)(xq + N·cols) +
// j·cols/32; xq must be 16-byte aligned.
//
// The file needs only compat.h: its helpers and the per-type chunk
// readers (Mvr*) are its own, so it compiles alone (nvcc, hipcc) and
// changes to quant.cu's decoders do not reach it.
#include "compat.h"

#define MVR_THREADS 128

// mvr_funnel is the 32 bits of hi:lo starting at bit sh (0..32).
FP_DEVICE u32 mvr_funnel(u32 lo, u32 hi, u32 sh) { return (u32)((((u64)hi << 32) | (u64)lo) >> sh); }

// mvr_words_a2 reads the NW little-endian words at p, which is only 2-byte
// aligned, with NW or NW+1 aligned 4-byte loads funnel-shifted into place.
// It loads only aligned words that hold bytes of [p, p+4·NW), so it never
// reads past a page.
template <int NW>
FP_DEVICE void mvr_words_a2(const u8* p, u32* out) {
	const u32* a = (const u32*)((u64)p & ~(u64)3);
	const u32 sh = 8u * (u32)((u64)p & 3u); // 0 or 16
	u32 w[NW + 1];
#pragma unroll
	for (int i = 0; i < NW; i++) w[i] = a[i];
	w[NW] = a[sh != 0u ? NW : NW - 1]; // not needed (and not loaded past the span) when aligned
#pragma unroll
	for (int i = 0; i < NW; i++) out[i] = mvr_funnel(w[i], w[i + 1], sh);
}

// mvr_block_a2 reads a 2-byte aligned block of 2 + 4·NW bytes at b (Q4_0,
// Q8_0: a half scale, then the quants): the quants' NW words into q, the
// scale as the result, in NW+1 aligned 4-byte loads whichever the
// alignment (the words hold at most 2 bytes outside the block).
template <int NW>
FP_DEVICE float mvr_block_a2(const u8* b, u32* q) {
	const u32* a = (const u32*)((u64)b & ~(u64)3);
	const u32 sh = 8u * (u32)((u64)b & 3u); // 0 or 16
	u32 w[NW + 1];
#pragma unroll
	for (int i = 0; i <= NW; i++) w[i] = a[i];
#pragma unroll
	for (int i = 0; i < NW; i++) q[i] = mvr_funnel(w[i], w[i + 1], sh + 16u);
	return half_to_float((u16)(mvr_funnel(w[0], w[1], sh) & 0xffffu));
}

// MvrX is one 32-value chunk of one activation row: its int8 values as 8
// words (two halves of 16), the halves' scales and, for weight types with
// an offset or a min, the sums of each half's int8 values.
struct MvrX {
	int q[8];
	float d[2];
	int sum[2];
};

// A weight type T of mvrows has, for chunk i (of cols/32) of a row:
//   W load(row, i)         the chunk's quants and scales, in registers
//   float dot(W, MvrX)     its product with the matching activations
//   int xoff(i), xsc(i)    where those activations start (bytes) and the
//                          index of their first scale; XGAP is the byte
//                          distance to the second half of 16, XSPLIT 1 when
//                          the halves have scales of their own; SUMS 1 when
//                          dot needs MvrX::sum.

// MvrQ8_0: a chunk is one 34-byte block: half d, 32 int8 quants.
struct MvrQ8_0 {
	enum { BYTES = 34, XGAP = 16, XSPLIT = 0, SUMS = 0 };
	struct W {
		int q[8];
		float d;
	};
	FP_DEVICE int xoff(int i) { return 32 * i; }
	FP_DEVICE int xsc(int i) { return i; }
	FP_DEVICE W load(const u8* row, int i) {
		W w;
		u32 q[8];
		w.d = mvr_block_a2<8>(row + (long long)i * BYTES, q);
#pragma unroll
		for (int k = 0; k < 8; k++) w.q[k] = (int)q[k];
		return w;
	}
	FP_DEVICE float dot(const W& w, const MvrX& x) {
		int s = 0;
#pragma unroll
		for (int k = 0; k < 8; k++) s = dp4a(w.q[k], x.q[k], s);
		return w.d * x.d[0] * (float)s;
	}
};

// MvrQ8_0X: Q8_0 regrouped (quant.cu's TQ8_0X): 272-byte groups of eight
// blocks, their half scales (16 bytes), then their quants. Chunk i is block
// i%8 of group i/8: two aligned 16-byte loads and one 2-byte load.
struct MvrQ8_0X {
	enum { BYTES = 272, XGAP = 16, XSPLIT = 0, SUMS = 0 };
	typedef MvrQ8_0::W W;
	FP_DEVICE int xoff(int i) { return 32 * i; }
	FP_DEVICE int xsc(int i) { return i; }
	FP_DEVICE W load(const u8* row, int i) {
		const u8* g = row + (long long)(i >> 3) * BYTES;
		const uint4 a = *(const uint4*)(g + 16 + 32 * (i & 7)), b = *(const uint4*)(g + 32 + 32 * (i & 7));
		W w;
		w.q[0] = (int)a.x; w.q[1] = (int)a.y; w.q[2] = (int)a.z; w.q[3] = (int)a.w;
		w.q[4] = (int)b.x; w.q[5] = (int)b.y; w.q[6] = (int)b.z; w.q[7] = (int)b.w;
		w.d = half_to_float(*(const u16*)(g + 2 * (i & 7)));
		return w;
	}
	FP_DEVICE float dot(const W& w, const MvrX& x) { return MvrQ8_0::dot(w, x); }
};

// MvrQ4_0: a chunk is one 18-byte block: half d, 16 bytes whose low
// nibbles are values 0..15 and high nibbles 16..31, each minus 8.
struct MvrQ4_0 {
	enum { BYTES = 18, XGAP = 16, XSPLIT = 0, SUMS = 1 };
	struct W {
		int q[8]; // low nibbles (values 0..15), then high (16..31)
		float d;
	};
	FP_DEVICE int xoff(int i) { return 32 * i; }
	FP_DEVICE int xsc(int i) { return i; }
	FP_DEVICE W load(const u8* row, int i) {
		u32 q[4];
		const float d = mvr_block_a2<4>(row + (long long)i * BYTES, q);
		return nibbles(q, d);
	}
	// nibbles splits a block's quant words into low and high nibbles.
	FP_DEVICE W nibbles(const u32* q, float d) {
		W w;
#pragma unroll
		for (int k = 0; k < 4; k++) {
			w.q[k] = (int)(q[k] & 0x0f0f0f0fu);
			w.q[4 + k] = (int)((q[k] >> 4) & 0x0f0f0f0fu);
		}
		w.d = d;
		return w;
	}
	// d·dx·(Σ q·xq − 8 Σ xq)
	FP_DEVICE float dot(const W& w, const MvrX& x) {
		int s = 0;
#pragma unroll
		for (int k = 0; k < 8; k++) s = dp4a(w.q[k], x.q[k], s);
		return w.d * x.d[0] * (float)(s - 8 * (x.sum[0] + x.sum[1]));
	}
};

// MvrQ4_0X: Q4_0 regrouped (quant.cu's TQ4_0X): 144-byte groups of eight
// blocks, their half scales (16 bytes), then their 16 quant bytes each.
// Chunk i is block i%8 of group i/8: one aligned 16-byte load.
struct MvrQ4_0X {
	enum { BYTES = 144, XGAP = 16, XSPLIT = 0, SUMS = 1 };
	typedef MvrQ4_0::W W;
	FP_DEVICE int xoff(int i) { return 32 * i; }
	FP_DEVICE int xsc(int i) { return i; }
	FP_DEVICE W load(const u8* row, int i) {
		const u8* g = row + (long long)(i >> 3) * BYTES;
		const uint4 t = *(const uint4*)(g + 16 + 16 * (i & 7));
		const u32 q[4] = {t.x, t.y, t.z, t.w};
		return MvrQ4_0::nibbles(q, half_to_float(*(const u16*)(g + 2 * (i & 7))));
	}
	FP_DEVICE float dot(const W& w, const MvrX& x) { return MvrQ4_0::dot(w, x); }
};

// MvrQ4_K: 144-byte, 16-byte aligned blocks of 256 values: d, dmin,
// 12 bytes of 6-bit scales and mins, qs[128]. Chunk c (of 8) of a block is
// qs bytes 32j + l0 .. +15 (j = c/2, l0 = 16(c%2)): low nibbles are values
// 64j + l0 .. (sub-block 2j), high nibbles 64j + 32 + l0 .. (sub-block 2j+1).
struct MvrQ4_K {
	enum { BYTES = 144, XGAP = 32, XSPLIT = 1, SUMS = 1 };
	struct W {
		int q[8]; // low nibbles, then high
		float d1, m1, d2, m2;
	};
	FP_DEVICE int xoff(int i) { return 256 * (i >> 3) + 64 * ((i & 7) >> 1) + 16 * (i & 1); }
	FP_DEVICE int xsc(int i) { return 8 * (i >> 3) + 2 * ((i & 7) >> 1); }
	// scale_min is ggml's get_scale_min_k4 for sub-block sb, from the
	// block's first 16 bytes (h.x: d, dmin; h.y, h.z, h.w: the 12 scale bytes).
	FP_DEVICE void scale_min(uint4 h, int sb, float* sc, float* m) {
		const u32 bs = 8u * (u32)(sb & 3);
		const u32 b1 = (h.y >> bs) & 0xffu, b2 = (h.z >> bs) & 0xffu, b3 = (h.w >> bs) & 0xffu;
		const bool lo = sb < 4;
		*sc = (float)(lo ? (b1 & 63u) : ((b3 & 15u) | ((b1 >> 6) << 4)));
		*m = (float)(lo ? (b2 & 63u) : ((b3 >> 4) | ((b2 >> 6) << 4)));
	}
	FP_DEVICE W load(const u8* row, int i) {
		const int j = (i & 7) >> 1;
		const u8* b = row + (long long)(i >> 3) * BYTES;
		const uint4 h = *(const uint4*)b;
		const uint4 t = *(const uint4*)(b + 16 + 32 * j + 16 * (i & 1));
		const u32 q[4] = {t.x, t.y, t.z, t.w};
		W w;
#pragma unroll
		for (int k = 0; k < 4; k++) {
			w.q[k] = (int)(q[k] & 0x0f0f0f0fu);
			w.q[4 + k] = (int)((q[k] >> 4) & 0x0f0f0f0fu);
		}
		const float d = half_to_float((u16)(h.x & 0xffffu)), dmin = half_to_float((u16)(h.x >> 16));
		float sc1, mn1, sc2, mn2;
		scale_min(h, 2 * j, &sc1, &mn1);
		scale_min(h, 2 * j + 1, &sc2, &mn2);
		w.d1 = d * sc1;
		w.m1 = dmin * mn1;
		w.d2 = d * sc2;
		w.m2 = dmin * mn2;
		return w;
	}
	// Σ x(d1 q − m1) = d1 Σ q·xq − m1 Σ xq per half, each half at its own scale.
	FP_DEVICE float dot(const W& w, const MvrX& x) {
		int sl = 0, sh = 0;
#pragma unroll
		for (int k = 0; k < 4; k++) {
			sl = dp4a(w.q[k], x.q[k], sl);
			sh = dp4a(w.q[4 + k], x.q[4 + k], sh);
		}
		return x.d[0] * (w.d1 * (float)sl - w.m1 * (float)x.sum[0]) +
		       x.d[1] * (w.d2 * (float)sh - w.m2 * (float)x.sum[1]);
	}
};

// MvrQ6_K: 210-byte, 2-byte aligned blocks of 256 values: ql[128] @0,
// qh[64] @128, int8 scales[16] @192, half d @208. Chunk u = 4n + g (of 8)
// of a block is values 128n + 32g .. +31: the low (g < 2) or high nibbles
// of ql bytes 64n + 32(g%2) .., bits 2g..2g+1 of qh bytes 32n .., scales
// 8n + 2g (first 16 values) and 8n + 2g + 1; each value minus 32.
struct MvrQ6_K {
	enum { BYTES = 210, XGAP = 16, XSPLIT = 0, SUMS = 1 };
	struct W {
		int q[8]; // the 6-bit quants, four a word
		float f0, f1; // d times the halves' scales
	};
	FP_DEVICE int xoff(int i) { return 32 * i; }
	FP_DEVICE int xsc(int i) { return i; }
	FP_DEVICE W load(const u8* row, int i) {
		const int u = i & 7, n = u >> 2, g = u & 3;
		const u8* b = row + (long long)(i >> 3) * BYTES;
		u32 ql[8], qh[8];
		mvr_words_a2<8>(b + 64 * n + 32 * (g & 1), ql);
		mvr_words_a2<8>(b + 128 + 32 * n, qh);
		const u32 sc = *(const u16*)(b + 192 + 8 * n + 2 * g);
		const float d = half_to_float(*(const u16*)(b + 208));
		const u32 lsh = 4u * (u32)(g >> 1), hsh = 2u * (u32)g;
		W w;
#pragma unroll
		for (int k = 0; k < 8; k++) w.q[k] = (int)(((ql[k] >> lsh) & 0x0f0f0f0fu) | (((qh[k] >> hsh) & 0x03030303u) << 4));
		w.f0 = d * (float)(i8)(sc & 0xffu);
		w.f1 = d * (float)(i8)(sc >> 8);
		return w;
	}
	// d·dx·(sc0 (Σ q·xq − 32 Σ xq) + sc1 (…)) over the two halves.
	FP_DEVICE float dot(const W& w, const MvrX& x) {
		int s0 = 0, s1 = 0;
#pragma unroll
		for (int k = 0; k < 4; k++) {
			s0 = dp4a(w.q[k], x.q[k], s0);
			s1 = dp4a(w.q[4 + k], x.q[4 + k], s1);
		}
		return x.d[0] * (w.f0 * (float)(s0 - 32 * x.sum[0]) + w.f1 * (float)(s1 - 32 * x.sum[1]));
	}
};

// mvr_load_x reads chunk i of one activation row (xq its int8 values, xd
// its scales) as weight type T pairs it.
template <class T>
FP_DEVICE MvrX mvr_load_x(const i8* xq, const float* xd, int i) {
	const int o = T::xoff(i), sc = T::xsc(i);
	const int4 a = *(const int4*)(xq + o), b = *(const int4*)(xq + o + T::XGAP);
	MvrX x;
	x.q[0] = a.x; x.q[1] = a.y; x.q[2] = a.z; x.q[3] = a.w;
	x.q[4] = b.x; x.q[5] = b.y; x.q[6] = b.z; x.q[7] = b.w;
	x.d[0] = xd[sc];
	x.d[1] = T::XSPLIT ? xd[sc + 1] : x.d[0];
	x.sum[0] = 0;
	x.sum[1] = 0;
	if (T::SUMS) {
#pragma unroll
		for (int k = 0; k < 4; k++) {
			x.sum[0] = dp4a(0x01010101, x.q[k], x.sum[0]);
			x.sum[1] = dp4a(0x01010101, x.q[4 + k], x.sum[1]);
		}
	}
	return x;
}

// MvrPow2 is V rounded up to a power of two.
template <int V>
struct MvrPow2 {
	enum { P = V <= 1 ? 1 : V <= 2 ? 2 : V <= 4 ? 4 : V <= 8 ? 8 : V <= 16 ? 16 : V <= 32 ? 32 : 64 };
};

// MvrReduce<K, P>::run sums each of the P values of v (P a power of two,
// at most WARP_SIZE) over the warp, leaving in v[0] of each lane the total
// of value lane / (WARP_SIZE/P). Each step exchanges half of the K values
// a lane still holds (lanes keep the lower or the upper half by one bit of
// their index), so all P values take P−1 shuffles rather than P·log2 of
// the warp. K is a template argument so that every index into v is a
// constant and v stays in registers; v is overwritten.
template <int K, int P>
struct MvrReduce {
	FP_DEVICE void run(float* v, int lane) {
		const int m = WARP_SIZE * K / (2 * P); // WARP_SIZE/2, /4, … WARP_SIZE/P
		const bool up = (lane & m) != 0;
#pragma unroll
		for (int i = 0; i < K / 2; i++) {
			// Values, not addresses, are selected: a select between
			// v[i] and v[i + K/2] becomes a load from a computed index,
			// which puts v in local memory.
			const float lo = v[i], hi = v[i + K / 2];
			v[i] = (up ? hi : lo) + shfl_xor(up ? lo : hi, m);
		}
		MvrReduce<K / 2, P>::run(v, lane);
	}
};

template <int P>
struct MvrReduce<1, P> {
	FP_DEVICE void run(float* v, int) {
#pragma unroll
		for (int m = WARP_SIZE / (2 * P); m > 0; m >>= 1) v[0] += shfl_xor(v[0], m);
	}
};

// mvrows: y[j·rows + r] = (row r of w) · (activation row j), for the R
// rows of this block and the N activation rows. blockDim.x is 64 or 128
// (a whole number of warps on 32- and 64-lane GPUs).
template <class T, int R, int N>
FP_DEVICE void mvrows(const u8* __restrict__ w, const i8* __restrict__ xq, float* __restrict__ y, int rows,
                      int cols, long long rowBytes) {
	enum { V = R * N, P = MvrPow2<V>::P };
	const int nch = cols / 32;
	const float* xd = (const float*)(xq + (long long)N * cols);
	const int row0 = blockIdx.x * R;
	const int nr = rows - row0 < R ? rows - row0 : R;
	const u8* wr[R];
#pragma unroll
	for (int r = 0; r < R; r++) wr[r] = w + (long long)(r < nr ? row0 + r : row0) * rowBytes;
	float acc[P]; // acc[r·N + j]; the padding stays 0
#pragma unroll
	for (int v = 0; v < P; v++) acc[v] = 0.f;

	for (int i = threadIdx.x; i < nch; i += blockDim.x) {
		typename T::W wv[R];
#pragma unroll
		for (int r = 0; r < R; r++) wv[r] = T::load(wr[r], i);
#pragma unroll
		for (int j = 0; j < N; j++) {
			const MvrX x = mvr_load_x<T>(xq + (long long)j * cols, xd + (long long)j * nch, i);
#pragma unroll
			for (int r = 0; r < R; r++) acc[r * N + j] += T::dot(wv[r], x);
		}
	}

	__shared__ float part[MVR_THREADS / WARP_SIZE][P];
	const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	MvrReduce<P, P>::run(acc, lane);
	if (lane % (WARP_SIZE / P) == 0) part[warp][lane / (WARP_SIZE / P)] = acc[0];
	__syncthreads();
	const int v = threadIdx.x, r = v / N, j = v % N;
	if (v < V && r < nr) {
		float t = 0.f;
		for (int k = 0; k < (int)blockDim.x / WARP_SIZE; k++) t += part[k][v];
		y[(long long)j * rows + row0 + r] = t;
	}
}

#define FP_MVROWS(name, T, R, N)                                                                        \
	FP_KERNEL void __launch_bounds__(MVR_THREADS) mvrows_##name##_r##R##_n##N(                          \
	    const u8* __restrict__ w, const i8* __restrict__ xq, float* __restrict__ y, int rows, int cols,   \
	    long long rowBytes) {                                                                           \
		FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();                                                    \
		mvrows<T, R, N>(w, xq, y, rows, cols, rowBytes);                                                \
	}
#define FP_MVROWS_N(name, T, R)                                                                         \
	FP_MVROWS(name, T, R, 2) FP_MVROWS(name, T, R, 3) FP_MVROWS(name, T, R, 4) FP_MVROWS(name, T, R, 5) \
	FP_MVROWS(name, T, R, 6) FP_MVROWS(name, T, R, 7) FP_MVROWS(name, T, R, 8)
#define FP_MVROWS_T(name, T) FP_MVROWS_N(name, T, 1) FP_MVROWS_N(name, T, 2) FP_MVROWS_N(name, T, 4)
FP_MVROWS_T(q8_0, MvrQ8_0)
FP_MVROWS_T(q8_0x, MvrQ8_0X)
FP_MVROWS_T(q4_0x, MvrQ4_0X)
FP_MVROWS_T(q4_0, MvrQ4_0)
FP_MVROWS_T(q4_k, MvrQ4_K)
FP_MVROWS_T(q6_k, MvrQ6_K)
