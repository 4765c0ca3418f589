package gguf

import (
	"encoding/binary"
	"math"
)

// The legacy block formats, 32 elements per block (ggml-common.h):
//
//	block_q4_0 { half d;          uint8 qs[16]; }            x = d*(q-8)
//	block_q4_1 { half d, m;       uint8 qs[16]; }            x = d*q + m
//	block_q5_0 { half d; uint8 qh[4]; uint8 qs[16]; }        x = d*(q-16)
//	block_q5_1 { half d, m; uint8 qh[4]; uint8 qs[16]; }     x = d*q + m
//	block_q8_0 { half d;          int8  qs[32]; }            x = d*q
//
// In the 4- and 5-bit formats byte j of qs holds element j in its low nibble
// and element j+16 in its high nibble; bit j of the little-endian uint32 qh is
// the fifth bit of element j.

const qk = 32 // elements per legacy block

func dequantQ4_0(src []byte, dst []float32) {
	for b := 0; b < len(dst)/qk; b++ {
		blk, y := src[18*b:18*b+18], dst[qk*b:qk*b+qk]
		d := fp16(blk)
		qs := blk[2:18]
		for j := 0; j < qk/2; j++ {
			x0 := int(qs[j]&0x0f) - 8
			x1 := int(qs[j]>>4) - 8
			y[j] = float32(x0) * d
			y[j+qk/2] = float32(x1) * d
		}
	}
}

// quantQ4_0 is ggml's quantize_row_q4_0_ref: d = max/-8 where max is the
// value of largest magnitude, so that value maps exactly to -8.
func quantQ4_0(dst []byte, src []float32) []byte {
	for b := 0; b < len(src)/qk; b++ {
		x := src[qk*b : qk*b+qk]
		var amax, max float32
		for _, v := range x {
			if a := abs32(v); amax < a {
				amax, max = a, v
			}
		}
		d := max / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		dst = appendFP16(dst, d)
		for j := 0; j < qk/2; j++ {
			x0 := x[j] * id
			x1 := x[qk/2+j] * id
			xi0 := min(15, int8(x0+8.5))
			xi1 := min(15, int8(x1+8.5))
			dst = append(dst, uint8(xi0)|uint8(xi1)<<4)
		}
	}
	return dst
}

func dequantQ4_1(src []byte, dst []float32) {
	for b := 0; b < len(dst)/qk; b++ {
		blk, y := src[20*b:20*b+20], dst[qk*b:qk*b+qk]
		d, m := fp16(blk), fp16(blk[2:])
		qs := blk[4:20]
		for j := 0; j < qk/2; j++ {
			x0 := int(qs[j] & 0x0f)
			x1 := int(qs[j] >> 4)
			y[j] = float32(float32(x0)*d) + m
			y[j+qk/2] = float32(float32(x1)*d) + m
		}
	}
}

// quantQ4_1 is ggml's quantize_row_q4_1_ref: min/max affine, 16 levels.
func quantQ4_1(dst []byte, src []float32) []byte {
	for b := 0; b < len(src)/qk; b++ {
		x := src[qk*b : qk*b+qk]
		lo, hi := minMax(x)
		d := (hi - lo) / 15
		var id float32
		if d != 0 {
			id = 1 / d
		}
		dst = appendFP16(dst, d)
		dst = appendFP16(dst, lo)
		for j := 0; j < qk/2; j++ {
			x0 := (x[j] - lo) * id
			x1 := (x[qk/2+j] - lo) * id
			xi0 := min(15, int8(x0+0.5))
			xi1 := min(15, int8(x1+0.5))
			dst = append(dst, uint8(xi0)|uint8(xi1)<<4)
		}
	}
	return dst
}

func dequantQ5_0(src []byte, dst []float32) {
	for b := 0; b < len(dst)/qk; b++ {
		blk, y := src[22*b:22*b+22], dst[qk*b:qk*b+qk]
		d := fp16(blk)
		qh := binary.LittleEndian.Uint32(blk[2:])
		qs := blk[6:22]
		for j := 0; j < qk/2; j++ {
			xh0 := uint8(qh>>j) & 1 << 4
			xh1 := uint8(qh>>(j+16)) & 1 << 4
			x0 := int(qs[j]&0x0f|xh0) - 16
			x1 := int(qs[j]>>4|xh1) - 16
			y[j] = float32(x0) * d
			y[j+qk/2] = float32(x1) * d
		}
	}
}

// quantQ5_0 is ggml's quantize_row_q5_0_ref: d = max/-16.
func quantQ5_0(dst []byte, src []float32) []byte {
	for b := 0; b < len(src)/qk; b++ {
		x := src[qk*b : qk*b+qk]
		var amax, max float32
		for _, v := range x {
			if a := abs32(v); amax < a {
				amax, max = a, v
			}
		}
		d := max / -16
		var id float32
		if d != 0 {
			id = 1 / d
		}
		dst = appendFP16(dst, d)
		var qh uint32
		var qs [qk / 2]byte
		for j := 0; j < qk/2; j++ {
			x0 := x[j] * id
			x1 := x[qk/2+j] * id
			xi0 := uint8(min(31, int8(x0+16.5)))
			xi1 := uint8(min(31, int8(x1+16.5)))
			qs[j] = xi0&0x0f | (xi1&0x0f)<<4
			qh |= uint32(xi0>>4) << j
			qh |= uint32(xi1>>4) << (j + qk/2)
		}
		dst = binary.LittleEndian.AppendUint32(dst, qh)
		dst = append(dst, qs[:]...)
	}
	return dst
}

func dequantQ5_1(src []byte, dst []float32) {
	for b := 0; b < len(dst)/qk; b++ {
		blk, y := src[24*b:24*b+24], dst[qk*b:qk*b+qk]
		d, m := fp16(blk), fp16(blk[2:])
		qh := binary.LittleEndian.Uint32(blk[4:])
		qs := blk[8:24]
		for j := 0; j < qk/2; j++ {
			xh0 := uint8(qh>>j) & 1 << 4
			xh1 := uint8(qh>>(j+16)) & 1 << 4
			x0 := int(qs[j]&0x0f | xh0)
			x1 := int(qs[j]>>4 | xh1)
			y[j] = float32(float32(x0)*d) + m
			y[j+qk/2] = float32(float32(x1)*d) + m
		}
	}
}

// quantQ5_1 is ggml's quantize_row_q5_1_ref: min/max affine, 32 levels.
func quantQ5_1(dst []byte, src []float32) []byte {
	for b := 0; b < len(src)/qk; b++ {
		x := src[qk*b : qk*b+qk]
		lo, hi := minMax(x)
		d := (hi - lo) / 31
		var id float32
		if d != 0 {
			id = 1 / d
		}
		dst = appendFP16(dst, d)
		dst = appendFP16(dst, lo)
		var qh uint32
		var qs [qk / 2]byte
		for j := 0; j < qk/2; j++ {
			x0 := (x[j] - lo) * id
			x1 := (x[qk/2+j] - lo) * id
			xi0 := uint8(x0 + 0.5)
			xi1 := uint8(x1 + 0.5)
			qs[j] = xi0&0x0f | (xi1&0x0f)<<4
			qh |= uint32(xi0>>4&1) << j
			qh |= uint32(xi1>>4&1) << (j + qk/2)
		}
		dst = binary.LittleEndian.AppendUint32(dst, qh)
		dst = append(dst, qs[:]...)
	}
	return dst
}

func dequantQ8_0(src []byte, dst []float32) {
	for b := 0; b < len(dst)/qk; b++ {
		blk, y := src[34*b:34*b+34], dst[qk*b:qk*b+qk]
		d := fp16(blk)
		for j, q := range blk[2:34] {
			y[j] = float32(int8(q)) * d
		}
	}
}

// quantQ8_0 is ggml's quantize_row_q8_0_ref: d = amax/127, q = round(x/d)
// (halves away from zero, as C's roundf).
func quantQ8_0(dst []byte, src []float32) []byte {
	for b := 0; b < len(src)/qk; b++ {
		x := src[qk*b : qk*b+qk]
		var amax float32
		for _, v := range x {
			amax = max(amax, abs32(v))
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		dst = appendFP16(dst, d)
		for _, v := range x {
			dst = append(dst, uint8(int8(math.Round(float64(v*id)))))
		}
	}
	return dst
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// minMax is the smallest and largest value of x, as ggml's loops find them
// (NaNs are skipped by the comparisons).
func minMax(x []float32) (lo, hi float32) {
	lo, hi = math.MaxFloat32, -math.MaxFloat32
	for _, v := range x {
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
	}
	return lo, hi
}
