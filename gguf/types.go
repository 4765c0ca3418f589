package gguf

import (
	"errors"
	"fmt"
	"math"
)

// Type is a ggml tensor element type, numbered as in ggml.h.
type Type uint32

// The ggml tensor types. Values are the on-disk numbers; gaps are types
// ggml has removed.
const (
	TypeF32     Type = 0
	TypeF16     Type = 1
	TypeQ4_0    Type = 2
	TypeQ4_1    Type = 3
	TypeQ5_0    Type = 6
	TypeQ5_1    Type = 7
	TypeQ8_0    Type = 8
	TypeQ8_1    Type = 9
	TypeQ2_K    Type = 10
	TypeQ3_K    Type = 11
	TypeQ4_K    Type = 12
	TypeQ5_K    Type = 13
	TypeQ6_K    Type = 14
	TypeQ8_K    Type = 15
	TypeIQ2_XXS Type = 16
	TypeIQ2_XS  Type = 17
	TypeIQ3_XXS Type = 18
	TypeIQ1_S   Type = 19
	TypeIQ4_NL  Type = 20
	TypeIQ3_S   Type = 21
	TypeIQ2_S   Type = 22
	TypeIQ4_XS  Type = 23
	TypeI8      Type = 24
	TypeI16     Type = 25
	TypeI32     Type = 26
	TypeI64     Type = 27
	TypeF64     Type = 28
	TypeIQ1_M   Type = 29
	TypeBF16    Type = 30
	TypeTQ1_0   Type = 34
	TypeTQ2_0   Type = 35
	TypeMXFP4   Type = 39
)

// QK_K is the super-block size of the k-quant formats.
const QK_K = 256

// ErrUnsupportedType is returned (wrapped, naming the tensor) for a tensor
// type the file format knows but this engine cannot compute with.
var ErrUnsupportedType = errors.New("unsupported tensor type")

type typeInfo struct {
	name      string
	blockSize int // elements per block
	typeSize  int // bytes per block
	supported bool
}

var typeTable = map[Type]typeInfo{
	TypeF32:     {"F32", 1, 4, true},
	TypeF16:     {"F16", 1, 2, true},
	TypeBF16:    {"BF16", 1, 2, true},
	TypeQ4_0:    {"Q4_0", 32, 2 + 16, true},
	TypeQ4_1:    {"Q4_1", 32, 2 + 2 + 16, true},
	TypeQ5_0:    {"Q5_0", 32, 2 + 4 + 16, true},
	TypeQ5_1:    {"Q5_1", 32, 2 + 2 + 4 + 16, true},
	TypeQ8_0:    {"Q8_0", 32, 2 + 32, true},
	TypeQ8_1:    {"Q8_1", 32, 4 + 32, false},
	TypeQ2_K:    {"Q2_K", QK_K, QK_K/16 + QK_K/4 + 2 + 2, true},
	TypeQ3_K:    {"Q3_K", QK_K, QK_K/8 + QK_K/4 + 12 + 2, true},
	TypeQ4_K:    {"Q4_K", QK_K, 2 + 2 + 12 + QK_K/2, true},
	TypeQ5_K:    {"Q5_K", QK_K, 2 + 2 + 12 + QK_K/8 + QK_K/2, true},
	TypeQ6_K:    {"Q6_K", QK_K, QK_K/2 + QK_K/4 + QK_K/16 + 2, true},
	TypeQ8_K:    {"Q8_K", QK_K, 4 + QK_K + QK_K/16*2, true},
	TypeIQ2_XXS: {"IQ2_XXS", QK_K, 2 + QK_K/4, false},
	TypeIQ2_XS:  {"IQ2_XS", QK_K, 2 + QK_K/4 + QK_K/32, false},
	TypeIQ3_XXS: {"IQ3_XXS", QK_K, 2 + QK_K/4 + QK_K/8, false},
	TypeIQ1_S:   {"IQ1_S", QK_K, 2 + QK_K/8 + QK_K/16, false},
	TypeIQ4_NL:  {"IQ4_NL", 32, 2 + 16, false},
	TypeIQ3_S:   {"IQ3_S", QK_K, 2 + QK_K/4 + QK_K/8 + QK_K/32 + 4, false},
	TypeIQ2_S:   {"IQ2_S", QK_K, 2 + QK_K/4 + QK_K/16, false},
	TypeIQ4_XS:  {"IQ4_XS", QK_K, 2 + 2 + QK_K/64 + QK_K/2, false},
	TypeI8:      {"I8", 1, 1, false},
	TypeI16:     {"I16", 1, 2, false},
	TypeI32:     {"I32", 1, 4, false},
	TypeI64:     {"I64", 1, 8, false},
	TypeF64:     {"F64", 1, 8, false},
	TypeIQ1_M:   {"IQ1_M", QK_K, QK_K/8 + QK_K/16 + QK_K/32, false},
	TypeTQ1_0:   {"TQ1_0", QK_K, 2 + 4*13, false},
	TypeTQ2_0:   {"TQ2_0", QK_K, 2 + 64, false},
	TypeMXFP4:   {"MXFP4", 32, 1 + 16, false},
}

// String returns ggml's name for the type ("Q4_K"), or "type(N)" for an
// unknown number.
func (t Type) String() string {
	if info, ok := typeTable[t]; ok {
		return info.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// Known reports whether t is a type ggml defines (supported or not).
func (t Type) Known() bool { _, ok := typeTable[t]; return ok }

// Supported reports whether this engine can dequantise and compute with t.
func (t Type) Supported() bool { return typeTable[t].supported }

// BlockSize is the number of elements in one block of t (1 for plain types).
func (t Type) BlockSize() int { return typeTable[t].blockSize }

// TypeSize is the number of bytes in one block of t.
func (t Type) TypeSize() int { return typeTable[t].typeSize }

// RowSize is the number of bytes that n elements of t occupy. n must be a
// multiple of the block size.
func (t Type) RowSize(n int) (int, error) {
	info, ok := typeTable[t]
	if !ok {
		return 0, fmt.Errorf("unknown tensor type %d", uint32(t))
	}
	if n < 0 || n%info.blockSize != 0 {
		return 0, fmt.Errorf("%d elements is not a multiple of %s's block size %d", n, info.name, info.blockSize)
	}
	return n / info.blockSize * info.typeSize, nil
}

// ParseType maps a type name ("q4_k", "Q8_0", "f16") to its Type.
func ParseType(name string) (Type, error) {
	for t, info := range typeTable {
		if equalFold(info.name, name) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown tensor type %q", name)
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// FP16ToFP32 converts an IEEE half-precision value to float32, exactly.
func FP16ToFP32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: normalise
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		mant &= 0x3ff
		return math.Float32frombits(sign | e<<23 | mant<<13)
	case exp == 0x1f: // inf, nan
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	default:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
}

// FP32ToFP16 converts float32 to IEEE half precision, rounding to nearest even.
func FP32ToFP16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff { // inf or nan
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		rest := mant & (1<<shift - 1)
		m := mant >> shift
		if rest > half || (rest == half && m&1 == 1) {
			m++
		}
		return sign | uint16(m)
	}
	m := mant >> 13
	rest := mant & 0x1fff
	h := uint32(e)<<10 | m
	if rest > 0x1000 || (rest == 0x1000 && m&1 == 1) {
		h++ // may carry into the exponent, which is the right result
	}
	return sign | uint16(h)
}

// BF16ToFP32 converts a bfloat16 value to float32, exactly.
func BF16ToFP32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// FP32ToBF16 converts float32 to bfloat16, rounding to nearest even (NaN stays NaN).
func FP32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}
