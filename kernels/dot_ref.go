package kernels

import (
	"encoding/binary"
	"math"

	"github.com/forgepipe/forgepipe/gguf"
)

// The reference dot products: one row of weights with one prepared vector.
// They are the ground truth for the assembly in dot_amd64.s and the kernels
// used on every other CPU.
//
// Block layouts (ggml-common.h), little-endian, "half" is an IEEE fp16:
//
//	Q4_0 (18 B)  half d; u8 qs[16]                 x[j] = d*((qs[j]&15)-8), x[j+16] = d*((qs[j]>>4)-8)
//	Q4_1 (20 B)  half d, m; u8 qs[16]              x = d*q + m
//	Q5_0 (22 B)  half d; u8 qh[4]; u8 qs[16]       5th bit of element j is bit j of qh; x = d*(q-16)
//	Q5_1 (24 B)  half d, m; u8 qh[4]; u8 qs[16]    x = d*q + m
//	Q8_0 (34 B)  half d; i8 qs[32]                 x = d*q
//	Q2_K (84 B)  u8 scales[16]; u8 qs[64]; half d, dmin
//	Q3_K (110 B) u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d
//	Q4_K (144 B) half d, dmin; u8 scales[12]; u8 qs[128]
//	Q5_K (176 B) half d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]
//	Q6_K (210 B) u8 ql[128]; u8 qh[64]; i8 scales[16]; half d
//	Q8_K (292 B) float d; i8 qs[256]; i16 bsums[16]  (bsums[j] = sum of qs[16j:16j+16])
//
// Summation order, which the assembly reproduces exactly:
//
//   - quantised rows: each block's products of integers are summed exactly
//     in integer arithmetic (isum), then the row sum is accumulated block by
//     block in float32: sum += float32(isum) * (dx*dy), where dx*dy is the
//     float32 product of the two block scales (exact for two fp16 scales).
//     K-quants with mins subtract a second term, dmin*dy * Σ min_j*bsum_j.
//   - float rows: element i is added to partial sum i%32 while whole groups
//     of 32 elements last, the 32 partial sums are added as a pairwise tree
//     (reduce32), and the remaining n%32 products are added in order.
//
// Every product and sum is rounded to float32 on its own: the explicit
// float32(...) conversions stop the Go compiler from fusing a*b+c into an
// FMA (which it does on arm64, for instance), so the results are the same
// bits on every CPU.

// ---------------------------------------------------------------- activations

// quantizeQ8_0 writes x as Q8_0 blocks into dst (len(x)/32*34 bytes), as
// ggml's quantize_row_q8_0_ref: d = amax/127, q = round(x/d), halves away
// from zero, d stored as fp16.
func quantizeQ8_0(dst []byte, x []float32) {
	for b := 0; b < len(x)/32; b++ {
		xb, blk := x[32*b:32*b+32], dst[34*b:34*b+34]
		var amax float32
		for _, f := range xb {
			if a := abs32(f); a > amax {
				amax = a
			}
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(blk, gguf.FP32ToFP16(d))
		qs := blk[2:34]
		for j, f := range xb {
			qs[j] = uint8(roundQ8(f * id))
		}
	}
}

// roundQ8 rounds v to the nearest integer, halves away from zero (C's
// roundf), and clamps it to [-127, 127]: ggml's quantisers cannot produce
// -128 from finite input, and keeping it out lets the assembly negate
// activations freely. v+0.5 is exact in float64, so truncating it rounds
// correctly.
func roundQ8(v float32) int8 {
	q := int32(float64(v) + math.Copysign(0.5, float64(v)))
	return int8(max(-127, min(127, q)))
}

// quantizeQ8_K writes x as Q8_K blocks into dst (len(x)/256*292 bytes), as
// ggml's quantize_row_q8_K_ref: the element of largest magnitude maps to
// -127, q = nearest(x * -127/max) (ties to even), d = 1/scale, and bsums
// holds the sum of each 16 consecutive q.
func quantizeQ8_K(dst []byte, x []float32) {
	for b := 0; b < len(x)/gguf.QK_K; b++ {
		xb, blk := x[gguf.QK_K*b:gguf.QK_K*(b+1)], dst[292*b:292*(b+1)]
		var amax, mx float32
		for _, f := range xb {
			if a := abs32(f); a > amax {
				amax, mx = a, f
			}
		}
		if amax == 0 {
			clear(blk)
			continue
		}
		iscale := -127 / mx
		binary.LittleEndian.PutUint32(blk, math.Float32bits(1/iscale))
		qs := blk[4:260]
		for j := 0; j < 16; j++ {
			var sum int32
			for k, f := range xb[16*j : 16*j+16] {
				q := max(-127, min(127, nearestInt(iscale*f)))
				qs[16*j+k] = uint8(q)
				sum += q
			}
			binary.LittleEndian.PutUint16(blk[260+2*j:], uint16(sum))
		}
	}
}

// nearestInt rounds v to the nearest integer, ties to even, for |v| <
// 2^22, as ggml's nearest_int: adding 1.5*2^23 leaves the rounded integer
// in the low mantissa bits.
func nearestInt(v float32) int32 {
	return int32(math.Float32bits(v+12582912)&0x7fffff) - 0x400000
}

func abs32(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ (1 << 31)) }

// fp16At reads the fp16 at b[0:2] as float32.
func fp16At(b []byte) float32 { return gguf.FP16ToFP32(binary.LittleEndian.Uint16(b)) }

// ---------------------------------------------------------------- float rows

// reduce32 adds 32 partial sums as a pairwise tree, in the order the
// assembly's horizontal sum does: lanes j, j+8, j+16, j+24 first, then the
// resulting 8 lanes j with j+4, j+2, j+1.
func reduce32(acc *[32]float32) float32 {
	var s [8]float32
	for j := range 8 {
		s[j] = float32(acc[j]+acc[j+8]) + float32(acc[j+16]+acc[j+24])
	}
	for j := range 4 {
		s[j] += s[j+4]
	}
	for j := range 2 {
		s[j] += s[j+2]
	}
	return s[0] + s[1]
}

// f32At, bf16At read element i of an F32 or BF16 row.
func f32At(row []byte, i int) float32 {
	return math.Float32frombits(binary.LittleEndian.Uint32(row[4*i:]))
}

func bf16At(row []byte, i int) float32 {
	return gguf.BF16ToFP32(binary.LittleEndian.Uint16(row[2*i:]))
}

func dotF32Ref(row []byte, v *Vec) float32 {
	x := v.F32
	n32 := len(x) &^ 31
	var acc [32]float32
	for i := 0; i < n32; i += 32 {
		for j := range 32 {
			acc[j] += float32(f32At(row, i+j) * x[i+j])
		}
	}
	return tailF32(row, x, n32, reduce32(&acc))
}

func dotF16Ref(row []byte, v *Vec) float32 {
	x := v.F32
	n32 := len(x) &^ 31
	var acc [32]float32
	for i := 0; i < n32; i += 32 {
		for j := range 32 {
			acc[j] += float32(fp16At(row[2*(i+j):]) * x[i+j])
		}
	}
	return tailF16(row, x, n32, reduce32(&acc))
}

func dotBF16Ref(row []byte, v *Vec) float32 {
	x := v.F32
	n32 := len(x) &^ 31
	var acc [32]float32
	for i := 0; i < n32; i += 32 {
		for j := range 32 {
			acc[j] += float32(bf16At(row, i+j) * x[i+j])
		}
	}
	return tailBF16(row, x, n32, reduce32(&acc))
}

// tailF32, tailF16 and tailBF16 add the products of elements from.. to sum
// in order: the last n%32 elements of a float row.
func tailF32(row []byte, x []float32, from int, sum float32) float32 {
	for i := from; i < len(x); i++ {
		sum += float32(f32At(row, i) * x[i])
	}
	return sum
}

func tailF16(row []byte, x []float32, from int, sum float32) float32 {
	for i := from; i < len(x); i++ {
		sum += float32(fp16At(row[2*i:]) * x[i])
	}
	return sum
}

func tailBF16(row []byte, x []float32, from int, sum float32) float32 {
	for i := from; i < len(x); i++ {
		sum += float32(bf16At(row, i) * x[i])
	}
	return sum
}

// ---------------------------------------------------------------- 32-element blocks (x as Q8_0)

// q8_0Block returns block b of a Q8_0 vector: its scale and 32 values.
func q8_0Block(q []byte, b int) (d float32, y []byte) {
	blk := q[34*b : 34*b+34]
	return fp16At(blk), blk[2:34]
}

func dotQ8_0Ref(row []byte, v *Vec) float32 {
	var sum float32
	for b := 0; b < v.N/32; b++ {
		dy, y := q8_0Block(v.Q, b)
		blk := row[34*b : 34*b+34]
		var isum int32
		for j, q := range blk[2:34] {
			isum += int32(int8(q)) * int32(int8(y[j]))
		}
		sum += float32(float32(isum) * (fp16At(blk) * dy))
	}
	return sum
}

func dotQ4_0Ref(row []byte, v *Vec) float32 {
	var sum float32
	for b := 0; b < v.N/32; b++ {
		dy, y := q8_0Block(v.Q, b)
		blk := row[18*b : 18*b+18]
		var isum int32
		for j, q := range blk[2:18] {
			isum += (int32(q&15) - 8) * int32(int8(y[j]))
			isum += (int32(q>>4) - 8) * int32(int8(y[j+16]))
		}
		sum += float32(float32(isum) * (fp16At(blk) * dy))
	}
	return sum
}

// dotQ4_1Ref: x = d*q + m, so a block contributes d*dy*Σq*y + m*dy*Σy.
func dotQ4_1Ref(row []byte, v *Vec) float32 {
	var sum float32
	for b := 0; b < v.N/32; b++ {
		dy, y := q8_0Block(v.Q, b)
		blk := row[20*b : 20*b+20]
		var isum, ysum int32
		for j, q := range blk[4:20] {
			y0, y1 := int32(int8(y[j])), int32(int8(y[j+16]))
			isum += int32(q&15)*y0 + int32(q>>4)*y1
			ysum += y0 + y1
		}
		scaled := float32(float32(isum) * (fp16At(blk) * dy))
		offset := float32(float32(ysum) * (fp16At(blk[2:]) * dy))
		sum += float32(scaled + offset)
	}
	return sum
}

// q5Values decodes the 32 5-bit values of a Q5_0/Q5_1 block from its qh and
// qs fields.
func q5Values(qh, qs []byte) (q [32]int32) {
	h := binary.LittleEndian.Uint32(qh)
	for j := range 16 {
		q[j] = int32(qs[j]&15) | int32(h>>j&1)<<4
		q[j+16] = int32(qs[j]>>4) | int32(h>>(j+16)&1)<<4
	}
	return q
}

func dotQ5_0Ref(row []byte, v *Vec) float32 {
	var sum float32
	for b := 0; b < v.N/32; b++ {
		dy, y := q8_0Block(v.Q, b)
		blk := row[22*b : 22*b+22]
		q := q5Values(blk[2:6], blk[6:22])
		var isum int32
		for j := range 32 {
			isum += (q[j] - 16) * int32(int8(y[j]))
		}
		sum += float32(float32(isum) * (fp16At(blk) * dy))
	}
	return sum
}

func dotQ5_1Ref(row []byte, v *Vec) float32 {
	var sum float32
	for b := 0; b < v.N/32; b++ {
		dy, y := q8_0Block(v.Q, b)
		blk := row[24*b : 24*b+24]
		q := q5Values(blk[4:8], blk[8:24])
		var isum, ysum int32
		for j := range 32 {
			isum += q[j] * int32(int8(y[j]))
			ysum += int32(int8(y[j]))
		}
		scaled := float32(float32(isum) * (fp16At(blk) * dy))
		offset := float32(float32(ysum) * (fp16At(blk[2:]) * dy))
		sum += float32(scaled + offset)
	}
	return sum
}

// ---------------------------------------------------------------- k-quants (x as Q8_K)

// q8_KBlock returns super-block b of a Q8_K vector: scale, 256 values and
// the 16 sums of 16 values.
func q8_KBlock(q []byte, b int) (d float32, y []byte, bsums [16]int32) {
	blk := q[292*b : 292*(b+1)]
	for j := range bsums {
		bsums[j] = int32(int16(binary.LittleEndian.Uint16(blk[260+2*j:])))
	}
	return math.Float32frombits(binary.LittleEndian.Uint32(blk)), blk[4:260], bsums
}

// kSum is one super-block's contribution when its values are d*q - dmin*m:
// dall*isum - dmin*msum, with dall, dmin already multiplied by dy.
func kSum(dall float32, isum int32, dmin float32, msum int32) float32 {
	return float32(float32(dall*float32(isum)) - float32(dmin*float32(msum)))
}

// dotQ2_KRef: 16 sub-blocks of 16 values q in 0..3, each with a 4-bit scale
// (low nibble of scales[j]) and 4-bit min (high nibble).
func dotQ2_KRef(row []byte, v *Vec) float32 {
	var sum float32
	for b := 0; b < v.N/gguf.QK_K; b++ {
		dy, y, bsums := q8_KBlock(v.Q, b)
		blk := row[84*b : 84*(b+1)]
		scales, qs := blk[:16], blk[16:80]
		var isum, msum int32
		for j := range 16 { // sub-block j: elements 16j..16j+15
			// Element e = 128*h + 32*s + l (l < 32) is bits 2s..2s+1 of qs[32h+l].
			h, s, l0 := j/8, (j/2)%4, (j%2)*16
			var sub int32
			for l := l0; l < l0+16; l++ {
				q := int32(qs[32*h+l]>>(2*s)) & 3
				sub += q * int32(int8(y[16*j+l-l0]))
			}
			isum += int32(scales[j]&15) * sub
			msum += int32(scales[j]>>4) * bsums[j]
		}
		sum += kSum(dy*fp16At(blk[80:]), isum, dy*fp16At(blk[82:]), msum)
	}
	return sum
}

// q3Scale is the j-th of Q3_K's sixteen 6-bit scales (stored biased by 32):
// the low 4 bits are a nibble of scales[0:8], the high 2 bits come from
// scales[8:12].
func q3Scale(sc []byte, j int) int32 {
	lo := sc[j%8] >> (4 * (j / 8)) & 15
	hi := sc[8+j%4] >> (2 * (j / 4)) & 3
	return int32(lo|hi<<4) - 32
}

// dotQ3_KRef: 16 sub-blocks of 16 values in -4..3 (2 low bits in qs like
// Q2_K, the third from hmask: bit set means no -4), each with a 6-bit
// signed scale.
func dotQ3_KRef(row []byte, v *Vec) float32 {
	var sum float32
	for b := 0; b < v.N/gguf.QK_K; b++ {
		dy, y, _ := q8_KBlock(v.Q, b)
		blk := row[110*b : 110*(b+1)]
		hmask, qs, scales := blk[:32], blk[32:96], blk[96:108]
		var isum int32
		for j := range 16 {
			h, s, l0 := j/8, (j/2)%4, (j%2)*16
			var sub int32
			for l := l0; l < l0+16; l++ {
				q := int32(qs[32*h+l]>>(2*s)) & 3
				if hmask[l]>>(4*h+s)&1 == 0 {
					q -= 4
				}
				sub += q * int32(int8(y[16*j+l-l0]))
			}
			isum += q3Scale(scales, j) * sub
		}
		sum += float32(float32(isum) * (dy * fp16At(blk[108:])))
	}
	return sum
}

// scaleMinK4 is the j-th 6-bit scale and min of a Q4_K/Q5_K super-block
// (ggml's get_scale_min_k4).
func scaleMinK4(j int, q []byte) (sc, m int32) {
	if j < 4 {
		return int32(q[j] & 63), int32(q[j+4] & 63)
	}
	return int32(q[j+4]&15 | q[j-4]>>6<<4), int32(q[j+4]>>4 | q[j]>>6<<4)
}

// dotQ4_KRef: 8 sub-blocks of 32 values q in 0..15 with 6-bit scale and min;
// element 64c+l (l < 32) is the low nibble of qs[32c+l], element 64c+32+l
// the high nibble.
func dotQ4_KRef(row []byte, v *Vec) float32 {
	var sum float32
	for b := 0; b < v.N/gguf.QK_K; b++ {
		dy, y, bsums := q8_KBlock(v.Q, b)
		blk := row[144*b : 144*(b+1)]
		scales, qs := blk[4:16], blk[16:144]
		var isum, msum int32
		for j := range 8 {
			sc, m := scaleMinK4(j, scales)
			c, shift := j/2, 4*(j%2)
			var sub int32
			for l := range 32 {
				sub += int32(qs[32*c+l]>>shift&15) * int32(int8(y[32*j+l]))
			}
			isum += sc * sub
			msum += m * (bsums[2*j] + bsums[2*j+1])
		}
		sum += kSum(dy*fp16At(blk), isum, dy*fp16At(blk[2:]), msum)
	}
	return sum
}

// dotQ5_KRef: Q4_K plus a fifth bit per value: bit j of qh[l] for element
// 32j+l.
func dotQ5_KRef(row []byte, v *Vec) float32 {
	var sum float32
	for b := 0; b < v.N/gguf.QK_K; b++ {
		dy, y, bsums := q8_KBlock(v.Q, b)
		blk := row[176*b : 176*(b+1)]
		scales, qh, qs := blk[4:16], blk[16:48], blk[48:176]
		var isum, msum int32
		for j := range 8 {
			sc, m := scaleMinK4(j, scales)
			c, shift := j/2, 4*(j%2)
			var sub int32
			for l := range 32 {
				q := int32(qs[32*c+l]>>shift&15) | int32(qh[l]>>j&1)<<4
				sub += q * int32(int8(y[32*j+l]))
			}
			isum += sc * sub
			msum += m * (bsums[2*j] + bsums[2*j+1])
		}
		sum += kSum(dy*fp16At(blk), isum, dy*fp16At(blk[2:]), msum)
	}
	return sum
}

// dotQ6_KRef: 16 sub-blocks of 16 values q-32 with q in 0..63 and an int8
// scale. In each half h of 128 elements, element 128h+32s+l (l < 32) has its
// low nibble in ql[64h + 32*(s%2) + l] (low nibble for s < 2, high for s >= 2)
// and its high 2 bits at bits 2s of qh[32h+l].
func dotQ6_KRef(row []byte, v *Vec) float32 {
	var sum float32
	for b := 0; b < v.N/gguf.QK_K; b++ {
		dy, y, _ := q8_KBlock(v.Q, b)
		blk := row[210*b : 210*(b+1)]
		ql, qh, scales := blk[:128], blk[128:192], blk[192:208]
		var isum int32
		for j := range 16 {
			h, s, l0 := j/8, (j/2)%4, (j%2)*16
			var sub int32
			for l := l0; l < l0+16; l++ {
				lo := int32(ql[64*h+32*(s%2)+l]>>(4*(s/2))) & 15
				hi := int32(qh[32*h+l]>>(2*s)) & 3
				sub += (lo | hi<<4 - 32) * int32(int8(y[16*j+l-l0]))
			}
			isum += int32(int8(scales[j])) * sub
		}
		sum += float32(float32(isum) * (dy * fp16At(blk[208:])))
	}
	return sum
}

func dotQ8_KRef(row []byte, v *Vec) float32 {
	var sum float32
	for b := 0; b < v.N/gguf.QK_K; b++ {
		dy, y, _ := q8_KBlock(v.Q, b)
		blk := row[292*b : 292*(b+1)]
		var isum int32
		for j, q := range blk[4:260] {
			isum += int32(int8(q)) * int32(int8(y[j]))
		}
		dx := math.Float32frombits(binary.LittleEndian.Uint32(blk))
		sum += float32(float32(isum) * (dx * dy))
	}
	return sum
}
