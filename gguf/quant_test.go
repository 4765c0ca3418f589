package gguf

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/internal/testutil"
)

// supportedTypes is every type Dequantize and Quantize must handle.
var supportedTypes = []Type{
	TypeF32, TypeF16, TypeBF16,
	TypeQ4_0, TypeQ4_1, TypeQ5_0, TypeQ5_1, TypeQ8_0,
	TypeQ2_K, TypeQ3_K, TypeQ4_K, TypeQ5_K, TypeQ6_K, TypeQ8_K,
}

func TestSupportedTypesHaveCodecs(t *testing.T) {
	for typ, info := range typeTable {
		_, hasCodec := codecs[typ]
		if info.supported != hasCodec {
			t.Errorf("%s: Supported()=%v but codec present=%v", typ, info.supported, hasCodec)
		}
	}
	if len(codecs) != len(supportedTypes) {
		t.Errorf("%d codecs, test lists %d types", len(codecs), len(supportedTypes))
	}
}

// ---------------------------------------------------------------- F16 / BF16

// refHalf is the exact value of an IEEE half from its fields, in float64.
func refHalf(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	mant := float64(h & 0x3ff)
	switch exp {
	case 0:
		return sign * math.Ldexp(mant, -24)
	case 0x1f:
		if mant == 0 {
			return math.Inf(int(sign))
		}
		return math.NaN()
	}
	return sign * math.Ldexp(1024+mant, exp-25)
}

func TestFP16Exhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		got := FP16ToFP32(h)
		want := refHalf(h)
		if math.IsNaN(want) {
			if !math.IsNaN(float64(got)) {
				t.Fatalf("FP16ToFP32(%#04x) = %v, want NaN", h, got)
			}
			back := FP32ToFP16(got)
			if back&0x7c00 != 0x7c00 || back&0x3ff == 0 || back&0x8000 != h&0x8000 {
				t.Fatalf("FP32ToFP16(NaN from %#04x) = %#04x, want a NaN of the same sign", h, back)
			}
			continue
		}
		if float64(got) != want || math.Signbit(float64(got)) != (h&0x8000 != 0) {
			t.Fatalf("FP16ToFP32(%#04x) = %v, want %v", h, got, want)
		}
		if back := FP32ToFP16(got); back != h {
			t.Fatalf("FP32ToFP16(FP16ToFP32(%#04x)) = %#04x", h, back)
		}
	}
}

// refFP32ToFP16 rounds x to the nearest half (ties to even mantissa) by
// searching the ordered list of finite non-negative halves.
func refFP32ToFP16(x float32) uint16 {
	if math.IsNaN(float64(x)) {
		return 0x7e00
	}
	var sign uint16
	v := float64(x)
	if math.Signbit(v) {
		sign, v = 0x8000, -v
	}
	// Non-negative halves 0x0000..0x7c00 are ordered like their bit patterns;
	// 0x7c00 (inf) stands for 65536 in rounding (the next step past 65504).
	val := func(h uint16) float64 {
		if h == 0x7c00 {
			return 65536
		}
		return refHalf(h)
	}
	if v >= 65536 {
		return sign | 0x7c00
	}
	lo, hi := uint16(0), uint16(0x7c00)
	for hi-lo > 1 { // invariant val(lo) <= v < val(hi)
		mid := (lo + hi) / 2
		if val(mid) <= v {
			lo = mid
		} else {
			hi = mid
		}
	}
	dl, dh := v-val(lo), val(hi)-v
	switch {
	case dl < dh:
		return sign | lo
	case dh < dl:
		return sign | hi
	case lo&1 == 0:
		return sign | lo
	}
	return sign | hi
}

func TestFP32ToFP16Rounding(t *testing.T) {
	cases := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 65504, 65519.99, 65520, 65536, 1e10,
		float32(math.Inf(1)), float32(math.Inf(-1)), 5.960464477539063e-08 /* smallest subnormal */, 2.98e-08, 2.9802322387695312e-08, /* half of it: tie to 0 */
		8.940697e-08 /* 1.5 ulp: tie to 2 */, 6.103515625e-05 /* smallest normal */, 6.1e-05, 1e-45, 0.1, 1.0009765625 /* 1+2^-10 */, 1.00048828125, /* 1 + 2^-11: tie to 1 */
		1.00146484375 /* 1 + 3*2^-11: tie to 1+2^-9 */}
	// All midpoints between consecutive halves are exact in float32: ties.
	for h := uint16(0); h < 0x7bff; h += 37 {
		mid := float32((refHalf(h) + refHalf(h+1)) / 2)
		cases = append(cases, mid, -mid, math.Nextafter32(mid, 0), math.Nextafter32(mid, 1e9))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		cases = append(cases, math.Float32frombits(rng.Uint32()&0x7fffffff|uint32(i&1)<<31))
		cases = append(cases, float32(rng.NormFloat64()*math.Pow(2, float64(rng.IntN(40)-26))))
	}
	for _, x := range cases {
		got, want := FP32ToFP16(x), refFP32ToFP16(x)
		if math.IsNaN(float64(x)) {
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Errorf("FP32ToFP16(NaN %#08x) = %#04x, want NaN", math.Float32bits(x), got)
			}
			continue
		}
		if got != want {
			t.Errorf("FP32ToFP16(%g = %#08x) = %#04x, want %#04x", x, math.Float32bits(x), got, want)
		}
	}
}

func TestBF16(t *testing.T) {
	// Exhaustive: every bfloat16 converts exactly and back.
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := BF16ToFP32(h)
		if math.Float32bits(f) != uint32(h)<<16 {
			t.Fatalf("BF16ToFP32(%#04x) bits %#08x", h, math.Float32bits(f))
		}
		back := FP32ToBF16(f)
		if math.IsNaN(float64(f)) {
			if !math.IsNaN(float64(BF16ToFP32(back))) {
				t.Fatalf("FP32ToBF16(NaN %#04x) = %#04x, not NaN", h, back)
			}
		} else if back != h {
			t.Fatalf("FP32ToBF16(BF16ToFP32(%#04x)) = %#04x", h, back)
		}
	}
	// Rounding: nearest, ties to even, against float64 distances.
	ref := func(x float32) uint16 {
		b := math.Float32bits(x)
		lo := b &^ 0xffff
		hi := lo + 0x10000
		v := math.Abs(float64(x))
		vl := math.Abs(float64(math.Float32frombits(lo)))
		var vh float64
		if hi&0x7fffffff == 0x7f800000 {
			vh = math.Ldexp(1, 128) // rounding up reaches infinity
		} else {
			vh = math.Abs(float64(math.Float32frombits(hi)))
		}
		switch dl, dh := v-vl, vh-v; {
		case dl < dh, dl == dh && (lo>>16)&1 == 0:
			return uint16(lo >> 16)
		}
		return uint16(hi >> 16)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []float32{math.MaxFloat32, -math.MaxFloat32, 1e-45, 1.00390625 /* 1+2^-8: tie to 1 */, 1.01171875 /* 1+3*2^-8: tie up */}
	for i := 0; i < 50000; i++ {
		b := rng.Uint32()
		if b&0x7f800000 == 0x7f800000 {
			continue
		}
		if i%3 == 0 {
			b = b&^0xffff | 0x8000 // exact tie
		}
		cases = append(cases, math.Float32frombits(b))
	}
	for _, x := range cases {
		if got, want := FP32ToBF16(x), ref(x); got != want {
			t.Errorf("FP32ToBF16(%g = %#08x) = %#04x, want %#04x", x, math.Float32bits(x), got, want)
		}
	}
	if got := FP32ToBF16(float32(math.NaN())); !math.IsNaN(float64(BF16ToFP32(got))) {
		t.Errorf("FP32ToBF16(NaN) = %#04x, not NaN", got)
	}
	// A NaN whose payload sits in the low half must not become infinity.
	if got := FP32ToBF16(math.Float32frombits(0x7f800001)); !math.IsNaN(float64(BF16ToFP32(got))) {
		t.Errorf("FP32ToBF16(0x7f800001) = %#04x, not NaN", got)
	}
}

func TestF16TableMatchesReference(t *testing.T) {
	src := make([]byte, 2<<16)
	for i := 0; i < 1<<16; i++ {
		binary.LittleEndian.PutUint16(src[2*i:], uint16(i))
	}
	dst := make([]float32, 1<<16)
	if err := Dequantize(TypeF16, src, dst); err != nil {
		t.Fatal(err)
	}
	for i, got := range dst {
		if want := FP16ToFP32(uint16(i)); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("F16 %#04x: %v, want %v", i, got, want)
		}
	}
}

// ---------------------------------------------------------------- exact dequantisation

// specElem decodes element i of one block of type t straight from ggml's
// block layout, one element at a time (an independent formulation of the
// decoders, indexing each element's bits directly), with ggml's float32
// operations in ggml's order.
func specElem(t Type, blk []byte, i int) float32 {
	h := func(off int) float32 { return FP16ToFP32(binary.LittleEndian.Uint16(blk[off:])) }
	nib := func(b byte, high bool) int {
		if high {
			return int(b >> 4)
		}
		return int(b & 15)
	}
	bit := func(b []byte, n int) int { return int(b[n/8]>>(n%8)) & 1 }
	switch t {
	case TypeQ4_0:
		return float32(nib(blk[2+i%16], i >= 16)-8) * h(0)
	case TypeQ4_1:
		return float32(float32(nib(blk[4+i%16], i >= 16))*h(0)) + h(2)
	case TypeQ5_0:
		q := nib(blk[6+i%16], i >= 16) | bit(blk[2:6], i)<<4
		return float32(q-16) * h(0)
	case TypeQ5_1:
		q := nib(blk[8+i%16], i >= 16) | bit(blk[4:8], i)<<4
		return float32(float32(q)*h(0)) + h(2)
	case TypeQ8_0:
		return float32(int8(blk[2+i])) * h(0)
	case TypeQ2_K:
		sc := blk[i/16]
		r := i % 128
		q := int(blk[16+32*(i/128)+r%32]>>(2*(r/32))) & 3
		dl := h(80) * float32(sc&15)
		ml := h(82) * float32(sc>>4)
		return float32(dl*float32(q)) - ml
	case TypeQ3_K:
		hmask, qs, scales := blk[0:32], blk[32:96], blk[96:108]
		sub := i / 16
		low := nib(scales[sub%8], sub >= 8)
		high := int(scales[8+sub%4]>>(2*(sub/4))) & 3
		s := low | high<<4 - 32
		r := i % 128
		q := int(qs[32*(i/128)+r%32]>>(2*(r/32))) & 3
		if hmask[i%32]>>(i/32)&1 == 0 {
			q -= 4
		}
		return float32(h(108)*float32(s)) * float32(q)
	case TypeQ4_K, TypeQ5_K:
		scales := blk[4:16]
		sub := i / 32
		var sc, m int
		if sub < 4 {
			sc, m = int(scales[sub]&63), int(scales[sub+4]&63)
		} else {
			sc = int(scales[sub+4]&15) | int(scales[sub-4]>>6)<<4
			m = int(scales[sub+4]>>4) | int(scales[sub]>>6)<<4
		}
		var q int
		if t == TypeQ4_K {
			q = nib(blk[16+32*(i/64)+i%32], i%64 >= 32)
		} else {
			q = nib(blk[48+32*(i/64)+i%32], i%64 >= 32) | bit(blk[16+i%32:], i/32)<<4
		}
		d := h(0) * float32(sc)
		return float32(d*float32(q)) - h(2)*float32(m)
	case TypeQ6_K:
		ql, qh, scales := blk[0:128], blk[128:192], blk[192:208]
		r := i % 128
		low := nib(ql[64*(i/128)+r%64], r >= 64)
		hi := int(qh[32*(i/128)+r%32]>>(2*(r/32))) & 3
		q := low | hi<<4 - 32
		return float32(h(208)*float32(int8(scales[i/16]))) * float32(q)
	case TypeQ8_K:
		d := math.Float32frombits(binary.LittleEndian.Uint32(blk))
		return d * float32(int8(blk[4+i]))
	case TypeF32:
		return math.Float32frombits(binary.LittleEndian.Uint32(blk))
	case TypeF16:
		return h(0)
	case TypeBF16:
		return BF16ToFP32(binary.LittleEndian.Uint16(blk))
	}
	panic("no spec for " + t.String())
}

// halfFields lists the byte offsets of each type's fp16 scale fields, so
// random test blocks get sensible scales instead of random NaNs.
var halfFields = map[Type][]int{
	TypeQ4_0: {0}, TypeQ4_1: {0, 2}, TypeQ5_0: {0}, TypeQ5_1: {0, 2}, TypeQ8_0: {0},
	TypeQ2_K: {80, 82}, TypeQ3_K: {108}, TypeQ4_K: {0, 2}, TypeQ5_K: {0, 2}, TypeQ6_K: {208},
}

func sameFloat(a, b float32) bool {
	return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b)
}

func TestDequantizeMatchesSpec(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, typ := range supportedTypes {
		t.Run(typ.String(), func(t *testing.T) {
			bs, ts := typ.BlockSize(), typ.TypeSize()
			nblocks := 64
			if bs == 1 {
				nblocks = 4096
			}
			src := make([]byte, nblocks*ts)
			for i := range src {
				src[i] = byte(rng.Uint32())
			}
			for b := 0; b < nblocks; b++ {
				for _, off := range halfFields[typ] {
					binary.LittleEndian.PutUint16(src[b*ts+off:], FP32ToFP16(float32(rng.NormFloat64()*0.1)))
				}
				if typ == TypeQ8_K {
					binary.LittleEndian.PutUint32(src[b*ts:], math.Float32bits(float32(rng.NormFloat64()*0.01)))
				}
			}
			dst := make([]float32, nblocks*bs)
			if err := Dequantize(typ, src, dst); err != nil {
				t.Fatal(err)
			}
			for i, got := range dst {
				b := i / bs
				want := specElem(typ, src[b*ts:(b+1)*ts], i%bs)
				if !sameFloat(got, want) {
					t.Fatalf("element %d (block %d, index %d) = %v, want %v", i, b, i%bs, got, want)
				}
			}
		})
	}
}

// TestDequantizeKnownBlocks checks hand-built blocks whose values are worked
// out by hand from ggml's layout documentation.
func TestDequantizeKnownBlocks(t *testing.T) {
	half := func(f float32) []byte { return binary.LittleEndian.AppendUint16(nil, FP32ToFP16(f)) }
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	rep := func(v byte, n int) []byte { return []byte(strings.Repeat(string([]byte{v}), n)) }
	tests := []struct {
		name  string
		typ   Type
		block []byte
		check map[int]float32 // element -> value
	}{
		// d=0.5, every byte 0x9F: low nibble 15 -> (15-8)*0.5, high 9 -> 0.5.
		{"q4_0", TypeQ4_0, cat(half(0.5), rep(0x9f, 16)), map[int]float32{0: 3.5, 15: 3.5, 16: 0.5, 31: 0.5}},
		// d=2, m=-1: low 3 -> 5, high 12 -> 23.
		{"q4_1", TypeQ4_1, cat(half(2), half(-1), rep(0xc3, 16)), map[int]float32{0: 5, 31: 23}},
		// d=1, qh bit 0 and bit 16 set: element 0 = (0|16)-16 = 0, element 16 = (1|16)-16 = 1, element 1 = 0-16.
		{"q5_0", TypeQ5_0, cat(half(1), []byte{1, 0, 1, 0}, rep(0x10, 16)), map[int]float32{0: 0, 1: -16, 16: 1, 17: -15}},
		{"q5_1", TypeQ5_1, cat(half(0.25), half(10), []byte{0, 0, 0, 0x80}, rep(0xf0, 16)), map[int]float32{0: 10, 16: 13.75, 31: 17.75}},
		{"q8_0", TypeQ8_0, cat(half(0.125), []byte{0x80, 0x7f, 1, 0xff}, rep(0, 28)), map[int]float32{0: -16, 1: 15.875, 2: 0.125, 3: -0.125, 31: 0}},
		// Q8_K: d=-0.5 as float32, q[j]=j-128 -> 64 - j/2.
		{"q8_k", TypeQ8_K, cat(binary.LittleEndian.AppendUint32(nil, math.Float32bits(-0.5)), func() []byte {
			b := make([]byte, QK_K)
			for j := range b {
				b[j] = byte(j - 128)
			}
			return b
		}(), rep(0, 32)), map[int]float32{0: 64, 128: 0, 255: -63.5}},
		// Q4_K: d=1, dmin=0.5. Sub-block 0: scale 3, min 2; sub-block 5 (j>=4):
		// scale = scales[9]&15 | (scales[1]>>6)<<4 = 1|16 = 17, min = scales[9]>>4 | (scales[5]>>6)<<4 = 2|0 = 2.
		// qs all 0x21: low nibble 1 (sub-blocks 0,2,4,6), high 2 (1,3,5,7).
		{"q4_k", TypeQ4_K, cat(half(1), half(0.5), []byte{3, 0x40, 0, 0, 2, 0, 0, 0, 0, 0x21, 0, 0}, rep(0x21, 128)),
			map[int]float32{0: 3*1 - 0.5*2, 160: 17*2 - 0.5*2, 32: 0}},
		// Q6_K: d=0.5, scales[0]=-2, scales[2]=4; ql 0x00, qh 0xff: q = 0|3<<4 - 32 = 16.
		{"q6_k", TypeQ6_K, cat(rep(0, 128), rep(0xff, 64), []byte{0xfe, 0, 4}, rep(0, 13), half(0.5)),
			map[int]float32{0: 0.5 * -2 * 16, 32: 0.5 * 4 * 16, 16: 0}},
		// Q2_K: scales[0] = 0x35 (scale 5, min 3), d=0.5, dmin=0.25, qs 0xe4 = q 0,1,2,3 for shifts 0,2,4,6.
		// Element 0: 2.5*0 - 0.75; element 32 (shift 2, sub-block 2, scale byte 0): 0.
		{"q2_k", TypeQ2_K, cat([]byte{0x35}, rep(0, 15), rep(0xe4, 64), half(0.5), half(0.25)),
			map[int]float32{0: -0.75, 15: -0.75, 16: 0, 32: 0}},
		// Q3_K: d=2; all scales' stored 6-bit values 33 (= +1): low nibble 1, high bits 0b10 -> 1|2<<4 = 33;
		// qs 0, hmask 0xff -> q = 0; hmask 0 -> q = -4.
		{"q3_k", TypeQ3_K, cat(rep(0xff, 16), rep(0, 16), rep(0, 64), rep(0x11, 8), rep(0xaa, 4), half(2)),
			map[int]float32{0: 0, 15: 0, 16: -8, 31: -8, 255: -8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.block) != tt.typ.TypeSize() {
				t.Fatalf("test block is %d bytes, want %d", len(tt.block), tt.typ.TypeSize())
			}
			dst := make([]float32, tt.typ.BlockSize())
			if err := Dequantize(tt.typ, tt.block, dst); err != nil {
				t.Fatal(err)
			}
			for i, want := range tt.check {
				if dst[i] != want {
					t.Errorf("element %d = %v, want %v", i, dst[i], want)
				}
			}
		})
	}
}

func TestDequantizeErrors(t *testing.T) {
	tests := []struct {
		name  string
		typ   Type
		src   int
		dst   int
		isUns bool
	}{
		{"short src", TypeQ4_0, 17, 32, false},
		{"long src", TypeQ4_0, 19, 32, false},
		{"partial block", TypeQ4_K, 144, 255, false},
		{"iq2_xxs", TypeIQ2_XXS, 66, 256, true},
		{"q8_1", TypeQ8_1, 36, 32, true},
		{"unknown", Type(99), 4, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Dequantize(tt.typ, make([]byte, tt.src), make([]float32, tt.dst))
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, ErrUnsupportedType) != tt.isUns {
				t.Errorf("errors.Is(ErrUnsupportedType) = %v: %v", !tt.isUns, err)
			}
			if tt.isUns || tt.dst%max(1, tt.typ.BlockSize()) != 0 {
				if _, err := Quantize(tt.typ, nil, make([]float32, tt.dst)); err == nil {
					t.Errorf("Quantize accepted it")
				}
			}
		})
	}
}

// ---------------------------------------------------------------- round trips

// dataset is a named generator of test vectors.
type dataset struct {
	name string
	gen  func(rng *rand.Rand, n int) []float32
}

var datasets = []dataset{
	{"gaussian", func(rng *rand.Rand, n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}},
	{"uniform-positive", func(rng *rand.Rand, n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.Float64()*3 + 0.5)
		}
		return x
	}},
	{"outliers", func(rng *rand.Rand, n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * 0.02)
			if rng.IntN(97) == 0 {
				x[i] = float32(rng.NormFloat64() * 2)
			}
		}
		return x
	}},
	{"all-equal", func(rng *rand.Rand, n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = -0.75
		}
		return x
	}},
	{"zeros", func(rng *rand.Rand, n int) []float32 { return make([]float32, n) }},
	{"tiny", func(rng *rand.Rand, n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * 1e-3)
		}
		return x
	}},
	{"weights", func(rng *rand.Rand, n int) []float32 { // heavy-tailed, like trained weights
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * rng.ExpFloat64() * 0.05)
		}
		return x
	}},
}

// relRMSBound bounds RMS(dequant(quant(x)) - x) / RMS(x) per 256 elements,
// for data sets without outliers and for the "outliers" set (where a few
// large values set the scale and the many small ones lose precision). The
// numbers are the worst measured over ten seeds of these data sets with this
// code, plus a 30% margin (worst seen: Q2_K 0.53/0.70, Q3_K 0.24/0.22,
// Q4_K 0.12/0.12, Q5_K 0.059/0.070, Q6_K 0.035/0.044, Q8_K 0.029/0.038,
// Q4_0 0.16/0.19, Q4_1 0.13/0.20, Q5_0 0.086/0.11, Q5_1 0.065/0.10,
// Q8_0 0.013/0.015). Each extra bit roughly halves the error, as theory for
// uniform levels says.
var relRMSBound = map[Type]struct{ regular, outliers float64 }{
	TypeF32: {0, 0}, TypeF16: {0.0005, 0.0007}, TypeBF16: {0.0033, 0.0047},
	TypeQ4_0: {0.21, 0.25}, TypeQ4_1: {0.17, 0.27}, TypeQ5_0: {0.11, 0.14}, TypeQ5_1: {0.085, 0.13}, TypeQ8_0: {0.017, 0.02},
	TypeQ2_K: {0.69, 0.9}, TypeQ3_K: {0.31, 0.3}, TypeQ4_K: {0.15, 0.16}, TypeQ5_K: {0.077, 0.092}, TypeQ6_K: {0.046, 0.057}, TypeQ8_K: {0.038, 0.05},
}

// elementBound is the largest error a format allows for element x of the
// block blk (the source values), or -1 where the format has no per-element
// bound (the k-quants, checked by RMS instead).
func elementBound(t Type, blk []float32, x float32) float64 {
	// A scale stored as fp16 is off by at most half an ulp: 2^-11 relative,
	// or 2^-25 absolute where it is subnormal (below 2^-14).
	h16 := func(d float64) float64 { return max(math.Abs(d)/2048, math.Ldexp(1, -25)) }
	amax, maxv, lo, hi := 0.0, 0.0, math.Inf(1), math.Inf(-1)
	for _, v := range blk {
		f := float64(v)
		if math.Abs(f) > amax {
			amax, maxv = math.Abs(f), f
		}
		lo, hi = min(lo, f), max(hi, f)
	}
	v := float64(x)
	eps := 1e-6*amax + 1e-30
	switch t {
	case TypeF32:
		return 0
	case TypeF16: // half an ulp
		return h16(v)
	case TypeBF16:
		return math.Abs(v) / 256
	case TypeQ8_0: // d = amax/127, |q| <= 127: rounding d/2 plus 127 times d's fp16 error
		d := amax / 127
		return d/2 + 127*h16(d) + eps
	case TypeQ4_0, TypeQ5_0: // d = max/-2^(b-1): levels -2^(b-1)..2^(b-1)-1, so the far side clamps one level short
		n := 8.0
		if t == TypeQ5_0 {
			n = 16
		}
		d := maxv / -n
		ad := math.Abs(d)
		if q := v / d; q > n-0.5 { // beyond the top level: clamped
			return math.Abs(v-(n-1)*d) + n*h16(d) + eps
		}
		return ad/2 + n*h16(d) + eps
	case TypeQ4_1, TypeQ5_1: // d = (max-min)/(2^b-1), m = min (both fp16)
		n := 15.0
		if t == TypeQ5_1 {
			n = 31
		}
		d := (hi - lo) / n
		return d/2 + n*h16(d) + h16(lo) + eps
	case TypeQ8_K: // d = max/-127 kept in float32
		return amax/127/2 + eps
	}
	return -1
}

func TestQuantizeRoundTrip(t *testing.T) {
	const n = 4 * QK_K
	for _, typ := range supportedTypes {
		for di, ds := range datasets {
			t.Run(typ.String()+"/"+ds.name, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(typ), uint64(di)))
				x := ds.gen(rng, n)
				q, err := Quantize(typ, nil, x)
				if err != nil {
					t.Fatal(err)
				}
				if want, _ := typ.RowSize(n); len(q) != want {
					t.Fatalf("encoded %d bytes, want %d", len(q), want)
				}
				y := make([]float32, n)
				if err := Dequantize(typ, q, y); err != nil {
					t.Fatal(err)
				}
				bs := typ.BlockSize()
				for i := range x {
					if math.IsNaN(float64(y[i])) || math.IsInf(float64(y[i]), 0) {
						t.Fatalf("element %d decodes to %v", i, y[i])
					}
					b := i / bs * bs
					bound := elementBound(typ, x[b:b+bs], x[i])
					if bound >= 0 && math.Abs(float64(y[i])-float64(x[i])) > bound {
						t.Fatalf("element %d: %v -> %v, error %g > bound %g", i, x[i], y[i], math.Abs(float64(y[i]-x[i])), bound)
					}
				}
				// RMS relative error per super-block (256 elements).
				for b := 0; b < n; b += QK_K {
					var se, sx float64
					for i := b; i < b+QK_K; i++ {
						e := float64(y[i]) - float64(x[i])
						se += e * e
						sx += float64(x[i]) * float64(x[i])
					}
					if sx == 0 {
						if se != 0 {
							t.Fatalf("zeros decode with error %g", se)
						}
						continue
					}
					bound := relRMSBound[typ].regular
					if ds.name == "outliers" {
						bound = relRMSBound[typ].outliers
					}
					if rel := math.Sqrt(se / sx); rel > bound {
						t.Errorf("super-block %d: relative RMS error %.4f > %.4f", b/QK_K, rel, bound)
					}
				}
			})
		}
	}
}

// TestKQuantQuality checks that the k-quant scale searches earn their keep:
// Q4_K (4.5 bits per weight) and Q5_K (5.5) must beat the plain min/max
// formats Q4_1 (5.0) and Q5_1 (6.0) despite fewer bits, and each extra bit
// from Q4_K to Q6_K must roughly halve the error.
func TestKQuantQuality(t *testing.T) {
	for _, di := range []int{0, 6} { // gaussian, heavy-tailed weights
		ds := datasets[di]
		x := ds.gen(rand.New(rand.NewPCG(42, 43)), 64*QK_K)
		rel := map[Type]float64{}
		for _, typ := range []Type{TypeQ4_1, TypeQ5_1, TypeQ4_K, TypeQ5_K, TypeQ6_K} {
			q, err := Quantize(typ, nil, x)
			if err != nil {
				t.Fatal(err)
			}
			y := make([]float32, len(x))
			if err := Dequantize(typ, q, y); err != nil {
				t.Fatal(err)
			}
			var se, sx float64
			for i := range x {
				e := float64(y[i]) - float64(x[i])
				se += e * e
				sx += float64(x[i]) * float64(x[i])
			}
			rel[typ] = math.Sqrt(se / sx)
		}
		t.Logf("%s: %v", ds.name, rel)
		if rel[TypeQ4_K] >= rel[TypeQ4_1] || rel[TypeQ5_K] >= rel[TypeQ5_1] {
			t.Errorf("%s: k-quants no better than min/max: %v", ds.name, rel)
		}
		if rel[TypeQ5_K] > 0.6*rel[TypeQ4_K] || rel[TypeQ6_K] > 0.6*rel[TypeQ5_K] {
			t.Errorf("%s: an extra bit did not nearly halve the error: %v", ds.name, rel)
		}
	}
}

// TestQuantizeGGMLQuirks checks values worked out by hand from ggml's
// reference quantisers, where a merely "good" quantiser would differ.
func TestQuantizeGGMLQuirks(t *testing.T) {
	ramp := make([]float32, 32)
	for j := range ramp {
		ramp[j] = float32(j - 16) // -16..15
	}
	q8 := make([]float32, 32)
	copy(q8, []float32{127, 63.5, -63.5, 0.5, -0.5, 1.5, 2.5, -2.5})
	tests := []struct {
		name string
		typ  Type
		x    []float32
		want map[int]float32
	}{
		// Q4_0: max = -16 so d = 2 and x/d ranges over -8..7.5; q = trunc(x/d + 8.5)
		// rounds halves up: -15 -> -7.5 -> -7 levels -> -14; 15 -> 7.5 -> 16 clamped to 15 -> 14.
		{"q4_0 ramp", TypeQ4_0, ramp, map[int]float32{0: -16, 1: -14, 2: -14, 3: -12, 30: 14, 31: 14}},
		// Q5_0: d = 1, every integer is exact.
		{"q5_0 ramp", TypeQ5_0, ramp, map[int]float32{0: -16, 1: -15, 16: 0, 31: 15}},
		// Q4_1: min -16, d = 31/15; element 1 (-15): (1*15/31)+0.5 = 0.98 -> 0 -> -16.
		{"q4_1 ramp", TypeQ4_1, ramp, map[int]float32{0: -16, 1: -16, 31: 15}},
		// Q8_0: d = 1, roundf rounds halves away from zero (not to even).
		{"q8_0 halves", TypeQ8_0, q8, map[int]float32{0: 127, 1: 64, 2: -64, 3: 1, 4: -1, 5: 2, 6: 3, 7: -3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := Quantize(tt.typ, nil, tt.x)
			if err != nil {
				t.Fatal(err)
			}
			y := make([]float32, len(tt.x))
			if err := Dequantize(tt.typ, q, y); err != nil {
				t.Fatal(err)
			}
			for i, want := range tt.want {
				if math.Abs(float64(y[i]-want)) > 1e-3*math.Abs(float64(want))+1e-6 {
					t.Errorf("element %d: %v -> %v, want %v", i, tt.x[i], y[i], want)
				}
			}
		})
	}
}

func TestQ8KBsums(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	x := datasets[0].gen(rng, 3*QK_K)
	x[QK_K] = 0 // keep the test honest about the zero block below
	for i := QK_K; i < 2*QK_K; i++ {
		x[i] = 0
	}
	q, err := Quantize(TypeQ8_K, nil, x)
	if err != nil {
		t.Fatal(err)
	}
	for b := 0; b < 3; b++ {
		blk := q[b*sizeQ8K : (b+1)*sizeQ8K]
		for j := 0; j < 16; j++ {
			sum := 0
			for _, v := range blk[4+16*j : 4+16*j+16] {
				sum += int(int8(v))
			}
			if got := int(int16(binary.LittleEndian.Uint16(blk[4+QK_K+2*j:]))); got != sum {
				t.Errorf("block %d bsums[%d] = %d, want %d", b, j, got, sum)
			}
		}
	}
}

func TestQuantizeAppends(t *testing.T) {
	x := datasets[0].gen(rand.New(rand.NewPCG(1, 1)), QK_K)
	prefix := []byte("prefix")
	for _, typ := range supportedTypes {
		want, err := Quantize(typ, nil, x)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Quantize(typ, append([]byte(nil), prefix...), x)
		if err != nil {
			t.Fatal(err)
		}
		if string(got[:len(prefix)]) != string(prefix) || string(got[len(prefix):]) != string(want) {
			t.Errorf("%s: appending to a prefix changed the output", typ)
		}
	}
}

func TestQuantizeParallel(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(old)
	rng := rand.New(rand.NewPCG(9, 10))
	const rowLen, rows = 512, 7
	x := datasets[6].gen(rng, rowLen*rows)
	for _, typ := range supportedTypes {
		want, err := Quantize(typ, nil, x)
		if err != nil {
			t.Fatal(err)
		}
		for _, procs := range []int{1, 3, 8} {
			runtime.GOMAXPROCS(procs)
			got, err := QuantizeParallel(typ, x, rowLen)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("%s with GOMAXPROCS=%d: output differs from Quantize", typ, procs)
			}
		}
	}
	runtime.GOMAXPROCS(old)
	if _, err := QuantizeParallel(TypeQ4_0, x, 500); err == nil {
		t.Error("rows of 500 accepted (not a divisor of the length)")
	}
	if _, err := QuantizeParallel(TypeQ4_K, make([]float32, 128*2), 128); err == nil {
		t.Error("Q4_K rows of 128 accepted")
	}
}

func TestNearestInt(t *testing.T) {
	// ggml's nearest_int adds 1.5*2^23 in float32: ties go to even.
	magic := func(f float32) int {
		v := f + 12582912
		return int(math.Float32bits(v)&0x007fffff) - 0x00400000
	}
	for _, f := range []float32{0, 0.5, 1.5, 2.5, -0.5, -1.5, 3.49, -7.51, 63.5, 127.5, -128.5, 4194303} {
		if got, want := nearestInt(f), magic(f); got != want {
			t.Errorf("nearestInt(%v) = %d, want %d", f, got, want)
		}
	}
}

// ---------------------------------------------------------------- real tensors

func TestDequantizeRealTensors(t *testing.T) {
	for _, path := range []string{testutil.BundledModel(t), testutil.Testdata(t, "stories260K.gguf")} {
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		types := map[Type]int{}
		for _, ti := range f.Tensors {
			types[ti.Type]++
			got, err := DequantizeTensor(f, ti)
			if err != nil {
				t.Fatalf("%s: %v", ti.Name, err)
			}
			if uint64(len(got)) != ti.Elements() {
				t.Fatalf("%s: %d values, want %d", ti.Name, len(got), ti.Elements())
			}
			raw := f.TensorData(ti)
			for i, v := range got {
				var want float32
				switch ti.Type {
				case TypeF32:
					want = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
				case TypeF16:
					want = FP16ToFP32(binary.LittleEndian.Uint16(raw[2*i:]))
				default:
					t.Fatalf("%s: unexpected type %s in the test model", ti.Name, ti.Type)
				}
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || math.Float32bits(v) != math.Float32bits(want) {
					t.Fatalf("%s[%d] = %v, want finite %v", ti.Name, i, v, want)
				}
			}
		}
		t.Logf("%s: %d tensors, types %v", path, len(f.Tensors), types)
	}
}

// TestQuantizeRealWeights quantises the bundled model's matrices to every
// block type and checks the error against the same bounds as random data.
func TestQuantizeRealWeights(t *testing.T) {
	f, err := Open(testutil.BundledModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ti, ok := f.Tensor("blk.0.ffn_down.weight")
	if !ok {
		ti = f.Tensors[len(f.Tensors)-1]
	}
	x, err := DequantizeTensor(f, ti)
	if err != nil {
		t.Fatal(err)
	}
	rowLen := ti.Dim(0)
	x = x[:min(len(x), 64*rowLen)] // a few rows keep the test fast
	for _, typ := range supportedTypes {
		if rowLen%typ.BlockSize() != 0 {
			continue
		}
		q, err := QuantizeParallel(typ, x, rowLen)
		if err != nil {
			t.Fatal(err)
		}
		y := make([]float32, len(x))
		if err := Dequantize(typ, q, y); err != nil {
			t.Fatal(err)
		}
		var se, sx float64
		for i := range x {
			e := float64(y[i] - x[i])
			se += e * e
			sx += float64(x[i]) * float64(x[i])
		}
		rel := math.Sqrt(se / sx)
		t.Logf("%s %s: relative RMS error %.5f", ti.Name, typ, rel)
		if rel > relRMSBound[typ].regular {
			t.Errorf("%s: relative RMS error %.4f > %.4f", typ, rel, relRMSBound[typ].regular)
		}
	}
}

// ---------------------------------------------------------------- benchmarks

func BenchmarkDequantize(b *testing.B) {
	const n = 1 << 20
	x := datasets[6].gen(rand.New(rand.NewPCG(1, 2)), n)
	for _, typ := range supportedTypes {
		q, err := Quantize(typ, nil, x)
		if err != nil {
			b.Fatal(err)
		}
		y := make([]float32, n)
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				if err := Dequantize(typ, q, y); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(4*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s-out")
		})
	}
}

func BenchmarkQuantize(b *testing.B) {
	const n = 1 << 18
	x := datasets[6].gen(rand.New(rand.NewPCG(1, 2)), n)
	for _, typ := range supportedTypes {
		dst := make([]byte, 0, 4*n)
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				var err error
				if _, err = Quantize(typ, dst[:0], x); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Melem/s")
		})
	}
}

// TestQuantizeHostileValues feeds NaN, infinities, extremes and subnormals to
// every quantiser: no panic, and output of the right size that decodes. (The
// values themselves are garbage, in ggml too: fp16 scales overflow.)
func TestQuantizeHostileValues(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	specials := []float32{nan, inf, -inf, math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, -1e-40, 0}
	x := make([]float32, 2*QK_K)
	for i := range QK_K {
		x[i] = specials[i%len(specials)]
	}
	for i := QK_K; i < 2*QK_K; i++ { // second super-block: huge but finite
		x[i] = float32(i%7-3) * 1e37
	}
	for _, typ := range supportedTypes {
		q, err := Quantize(typ, nil, x)
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := typ.RowSize(len(x)); len(q) != want {
			t.Fatalf("%s: %d bytes, want %d", typ, len(q), want)
		}
		y := make([]float32, len(x))
		if err := Dequantize(typ, q, y); err != nil {
			t.Fatal(err)
		}
	}
}
