// quant.cu: every GGUF weight type the host supports, decoded on the GPU.
//
// Each type is a struct with its block geometry and one decoder. A block of
// QK values (BYTES bytes) is cut into CPB chunks of VPC values; decode(blk,
// c, v) writes chunk c's values to v, in groups of four that sit at
// consecutive positions pos(c, g) .. pos(c, g)+3 of the block. The formulas
// are transcriptions of gguf/quant_legacy.go and gguf/quant_k.go (ggml's
// dequantize_row_*), so a decoded value equals the host's up to the rounding
// of a fused multiply-add.
//
// On that decoder sit three kernels per type:
//   matvec_<t>_r<R>  y = W·x for decode: R rows per block of MV_THREADS
//                    threads; consecutive threads take consecutive chunks of
//                    a row, so a block reads each of its rows as one
//                    contiguous stream, each weight byte exactly once; x is
//                    loaded as float4 and reused for the R rows; per-thread
//                    sums are reduced with warp shuffles, then across warps.
//   dequant_<t>_f32  whole matrix to float32 (tests, embedding rows)
//   dequant_<t>_f16  whole matrix to half, the scratch for cuBLAS/hipBLAS
//                    GEMM in prompt processing
//   embed_<t>        rows picked by token ids (or argmax's output), to float32
#include "compat.h"

#define MV_THREADS 128
#define MV_WARPS (MV_THREADS / WARP_SIZE)

// dot(b, c, xv) is chunk c's values dotted with xv; by default through
// decode. The types that must be fast (Q4_0, Q8_0, Q4_K, Q6_K) have their
// own, which factor the scales out of the sum and turn quants into floats
// with small_float; dot_decoded keeps the plain form for comparison.
#define FP_DOT_VIA_DECODE_AS(name)                                          \
	FP_DEVICE float name(const u8* b, int c, const float* xv) {             \
		float v[VPC];                                                       \
		decode(b, c, v);                                                    \
		float s = 0.f;                                                      \
		_Pragma("unroll") for (int k = 0; k < VPC; k++) s += v[k] * xv[k]; \
		return s;                                                           \
	}
#define FP_DOT_VIA_DECODE FP_DOT_VIA_DECODE_AS(dot) FP_DOT_VIA_DECODE_AS(dot_decoded)

// Shared-memory reads for the staged int8 products (matvec8s): s is a
// 16-byte aligned stage, o a byte offset into it that is only 2-byte
// aligned for most block formats.

// funnel_r is the 32 bits of hi:lo starting at bit sh (0..32).
FP_DEVICE u32 funnel_r(u32 lo, u32 hi, u32 sh) { return (u32)((((u64)hi << 32) | (u64)lo) >> sh); }

// ld16s is the 16-bit value at byte o of s (o even).
FP_DEVICE u32 ld16s(const u32* s, int o) { return (s[o >> 2] >> (8 * (o & 2))) & 0xffffu; }

// ld_words_a2 reads the N words at byte o of s (o even): N+1 aligned loads,
// each neighbouring pair funnel-shifted into place.
template <int N>
FP_DEVICE void ld_words_a2(const u32* s, int o, u32* out) {
	const u32* a = s + (o >> 2);
	const u32 sh = 8u * (u32)(o & 2);
	u32 lo = a[0];
#pragma unroll
	for (int i = 0; i < N; i++) {
		const u32 hi = a[i + 1];
		out[i] = funnel_r(lo, hi, sh);
		lo = hi;
	}
}

// ldg16 loads 16 bytes (16-byte aligned) through the read-only cache.
FP_DEVICE uint4 ldg16(const u8* p) {
#if defined(FP_AMD)
	return *(const uint4*)p;
#else
	return __ldg((const uint4*)p);
#endif
}

// ldg8 loads 8 bytes (8-byte aligned) through the read-only cache.
FP_DEVICE uint2 ldg8(const u8* p) {
#if defined(FP_AMD)
	return *(const uint2*)p;
#else
	return __ldg((const uint2*)p);
#endif
}

// ------------------------------------------------------------ float types

// F32, F16, BF16 in "blocks" of 16 bytes (cols a multiple of 4, 8, 8).
struct TF32 {
	enum { QK = 4, BYTES = 16, CPB = 1, VPC = 4 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int, int) { return 0; }
	FP_DEVICE void decode(const u8* b, int, float* v) {
		float4 t = *(const float4*)b;
		v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
	}
};

struct TF16 {
	enum { QK = 8, BYTES = 16, CPB = 1, VPC = 8 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int, int g) { return 4 * g; }
	FP_DEVICE void decode(const u8* b, int, float* v) {
		uint4 t = *(const uint4*)b;
		u32 w[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
		for (int i = 0; i < 4; i++) {
			v[2 * i] = half_to_float((u16)(w[i] & 0xffffu));
			v[2 * i + 1] = half_to_float((u16)(w[i] >> 16));
		}
	}
};

struct TBF16 {
	enum { QK = 8, BYTES = 16, CPB = 1, VPC = 8 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int, int g) { return 4 * g; }
	FP_DEVICE void decode(const u8* b, int, float* v) {
		uint4 t = *(const uint4*)b;
		u32 w[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
		for (int i = 0; i < 4; i++) {
			v[2 * i] = __uint_as_float(w[i] << 16);
			v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
		}
	}
};

// The same three, one value at a time, for rows of any length.
struct TF32S {
	enum { QK = 1, BYTES = 4, CPB = 1, VPC = 1 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int, int) { return 0; }
	FP_DEVICE void decode(const u8* b, int, float* v) { v[0] = *(const float*)b; }
};
struct TF16S {
	enum { QK = 1, BYTES = 2, CPB = 1, VPC = 1 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int, int) { return 0; }
	FP_DEVICE void decode(const u8* b, int, float* v) { v[0] = half_to_float(*(const u16*)b); }
};
struct TBF16S {
	enum { QK = 1, BYTES = 2, CPB = 1, VPC = 1 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int, int) { return 0; }
	FP_DEVICE void decode(const u8* b, int, float* v) { v[0] = bf16_to_float(*(const u16*)b); }
};

// ------------------------------------------------------------ legacy 32-value blocks

// Byte j of qs holds value j (low nibble) and j+16 (high nibble). Chunk c
// is qs bytes 8c..8c+7: values 8c..8c+7 then 16+8c..16+8c+7.
FP_DEVICE int legacy_pos(int c, int g) { return 8 * c + 4 * (g & 1) + 16 * (g >> 1); }

// Q4_0's arithmetic on a chunk's two quant words (q4_decode, q4_dot,
// q4_dot8), shared by TQ4_0 and its regrouped form TQ4_0X.
FP_DEVICE void q4_decode(const u32* q, float d, float* v) {
#pragma unroll
	for (int i = 0; i < 8; i++) {
		const u32 byte = (q[i >> 2] >> (8 * (i & 3))) & 0xffu;
		v[i] = (float)((int)(byte & 15u) - 8) * d;
		v[8 + i] = (float)((int)(byte >> 4) - 8) * d;
	}
}
FP_DEVICE float q4_dot(const u32* q, float d, const float* xv) {
	float s = 0.f;
#pragma unroll
	for (int k = 0; k < 2; k++) {
		const u32 lo = q[k] & 0x0f0f0f0fu, hi = (q[k] >> 4) & 0x0f0f0f0fu;
#pragma unroll
		for (int j = 0; j < 4; j++) {
			s += (small_float(lo, j) - (FP_MAGIC + 8.f)) * xv[4 * k + j];
			s += (small_float(hi, j) - (FP_MAGIC + 8.f)) * xv[8 + 4 * k + j];
		}
	}
	return s * d;
}
// q4_dot8: d·dx·(Σ q·xq − 8 Σ xq) for the chunk's words q0, q1 and its
// activations' words x0, x1 (low nibbles) and x2, x3 (high).
FP_DEVICE float q4_dot8(u32 q0, u32 q1, int x0, int x1, int x2, int x3, float d, float dx) {
	int s = dp4a((int)(q0 & 0x0f0f0f0fu), x0, 0);
	s = dp4a((int)(q1 & 0x0f0f0f0fu), x1, s);
	s = dp4a((int)((q0 >> 4) & 0x0f0f0f0fu), x2, s);
	s = dp4a((int)((q1 >> 4) & 0x0f0f0f0fu), x3, s);
	const int sx = dp4a(0x01010101, x0, dp4a(0x01010101, x1, dp4a(0x01010101, x2, dp4a(0x01010101, x3, 0))));
	return d * dx * (float)(s - 8 * sx);
}

struct TQ4_0 {
	enum { QK = 32, BYTES = 18, CPB = 2, VPC = 16 };
	FP_DOT_VIA_DECODE_AS(dot_decoded)
	FP_DEVICE int pos(int c, int g) { return legacy_pos(c, g); }
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const u32 q[2] = {ld_u32_a2(b + 2 + 8 * c), ld_u32_a2(b + 6 + 8 * c)};
		q4_decode(q, half_to_float(ld_u16(b)), v);
	}
	FP_DEVICE float dot(const u8* b, int c, const float* xv) {
		const u32 q[2] = {ld_u32_a2(b + 2 + 8 * c), ld_u32_a2(b + 6 + 8 * c)};
		return q4_dot(q, half_to_float(ld_u16(b)), xv);
	}
	// dot8: with activations as int8 (xq, the block's 32 values) and their
	// scale xd, four products per dp4a.
	FP_DEVICE float dot8(const u8* b, int c, const i8* xq, const float* xd) {
		const int* xi = (const int*)xq;
		return q4_dot8(ld_u32_a2(b + 2 + 8 * c), ld_u32_a2(b + 6 + 8 * c), xi[2 * c], xi[2 * c + 1], xi[4 + 2 * c],
		               xi[5 + 2 * c], half_to_float(ld_u16(b)), xd[0]);
	}
	// Staged (matvec8s): the block is at byte o of the shared-memory stage
	// s, x its 32 activations as 8 words, xs their scale.
	enum { UPB = 1, UPL8 = 4 };
	FP_DEVICE float dot8s(const u32* s, int o, int, const int* x, float xs) {
		const float d = half_to_float((u16)ld16s(s, o));
		u32 q[4];
		ld_words_a2<4>(s, o + 2, q);
		int acc = 0, sx = 0;
#pragma unroll
		for (int k = 0; k < 4; k++) {
			acc = dp4a((int)(q[k] & 0x0f0f0f0fu), x[k], acc);
			acc = dp4a((int)((q[k] >> 4) & 0x0f0f0f0fu), x[4 + k], acc);
		}
#pragma unroll
		for (int k = 0; k < 8; k++) sx = dp4a(0x01010101, x[k], sx);
		return d * xs * (float)(acc - 8 * sx);
	}
};

struct TQ4_1 {
	enum { QK = 32, BYTES = 20, CPB = 2, VPC = 16 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int c, int g) { return legacy_pos(c, g); }
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const u32 dm = ld_u32(b);
		const float d = half_to_float((u16)(dm & 0xffffu)), m = half_to_float((u16)(dm >> 16));
		const u32 q[2] = {ld_u32(b + 4 + 8 * c), ld_u32(b + 8 + 8 * c)};
#pragma unroll
		for (int i = 0; i < 8; i++) {
			const u32 byte = (q[i >> 2] >> (8 * (i & 3))) & 0xffu;
			v[i] = (float)(byte & 15u) * d + m;
			v[8 + i] = (float)(byte >> 4) * d + m;
		}
	}
};

struct TQ5_0 {
	enum { QK = 32, BYTES = 22, CPB = 2, VPC = 16 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int c, int g) { return legacy_pos(c, g); }
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const float d = half_to_float(ld_u16(b));
		const u32 qh = ld_u32_a2(b + 2);
		const u32 q[2] = {ld_u32_a2(b + 6 + 8 * c), ld_u32_a2(b + 10 + 8 * c)};
#pragma unroll
		for (int i = 0; i < 8; i++) {
			const int j = 8 * c + i;
			const u32 byte = (q[i >> 2] >> (8 * (i & 3))) & 0xffu;
			const u32 lo = (byte & 15u) | (((qh >> j) & 1u) << 4);
			const u32 hi = (byte >> 4) | (((qh >> (j + 16)) & 1u) << 4);
			v[i] = (float)((int)lo - 16) * d;
			v[8 + i] = (float)((int)hi - 16) * d;
		}
	}
};

struct TQ5_1 {
	enum { QK = 32, BYTES = 24, CPB = 2, VPC = 16 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int c, int g) { return legacy_pos(c, g); }
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const u32 dm = ld_u32(b);
		const float d = half_to_float((u16)(dm & 0xffffu)), m = half_to_float((u16)(dm >> 16));
		const u32 qh = ld_u32(b + 4);
		const u32 q[2] = {ld_u32(b + 8 + 8 * c), ld_u32(b + 12 + 8 * c)};
#pragma unroll
		for (int i = 0; i < 8; i++) {
			const int j = 8 * c + i;
			const u32 byte = (q[i >> 2] >> (8 * (i & 3))) & 0xffu;
			const u32 lo = (byte & 15u) | (((qh >> j) & 1u) << 4);
			const u32 hi = (byte >> 4) | (((qh >> (j + 16)) & 1u) << 4);
			v[i] = (float)lo * d + m;
			v[8 + i] = (float)hi * d + m;
		}
	}
};

struct TQ8_0 {
	enum { QK = 32, BYTES = 34, CPB = 2, VPC = 16 };
	FP_DOT_VIA_DECODE_AS(dot_decoded)
	FP_DEVICE int pos(int c, int g) { return 16 * c + 4 * g; }
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const float d = half_to_float(ld_u16(b));
		const u8* q = b + 2 + 16 * c;
		const u32 w[4] = {ld_u32_a2(q), ld_u32_a2(q + 4), ld_u32_a2(q + 8), ld_u32_a2(q + 12)};
#pragma unroll
		for (int i = 0; i < 16; i++) v[i] = sbyte(w[i >> 2], i & 3) * d;
	}
	FP_DEVICE float dot(const u8* b, int c, const float* xv) {
		const float d = half_to_float(ld_u16(b));
		const u8* q = b + 2 + 16 * c;
		// Flipping the sign bit maps int8 q to the unsigned q + 128.
		const u32 w[4] = {ld_u32_a2(q) ^ 0x80808080u, ld_u32_a2(q + 4) ^ 0x80808080u, ld_u32_a2(q + 8) ^ 0x80808080u,
		                  ld_u32_a2(q + 12) ^ 0x80808080u};
		float s = 0.f;
#pragma unroll
		for (int i = 0; i < 16; i++) s += (small_float(w[i >> 2], i & 3) - (FP_MAGIC + 128.f)) * xv[i];
		return s * d;
	}
	FP_DEVICE float dot8(const u8* b, int c, const i8* xq, const float* xd) {
		const float d = half_to_float(ld_u16(b));
		const u8* q = b + 2 + 16 * c;
		const int* xi = (const int*)xq + 4 * c;
		int s = dp4a((int)ld_u32_a2(q), xi[0], 0);
		s = dp4a((int)ld_u32_a2(q + 4), xi[1], s);
		s = dp4a((int)ld_u32_a2(q + 8), xi[2], s);
		s = dp4a((int)ld_u32_a2(q + 12), xi[3], s);
		return d * xd[0] * (float)s;
	}
	enum { UPB = 1, UPL8 = 2 };
	FP_DEVICE float dot8s(const u32* s, int o, int, const int* x, float xs) {
		const float d = half_to_float((u16)ld16s(s, o));
		u32 q[8];
		ld_words_a2<8>(s, o + 2, q);
		int acc = 0;
#pragma unroll
		for (int k = 0; k < 8; k++) acc = dp4a((int)q[k], x[k], acc);
		return d * xs * (float)acc;
	}
};

// TQ8_0X is Q8_0 regrouped for the GPU (RepackQ8_0X in kernels/gpu, done
// as the weights are staged for upload, for rows of a multiple of 256
// values): eight Q8_0 blocks become their eight half scales (16 bytes)
// followed by their 256 quants, the same 272 bytes, so every 16 quants are
// one aligned 16-byte load instead of eight 2-byte ones. Chunk c (of 16)
// is quants 16c..16c+15, scaled by block c/2's scale: chunk 16g+c of a
// row is chunk 2(8g+c/2)+c%2 of its Q8_0 form, so every kernel sums the
// same products in the same order, and the results are Q8_0's bit for bit.
struct TQ8_0X {
	enum { QK = 256, BYTES = 272, CPB = 16, VPC = 16 };
	FP_DOT_VIA_DECODE_AS(dot_decoded)
	FP_DEVICE int pos(int c, int g) { return 16 * c + 4 * g; }
	// decode also reads blocks that dequant staged in shared memory: a
	// plain load, not ldg16's read-only global one.
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const float d = half_to_float(ld_u16(b + 2 * (c >> 1)));
		const uint4 t = *(const uint4*)(b + 16 + 16 * c);
		const u32 w[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
		for (int i = 0; i < 16; i++) v[i] = sbyte(w[i >> 2], i & 3) * d;
	}
	FP_DEVICE float dot(const u8* b, int c, const float* xv) {
		const float d = half_to_float(ld_u16(b + 2 * (c >> 1)));
		const uint4 t = ldg16(b + 16 + 16 * c);
		const u32 w[4] = {t.x ^ 0x80808080u, t.y ^ 0x80808080u, t.z ^ 0x80808080u, t.w ^ 0x80808080u};
		float s = 0.f;
#pragma unroll
		for (int i = 0; i < 16; i++) s += (small_float(w[i >> 2], i & 3) - (FP_MAGIC + 128.f)) * xv[i];
		return s * d;
	}
	FP_DEVICE float dot8(const u8* b, int c, const i8* xq, const float* xd) {
		const float d = half_to_float(ld_u16(b + 2 * (c >> 1)));
		const uint4 t = ldg16(b + 16 + 16 * c);
		const int* xi = (const int*)xq + 4 * c;
		int s = dp4a((int)t.x, xi[0], 0);
		s = dp4a((int)t.y, xi[1], s);
		s = dp4a((int)t.z, xi[2], s);
		s = dp4a((int)t.w, xi[3], s);
		return d * xd[c >> 1] * (float)s;
	}
};

// TQ4_0X is Q4_0 regrouped like TQ8_0X (layout.go): eight half scales (16
// bytes), then the eight blocks' 16 quant bytes each, 144 bytes in all.
// Chunk c (of 16) is TQ4_0's chunk c%2 of block c/2: quant bytes 16 + 8c,
// one aligned 8-byte load; the sums are TQ4_0's, bit for bit.
struct TQ4_0X {
	enum { QK = 256, BYTES = 144, CPB = 16, VPC = 16 };
	FP_DOT_VIA_DECODE_AS(dot_decoded)
	FP_DEVICE int pos(int c, int g) { return 32 * (c >> 1) + legacy_pos(c & 1, g); }
	// decode also reads blocks staged in shared memory: a plain load.
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const uint2 t = *(const uint2*)(b + 16 + 8 * c);
		const u32 q[2] = {t.x, t.y};
		q4_decode(q, half_to_float(ld_u16(b + 2 * (c >> 1))), v);
	}
	FP_DEVICE float dot(const u8* b, int c, const float* xv) {
		const uint2 t = ldg8(b + 16 + 8 * c);
		const u32 q[2] = {t.x, t.y};
		return q4_dot(q, half_to_float(ld_u16(b + 2 * (c >> 1))), xv);
	}
	FP_DEVICE float dot8(const u8* b, int c, const i8* xq, const float* xd) {
		const int bb = c >> 1, h = c & 1;
		const uint2 t = ldg8(b + 16 + 8 * c);
		const int* xi = (const int*)xq + 8 * bb;
		return q4_dot8(t.x, t.y, xi[2 * h], xi[2 * h + 1], xi[4 + 2 * h], xi[5 + 2 * h], half_to_float(ld_u16(b + 2 * bb)),
		               xd[bb]);
	}
};

// ------------------------------------------------------------ k-quants, 256-value super-blocks

struct TQ2_K {
	// scales[16] @0, qs[64] @16, d @80, dmin @82. Chunk c: half n = c/8 of
	// the block, qs bytes b0..b0+3 of its 32 (b0 = 4(c%8)), all four shifts.
	enum { QK = 256, BYTES = 84, CPB = 16, VPC = 16 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int c, int g) { return 128 * (c >> 3) + 32 * g + 4 * (c & 7); }
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const int n = c >> 3, b0 = 4 * (c & 7), half = (c & 7) >> 2;
		const u32 ddm = ld_u32(b + 80);
		const float d = half_to_float((u16)(ddm & 0xffffu)), dmin = half_to_float((u16)(ddm >> 16));
		const u32 q = ld_u32(b + 16 + 32 * n + b0);
#pragma unroll
		for (int s = 0; s < 4; s++) {
			const u32 sc = b[8 * n + 2 * s + half];
			const float dl = d * (float)(sc & 15u), ml = dmin * (float)(sc >> 4);
#pragma unroll
			for (int i = 0; i < 4; i++) v[4 * s + i] = dl * (float)((q >> (8 * i + 2 * s)) & 3u) - ml;
		}
	}
};

// q3_scale is the j-th 6-bit scale of a Q3_K block minus its bias of 32.
FP_DEVICE int q3_scale(const u8* sc, int j) {
	const u32 lo = j < 8 ? (sc[j] & 15u) : (u32)(sc[j - 8] >> 4);
	const u32 hi = (sc[8 + (j & 3)] >> (2 * (j >> 2))) & 3u;
	return (int)(lo | (hi << 4)) - 32;
}

struct TQ3_K {
	// hmask[32] @0, qs[64] @32, scales[12] @96, d @108; chunks as Q2_K.
	enum { QK = 256, BYTES = 110, CPB = 16, VPC = 16 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int c, int g) { return 128 * (c >> 3) + 32 * g + 4 * (c & 7); }
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const int n = c >> 3, b0 = 4 * (c & 7), half = (c & 7) >> 2;
		const float d = half_to_float(ld_u16(b + 108));
		const u32 q = ld_u32_a2(b + 32 + 32 * n + b0);
		const u32 hm = ld_u32_a2(b + b0);
#pragma unroll
		for (int j = 0; j < 4; j++) {
			const float dl = d * (float)q3_scale(b + 96, 8 * n + 2 * j + half);
			const int hbit = 4 * n + j;
#pragma unroll
			for (int i = 0; i < 4; i++) {
				const int lo = (int)((q >> (8 * i + 2 * j)) & 3u);
				const int h = (int)((hm >> (8 * i + hbit)) & 1u);
				v[4 * j + i] = dl * (float)(lo - ((h ^ 1) << 2));
			}
		}
	}
};

// scale_min_k4 is ggml's get_scale_min_k4: the j-th 6-bit scale and min.
// q points 4 bytes into its block, so q[j - 4] is in the block for every j:
// all three bytes are loaded and the result selected, without a branch.
FP_DEVICE void scale_min_k4(int j, const u8* q, float* sc, float* m) {
	const u32 a = q[j], bb = q[j + 4], cc = q[j - 4];
	const bool lo = j < 4;
	*sc = (float)(lo ? (a & 63u) : ((bb & 15u) | ((cc >> 6) << 4)));
	*m = (float)(lo ? (bb & 63u) : ((bb >> 4) | ((a >> 6) << 4)));
}

// Q4_K and Q5_K chunks: c/2 is the 64-value group j, l0 = 16(c%2) the first
// of the 16 qs bytes read with one 16-byte load; low nibbles are values
// 64j+l0.., high nibbles 64j+32+l0...
FP_DEVICE int k4_pos(int c, int g) { return 64 * (c >> 1) + 16 * (c & 1) + 4 * (g & 3) + 32 * (g >> 2); }

struct TQ4_K {
	// d @0, dmin @2, scales[12] @4, qs[128] @16: 16-byte aligned blocks.
	enum { QK = 256, BYTES = 144, CPB = 8, VPC = 32 };
	FP_DOT_VIA_DECODE_AS(dot_decoded)
	FP_DEVICE int pos(int c, int g) { return k4_pos(c, g); }
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const int j = c >> 1, l0 = 16 * (c & 1);
		const uint4 t = *(const uint4*)(b + 16 + 32 * j + l0);
		const u32 w[4] = {t.x, t.y, t.z, t.w};
		const u32 ddm = ld_u32(b);
		const float d = half_to_float((u16)(ddm & 0xffffu)), dmin = half_to_float((u16)(ddm >> 16));
		float sc1, m1, sc2, m2;
		scale_min_k4(2 * j, b + 4, &sc1, &m1);
		scale_min_k4(2 * j + 1, b + 4, &sc2, &m2);
		const float d1 = d * sc1, mm1 = dmin * m1, d2 = d * sc2, mm2 = dmin * m2;
#pragma unroll
		for (int i = 0; i < 16; i++) {
			const u32 byte = (w[i >> 2] >> (8 * (i & 3))) & 0xffu;
			v[i] = d1 * (float)(byte & 15u) - mm1;
			v[16 + i] = d2 * (float)(byte >> 4) - mm2;
		}
	}
	FP_DEVICE float dot(const u8* b, int c, const float* xv) {
		const int j = c >> 1, l0 = 16 * (c & 1);
		const uint4 t = *(const uint4*)(b + 16 + 32 * j + l0);
		const u32 w[4] = {t.x, t.y, t.z, t.w};
		// Σ x(d1 q - m1) = d1 Σ xq - m1 Σ x, per nibble half.
		float sl = 0.f, sh = 0.f, xl = 0.f, xh = 0.f;
#pragma unroll
		for (int k = 0; k < 4; k++) {
			const u32 lo = w[k] & 0x0f0f0f0fu, hi = (w[k] >> 4) & 0x0f0f0f0fu;
#pragma unroll
			for (int i = 0; i < 4; i++) {
				sl += (small_float(lo, i) - FP_MAGIC) * xv[4 * k + i];
				sh += (small_float(hi, i) - FP_MAGIC) * xv[16 + 4 * k + i];
				xl += xv[4 * k + i];
				xh += xv[16 + 4 * k + i];
			}
		}
		const u32 ddm = ld_u32(b);
		const float d = half_to_float((u16)(ddm & 0xffffu)), dmin = half_to_float((u16)(ddm >> 16));
		float sc1, m1, sc2, m2;
		scale_min_k4(2 * j, b + 4, &sc1, &m1);
		scale_min_k4(2 * j + 1, b + 4, &sc2, &m2);
		return d * (sc1 * sl + sc2 * sh) - dmin * (m1 * xl + m2 * xh);
	}
	// dot8: the low nibbles lie in activation block 2j, the high in 2j+1.
	FP_DEVICE float dot8(const u8* b, int c, const i8* xq, const float* xd) {
		const int j = c >> 1, l0 = 16 * (c & 1);
		const uint4 t = *(const uint4*)(b + 16 + 32 * j + l0);
		const u32 w[4] = {t.x, t.y, t.z, t.w};
		const int* xa = (const int*)(xq + 64 * j + l0);
		const int* xb = (const int*)(xq + 64 * j + 32 + l0);
		int sl = 0, sh = 0, sa = 0, sb = 0;
#pragma unroll
		for (int k = 0; k < 4; k++) {
			const int a = xa[k], bb = xb[k];
			sl = dp4a((int)(w[k] & 0x0f0f0f0fu), a, sl);
			sh = dp4a((int)((w[k] >> 4) & 0x0f0f0f0fu), bb, sh);
			sa = dp4a(0x01010101, a, sa);
			sb = dp4a(0x01010101, bb, sb);
		}
		const u32 ddm = ld_u32(b);
		const float d = half_to_float((u16)(ddm & 0xffffu)), dmin = half_to_float((u16)(ddm >> 16));
		float sc1, m1, sc2, m2;
		scale_min_k4(2 * j, b + 4, &sc1, &m1);
		scale_min_k4(2 * j + 1, b + 4, &sc2, &m2);
		return xd[2 * j] * (d * sc1 * (float)sl - dmin * m1 * (float)sa) +
		       xd[2 * j + 1] * (d * sc2 * (float)sh - dmin * m2 * (float)sb);
	}
	// dot8s: unit ub = 2j + h is the low (h = 0) or high nibbles of qs
	// bytes 32j..32j+31, with scale and min ub. Q4_K blocks and rows are
	// 16-byte aligned, so o is too and the stage is read 16 bytes at a time.
	enum { UPB = 8, UPL8 = 4 };
	FP_DEVICE float dot8s(const u32* s, int o, int ub, const int* x, float xs) {
		const uint4* b = (const uint4*)s + (o >> 4);
		const uint4 hd = b[0], q0 = b[1 + 2 * (ub >> 1)], q1 = b[2 + 2 * (ub >> 1)];
		const u32 q[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
		const u32 sh = 4u * (u32)(ub & 1);
		int acc = 0, sx = 0;
#pragma unroll
		for (int k = 0; k < 8; k++) {
			acc = dp4a((int)((q[k] >> sh) & 0x0f0f0f0fu), x[k], acc);
			sx = dp4a(0x01010101, x[k], sx);
		}
		// ggml's get_scale_min_k4 on the scale words hd.y, hd.z, hd.w.
		const u32 bs = 8u * (u32)(ub & 3);
		const u32 b1 = (hd.y >> bs) & 0xffu, b2 = (hd.z >> bs) & 0xffu, b3 = (hd.w >> bs) & 0xffu;
		const bool lo = ub < 4;
		const float sc = (float)(lo ? (b1 & 63u) : ((b3 & 15u) | ((b1 >> 6) << 4)));
		const float m = (float)(lo ? (b2 & 63u) : ((b3 >> 4) | ((b2 >> 6) << 4)));
		const float d = half_to_float((u16)(hd.x & 0xffffu)), dmin = half_to_float((u16)(hd.x >> 16));
		return xs * (d * sc * (float)acc - dmin * m * (float)sx);
	}
};

struct TQ5_K {
	// d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48: 16-byte aligned.
	enum { QK = 256, BYTES = 176, CPB = 8, VPC = 32 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int c, int g) { return k4_pos(c, g); }
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const int j = c >> 1, l0 = 16 * (c & 1);
		const uint4 t = *(const uint4*)(b + 48 + 32 * j + l0);
		const uint4 th = *(const uint4*)(b + 16 + l0);
		const u32 w[4] = {t.x, t.y, t.z, t.w}, h[4] = {th.x, th.y, th.z, th.w};
		const u32 ddm = ld_u32(b);
		const float d = half_to_float((u16)(ddm & 0xffffu)), dmin = half_to_float((u16)(ddm >> 16));
		float sc1, m1, sc2, m2;
		scale_min_k4(2 * j, b + 4, &sc1, &m1);
		scale_min_k4(2 * j + 1, b + 4, &sc2, &m2);
		const float d1 = d * sc1, mm1 = dmin * m1, d2 = d * sc2, mm2 = dmin * m2;
#pragma unroll
		for (int i = 0; i < 16; i++) {
			const u32 byte = (w[i >> 2] >> (8 * (i & 3))) & 0xffu;
			const u32 hb = (h[i >> 2] >> (8 * (i & 3))) & 0xffu;
			const u32 q1 = (byte & 15u) | (((hb >> (2 * j)) & 1u) << 4);
			const u32 q2 = (byte >> 4) | (((hb >> (2 * j + 1)) & 1u) << 4);
			v[i] = d1 * (float)q1 - mm1;
			v[16 + i] = d2 * (float)q2 - mm2;
		}
	}
};

struct TQ6_K {
	// ql[128] @0, qh[64] @128, scales[16] (int8) @192, d @208. Chunk c: half
	// n = c/8, l0 = 4(c%8): values 128n + {0,32,64,96} + l0 .. +3.
	enum { QK = 256, BYTES = 210, CPB = 16, VPC = 16 };
	FP_DOT_VIA_DECODE_AS(dot_decoded)
	FP_DEVICE int pos(int c, int g) { return 128 * (c >> 3) + 32 * g + 4 * (c & 7); }
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const int n = c >> 3, l0 = 4 * (c & 7), is = (c & 7) >> 2;
		const float d = half_to_float(ld_u16(b + 208));
		const u32 a = ld_u32_a2(b + 64 * n + l0);
		const u32 bq = ld_u32_a2(b + 64 * n + 32 + l0);
		const u32 h = ld_u32_a2(b + 128 + 32 * n + l0);
		const i8* sc = (const i8*)(b + 192 + 8 * n + is);
		const float s0 = d * (float)sc[0], s1 = d * (float)sc[2], s2 = d * (float)sc[4], s3 = d * (float)sc[6];
#pragma unroll
		for (int i = 0; i < 4; i++) {
			const int q1 = (int)(((a >> (8 * i)) & 15u) | (((h >> (8 * i)) & 3u) << 4)) - 32;
			const int q2 = (int)(((bq >> (8 * i)) & 15u) | (((h >> (8 * i + 2)) & 3u) << 4)) - 32;
			const int q3 = (int)(((a >> (8 * i + 4)) & 15u) | (((h >> (8 * i + 4)) & 3u) << 4)) - 32;
			const int q4 = (int)(((bq >> (8 * i + 4)) & 15u) | (((h >> (8 * i + 6)) & 3u) << 4)) - 32;
			v[i] = s0 * (float)q1;
			v[4 + i] = s1 * (float)q2;
			v[8 + i] = s2 * (float)q3;
			v[12 + i] = s3 * (float)q4;
		}
	}
	FP_DEVICE float dot(const u8* b, int c, const float* xv) {
		const int n = c >> 3, l0 = 4 * (c & 7), is = (c & 7) >> 2;
		const u32 a = ld_u32_a2(b + 64 * n + l0);
		const u32 bq = ld_u32_a2(b + 64 * n + 32 + l0);
		const u32 h = ld_u32_a2(b + 128 + 32 * n + l0);
		// Four 6-bit quants per word: low nibble from ql, high 2 bits from qh.
		const u32 q[4] = {(a & 0x0f0f0f0fu) | ((h << 4) & 0x30303030u), (bq & 0x0f0f0f0fu) | ((h << 2) & 0x30303030u),
		                  ((a >> 4) & 0x0f0f0f0fu) | (h & 0x30303030u), ((bq >> 4) & 0x0f0f0f0fu) | ((h >> 2) & 0x30303030u)};
		const i8* sc = (const i8*)(b + 192 + 8 * n + is);
		float s = 0.f;
#pragma unroll
		for (int g = 0; g < 4; g++) {
			float sg = 0.f;
#pragma unroll
			for (int i = 0; i < 4; i++) sg += (small_float(q[g], i) - (FP_MAGIC + 32.f)) * xv[4 * g + i];
			s += (float)sc[2 * g] * sg;
		}
		return half_to_float(ld_u16(b + 208)) * s;
	}
	// dot8: group g (values 128n+32g+l0..+3) lies in activation block 4n+g.
	FP_DEVICE float dot8(const u8* b, int c, const i8* xq, const float* xd) {
		const int n = c >> 3, l0 = 4 * (c & 7), is = (c & 7) >> 2;
		const u32 a = ld_u32_a2(b + 64 * n + l0);
		const u32 bq = ld_u32_a2(b + 64 * n + 32 + l0);
		const u32 h = ld_u32_a2(b + 128 + 32 * n + l0);
		const u32 q[4] = {(a & 0x0f0f0f0fu) | ((h << 4) & 0x30303030u), (bq & 0x0f0f0f0fu) | ((h << 2) & 0x30303030u),
		                  ((a >> 4) & 0x0f0f0f0fu) | (h & 0x30303030u), ((bq >> 4) & 0x0f0f0f0fu) | ((h >> 2) & 0x30303030u)};
		const i8* sc = (const i8*)(b + 192 + 8 * n + is);
		float s = 0.f;
#pragma unroll
		for (int g = 0; g < 4; g++) {
			const int xv = *(const int*)(xq + 128 * n + 32 * g + l0);
			const int sg = dp4a((int)q[g], xv, 0) - 32 * dp4a(0x01010101, xv, 0);
			s += (float)sc[2 * g] * xd[4 * n + g] * (float)sg;
		}
		return half_to_float(ld_u16(b + 208)) * s;
	}
	// dot8s: unit ub = 4n + g is values 128n + 32g .. +31: ql bytes
	// 64n + 32(g%2) .., nibble g/2; qh bytes 32n .., bits 2g; scales
	// 8n + 2g (first 16 values) and 8n + 2g + 1.
	enum { UPB = 8, UPL8 = 2 };
	FP_DEVICE float dot8s(const u32* s, int o, int ub, const int* x, float xs) {
		const int n = ub >> 2, g = ub & 3;
		u32 ql[8], qh[8];
		ld_words_a2<8>(s, o + 64 * n + 32 * (g & 1), ql);
		ld_words_a2<8>(s, o + 128 + 32 * n, qh);
		const u32 sc = ld16s(s, o + 192 + 8 * n + 2 * g);
		const float d = half_to_float((u16)ld16s(s, o + 208));
		const u32 lsh = 4u * (u32)(g >> 1), hsh = 2u * (u32)g;
		int s0 = 0, s1 = 0, x0 = 0, x1 = 0;
#pragma unroll
		for (int k = 0; k < 8; k++) {
			const int q = (int)(((ql[k] >> lsh) & 0x0f0f0f0fu) | (((qh[k] >> hsh) & 0x03030303u) << 4));
			if (k < 4) {
				s0 = dp4a(q, x[k], s0);
				x0 = dp4a(0x01010101, x[k], x0);
			} else {
				s1 = dp4a(q, x[k], s1);
				x1 = dp4a(0x01010101, x[k], x1);
			}
		}
		const float sc0 = (float)(i8)(sc & 0xffu), sc1 = (float)(i8)(sc >> 8);
		return d * xs * (sc0 * (float)(s0 - 32 * x0) + sc1 * (float)(s1 - 32 * x1));
	}
};

struct TQ8_K {
	// float d @0, qs[256] @4, bsums @260.
	enum { QK = 256, BYTES = 292, CPB = 16, VPC = 16 };
	FP_DOT_VIA_DECODE
	FP_DEVICE int pos(int c, int g) { return 16 * c + 4 * g; }
	FP_DEVICE void decode(const u8* b, int c, float* v) {
		const float d = __uint_as_float(ld_u32(b));
		const u8* q = b + 4 + 16 * c;
		const u32 w[4] = {ld_u32(q), ld_u32(q + 4), ld_u32(q + 8), ld_u32(q + 12)};
#pragma unroll
		for (int i = 0; i < 16; i++) v[i] = d * sbyte(w[i >> 2], i & 3);
	}
};

// ------------------------------------------------------------ kernels

// load_x reads the activations of chunk c of the block starting at xb.
template <class T>
FP_DEVICE void load_x(const float* xb, int c, float* xv) {
	if (T::VPC < 4) {
		xv[0] = xb[0];
	} else {
#pragma unroll
		for (int g = 0; g < T::VPC / 4; g++) {
			const float4 t = *(const float4*)(xb + T::pos(c, g));
			xv[4 * g] = t.x; xv[4 * g + 1] = t.y; xv[4 * g + 2] = t.z; xv[4 * g + 3] = t.w;
		}
	}
}

// mv_unroll is how many chunks a thread of matvec takes per step: all
// their loads (and those of the R rows) are issued before any is used, so
// that enough bytes are in flight to hide the memory's latency, within
// about 64 registers of activations.
template <class T, int R>
struct MvUnroll {
	enum { U0 = 64 / (T::VPC * R), U = U0 < 1 ? 1 : (U0 > 8 ? 8 : U0) };
};

// matvec_rows: y[r] = (row r of w) · x for one block's rows [row0, +R). The
// body has no branches around loads (a branch would stop the compiler from
// issuing the next row's loads before this row's arithmetic): out-of-range
// chunks and rows are clamped to valid ones and their sums discarded.
template <class T, int R, bool DECODED>
FP_DEVICE void matvec_rows(const u8* __restrict__ w, const float* __restrict__ x, float* __restrict__ y,
                           int row0, int rows, int cols, long long rowBytes) {
	enum { U = MvUnroll<T, R>::U };
	const int nchunks = (cols / T::QK) * T::CPB;
	const int nr = rows - row0 < R ? rows - row0 : R;
	float acc[R];
	const u8* wr[R];
#pragma unroll
	for (int r = 0; r < R; r++) {
		acc[r] = 0.f;
		wr[r] = w + (long long)(r < nr ? row0 + r : row0) * rowBytes;
	}
	for (int i0 = 0; i0 < nchunks; i0 += U * MV_THREADS) {
		float xv[U][T::VPC];
		int blk[U], c[U];
		float ok[U];
#pragma unroll
		for (int u = 0; u < U; u++) {
			int i = i0 + u * MV_THREADS + threadIdx.x;
			ok[u] = i < nchunks ? 1.f : 0.f;
			i = i < nchunks ? i : nchunks - 1;
			blk[u] = i / T::CPB;
			c[u] = i % T::CPB;
			load_x<T>(x + (long long)blk[u] * T::QK, c[u], xv[u]);
		}
#pragma unroll
		for (int r = 0; r < R; r++) {
#pragma unroll
			for (int u = 0; u < U; u++) {
				const u8* b = wr[r] + (long long)blk[u] * T::BYTES;
				const float s = DECODED ? T::dot_decoded(b, c[u], xv[u]) : T::dot(b, c[u], xv[u]);
				acc[r] += ok[u] * s;
			}
		}
	}
	__shared__ float part[MV_WARPS][R];
	const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
#pragma unroll
	for (int r = 0; r < R; r++) {
		const float s = warp_sum(acc[r]);
		if (lane == 0) part[warp][r] = s;
	}
	__syncthreads();
	if (threadIdx.x < R && (int)threadIdx.x < nr) {
		float s = 0.f;
#pragma unroll
		for (int k = 0; k < MV_WARPS; k++) s += part[k][threadIdx.x];
		y[row0 + threadIdx.x] = s;
	}
	__syncthreads(); // part is free for the block's next rows
}

// matvec: y = W·x, R rows per block; blocks stride over the row groups,
// so the grid may be smaller than the matrix.
template <class T, int R, bool DECODED>
FP_DEVICE void matvec(const u8* __restrict__ w, const float* __restrict__ x, float* __restrict__ y,
                      int rows, int cols, long long rowBytes) {
	for (int row0 = blockIdx.x * R; row0 < rows; row0 += gridDim.x * R)
		matvec_rows<T, R, DECODED>(w, x, y, row0, rows, cols, rowBytes);
}

// dequant: every value of a rows x cols matrix (the prompt path's half
// scratch for the GEMM, or float32), in the same layout, row-major.
//
// A thread takes one unit of Dq<T>::UV values, decoded by T::decode (the
// values matvec and embed see): a whole block of the 32-value types, one
// (Q4_K, Q5_K) or four consecutive chunks (Q2_K, Q3_K, Q6_K, Q8_K) of a
// 256-value block, 2 or 4 blocks of F16/BF16/F32. A unit's values fill
// whole aligned runs of 16 (32 bytes of half: one memory sector). A block
// of DQ_THREADS threads takes as many consecutive units: their weight bytes
// are copied into shared memory with coalesced 16-byte loads of the whole
// aligned 16-byte granules around them, so that every weight block keeps
// its alignment (decode's 4- and 16-byte loads stay legal), and decoded
// from there. Half output leaves as 16-byte stores: lanes 2m and 2m+1
// first swap halves of their runs, so that every store instruction writes
// whole sectors (lane 2m the first 16 bytes of a run, lane 2m+1 the second)
// rather than half of each of 32 sectors. Rows not back to back (rowBytes
// larger than a row) are decoded in place instead; the one-value types (f32s,
// f16s, bf16s: rows of any length) take one value per thread.
#define DQ_THREADS 128

// Dq<T> is dequant's geometry for type T: units of BPU blocks or of CPU
// chunks of one block (UPB units per block), UV values each; a unit's
// values lie at dq_rel from its first, below 16·NSEC. TBK blocks make the
// DQ_THREADS units of a thread block, staged in S16 16-byte slots (room
// for a misaligned start and end), K slots per thread. CPU is chosen so
// that chunk c0+k of a unit (c0 a multiple of CPU) lies where chunk k of
// the first unit does, shifted: pos(c0+k, g) - pos(c0, 0) = pos(k, g).
template <class T>
struct Dq {
	enum {
		BPU = T::QK < 16 ? 16 / T::QK : 1,
		CPU = T::QK == 32 ? T::CPB : (T::QK == 256 && T::VPC == 16 ? 4 : 1),
		UPB = T::CPB / CPU,
		UV = BPU * CPU * T::VPC,
		NSEC = BPU * T::QK / 16 > 0 ? BPU * T::QK / 16 : 1,
		TBK = T::VPC < 4 ? 1 : DQ_THREADS * BPU / UPB,
		S16 = (TBK * T::BYTES + 30) / 16,
		K = (S16 + DQ_THREADS - 1) / DQ_THREADS,
		DIRECT = 0, // 1: decode from global memory, never staged
	};
};

// Regrouped Q8_0 needs no stage: each 16-value chunk is an aligned 16-byte
// run, so a unit is one chunk, read straight from memory with consecutive
// lanes on consecutive chunks.
template <>
struct Dq<TQ8_0X> {
	enum {
		BPU = 1, CPU = 1, UPB = TQ8_0X::CPB, UV = TQ8_0X::VPC, NSEC = TQ8_0X::QK / 16,
		TBK = DQ_THREADS / UPB, S16 = (TBK * TQ8_0X::BYTES + 30) / 16, K = (S16 + DQ_THREADS - 1) / DQ_THREADS,
		DIRECT = 1,
	};
};

// dq_rel is where group g of a unit's k-th chunk starts, from the unit's
// first value; constant once the loops over k and g are unrolled.
template <class T>
FP_DEVICE int dq_rel(int k, int g) {
	return (k / Dq<T>::CPU) * T::QK + T::pos(k % Dq<T>::CPU, g);
}

// dq_used reports whether any of a unit's values lies in its s-th run of 16.
template <class T>
FP_DEVICE bool dq_used(int s) {
	bool used = false;
#pragma unroll
	for (int k = 0; k < Dq<T>::BPU * Dq<T>::CPU; k++) {
#pragma unroll
		for (int g = 0; g < T::VPC / 4; g++) used = used || dq_rel<T>(k, g) / 16 == s;
	}
	return used;
}

// dq_first is the output index of unit u's first value.
template <class T>
FP_DEVICE long long dq_first(long long u) {
	typedef Dq<T> G;
	return u / G::UPB * G::BPU * T::QK + T::pos((int)(u % G::UPB) * G::CPU, 0);
}

// dq_store8 writes the 8 halves d at out[p..p+7], or those of them below
// total (which is a multiple of 4).
FP_DEVICE void dq_store8(u16* out, long long p, long long total, uint4 d) {
	if (p + 8 <= total) *(uint4*)(out + p) = d;
	else if (p + 4 <= total) *(uint2*)(out + p) = make_uint2(d.x, d.y);
}

// dequant_units decodes and writes this thread's unit. With STAGED, src
// is the stage, holding blocks q0.. back to back; else the weights, rows
// rowBytes apart. nblk is the matrix's blocks, total its values.
template <class T, bool HALF, bool STAGED>
FP_DEVICE void dequant_units(const u8* src, void* __restrict__ out, long long q0, int nb, long long rowBytes,
                             long long nblk, long long total) {
	typedef Dq<T> G;
	const long long nunits = (total + G::UV - 1) / G::UV;
	const long long u = (long long)blockIdx.x * DQ_THREADS + threadIdx.x;
	// A thread past the end decodes the last unit (its lane's partner may
	// need the swap) and stores nothing: its runs start at or after total.
	const long long uc = u < nunits ? u : nunits - 1;
	const long long q = uc / G::UPB * G::BPU;
	const int c0 = (int)(uc % G::UPB) * G::CPU;
	const long long first = dq_first<T>(u);
	u32 h[G::NSEC][8]; // the unit's halves, two per word, by run of 16
#pragma unroll
	for (int k = 0; k < G::BPU * G::CPU; k++) {
		long long qk = q + k / G::CPU;
		qk = qk < nblk ? qk : nblk - 1; // F32, F16, BF16: a last unit may be partial
		const u8* b = STAGED ? src + (qk - q0) * T::BYTES : src + qk / nb * rowBytes + qk % nb * T::BYTES;
		float v[T::VPC];
		T::decode(b, c0 + k % G::CPU, v);
#pragma unroll
		for (int g = 0; g < T::VPC / 4; g++) {
			const int r = dq_rel<T>(k, g);
			if (HALF) {
				h[r / 16][r % 16 / 2] = half2_bits(v[4 * g], v[4 * g + 1]);
				h[r / 16][r % 16 / 2 + 1] = half2_bits(v[4 * g + 2], v[4 * g + 3]);
			} else if (first + r < total) {
				*(float4*)((float*)out + first + r) = make_float4(v[4 * g], v[4 * g + 1], v[4 * g + 2], v[4 * g + 3]);
			}
		}
	}
	if (!HALF) return;
	// Lane 2m writes the first halves of the runs of units u&~1 and u|1,
	// lane 2m+1 the second halves. Both halves cross (8 shuffles a run, not
	// 4 of a half picked by parity: hipcc turned such a pick between two
	// elements of h into an indexed load and kept h in scratch memory).
	const bool odd = threadIdx.x & 1u;
	const long long fe = dq_first<T>(u & ~1LL), fo = dq_first<T>(u | 1LL);
	const int o8 = odd ? 8 : 0;
#pragma unroll
	for (int s = 0; s < G::NSEC; s++) {
		if (!dq_used<T>(s)) continue;
		u32 xl[4], xh[4];
#pragma unroll
		for (int j = 0; j < 4; j++) {
			xl[j] = (u32)shfl_xor_int((int)h[s][j], 1);
			xh[j] = (u32)shfl_xor_int((int)h[s][4 + j], 1);
		}
		const uint4 lo = make_uint4(h[s][0], h[s][1], h[s][2], h[s][3]);
		const uint4 hi = make_uint4(h[s][4], h[s][5], h[s][6], h[s][7]);
		dq_store8((u16*)out, fe + 16 * s + o8, total, odd ? make_uint4(xh[0], xh[1], xh[2], xh[3]) : lo);
		dq_store8((u16*)out, fo + 16 * s + o8, total, odd ? hi : make_uint4(xl[0], xl[1], xl[2], xl[3]));
	}
}

// dequant_values: the one-value types, one value per thread.
template <class T, bool HALF>
FP_DEVICE void dequant_values(const u8* __restrict__ w, void* __restrict__ out, int rows, int cols,
                              long long rowBytes) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (long long)rows * cols) return;
	float v[T::VPC];
	T::decode(w + i / cols * rowBytes + i % cols * T::BYTES, 0, v);
	if (HALF) ((u16*)out)[i] = float_to_half(v[0]);
	else ((float*)out)[i] = v[0];
}

// dequant: launched with DQ_THREADS threads per block, one unit each (or
// any block size, one value per thread, for the one-value types).
template <class T, bool HALF>
FP_DEVICE void dequant(const u8* __restrict__ w, void* __restrict__ out, int rows, int cols, long long rowBytes) {
	if (T::VPC < 4) {
		dequant_values<T, HALF>(w, out, rows, cols, rowBytes);
		return;
	}
	typedef Dq<T> G;
	__shared__ uint4 stage[G::S16];
	const int nb = cols / T::QK;
	const long long nblk = (long long)rows * nb, total = (long long)rows * cols;
	const long long q0 = (long long)blockIdx.x * G::TBK;
	if (q0 >= nblk) return;
	if (G::DIRECT || rowBytes != (long long)nb * T::BYTES) {
		dequant_units<T, HALF, false>(w, out, q0, nb, rowBytes, nblk, total);
		return;
	}
	// Rows back to back: blocks q0 .. q0+nbt-1 are one run of bytes from a.
	const int nbt = (int)(nblk - q0 < G::TBK ? nblk - q0 : G::TBK);
	const u8* a = w + q0 * T::BYTES;
	const int o = (int)((unsigned long long)a & 15u);
	const int n16 = (o + nbt * T::BYTES + 15) >> 4;
	uint4 buf[G::K];
#pragma unroll
	for (int k = 0; k < G::K; k++) { // every load in flight before the first store
		const int j = (int)threadIdx.x + DQ_THREADS * k;
		buf[k] = j < n16 ? ldg16(a - o + 16 * j) : make_uint4(0u, 0u, 0u, 0u);
	}
#pragma unroll
	for (int k = 0; k < G::K; k++) {
		const int j = (int)threadIdx.x + DQ_THREADS * k;
		if (j < n16) stage[j] = buf[k];
	}
	__syncthreads();
	dequant_units<T, HALF, true>((const u8*)stage + o, out, q0, nb, rowBytes, nblk, total);
}

// embed: out row t = row tokens[t·stride] of w, dequantised (stride 2
// reads the ids of argmax_f32's output); a token outside [0, rows) gives a
// row of NaN rather than a read out of bounds.
template <class T>
FP_DEVICE void embed(const u8* __restrict__ w, const i32* __restrict__ tokens, int stride, float* __restrict__ out,
                     int rows, int cols, long long rowBytes) {
	const int t = blockIdx.y;
	const int per = (cols / T::QK) * T::CPB;
	const int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= per) return;
	const int tok = tokens[(long long)t * stride];
	const int blk = i / T::CPB, c = i % T::CPB;
	float v[T::VPC];
	if (tok < 0 || tok >= rows) {
#pragma unroll
		for (int k = 0; k < T::VPC; k++) v[k] = __int_as_float(0x7fc00000);
	} else {
		T::decode(w + (long long)tok * rowBytes + (long long)blk * T::BYTES, c, v);
	}
	float* o = out + (long long)t * cols + (long long)blk * T::QK;
	if (T::VPC < 4) {
		o[0] = v[0];
	} else {
#pragma unroll
		for (int g = 0; g < T::VPC / 4; g++)
			*(float4*)(o + T::pos(c, g)) = make_float4(v[4 * g], v[4 * g + 1], v[4 * g + 2], v[4 * g + 3]);
	}
}

#define FP_MATVEC(name, T, R)                                                                          \
	FP_KERNEL void __launch_bounds__(MV_THREADS) matvec_##name##_r##R(                                 \
	    const u8* __restrict__ w, const float* __restrict__ x, float* __restrict__ y, int rows, int cols, \
	    long long rowBytes) {                                                                          \
		FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();                                                   \
		matvec<T, R, false>(w, x, y, rows, cols, rowBytes);                                            \
	}

// matvec_decoded_<t>_r<R>: the fast types' products through decode, kept to
// measure what their own dot gains.
#define FP_MATVEC_DECODED(name, T, R)                                                                  \
	FP_KERNEL void __launch_bounds__(MV_THREADS) matvec_decoded_##name##_r##R(                         \
	    const u8* __restrict__ w, const float* __restrict__ x, float* __restrict__ y, int rows, int cols, \
	    long long rowBytes) {                                                                          \
		FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();                                                   \
		matvec<T, R, true>(w, x, y, rows, cols, rowBytes);                                             \
	}

#define FP_TYPE(name, T)                                                                               \
	FP_MATVEC(name, T, 1)                                                                              \
	FP_MATVEC(name, T, 2)                                                                              \
	FP_MATVEC(name, T, 4)                                                                              \
	FP_KERNEL void dequant_##name##_f32(const u8* __restrict__ w, float* __restrict__ out, int rows,    \
	                                    int cols, long long rowBytes) {                                \
		FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();                                                   \
		dequant<T, false>(w, out, rows, cols, rowBytes);                                               \
	}                                                                                                  \
	FP_KERNEL void dequant_##name##_f16(const u8* __restrict__ w, u16* __restrict__ out, int rows,      \
	                                    int cols, long long rowBytes) {                                \
		FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();                                                   \
		dequant<T, true>(w, out, rows, cols, rowBytes);                                                \
	}                                                                                                  \
	FP_KERNEL void embed_##name(const u8* __restrict__ w, const i32* __restrict__ tokens,              \
	                            float* __restrict__ out, int rows, int cols, long long rowBytes,       \
	                            int stride) {                                                          \
		FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();                                                   \
		embed<T>(w, tokens, stride, out, rows, cols, rowBytes);                                        \
	}

FP_TYPE(f32, TF32)
FP_TYPE(f16, TF16)
FP_TYPE(bf16, TBF16)
FP_TYPE(f32s, TF32S)
FP_TYPE(f16s, TF16S)
FP_TYPE(bf16s, TBF16S)
FP_TYPE(q4_0, TQ4_0)
FP_TYPE(q4_1, TQ4_1)
FP_TYPE(q5_0, TQ5_0)
FP_TYPE(q5_1, TQ5_1)
FP_TYPE(q8_0, TQ8_0)
FP_TYPE(q8_0x, TQ8_0X)
FP_TYPE(q4_0x, TQ4_0X)
FP_TYPE(q2_k, TQ2_K)
FP_TYPE(q3_k, TQ3_K)
FP_TYPE(q4_k, TQ4_K)
FP_TYPE(q5_k, TQ5_K)
FP_TYPE(q6_k, TQ6_K)
FP_TYPE(q8_k, TQ8_K)

#define FP_DECODED(name, T) FP_MATVEC_DECODED(name, T, 1) FP_MATVEC_DECODED(name, T, 2) FP_MATVEC_DECODED(name, T, 4)
FP_DECODED(q4_0, TQ4_0)
FP_DECODED(q8_0, TQ8_0)
FP_DECODED(q8_0x, TQ8_0X)
FP_DECODED(q4_0x, TQ4_0X)
FP_DECODED(q4_k, TQ4_K)
FP_DECODED(q6_k, TQ6_K)

// ------------------------------------------------------------ int8 activations

// quantize_act_q8: x (n float32, n a multiple of 32) to int8 blocks of 32,
// as ggml's quantize_row_q8_0: d = amax/127, q = round(x/d) (halves away
// from zero). xq holds n int8 then n/32 float scales. Groups of 32 threads
// take one block each, on 32- and 64-wide warps alike.
FP_KERNEL void quantize_act_q8(i8* __restrict__ xq, const float* __restrict__ x, int n) {
	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
	const int blk = (blockIdx.x * blockDim.x + threadIdx.x) / 32, l = threadIdx.x % 32;
	if (blk >= n / 32) return; // whole 32-groups leave together
	const float v = x[blk * 32 + l];
	float amax = fabsf(v);
#pragma unroll
	for (int m = 16; m > 0; m >>= 1) amax = fmaxf(amax, shfl_xor(amax, m));
	const float d = amax / 127.f;
	const float id = d != 0.f ? 1.f / d : 0.f;
	xq[blk * 32 + l] = (i8)(int)roundf(v * id);
	if (l == 0) ((float*)(xq + n))[blk] = d;
}

// matvec8: matvec with int8 activations (quantize_act_q8), for the types
// with a dot8. dp4a does four multiply-adds per instruction, so the
// product is bound by memory rather than by unpacking. With res not null,
// y[r] = W[r]·x + res[r], rounded as add_f32 of the two: res may be y
// itself (a residual added in place), as the one thread that writes y[r]
// reads res[r] first; so neither is __restrict__.
template <class T, int R>
FP_DEVICE void matvec8(const u8* __restrict__ w, const i8* __restrict__ xq, float* y, int rows, int cols,
                       long long rowBytes, const float* res) {
	enum { U = 4 / R > 0 ? 4 / R : 1 };
	const float* xd = (const float*)(xq + cols);
	const int row0 = blockIdx.x * R;
	const int nchunks = (cols / T::QK) * T::CPB;
	const int nr = rows - row0 < R ? rows - row0 : R;
	const bool writer = threadIdx.x < R && (int)threadIdx.x < nr;
	// The residual is loaded before the product, so that its trip to memory overlaps the weights'.
	const float rv = res && writer ? res[row0 + threadIdx.x] : 0.f;
	float acc[R];
	const u8* wr[R];
#pragma unroll
	for (int r = 0; r < R; r++) {
		acc[r] = 0.f;
		wr[r] = w + (long long)(r < nr ? row0 + r : row0) * rowBytes;
	}
	for (int i0 = 0; i0 < nchunks; i0 += U * MV_THREADS) {
		int blk[U], c[U];
		float ok[U];
#pragma unroll
		for (int u = 0; u < U; u++) {
			int i = i0 + u * MV_THREADS + threadIdx.x;
			ok[u] = i < nchunks ? 1.f : 0.f;
			i = i < nchunks ? i : nchunks - 1;
			blk[u] = i / T::CPB;
			c[u] = i % T::CPB;
		}
#pragma unroll
		for (int r = 0; r < R; r++) {
#pragma unroll
			for (int u = 0; u < U; u++) {
				const float s = T::dot8(wr[r] + (long long)blk[u] * T::BYTES, c[u], xq + (long long)blk[u] * T::QK,
				                        xd + (long long)blk[u] * (T::QK / 32));
				acc[r] += ok[u] * s;
			}
		}
	}
	FP_GRID_LAUNCH_DEPENDENTS_LATE(); // every product is summed (FP_PDL_LATE)
	__shared__ float part[MV_WARPS][R];
	const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
#pragma unroll
	for (int r = 0; r < R; r++) {
		const float s = warp_sum(acc[r]);
		if (lane == 0) part[warp][r] = s;
	}
	__syncthreads();
	if (writer) {
		float s = 0.f;
#pragma unroll
		for (int k = 0; k < MV_WARPS; k++) s += part[k][threadIdx.x];
		y[row0 + threadIdx.x] = res ? s + rv : s;
	}
}

#define FP_MATVEC8(name, T, R)                                                                         \
	FP_KERNEL void __launch_bounds__(MV_THREADS) matvec8_##name##_r##R(                                \
	    const u8* __restrict__ w, const i8* __restrict__ xq, float* y, int rows, int cols,                \
	    long long rowBytes, const float* res) {                                                        \
		FP_GRID_LAUNCH_DEPENDENTS();                                                                   \
		FP_GRID_WAIT_PREFETCH(w + (long long)blockIdx.x * R * rowBytes,                                \
		                      ((long long)rows - (long long)blockIdx.x * R < R ? (long long)rows - (long long)blockIdx.x * R : R) * rowBytes); \
		matvec8<T, R>(w, xq, y, rows, cols, rowBytes, res);                                            \
	}
#define FP_Q8ACT(name, T) FP_MATVEC8(name, T, 1) FP_MATVEC8(name, T, 2) FP_MATVEC8(name, T, 4)
FP_Q8ACT(q4_0, TQ4_0)
FP_Q8ACT(q8_0, TQ8_0)
FP_Q8ACT(q8_0x, TQ8_0X)
FP_Q8ACT(q4_0x, TQ4_0X)
FP_Q8ACT(q4_k, TQ4_K)
FP_Q8ACT(q6_k, TQ6_K)

// ------------------------------------------------------------ staged int8 products

// matvec8s: matvec8 for weights streamed through shared memory. Most GGUF
// blocks are only 2-byte aligned (Q8_0's 34 bytes, Q4_0's 18, Q6_K's 210),
// so reading them in place takes 2- or 4-byte loads scattered over many
// cache lines, which was thought to bound matvec8 in the L1. Measured on an
// H100 this kernel is no faster than matvec8 at 4096x4096 and 2048x8192
// (one tile of prefetch per warp leaves it latency-bound; NOTES.md), so
// MatVecQ8 runs it only when asked (tests, benchmarks); kernels/gpu/next
// holds an untested cp.async version with deeper pipelining.
// Here each warp copies a tile of its rows with coalesced 16-byte loads
// (whole aligned 16-byte granules around the weights: never past a page)
// into its own stage, then every lane takes whole 32-column units from
// there (T::dot8s). The next tile's loads are issued before the current
// tile is computed. Activations come from global memory as 16-byte loads.
//
// A block is MV8_WARPS warps; wc of them (1, 2 or 4) split the tiles of
// the same R rows and their sums meet in shared memory, so a block does
// MV8_WARPS/wc row groups of R rows per step. Blocks stride over the
// steps, so the grid may be smaller than the matrix.
#define MV8_THREADS 128
#define MV8_WARPS (MV8_THREADS / WARP_SIZE)

// Mv8 is the tile geometry of matvec8s for type T and R rows: UPL units of
// 32 columns per lane, TB blocks per row, N16 16-byte slots per row in the
// stage (room for a misaligned start and the word after the last), K
// 16-byte loads per lane.
template <class T, int R>
struct Mv8 {
	enum {
		UPL = T::UPL8 / R > 0 ? T::UPL8 / R : 1,
		TB = WARP_SIZE * UPL / T::UPB,
		N16 = (TB * T::BYTES + 33) / 16,
		K = (R * N16 + WARP_SIZE - 1) / WARP_SIZE,
	};
};

FP_DEVICE void mv8_syncwarp() {
#if defined(FP_AMD)
	__builtin_amdgcn_fence(__ATOMIC_RELEASE, "wavefront");
	__builtin_amdgcn_wave_barrier();
	__builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "wavefront");
#else
	__syncwarp();
#endif
}

// mv8_load issues the loads of tile t of row group rg into buf; a tile
// past the matrix (ok false) loads nothing.
template <class T, int R>
FP_DEVICE void mv8_load(uint4* buf, const u8* w, int rows, long long rowBytes, int nblk, int rg, int t, bool ok,
                        int lane) {
	typedef Mv8<T, R> P;
	const int nb = nblk - t * P::TB < P::TB ? nblk - t * P::TB : P::TB;
#pragma unroll
	for (int k = 0; k < P::K; k++) {
		const int idx = lane + WARP_SIZE * k;
		const int r = idx / P::N16, j = idx % P::N16;
		const int row = rg * R + r;
		buf[k] = make_uint4(0u, 0u, 0u, 0u);
		if (ok && r < R && row < rows) {
			const u8* a = w + (long long)row * rowBytes + (long long)t * P::TB * T::BYTES;
			const int o = (int)((unsigned long long)a & 15u);
			if (j < (o + nb * T::BYTES + 15) >> 4) buf[k] = ldg16(a - o + 16 * j);
		}
	}
}

template <class T, int R>
FP_DEVICE void matvec8s(const u8* __restrict__ w, const i8* __restrict__ xq, float* y, int rows, int cols,
                        long long rowBytes, int wc, const float* res) {
	typedef Mv8<T, R> P;
	__shared__ uint4 stage[MV8_WARPS][R * P::N16];
	__shared__ float part[2][MV8_WARPS][R];
	const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	wc = wc < MV8_WARPS ? wc : MV8_WARPS;
	const int wr = MV8_WARPS / wc, a = warp / wc, cw = warp % wc;
	const float* xd = (const float*)(xq + cols);
	const int nblk = cols / T::QK, nunits = cols / 32;
	const int ntiles = (nblk + P::TB - 1) / P::TB;
	const int tpw = (ntiles + wc - 1) / wc; // tiles per warp and row group, the last ones maybe empty
	const int nrg = (rows + R - 1) / R;
	const int nsteps = (nrg + wr - 1) / wr;
	uint4* st = stage[warp];
	const unsigned long long wlow = (unsigned long long)w;

	float acc[R];
#pragma unroll
	for (int r = 0; r < R; r++) acc[r] = 0.f;
	uint4 buf[P::K];
	int step = blockIdx.x, i = 0, p = 0;
	if (step < nsteps) {
		const int rg = step * wr + a, t = cw;
		mv8_load<T, R>(buf, w, rows, rowBytes, nblk, rg, t, rg < nrg && t < ntiles, lane);
	}
	while (step < nsteps) { // uniform across the block
		const int rg = step * wr + a, t = cw + wc * i;
		const bool ok = rg < nrg && t < ntiles;
		mv8_syncwarp(); // the last tile's readers are done
#pragma unroll
		for (int k = 0; k < P::K; k++) {
			const int idx = lane + WARP_SIZE * k;
			if (idx < R * P::N16) st[idx] = buf[k];
		}
		mv8_syncwarp();
		int nstep = step, ni = i + 1;
		if (ni == tpw) {
			ni = 0;
			nstep += gridDim.x;
		}
		if (nstep < nsteps) {
			const int nrg2 = nstep * wr + a, nt = cw + wc * ni;
			mv8_load<T, R>(buf, w, rows, rowBytes, nblk, nrg2, nt, nrg2 < nrg && nt < ntiles, lane);
		}
		int off[R];
#pragma unroll
		for (int r = 0; r < R; r++)
			off[r] = (int)((wlow + (unsigned long long)(rg * R + r) * (unsigned long long)rowBytes +
			                (unsigned long long)t * P::TB * T::BYTES) & 15u);
#pragma unroll
		for (int m = 0; m < P::UPL; m++) {
			const int u = lane + WARP_SIZE * m;
			const int U = t * P::TB * T::UPB + u;
			const bool uok = ok && U < nunits;
			const int Uc = uok ? U : 0;
			const uint4 xa = ldg16((const u8*)xq + 32LL * Uc), xb = ldg16((const u8*)xq + 32LL * Uc + 16);
			const int x[8] = {(int)xa.x, (int)xa.y, (int)xa.z, (int)xa.w, (int)xb.x, (int)xb.y, (int)xb.z, (int)xb.w};
			const float xs = xd[Uc];
			const int blk = u / T::UPB, ub = u % T::UPB;
#pragma unroll
			for (int r = 0; r < R; r++) {
				const float s = T::dot8s((const u32*)(st + r * P::N16), off[r] + blk * T::BYTES, ub, x, xs);
				acc[r] += uok ? s : 0.f;
			}
		}
		if (i == tpw - 1) { // the row group is done: sum its warps' shares
#pragma unroll
			for (int r = 0; r < R; r++) {
				const float s = warp_sum(acc[r]);
				if (lane == 0) part[p][warp][r] = s;
				acc[r] = 0.f;
			}
			__syncthreads();
			if ((int)threadIdx.x < wr * R) {
				const int a2 = threadIdx.x / R, r = threadIdx.x % R;
				const int row = (step * wr + a2) * R + r;
				float s = 0.f;
				for (int c = 0; c < wc; c++) s += part[p][a2 * wc + c][r];
				if (row < rows) y[row] = res ? s + res[row] : s; // res[row] read by its writer only, as matvec8
			}
			p ^= 1;
		}
		step = nstep;
		i = ni;
	}
}

#define FP_MATVEC8S(name, T, R)                                                                        \
	FP_KERNEL void __launch_bounds__(MV8_THREADS) matvec8s_##name##_r##R(                              \
	    const u8* __restrict__ w, const i8* __restrict__ xq, float* y, int rows, int cols,                \
	    long long rowBytes, int wc, const float* res) {                                                \
		FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();                                                   \
		matvec8s<T, R>(w, xq, y, rows, cols, rowBytes, wc, res);                                       \
	}
#define FP_Q8STAGED(name, T) FP_MATVEC8S(name, T, 1) FP_MATVEC8S(name, T, 2) FP_MATVEC8S(name, T, 4)
FP_Q8STAGED(q4_0, TQ4_0)
FP_Q8STAGED(q8_0, TQ8_0)
FP_Q8STAGED(q4_k, TQ4_K)
FP_Q8STAGED(q6_k, TQ6_K)
