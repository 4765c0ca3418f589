package gguf

import (
	"encoding/binary"
	"math"
)

// The k-quant formats: super-blocks of QK_K = 256 elements split into
// sub-blocks with their own quantised scale (and min), ggml-common.h:
//
//	block_q2_K { uint8 scales[16]; uint8 qs[64]; half d, dmin; }          16 x 16, 2-bit q, 4-bit scale|min<<4
//	block_q3_K { uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; half d; } 16 x 16, 3-bit q, 6-bit signed scales
//	block_q4_K { half d, dmin; uint8 scales[12]; uint8 qs[128]; }          8 x 32, 4-bit q, 6-bit scale and min
//	block_q5_K { half d, dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]; } 8 x 32, 5-bit q
//	block_q6_K { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d; }   16 x 16, 6-bit q, 8-bit scales
//	block_q8_K { float d; int8 qs[256]; int16 bsums[16]; }                 intermediate format for dot products
//
// Dequantisers are transcriptions of ggml's dequantize_row_*_K. Quantisers
// follow ggml's quantize_row_*_K_ref: Q4_K and Q5_K search each sub-block's
// scale and min (makeQKX2Quants), Q2_K does too with a mean-absolute-error
// criterion, Q6_K and Q3_K search a symmetric scale (makeQXQuants), Q8_K is
// absmax. Scales are then quantised against the super-block scale and the
// values requantised with the scales as stored, so that the error seen by a
// reader is the one the search minimised.

const (
	sizeQ2K = QK_K/16 + QK_K/4 + 2 + 2
	sizeQ3K = QK_K/8 + QK_K/4 + 12 + 2
	sizeQ4K = 2 + 2 + 12 + QK_K/2
	sizeQ5K = 2 + 2 + 12 + QK_K/8 + QK_K/2
	sizeQ6K = QK_K/2 + QK_K/4 + QK_K/16 + 2
	sizeQ8K = 4 + QK_K + QK_K/16*2
)

// groupMaxEps is ggml's GROUP_MAX_EPS: a group whose largest magnitude is
// below it is stored as zeros.
const groupMaxEps = 1e-15

// nearestInt rounds to the nearest integer, ties to even, exactly as ggml's
// nearest_int: adding 1.5·2^23 in float32 leaves the rounded integer in the
// low mantissa bits. Valid for |f| < 2^22 (ggml asserts it); outside that,
// and for NaN, it returns some integer in [-2^22, 2^22], which every caller
// clamps.
func nearestInt(f float32) int {
	v := f + 12582912
	return int(math.Float32bits(v)&0x007fffff) - 0x00400000
}

// ---------------------------------------------------------------- Q2_K

func dequantQ2_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QK_K; b++ {
		blk, y := src[sizeQ2K*b:sizeQ2K*(b+1)], dst[QK_K*b:QK_K*(b+1)]
		scales, qs := blk[:16], blk[16:80]
		d, dmin := fp16(blk[80:]), fp16(blk[82:])
		is, o := 0, 0
		for n := 0; n < QK_K; n += 128 {
			q := qs[n/4 : n/4+32]
			for shift := 0; shift < 8; shift += 2 {
				for half := 0; half < 2; half++ {
					sc := scales[is]
					is++
					dl := d * float32(sc&0xf)
					ml := dmin * float32(sc>>4)
					for l := 0; l < 16; l++ {
						y[o] = float32(dl*float32((q[16*half+l]>>shift)&3)) - ml
						o++
					}
				}
			}
		}
	}
}

func quantQ2_K(dst []byte, src []float32) []byte {
	var (
		L       [QK_K]uint8
		laux    [16]uint8
		weights [16]float32
		mins    [QK_K / 16]float32
		scales  [QK_K / 16]float32
	)
	const q4scale = 15
	for b := 0; b < len(src)/QK_K; b++ {
		x := src[QK_K*b : QK_K*(b+1)]
		var maxScale, maxMin float32
		for j := 0; j < QK_K/16; j++ {
			for l := 0; l < 16; l++ {
				weights[l] = abs32(x[16*j+l])
			}
			scales[j], mins[j] = makeQKX2Quants(3, x[16*j:16*j+16], weights[:], L[16*j:16*j+16], laux[:], -0.5, 0.1, 15, true)
			maxScale = max(maxScale, scales[j])
			maxMin = max(maxMin, mins[j])
		}
		var blkScales [16]uint8
		var d, dmin float32
		if maxScale > 0 {
			iscale := q4scale / maxScale
			for j := range blkScales {
				blkScales[j] = uint8(clamp(nearestInt(iscale*scales[j]), 0, 15))
			}
			d = maxScale / q4scale
		}
		if maxMin > 0 {
			iscale := q4scale / maxMin
			for j := range blkScales {
				blkScales[j] |= uint8(clamp(nearestInt(iscale*mins[j]), 0, 15)) << 4
			}
			dmin = maxMin / q4scale
		}
		dh, dminh := FP32ToFP16(d), FP32ToFP16(dmin)
		for j := 0; j < QK_K/16; j++ {
			dj := FP16ToFP32(dh) * float32(blkScales[j]&0xf)
			if dj == 0 {
				continue
			}
			dm := FP16ToFP32(dminh) * float32(blkScales[j]>>4)
			for i := 0; i < 16; i++ {
				L[16*j+i] = uint8(clamp(nearestInt((x[16*j+i]+dm)/dj), 0, 3))
			}
		}
		dst = append(dst, blkScales[:]...)
		for j := 0; j < QK_K; j += 128 {
			for l := 0; l < 32; l++ {
				dst = append(dst, L[j+l]|L[j+l+32]<<2|L[j+l+64]<<4|L[j+l+96]<<6)
			}
		}
		dst = binary.LittleEndian.AppendUint16(dst, dh)
		dst = binary.LittleEndian.AppendUint16(dst, dminh)
	}
	return dst
}

// ---------------------------------------------------------------- Q3_K

// q3Scale unpacks the j-th 6-bit scale of a Q3_K block (0..15) and removes
// its bias of 32: low 4 bits from scales[0:8] (nibbles), high 2 bits from
// scales[8:12].
func q3Scale(sc []byte, j int) int {
	var lo uint8
	if j < 8 {
		lo = sc[j] & 0xf
	} else {
		lo = sc[j-8] >> 4
	}
	hi := (sc[8+j%4] >> (2 * (j / 4))) & 3
	return int(lo|hi<<4) - 32
}

func dequantQ3_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QK_K; b++ {
		blk, y := src[sizeQ3K*b:sizeQ3K*(b+1)], dst[QK_K*b:QK_K*(b+1)]
		hmask, qs, scales := blk[:32], blk[32:96], blk[96:108]
		dAll := fp16(blk[108:])
		is, o := 0, 0
		for n := 0; n < QK_K; n += 128 {
			q := qs[n/4 : n/4+32]
			for j := 0; j < 4; j++ { // bit pair j of q, bit n/32+j of hmask
				shift, hbit := 2*j, n/32+j
				for half := 0; half < 2; half++ {
					dl := dAll * float32(q3Scale(scales, is))
					is++
					yy := y[o : o+16]
					for l := range yy {
						// 2 low bits, minus 4 where the high bit is clear
						v := int8(q[16*half+l]>>shift&3) - int8((hmask[16*half+l]>>hbit&1)^1)<<2
						yy[l] = dl * float32(v)
					}
					o += 16
				}
			}
		}
	}
}

func quantQ3_K(dst []byte, src []float32) []byte {
	var (
		L      [QK_K]int8
		scales [QK_K / 16]float32
	)
	for b := 0; b < len(src)/QK_K; b++ {
		x := src[QK_K*b : QK_K*(b+1)]
		var maxScale, amax float32
		for j := 0; j < QK_K/16; j++ {
			scales[j] = makeQXQuants(4, x[16*j:16*j+16], L[16*j:16*j+16])
			if a := abs32(scales[j]); a > amax {
				amax, maxScale = a, scales[j]
			}
		}
		var blkScales [12]uint8
		var dh uint16
		if amax >= groupMaxEps {
			iscale := -32 / maxScale
			for j := 0; j < QK_K/16; j++ {
				l := uint8(clamp(nearestInt(iscale*scales[j]), -32, 31) + 32)
				if j < 8 {
					blkScales[j] = l & 0xf
				} else {
					blkScales[j-8] |= (l & 0xf) << 4
				}
				blkScales[8+j%4] |= (l >> 4) << (2 * (j / 4))
			}
			dh = FP32ToFP16(1 / iscale)
		}
		for j := 0; j < QK_K/16; j++ {
			dj := FP16ToFP32(dh) * float32(q3Scale(blkScales[:], j))
			if dj == 0 {
				for i := 0; i < 16; i++ {
					L[16*j+i] = 4 // dequantises to 0 whatever the scale
				}
				continue
			}
			for i := 0; i < 16; i++ {
				L[16*j+i] = int8(clamp(nearestInt(x[16*j+i]/dj), -4, 3) + 4)
			}
		}
		var hmask [QK_K / 8]uint8
		var qs [QK_K / 4]uint8
		for j := 0; j < QK_K; j++ {
			l := uint8(L[j])
			if l > 3 {
				hmask[j%32] |= 1 << (j / 32)
				l -= 4
			}
			qs[j/128*32+j%32] |= l << (2 * (j % 128 / 32))
		}
		dst = append(dst, hmask[:]...)
		dst = append(dst, qs[:]...)
		dst = append(dst, blkScales[:]...)
		dst = binary.LittleEndian.AppendUint16(dst, dh)
	}
	return dst
}

// ---------------------------------------------------------------- Q4_K, Q5_K

// scaleMinK4 unpacks the j-th (0..7) 6-bit scale and min of a Q4_K/Q5_K
// block, ggml's get_scale_min_k4.
func scaleMinK4(j int, q []byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xf | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// packScaleMinK4 is the inverse of scaleMinK4 for eight 6-bit pairs.
func packScaleMinK4(ls, lm *[8]uint8) (out [12]uint8) {
	for j := 0; j < 8; j++ {
		if j < 4 {
			out[j] = ls[j]
			out[j+4] = lm[j]
		} else {
			out[j+4] = ls[j]&0xf | (lm[j]&0xf)<<4
			out[j-4] |= (ls[j] >> 4) << 6
			out[j] |= (lm[j] >> 4) << 6
		}
	}
	return out
}

func dequantQ4_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QK_K; b++ {
		blk, y := src[sizeQ4K*b:sizeQ4K*(b+1)], dst[QK_K*b:QK_K*(b+1)]
		d, dmin := fp16(blk), fp16(blk[2:])
		scales, qs := blk[4:16], blk[16:144]
		for j := 0; j < QK_K/64; j++ {
			sc, m := scaleMinK4(2*j, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = scaleMinK4(2*j+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			q, yy := qs[32*j:32*j+32], y[64*j:64*j+64]
			for l := 0; l < 32; l++ {
				yy[l] = float32(d1*float32(q[l]&0xf)) - m1
				yy[l+32] = float32(d2*float32(q[l]>>4)) - m2
			}
		}
	}
}

// quantKScaleMin quantises the eight sub-blocks of 32 of x to levels 0..nmax
// with a scale and min each (ggml's q4_K/q5_K reference), and returns the
// block's d and dmin (as fp16), packed scales and the levels in L.
func quantKScaleMin(x []float32, nmax int, rmin, rdelta float32, nstep int, L *[QK_K]uint8) (dh, dminh uint16, packed [12]uint8) {
	var (
		weights [32]float32
		laux    [32]uint8
		scales  [8]float32
		mins    [8]float32
	)
	var maxScale, maxMin float32
	for j := 0; j < 8; j++ {
		xs := x[32*j : 32*j+32]
		var sumX2 float32
		for _, v := range xs {
			sumX2 += float32(v * v)
		}
		avX := float32(math.Sqrt(float64(sumX2 / 32)))
		for l, v := range xs {
			weights[l] = avX + abs32(v)
		}
		scales[j], mins[j] = makeQKX2Quants(nmax, xs, weights[:], L[32*j:32*j+32], laux[:], rmin, rdelta, nstep, false)
		maxScale = max(maxScale, scales[j])
		maxMin = max(maxMin, mins[j])
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	var ls, lm [8]uint8
	for j := 0; j < 8; j++ {
		ls[j] = uint8(clamp(nearestInt(invScale*scales[j]), 0, 63))
		lm[j] = uint8(clamp(nearestInt(invMin*mins[j]), 0, 63))
	}
	packed = packScaleMinK4(&ls, &lm)
	dh, dminh = FP32ToFP16(maxScale/63), FP32ToFP16(maxMin/63)
	for j := 0; j < 8; j++ {
		sc, m := scaleMinK4(j, packed[:])
		d := FP16ToFP32(dh) * float32(sc)
		if d == 0 {
			continue
		}
		dm := FP16ToFP32(dminh) * float32(m)
		for i := 0; i < 32; i++ {
			L[32*j+i] = uint8(clamp(nearestInt((x[32*j+i]+dm)/d), 0, nmax))
		}
	}
	return dh, dminh, packed
}

func quantQ4_K(dst []byte, src []float32) []byte {
	var L [QK_K]uint8
	for b := 0; b < len(src)/QK_K; b++ {
		dh, dminh, packed := quantKScaleMin(src[QK_K*b:QK_K*(b+1)], 15, -1, 0.1, 20, &L)
		dst = binary.LittleEndian.AppendUint16(dst, dh)
		dst = binary.LittleEndian.AppendUint16(dst, dminh)
		dst = append(dst, packed[:]...)
		for j := 0; j < QK_K; j += 64 {
			for l := 0; l < 32; l++ {
				dst = append(dst, L[j+l]|L[j+l+32]<<4)
			}
		}
	}
	return dst
}

func dequantQ5_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QK_K; b++ {
		blk, y := src[sizeQ5K*b:sizeQ5K*(b+1)], dst[QK_K*b:QK_K*(b+1)]
		d, dmin := fp16(blk), fp16(blk[2:])
		scales, qh, qs := blk[4:16], blk[16:48], blk[48:176]
		for j := 0; j < QK_K/64; j++ {
			sc, m := scaleMinK4(2*j, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = scaleMinK4(2*j+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			ql, yy := qs[32*j:32*j+32], y[64*j:64*j+64]
			for l := 0; l < 32; l++ {
				// fifth bits: bit 2j of qh[l] for the low nibbles, 2j+1 for the high
				q1 := ql[l]&0xf | (qh[l]>>(2*j)&1)<<4
				q2 := ql[l]>>4 | (qh[l]>>(2*j+1)&1)<<4
				yy[l] = float32(d1*float32(q1)) - m1
				yy[l+32] = float32(d2*float32(q2)) - m2
			}
		}
	}
}

func quantQ5_K(dst []byte, src []float32) []byte {
	var L [QK_K]uint8
	for b := 0; b < len(src)/QK_K; b++ {
		dh, dminh, packed := quantKScaleMin(src[QK_K*b:QK_K*(b+1)], 31, -0.5, 0.1, 15, &L)
		var qh [QK_K / 8]uint8
		var ql [QK_K / 2]uint8
		m1, m2 := uint8(1), uint8(2)
		for n := 0; n < QK_K; n += 64 {
			for j := 0; j < 32; j++ {
				l1, l2 := L[n+j], L[n+j+32]
				if l1 > 15 {
					l1 -= 16
					qh[j] |= m1
				}
				if l2 > 15 {
					l2 -= 16
					qh[j] |= m2
				}
				ql[n/2+j] = l1 | l2<<4
			}
			m1 <<= 2
			m2 <<= 2
		}
		dst = binary.LittleEndian.AppendUint16(dst, dh)
		dst = binary.LittleEndian.AppendUint16(dst, dminh)
		dst = append(dst, packed[:]...)
		dst = append(dst, qh[:]...)
		dst = append(dst, ql[:]...)
	}
	return dst
}

// ---------------------------------------------------------------- Q6_K

func dequantQ6_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QK_K; b++ {
		blk, y := src[sizeQ6K*b:sizeQ6K*(b+1)], dst[QK_K*b:QK_K*(b+1)]
		ql, qh, sc := blk[:128], blk[128:192], blk[192:208]
		d := fp16(blk[208:])
		for n := 0; n < 2; n++ {
			l0, h0, s0, yy := ql[64*n:], qh[32*n:], sc[8*n:], y[128*n:]
			for l := 0; l < 32; l++ {
				is := l / 16
				q1 := int8(l0[l]&0xf|(h0[l]>>0&3)<<4) - 32
				q2 := int8(l0[l+32]&0xf|(h0[l]>>2&3)<<4) - 32
				q3 := int8(l0[l]>>4|(h0[l]>>4&3)<<4) - 32
				q4 := int8(l0[l+32]>>4|(h0[l]>>6&3)<<4) - 32
				yy[l] = float32(d*float32(int8(s0[is]))) * float32(q1)
				yy[l+32] = float32(d*float32(int8(s0[is+2]))) * float32(q2)
				yy[l+64] = float32(d*float32(int8(s0[is+4]))) * float32(q3)
				yy[l+96] = float32(d*float32(int8(s0[is+6]))) * float32(q4)
			}
		}
	}
}

func quantQ6_K(dst []byte, src []float32) []byte {
	var (
		L      [QK_K]int8
		scales [QK_K / 16]float32
	)
	for b := 0; b < len(src)/QK_K; b++ {
		x := src[QK_K*b : QK_K*(b+1)]
		var maxScale, maxAbsScale float32
		for j := 0; j < QK_K/16; j++ {
			scales[j] = makeQXQuants(32, x[16*j:16*j+16], L[16*j:16*j+16])
			if a := abs32(scales[j]); a > maxAbsScale {
				maxAbsScale, maxScale = a, scales[j]
			}
		}
		if maxAbsScale < groupMaxEps {
			dst = append(dst, make([]byte, sizeQ6K)...)
			continue
		}
		iscale := -128 / maxScale
		dh := FP32ToFP16(1 / iscale)
		var blkScales [16]int8
		for j := range blkScales {
			blkScales[j] = int8(min(127, nearestInt(iscale*scales[j])))
		}
		for j := 0; j < QK_K/16; j++ {
			d := FP16ToFP32(dh) * float32(blkScales[j])
			if d == 0 {
				for i := 0; i < 16; i++ {
					L[16*j+i] = 32 // dequantises to 0 whatever the scale
				}
				continue
			}
			for i := 0; i < 16; i++ {
				L[16*j+i] = int8(clamp(nearestInt(x[16*j+i]/d), -32, 31) + 32)
			}
		}
		var ql [QK_K / 2]uint8
		var qh [QK_K / 4]uint8
		for j := 0; j < QK_K; j += 128 {
			for l := 0; l < 32; l++ {
				q1, q2 := uint8(L[j+l]), uint8(L[j+l+32])
				q3, q4 := uint8(L[j+l+64]), uint8(L[j+l+96])
				ql[j/2+l] = q1&0xf | (q3&0xf)<<4
				ql[j/2+l+32] = q2&0xf | (q4&0xf)<<4
				qh[j/4+l] = q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6
			}
		}
		dst = append(dst, ql[:]...)
		dst = append(dst, qh[:]...)
		for _, s := range blkScales {
			dst = append(dst, uint8(s))
		}
		dst = binary.LittleEndian.AppendUint16(dst, dh)
	}
	return dst
}

// ---------------------------------------------------------------- Q8_K

func dequantQ8_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QK_K; b++ {
		blk, y := src[sizeQ8K*b:sizeQ8K*(b+1)], dst[QK_K*b:QK_K*(b+1)]
		d := math.Float32frombits(binary.LittleEndian.Uint32(blk))
		for j, q := range blk[4 : 4+QK_K] {
			y[j] = d * float32(int8(q))
		}
	}
}

// quantQ8_K is ggml's quantize_row_q8_K_ref: d = max/-127 (max the value of
// largest magnitude), d kept as float32, and bsums the sums of each 16 q.
func quantQ8_K(dst []byte, src []float32) []byte {
	for b := 0; b < len(src)/QK_K; b++ {
		x := src[QK_K*b : QK_K*(b+1)]
		var amax, maxv float32
		for _, v := range x {
			if a := abs32(v); a > amax {
				amax, maxv = a, v
			}
		}
		var qs [QK_K]int8
		var d float32
		if amax != 0 {
			iscale := -127 / maxv
			for j, v := range x {
				qs[j] = int8(min(127, nearestInt(iscale*v)))
			}
			d = 1 / iscale
		}
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(d))
		for _, q := range qs {
			dst = append(dst, uint8(q))
		}
		for j := 0; j < QK_K/16; j++ {
			var sum int16
			for _, q := range qs[16*j : 16*j+16] {
				sum += int16(q)
			}
			dst = binary.LittleEndian.AppendUint16(dst, uint16(sum))
		}
	}
	return dst
}

// ---------------------------------------------------------------- scale searches

// makeQKX2Quants is ggml's make_qkx2_quants: it quantises x to levels
// 0..nmax as x ≈ scale*L - min (min >= 0 returned), starting from the
// min/max grid and trying nstep+1 alternative grids (nmax+rmin+rdelta*is over
// the range), each refined by weighted least squares; the grid with the
// smallest weighted error (squared, or absolute if useMAD) wins.
func makeQKX2Quants(nmax int, x, weights []float32, L, laux []uint8, rmin, rdelta float32, nstep int, useMAD bool) (scale, theMin float32) {
	n := len(x)
	weights, L, laux = weights[:n], L[:n], laux[:n]
	lo, hi := x[0], x[0]
	sumW := weights[0]
	sumX := sumW * x[0]
	for i := 1; i < n; i++ {
		if x[i] < lo {
			lo = x[i]
		}
		if x[i] > hi {
			hi = x[i]
		}
		w := weights[i]
		sumW += w
		sumX += float32(w * x[i])
	}
	if lo > 0 {
		lo = 0
	}
	if hi == lo {
		clear(L)
		return 0, -lo
	}
	// weightedErr is the weighted squared (or absolute) error of levels l
	// under scale and offset off.
	weightedErr := func(l []uint8, scale, off float32) float32 {
		l = l[:n]
		var e float32
		for i, v := range x {
			diff := float32(float32(scale*float32(l[i]))+off) - v
			if useMAD {
				e += float32(weights[i] * abs32(diff))
			} else {
				e += float32(weights[i] * float32(diff*diff))
			}
		}
		return e
	}
	// levels fills l with x mapped onto the grid 0..nmax of step 1/iscale.
	levels := func(l []uint8, iscale float32) {
		l = l[:n]
		for i, v := range x {
			l[i] = uint8(clamp(nearestInt(iscale*(v-lo)), 0, nmax))
		}
	}
	iscale := float32(nmax) / (hi - lo)
	scale = 1 / iscale
	levels(L, iscale)
	bestErr := weightedErr(L, scale, lo)
	if nstep < 1 {
		return scale, -lo
	}
	for is := 0; is <= nstep; is++ {
		iscale = (float32(rmin+float32(rdelta*float32(is))) + float32(nmax)) / (hi - lo)
		levels(laux, iscale)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			w, fl := weights[i], float32(laux[i])
			sumL += float32(w * fl)
			sumL2 += float32(float32(w*fl) * fl)
			sumXL += float32(float32(w*fl) * v)
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D <= 0 {
			continue
		}
		thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
		thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
		if thisMin > 0 {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		if curErr := weightedErr(laux, thisScale, thisMin); curErr < bestErr {
			copy(L, laux)
			bestErr, scale, lo = curErr, thisScale, thisMin
		}
	}
	return scale, -lo
}

// makeQXQuants is ggml's make_qx_quants with rmse_type 1 (weights x²): it
// quantises x symmetrically to levels -nmax..nmax-1 (stored in L with a bias
// of nmax) as x ≈ scale*l, trying 19 grids around nmax/max and keeping the
// one whose least-squares scale explains most of x.
func makeQXQuants(nmax int, x []float32, L []int8) float32 {
	n := len(x)
	var maxv, amax float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, maxv = a, v
		}
	}
	if amax < groupMaxEps {
		for i := range L[:n] {
			L[i] = 0
		}
		return 0
	}
	fill := func(iscale float32, store bool) (sumLX, sumL2 float32) {
		for i, v := range x {
			l := clamp(nearestInt(iscale*v), -nmax, nmax-1)
			if store {
				L[i] = int8(l + nmax)
			}
			w := v * v
			fl := float32(l)
			sumLX += float32(float32(w*v) * fl)
			sumL2 += float32(float32(w*fl) * fl)
		}
		return sumLX, sumL2
	}
	iscale := -float32(nmax) / maxv
	sumLX, sumL2 := fill(iscale, true)
	var scale float32
	if sumL2 != 0 {
		scale = sumLX / sumL2
	}
	best := scale * sumLX
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(float32(nmax) + float32(0.1*float32(is))) / maxv
		sumLX, sumL2 = fill(iscale, false)
		if sumL2 > 0 && float32(sumLX*sumLX) > float32(best*sumL2) {
			fill(iscale, true)
			scale = sumLX / sumL2
			best = scale * sumLX
		}
	}
	return scale
}

func clamp(v, lo, hi int) int { return max(lo, min(hi, v)) }
