package hip

import "math"

// halfToFloat converts IEEE half precision to float32, exactly.
func halfToFloat(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch exp {
	case 0:
		// Zero or subnormal: mant × 2⁻²⁴, exact in float32.
		f := float32(mant) * (1.0 / (1 << 24))
		return math.Float32frombits(math.Float32bits(f) | sign)
	case 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// floatToHalf converts float32 to IEEE half precision, rounding to nearest even.
func floatToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	abs := b & 0x7fffffff
	switch {
	case abs > 0x7f800000: // NaN: the canonical quiet NaN
		return sign | 0x7e00
	case abs >= 0x477ff000: // rounds to ≥ 65520: infinity
		return sign | 0x7c00
	case abs < 0x38800000: // below the smallest normal half: subnormal or zero
		// Scale so the half's unit in the last place is 1, and let float32
		// addition round to nearest even.
		v := math.Float32frombits(abs) * (1 << 24)
		return sign | uint16(math.Float32bits(v+0x1p23)-0x4b000000)
	}
	// Normal: rebias, round the 13 dropped bits to nearest even; a carry
	// into the exponent is the right result.
	h := abs - (112 << 23)
	h += 0xfff + (h>>13)&1
	return sign | uint16(h>>13)
}

// bfloatToFloat converts bfloat16 to float32, exactly.
func bfloatToFloat(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// floatToBfloat converts float32 to bfloat16, rounding to nearest even.
func floatToBfloat(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}
