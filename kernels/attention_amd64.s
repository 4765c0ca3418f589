#include "textflag.h"

// AVX2 kernels for Attention (attention_amd64.go). They perform exactly the
// float32 operations of the Go reference (attnDot, attnAxpy) in the same
// order, with separate multiplies and adds (no FMA), so results are
// bit-identical to it.

// HSUM8 reduces the 8 lanes s0..s7 of Y to ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))
// in the low lane of X (X is Y's low half); T is a scratch X register.
#define HSUM8(Y, X, T) \
	VHADDPS Y, Y, Y \
	VHADDPS Y, Y, Y \
	VEXTRACTF128 $1, Y, T \
	VADDSS T, X, X

// func attnScoresAVX2(out *float32, q *float32, k *float32, stride int, n int, d int)
// out[p] = attnDot(q[:d], k[p*stride : p*stride+d]) for p < n. stride is in
// bytes; d is a positive multiple of 8.
TEXT ·attnScoresAVX2(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ q+8(FP), SI
	MOVQ k+16(FP), DX
	MOVQ stride+24(FP), R8
	MOVQ n+32(FP), CX
	MOVQ d+40(FP), R9
	SHLQ $2, R9

four:
	CMPQ CX, $4
	JLT  one
	LEAQ (DX)(R8*1), R10
	LEAQ (R10)(R8*1), R11
	LEAQ (R11)(R8*1), R12
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	XORQ AX, AX

fourLoop:
	VMOVUPS (SI)(AX*1), Y4
	VMULPS  (DX)(AX*1), Y4, Y5
	VMULPS  (R10)(AX*1), Y4, Y6
	VMULPS  (R11)(AX*1), Y4, Y7
	VMULPS  (R12)(AX*1), Y4, Y8
	VADDPS  Y5, Y0, Y0
	VADDPS  Y6, Y1, Y1
	VADDPS  Y7, Y2, Y2
	VADDPS  Y8, Y3, Y3
	ADDQ    $32, AX
	CMPQ    AX, R9
	JLT     fourLoop

	HSUM8(Y0, X0, X9)
	HSUM8(Y1, X1, X9)
	HSUM8(Y2, X2, X9)
	HSUM8(Y3, X3, X9)
	VMOVSS X0, 0(DI)
	VMOVSS X1, 4(DI)
	VMOVSS X2, 8(DI)
	VMOVSS X3, 12(DI)
	LEAQ   (R12)(R8*1), DX
	ADDQ   $16, DI
	SUBQ   $4, CX
	JMP    four

one:
	TESTQ CX, CX
	JEQ   done
	VXORPS Y0, Y0, Y0
	XORQ   AX, AX

oneLoop:
	VMOVUPS (SI)(AX*1), Y4
	VMULPS  (DX)(AX*1), Y4, Y5
	VADDPS  Y5, Y0, Y0
	ADDQ    $32, AX
	CMPQ    AX, R9
	JLT     oneLoop

	HSUM8(Y0, X0, X9)
	VMOVSS X0, 0(DI)
	ADDQ   R8, DX
	ADDQ   $4, DI
	DECQ   CX
	JMP    one

done:
	VZEROUPPER
	RET

// func attnAccumulateAVX2(out *float32, w *float32, v *float32, stride int, n int, d int)
// out[j] += w[p]*v[p*stride + j] for p = 0 .. n-1 in order, for j < d.
// stride is in bytes; d is a positive multiple of 8; n >= 1.
TEXT ·attnAccumulateAVX2(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ w+8(FP), SI
	MOVQ v+16(FP), DX
	MOVQ stride+24(FP), R8
	MOVQ n+32(FP), CX
	MOVQ d+40(FP), R9
	SHLQ $2, R9
	XORQ R13, R13 // byte offset of the current column chunk

chunk64:
	MOVQ R9, AX
	SUBQ R13, AX
	CMPQ AX, $256
	JLT  chunk8
	VMOVUPS 0(DI)(R13*1), Y0
	VMOVUPS 32(DI)(R13*1), Y1
	VMOVUPS 64(DI)(R13*1), Y2
	VMOVUPS 96(DI)(R13*1), Y3
	VMOVUPS 128(DI)(R13*1), Y4
	VMOVUPS 160(DI)(R13*1), Y5
	VMOVUPS 192(DI)(R13*1), Y6
	VMOVUPS 224(DI)(R13*1), Y7
	LEAQ   (DX)(R13*1), R10 // v row p, this chunk
	MOVQ   SI, R11          // &w[p]
	MOVQ   CX, R12

rows64:
	VBROADCASTSS (R11), Y15
	VMULPS 0(R10), Y15, Y8
	VMULPS 32(R10), Y15, Y9
	VMULPS 64(R10), Y15, Y10
	VMULPS 96(R10), Y15, Y11
	VADDPS Y8, Y0, Y0
	VADDPS Y9, Y1, Y1
	VADDPS Y10, Y2, Y2
	VADDPS Y11, Y3, Y3
	VMULPS 128(R10), Y15, Y8
	VMULPS 160(R10), Y15, Y9
	VMULPS 192(R10), Y15, Y10
	VMULPS 224(R10), Y15, Y11
	VADDPS Y8, Y4, Y4
	VADDPS Y9, Y5, Y5
	VADDPS Y10, Y6, Y6
	VADDPS Y11, Y7, Y7
	ADDQ   $4, R11
	ADDQ   R8, R10
	DECQ   R12
	JNZ    rows64

	VMOVUPS Y0, 0(DI)(R13*1)
	VMOVUPS Y1, 32(DI)(R13*1)
	VMOVUPS Y2, 64(DI)(R13*1)
	VMOVUPS Y3, 96(DI)(R13*1)
	VMOVUPS Y4, 128(DI)(R13*1)
	VMOVUPS Y5, 160(DI)(R13*1)
	VMOVUPS Y6, 192(DI)(R13*1)
	VMOVUPS Y7, 224(DI)(R13*1)
	ADDQ    $256, R13
	JMP     chunk64

chunk8:
	CMPQ R13, R9
	JGE  wdone
	VMOVUPS (DI)(R13*1), Y0
	LEAQ   (DX)(R13*1), R10
	MOVQ   SI, R11
	MOVQ   CX, R12

rows8:
	VBROADCASTSS (R11), Y15
	VMULPS (R10), Y15, Y8
	VADDPS Y8, Y0, Y0
	ADDQ   $4, R11
	ADDQ   R8, R10
	DECQ   R12
	JNZ    rows8

	VMOVUPS Y0, (DI)(R13*1)
	ADDQ    $32, R13
	JMP     chunk8

wdone:
	VZEROUPPER
	RET
