// compat.h: the one header that lets forgepipe's kernels be written once for
// NVIDIA (nvrtc, nvcc) and AMD (hiprtc, hipcc), as llama.cpp's vendors/hip.h
// does. It hides the warp size, the shuffle intrinsics and the half/bfloat16
// conversions, and defines the few fixed-width types the kernels use: nvrtc
// and hiprtc have no standard headers, so nothing here includes one (hipcc
// alone, outside hiprtc, needs hip_runtime.h for threadIdx and friends).
//
// The Go package prepends this file to every source it compiles; the
// `#include "compat.h"` line in each .cu file is for hipcc/nvcc run by hand
// or by `make amd-check`.
#ifndef FORGEPIPE_COMPAT_H
#define FORGEPIPE_COMPAT_H

#if defined(__HIP__) || defined(__HIPCC_RTC__)
#define FP_AMD 1
#if !defined(__HIPCC_RTC__)
#include <hip/hip_runtime.h>
#endif
#else
#define FP_NVIDIA 1
#endif

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef short i16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;
typedef long long i64;

// WARP_SIZE is the number of lanes that run in lockstep and exchange values
// through shuffles: 32 on NVIDIA and RDNA, 64 on CDNA. FP_WARP_SIZE may be
// given with -D to override the detection.
#if defined(FP_WARP_SIZE)
#define WARP_SIZE FP_WARP_SIZE
#elif defined(FP_AMD)
#if defined(__AMDGCN_WAVEFRONT_SIZE)
#define WARP_SIZE __AMDGCN_WAVEFRONT_SIZE
#else
#define WARP_SIZE 64
#endif
#else
#define WARP_SIZE 32
#endif

#define FP_DEVICE static __device__ __forceinline__ __attribute__((unused))
#define FP_KERNEL extern "C" __global__

// Programmatic dependent launch (CUDA sm_90 and later). The Go package
// launches every kernel as dependent, so its blocks may be scheduled before
// the kernel ahead of it on the stream has finished. Every FP_KERNEL
// therefore begins with
//
//	FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT();
//
// before any global memory access (a Go test checks it). FP_GRID_WAIT
// returns once the grids this one depends on have completed and their
// writes are visible; a kernel that never waits could end before its
// predecessor and break the chain. Both are no-ops when the kernel was not
// launched as dependent, and empty on AMD and on older NVIDIA GPUs.
//
// The next kernel is scheduled once every block of this one has
// triggered, or exited (an implicit trigger). By default the trigger
// FP_GRID_LAUNCH_DEPENDENTS at a kernel's start is empty: the next kernel
// is launched as this one's blocks leave, or, in matvec8, once each block
// has summed its products (FP_GRID_LAUNCH_DEPENDENTS_LATE), so its launch
// overlaps this one's tail while none of its waiting blocks holds a slot
// this one's later blocks need. With FP_PDL_EARLY defined (kernels/gpu's
// options, for A/B timing) every kernel triggers as it begins: on an H100
// a decode step was then 3.5-6 % slower than without dependent launches,
// and the late trigger 1-2 % faster (NOTES.md).
#if defined(FP_NVIDIA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FP_GRID_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#if defined(FP_PDL_EARLY)
#define FP_GRID_LAUNCH_DEPENDENTS() asm volatile("griddepcontrol.launch_dependents;")
#define FP_GRID_LAUNCH_DEPENDENTS_LATE() ((void)0)
#else
#define FP_GRID_LAUNCH_DEPENDENTS() ((void)0)
#define FP_GRID_LAUNCH_DEPENDENTS_LATE() asm volatile("griddepcontrol.launch_dependents;")
#endif
#else
#define FP_GRID_WAIT() ((void)0)
#define FP_GRID_LAUNCH_DEPENDENTS() ((void)0)
#define FP_GRID_LAUNCH_DEPENDENTS_LATE() ((void)0)
#endif

// FP_GRID_WAIT_PREFETCH(p, bytes) is FP_GRID_WAIT() for a kernel whose
// first reads are of weights — memory no kernel writes — at [p, p+bytes):
// the block's threads first ask for those lines to be brought into the L2
// (prefetch.global.L2, one 128-byte line per thread per step), so that a
// block scheduled early spends its wait fetching its weights rather than
// idle. Only that range may be touched before the wait (the same Go test
// accepts this form in place of FP_GRID_WAIT()). The prefetch is compiled
// in only with FP_PREFETCH_WEIGHTS defined (kernels/gpu's options, for
// A/B timing); otherwise this is FP_GRID_WAIT().
#if defined(FP_NVIDIA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(FP_PREFETCH_WEIGHTS)
#define FP_GRID_WAIT_PREFETCH(p, bytes)                                                                \
	do {                                                                                           \
		const char* fp_p_ = (const char*)(p);                                                  \
		const long long fp_n_ = (bytes);                                                       \
		for (long long fp_o_ = (long long)threadIdx.x * 128; fp_o_ < fp_n_; fp_o_ += (long long)blockDim.x * 128) \
			asm volatile("prefetch.global.L2 [%0];" ::"l"(fp_p_ + fp_o_));                   \
		FP_GRID_WAIT();                                                                        \
	} while (0)
#else
#define FP_GRID_WAIT_PREFETCH(p, bytes) FP_GRID_WAIT()
#endif

// shfl_xor exchanges v with the lane whose index differs by mask.
FP_DEVICE float shfl_xor(float v, int mask) {
#if defined(FP_AMD)
	return __shfl_xor(v, mask, WARP_SIZE);
#else
	return __shfl_xor_sync(0xffffffffu, v, mask, WARP_SIZE);
#endif
}

FP_DEVICE int shfl_xor_int(int v, int mask) {
#if defined(FP_AMD)
	return __shfl_xor(v, mask, WARP_SIZE);
#else
	return __shfl_xor_sync(0xffffffffu, v, mask, WARP_SIZE);
#endif
}

// warp_sum and warp_max reduce over the whole warp; every lane gets the result.
FP_DEVICE float warp_sum(float v) {
#pragma unroll
	for (int m = WARP_SIZE / 2; m > 0; m >>= 1) v += shfl_xor(v, m);
	return v;
}

FP_DEVICE float warp_max(float v) {
#pragma unroll
	for (int m = WARP_SIZE / 2; m > 0; m >>= 1) v = fmaxf(v, shfl_xor(v, m));
	return v;
}

FP_DEVICE float fp_inf() { return __int_as_float(0x7f800000); }

// IEEE half precision and bfloat16, carried as their 16 bits.
FP_DEVICE float half_to_float(u16 h) {
#if defined(FP_AMD)
	union { u16 u; _Float16 f; } c;
	c.u = h;
	return (float)c.f;
#else
	float f;
	asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
	return f;
#endif
}

// float_to_half rounds to nearest even.
FP_DEVICE u16 float_to_half(float f) {
#if defined(FP_AMD)
	union { u16 u; _Float16 f; } c;
	c.f = (_Float16)f;
	return c.u;
#else
	u16 h;
	asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
	return h;
#endif
}

// half2_bits is float_to_half(lo) | float_to_half(hi) << 16: one packed
// conversion on NVIDIA sm_80 and later (cvt.rn.f16x2.f32 takes the high
// half first), two elsewhere.
FP_DEVICE u32 half2_bits(float lo, float hi) {
#if defined(FP_NVIDIA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	u32 r;
	asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
	return r;
#else
	return (u32)float_to_half(lo) | ((u32)float_to_half(hi) << 16);
#endif
}

FP_DEVICE float bf16_to_float(u16 h) { return __uint_as_float(((u32)h) << 16); }

// float_to_bf16 rounds to nearest even; NaN stays NaN.
FP_DEVICE u16 float_to_bf16(float f) {
	u32 b = __float_as_uint(f);
	if ((b & 0x7fffffffu) > 0x7f800000u) return (u16)((b >> 16) | 0x40u);
	return (u16)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

// Unaligned-safe little-endian loads for block formats whose blocks are only
// 2-byte aligned (Q4_0's 18 bytes, Q8_0's 34, Q6_K's 210).
FP_DEVICE u32 ld_u16(const u8* p) { return *(const u16*)p; }
FP_DEVICE u32 ld_u32_a2(const u8* p) {
	const u16* q = (const u16*)p;
	return (u32)q[0] | ((u32)q[1] << 16);
}
FP_DEVICE u32 ld_u32(const u8* p) { return *(const u32*)p; }

// byte_perm picks bytes of {y, x} into a word, as CUDA's __byte_perm (PRMT
// on NVIDIA, v_perm_b32 on AMD).
FP_DEVICE u32 byte_perm(u32 x, u32 y, u32 s) { return __byte_perm(x, y, s); }

// small_float(w, j) is byte j of w as a float plus 2^23 (8388608): the byte
// goes into the mantissa of 2^23 with one byte permute, so that subtracting
// 2^23 + bias gives (float)(byte - bias) exactly, without the integer to
// float conversion that runs at a quarter of the FMA rate.
FP_DEVICE float small_float(u32 w, int j) { return __uint_as_float(byte_perm(w, 0x4B000000u, 0x7440u | (u32)j)); }
#define FP_MAGIC 8388608.0f

// dp4a is c plus the dot product of a's and b's four signed bytes.
FP_DEVICE int dp4a(int a, int b, int c) {
#if defined(FP_AMD)
#if defined(__gfx906__) || defined(__gfx908__) || defined(__gfx90a__) || defined(__gfx940__) || defined(__gfx941__) || \
    defined(__gfx942__) || defined(__gfx1030__) || defined(__gfx1100__) || defined(__gfx1101__) || defined(__gfx1102__)
	return __builtin_amdgcn_sdot4(a, b, c, false);
#else
	const i8* x = (const i8*)&a;
	const i8* y = (const i8*)&b;
	return c + x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3];
#endif
#else
	return __dp4a(a, b, c);
#endif
}

// sbyte is byte i (0..3) of v as a signed value.
FP_DEVICE float sbyte(u32 v, int i) { return (float)(i8)((v >> (8 * i)) & 0xffu); }

#endif // FORGEPIPE_COMPAT_H
