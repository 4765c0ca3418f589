package gguf

import (
	"encoding/binary"
	"math"
	"sync"
)

// Plain floating-point element types: F32, F16 (IEEE half), BF16 (bfloat16).

func dequantF32(src []byte, dst []float32) {
	src = src[:4*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i : 4*i+4]))
	}
}

func quantF32(dst []byte, src []float32) []byte {
	for _, x := range src {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(x))
	}
	return dst
}

// dequantF16 is the fast path: a 64 Ki-entry table filled once from the
// reference conversion FP16ToFP32 (which TestF16Table checks it against).
func dequantF16(src []byte, dst []float32) {
	tab := f16Table()
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = tab[uint16(src[2*i])|uint16(src[2*i+1])<<8]
	}
}

var f16TableOnce = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for h := range t {
		t[h] = FP16ToFP32(uint16(h))
	}
	return &t
})

func f16Table() *[1 << 16]float32 { return f16TableOnce() }

func quantF16(dst []byte, src []float32) []byte {
	for _, x := range src {
		dst = binary.LittleEndian.AppendUint16(dst, FP32ToFP16(x))
	}
	return dst
}

func dequantBF16(src []byte, dst []float32) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = BF16ToFP32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func quantBF16(dst []byte, src []float32) []byte {
	for _, x := range src {
		dst = binary.LittleEndian.AppendUint16(dst, FP32ToBF16(x))
	}
	return dst
}

// fp16 reads the little-endian half-precision value at b[0:2] as float32.
func fp16(b []byte) float32 { return FP16ToFP32(binary.LittleEndian.Uint16(b)) }

// appendFP16 appends f rounded to half precision.
func appendFP16(dst []byte, f float32) []byte {
	return binary.LittleEndian.AppendUint16(dst, FP32ToFP16(f))
}
