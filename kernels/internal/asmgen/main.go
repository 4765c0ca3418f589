// Command asmgen generates kernels/dot_amd64.s and its Go declarations
// (kernels/dot_stub_amd64.go) with avo: the AVX2 + F16C block dot products
// behind kernels.DotRows and the activation quantisers behind
// kernels.PrepareVec. Run it through `go generate` in package kernels; it
// is a module of its own so that the main module does not depend on avo.
//
// Every kernel performs exactly the float32 operations of its reference in
// kernels/dot_ref.go, in the same order (no FMA: a fused multiply-add rounds
// once where the reference rounds twice), so it gives the same bits; only
// the integer work inside a block, which is exact, is free to be
// rearranged. The comments name the reference step each part reproduces.
//
// Instruction operands are in Go assembler order: sources first, the
// destination last (VPSUBD b, a, d computes d = a - b).
package main

import (
	"encoding/binary"
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

func main() {
	ConstraintExpr("!purego")
	floatDot("dotF32AVX2", "F32")
	floatDot("dotF16AVX2", "F16")
	floatDot("dotBF16AVX2", "BF16")
	for _, kind := range []string{"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"} {
		blocks32(kind, 4)
		blocks32(kind, 8)
	}
	q45_K("Q4_K")
	q45_K("Q5_K")
	for _, kind := range []string{"Q2_K", "Q3_K", "Q6_K"} {
		k16(kind)
	}
	quantQ8_0()
	quantQ8_K()
	Generate()
}

// ------------------------------------------------------------------ constants

var consts = map[string]Mem{}

// constBytes returns a read-only data symbol holding b (a multiple of 8
// bytes), defining it on first use.
func constBytes(name string, b []byte) Mem {
	if m, ok := consts[name]; ok {
		return m
	}
	m := GLOBL(name, RODATA|NOPTR)
	for i := 0; i < len(b); i += 8 {
		DATA(i, U64(binary.LittleEndian.Uint64(b[i:])))
	}
	consts[name] = m
	return m
}

// splat32 is a 32-byte constant of byte c.
func splat32(name string, c byte) Mem {
	b := make([]byte, 32)
	for i := range b {
		b[i] = c
	}
	return constBytes(name, b)
}

// ones16 is sixteen int16 ones: VPMADDWD with it adds pairs of int16 lanes.
func ones16() Mem {
	b := make([]byte, 32)
	for i := 0; i < 32; i += 2 {
		b[i] = 1
	}
	return constBytes("ones16", b)
}

func mem(base Register, disp int) Mem { return Mem{Base: base, Disp: disp} }

func memIdx(base, index Register, disp int) Mem {
	return Mem{Base: base, Index: index, Scale: 1, Disp: disp}
}

// ------------------------------------------------------------------ float rows

// floatDot generates func(w *byte, x *float32, n int) float32 for F32, F16
// or BF16 weights: n is a positive multiple of 32. It is the main loop and
// the reduce32 of dotF32Ref/dotF16Ref/dotBF16Ref: four YMM accumulators
// hold the 32 partial sums (accumulator k lane j is partial sum 8k+j).
func floatDot(name, kind string) {
	TEXT(name, NOSPLIT, "func(w *byte, x *float32, n int) float32")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s returns the dot of n (a positive multiple of 32) %s weights with x,", name, kind),
		"summed as the reference's 32 partial sums and reduce32.")
	w := Load(Param("w"), GP64())
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	elem := 4
	if kind != "F32" {
		elem = 2
	}
	var acc [4]VecVirtual
	for k := range acc {
		acc[k] = YMM()
		VXORPS(acc[k], acc[k], acc[k])
	}
	i := GP64()
	XORQ(i, i)
	Label(name + "_loop")
	for k := range acc {
		t := YMM()
		wm := Mem{Base: w, Index: i, Scale: uint8(elem), Disp: 8 * k * elem}
		switch kind {
		case "F32":
			VMOVUPS(wm, t)
		case "F16":
			VCVTPH2PS(wm, t)
		case "BF16":
			VPMOVZXWD(wm, t)
			VPSLLD(U8(16), t, t)
		}
		VMULPS(Mem{Base: x, Index: i, Scale: 4, Disp: 32 * k}, t, t)
		VADDPS(t, acc[k], acc[k])
	}
	ADDQ(U32(32), i)
	CMPQ(i, n)
	JL(LabelRef(name + "_loop"))

	Comment("reduce32: lanes j, j+8, j+16, j+24, then j+4, j+2, j+1")
	VADDPS(acc[1], acc[0], acc[0])
	VADDPS(acc[3], acc[2], acc[2])
	VADDPS(acc[2], acc[0], acc[0])
	hi := XMM()
	VEXTRACTF128(U8(1), acc[0], hi)
	s := XMM()
	VADDPS(hi, acc[0].AsX(), s)
	t := XMM()
	VMOVHLPS(s, s, t)
	VADDPS(t, s, s)
	VMOVSHDUP(s, t)
	VADDSS(t, s, s)
	Store(s, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// ------------------------------------------------------------------ 32-element blocks, several rows at a time

// block32 describes a row type of 32-element blocks for blocks32.
type block32 struct {
	size   int  // bytes per block
	qs     int  // offset of the 16 nibble bytes (Q8_0: of the 32 int8)
	qh     int  // offset of the 32 fifth bits, or 0
	min    int  // offset of the fp16 min m (x = d*q + m), or 0
	offset byte // the value subtracted from the unsigned q (x = d*(q-offset))
}

var blocks32Types = map[string]block32{
	"Q8_0": {size: 34, qs: 2},
	"Q4_0": {size: 18, qs: 2, offset: 8},
	"Q4_1": {size: 20, qs: 4, min: 2},
	"Q5_0": {size: 22, qs: 6, qh: 2, offset: 16},
	"Q5_1": {size: 24, qs: 8, qh: 4, min: 2},
}

// blocks32 generates func(w *[8]*byte, y *byte, nb int, out *[8]float32):
// the reference dot of kind (dotQ8_0Ref, dotQ4_0Ref, …) of nb blocks for
// rows w[0..n-1], n = 4 or 8, into out[0..n-1]. The rows share the loads
// and conversions of y; the int32 lanes of the rows' block products are
// reduced to one isum per row together (VPHADDD), and row r's float32 sum
// is lane r of one accumulator.
func blocks32(kind string, n int) {
	bt := blocks32Types[kind]
	name := fmt.Sprintf("dot%sx%d", kind, n)
	TEXT(name, NOSPLIT, "func(w *[8]*byte, y *byte, nb int, out *[8]float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the reference %s dot of nb blocks for the rows starting at", name, kind),
		fmt.Sprintf("w[0..%d] (they may repeat), into out[0..%d].", n-1, n-1))
	wp := Load(Param("w"), GP64())
	w := make([]GPVirtual, n)
	for r := range w {
		w[r] = GP64()
		MOVQ(mem(wp, 8*r), w[r])
	}
	y, nb := Load(Param("y"), GP64()), Load(Param("nb"), GP64())
	wide := func() VecVirtual { // a vector of one 32-bit lane per row
		if n == 8 {
			return YMM()
		}
		return XMM()
	}
	acc := wide()
	VXORPS(acc, acc, acc)
	ones := YMM()
	VMOVDQU(ones16(), ones)
	var lowNib VecVirtual
	var shifts Mem
	if kind != "Q8_0" {
		lowNib = YMM()
		VMOVDQU(splat32("nib32", 0x0f), lowNib)
		shifts = constBytes("shift0x4_4x4", []byte{
			0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
			4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0})
	}
	i := GP64() // byte offset of the current block in every row
	XORQ(i, i)
	Label(name + "_loop")
	yv := YMM()
	VMOVDQU(mem(y, 2), yv)

	// row computes row r's int32 lanes that sum to its Σq*y, with q the
	// unsigned values (Q8_0: signed).
	row := func(r int) VecVirtual {
		p := YMM()
		if kind == "Q8_0" {
			// VPMADDUBSW multiplies unsigned by signed bytes: |w| times y
			// with w's sign. y has no -128 (roundQ8) and |w| = 128 reads
			// right as unsigned, so the int16 pair sums cannot saturate.
			q, a, s := YMM(), YMM(), YMM()
			VMOVDQU(memIdx(w[r], i, bt.qs), q)
			VPSIGNB(q, q, a)
			VPSIGNB(q, yv, s)
			VPMADDUBSW(s, a, p)
		} else {
			// Unsigned nibbles, byte j = element j: the 16 bytes in both
			// halves, the upper half shifted right by 4.
			u := YMM()
			VBROADCASTI128(memIdx(w[r], i, bt.qs), u)
			VPSRLVD(shifts, u, u)
			VPAND(lowNib, u, u)
			if bt.qh != 0 {
				// Fifth bits: byte j gets the qh byte holding bit j, all
				// its other bits are set, and equality with all-ones
				// leaves 0xff where bit j is set (ggml's bytes_from_bits_32).
				b := YMM()
				VPBROADCASTD(memIdx(w[r], i, bt.qh), b)
				VPSHUFB(constBytes("bitbytes", bitBytes()), b, b)
				VPOR(constBytes("bitmask", bitMask()), b, b)
				VPCMPEQB(constBytes("allones", ffBytes()), b, b)
				VPAND(splat32("x10_32", 0x10), b, b)
				VPOR(b, u, u)
			}
			VPMADDUBSW(yv, u, p)
		}
		VPMADDWD(ones, p, p)
		return p
	}
	// half reduces four rows' lanes with two rounds of VPHADDD (which works
	// within 128-bit halves) to [rows' lanes 0-3 sums | rows' lanes 4-7 sums].
	half := func(r0 int) VecVirtual {
		h01, h23 := YMM(), YMM()
		VPHADDD(row(r0+1), row(r0), h01)
		VPHADDD(row(r0+3), row(r0+2), h23)
		VPHADDD(h23, h01, h01)
		return h01
	}
	Comment("isum of each row: horizontal sums of the rows' lanes")
	hs := []VecVirtual{half(0)}
	if n == 8 {
		hs = append(hs, half(4))
	}
	var ysum VecVirtual
	if bt.offset != 0 || bt.min != 0 {
		// Σy, times the offset or 1, in the same [lanes 0-3 | lanes 4-7] form.
		ysum = YMM()
		k := max(bt.offset, 1)
		VMOVDQU(splat32(fmt.Sprintf("splat%d_32", k), k), ysum)
		VPMADDUBSW(yv, ysum, ysum)
		VPMADDWD(ones, ysum, ysum)
		VPHADDD(ysum, ysum, ysum)
		VPHADDD(ysum, ysum, ysum)
	}
	if bt.offset != 0 {
		Commentf("Σ(q-%d)*y = Σq*y - %dΣy", bt.offset, bt.offset)
		for _, h := range hs {
			VPSUBD(ysum, h, h)
		}
	}
	is := wide()
	if n == 4 {
		hi := XMM()
		VEXTRACTI128(U8(1), hs[0], hi)
		VPADDD(hi, hs[0].AsX(), is)
	} else {
		lo, hi := YMM(), YMM()
		VPERM2I128(U8(0x20), hs[1], hs[0], lo)
		VPERM2I128(U8(0x31), hs[1], hs[0], hi)
		VPADDD(hi, lo, is)
	}
	f := wide()
	VCVTDQ2PS(is, f)

	// gather converts the rows' fp16 at offset off of the block to float32
	// lanes.
	gather := func(off int) VecVirtual {
		h := XMM()
		VPBROADCASTW(memIdx(w[0], i, off), h)
		for r := 1; r < n; r++ {
			VPINSRW(U8(r), memIdx(w[r], i, off), h, h)
		}
		v := wide()
		VCVTPH2PS(h, v)
		return v
	}
	Comment("scaled = float32(float32(isum) * (dx*dy)) in each row's lane")
	yh := XMM()
	dy := wide()
	VPBROADCASTW(mem(y, 0), yh)
	VCVTPH2PS(yh, dy)
	d := gather(0)
	VMULPS(dy, d, d)
	VMULPS(d, f, f)
	if bt.min != 0 {
		Comment("sum += float32(scaled + float32(float32(Σy) * (m*dy)))")
		swap := YMM()
		VPERM2I128(U8(0x01), ysum, ysum, swap)
		VPADDD(swap, ysum, ysum)
		yf := wide()
		if n == 8 {
			VCVTDQ2PS(ysum, yf)
		} else {
			VCVTDQ2PS(ysum.AsX(), yf)
		}
		m := gather(bt.min)
		VMULPS(dy, m, m)
		VMULPS(m, yf, yf)
		VADDPS(yf, f, f)
	}
	VADDPS(f, acc, acc)

	ADDQ(U32(bt.size), i)
	ADDQ(U32(34), y)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	VMOVUPS(acc, mem(Load(Param("out"), GP64()), 0))
	VZEROUPPER()
	RET()
}

// bitBytes is the VPSHUFB pattern that copies byte j/8 of a broadcast
// 32-bit word into byte j; bitMask sets every bit of byte j but bit j%8.
func bitBytes() []byte {
	b := make([]byte, 32)
	for j := range b {
		b[j] = byte(j / 8)
	}
	return b
}

func bitMask() []byte {
	b := make([]byte, 32)
	for j := range b {
		b[j] = ^byte(1 << (j % 8))
	}
	return b
}

func ffBytes() []byte {
	b := make([]byte, 32)
	for j := range b {
		b[j] = 0xff
	}
	return b
}

// ------------------------------------------------------------------ k-quants, one row

// q45_K is dotQ4_KRef or dotQ5_KRef (kind). The 6-bit scales and mins
// are unpacked as ggml's AVX2 code does (four 32-bit words at once); the
// sub-block sums are weighted by their scale with VPMADDWD on a broadcast
// of the scale. Q5_K's fifth bits (bit j of qh[l] for sub-block j) are
// shifted into place and or-ed onto the nibbles.
func q45_K(kind string) {
	name := "dot" + kind + "AVX2"
	TEXT(name, NOSPLIT, "func(w, y *byte, nb int) float32")
	Pragma("noescape")
	Doc(name + " is the reference " + kind + " dot of nb super-blocks of one row.")
	qsOff, blockBytes := 16, 144
	if kind == "Q5_K" {
		qsOff, blockBytes = 48, 176
	}
	w := Load(Param("w"), GP64())
	y := Load(Param("y"), GP64())
	nb := Load(Param("nb"), GP64())
	sum := XMM()
	VXORPS(sum, sum, sum)
	lowNib := YMM()
	VMOVDQU(splat32("nib32", 0x0f), lowNib)
	// Shuffle j broadcasts int16 lane j of a 128-bit half to all its lanes.
	var shuf [8]Mem
	for j := range shuf {
		b := make([]byte, 32)
		for k := 0; k < 32; k += 2 {
			b[k], b[k+1] = byte(2*j), byte(2*j+1)
		}
		shuf[j] = constBytes(fmt.Sprintf("bcast16_%d", j), b)
	}
	var bit5 Mem
	if kind == "Q5_K" {
		bit5 = splat32("x10_32", 0x10)
	}
	Label(name + "_loop")

	Comment("scales sc0..7 and mins m0..7 (get_scale_min_k4), as int16")
	u0, u1, u2, t := GP32(), GP32(), GP32(), GP32()
	MOVL(mem(w, 4), u0)
	MOVL(mem(w, 8), u1)
	MOVL(mem(w, 12), u2)
	sHi, mHi := GP32(), GP32()
	MOVL(u2, sHi) // sc4..7 = (q[8..11] & 15) | (q[0..3] >> 6) << 4
	ANDL(U32(0x0f0f0f0f), sHi)
	MOVL(u0, t)
	SHRL(U8(6), t)
	ANDL(U32(0x03030303), t)
	SHLL(U8(4), t)
	ORL(t, sHi)
	MOVL(u2, mHi) // m4..7 = (q[8..11] >> 4) | (q[4..7] >> 6) << 4
	SHRL(U8(4), mHi)
	ANDL(U32(0x0f0f0f0f), mHi)
	MOVL(u1, t)
	SHRL(U8(6), t)
	ANDL(U32(0x03030303), t)
	SHLL(U8(4), t)
	ORL(t, mHi)
	ANDL(U32(0x3f3f3f3f), u0) // sc0..3
	ANDL(U32(0x3f3f3f3f), u1) // m0..3
	sm := XMM()
	VMOVD(u0, sm)
	VPINSRD(U8(1), sHi, sm, sm)
	VPINSRD(U8(2), u1, sm, sm)
	VPINSRD(U8(3), mHi, sm, sm)
	sm16 := YMM()
	VPMOVZXBW(sm, sm16) // [sc0..7 | m0..7]

	Comment("msum lanes: m_j * (bsums[2j] + bsums[2j+1])")
	mins, bs, msum := XMM(), XMM(), XMM()
	VEXTRACTI128(U8(1), sm16, mins)
	VMOVDQU(mem(y, 260), bs)
	VPHADDW(mem(y, 276), bs, bs)
	VPMADDWD(bs, mins, msum)

	Comment("isum lanes: sc_j * Σ q*y over sub-block j")
	scsc := YMM()
	VPERMQ(U8(0x44), sm16, scsc) // scales in both halves
	acc := YMM()
	VPXOR(acc, acc, acc)
	var qh VecVirtual
	if kind == "Q5_K" {
		qh = YMM()
		VMOVDQU(mem(w, 16), qh)
	}
	for c := 0; c < 4; c++ {
		q, lo, hi := YMM(), YMM(), YMM()
		VMOVDQU(mem(w, qsOff+32*c), q)
		VPAND(lowNib, q, lo)
		VPSRLW(U8(4), q, hi)
		VPAND(lowNib, hi, hi)
		if kind == "Q5_K" {
			for k, v := range []VecVirtual{lo, hi} {
				// Bit j = 2c+k of qh to bit 4: the 16-bit shifts move
				// other bits across bytes, but the mask keeps only bit 4.
				j, b := 2*c+k, YMM()
				switch {
				case j < 4:
					VPSLLW(U8(4-j), qh, b)
					VPAND(bit5, b, b)
				case j == 4:
					VPAND(bit5, qh, b)
				default:
					VPSRLW(U8(j-4), qh, b)
					VPAND(bit5, b, b)
				}
				VPOR(b, v, v)
			}
		}
		VPMADDUBSW(mem(y, 4+64*c), lo, lo)
		VPMADDUBSW(mem(y, 4+64*c+32), hi, hi)
		s0, s1 := YMM(), YMM()
		VPSHUFB(shuf[2*c], scsc, s0)
		VPSHUFB(shuf[2*c+1], scsc, s1)
		VPMADDWD(s0, lo, lo)
		VPMADDWD(s1, hi, hi)
		VPADDD(lo, acc, acc)
		VPADDD(hi, acc, acc)
	}

	Comment("[isum, msum] as float32")
	ax := XMM()
	VEXTRACTI128(U8(1), acc, ax)
	VPADDD(acc.AsX(), ax, ax)
	VPHADDD(msum, ax, ax)
	VPHADDD(ax, ax, ax)
	f := XMM()
	VCVTDQ2PS(ax, f)
	Comment("sum += float32(dall*isum) - float32(dmin*msum), dall = dy*d, dmin = dy*dmin")
	dd, dy := XMM(), XMM()
	VMOVD(mem(w, 0), dd)
	VCVTPH2PS(dd, dd)
	VBROADCASTSS(mem(y, 0), dy)
	VMULPS(dd, dy, dd)
	VMULPS(dd, f, f)
	g := XMM()
	VMOVSHDUP(f, g)
	VSUBSS(g, f, f)
	VADDSS(f, sum, sum)

	ADDQ(U32(blockBytes), w)
	ADDQ(U32(292), y)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	Store(sum, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// k16 is dotQ2_KRef, dotQ3_KRef or dotQ6_KRef (kind): the k-quants with
// 16 sub-blocks of 16 values. In each half h of 128 values, the 32 values
// 128h+32s+l (l < 32) are one YMM of unsigned bytes u, built from kind's
// bit fields, and span sub-blocks 8h+2s and 8h+2s+1; Σu*y per 16 values is
// weighted by the sub-block's int8 scale with VPMADDWD. Values that are u
// minus an offset (Q3_K: 4, Q6_K: 32) subtract offset*Σ sc_j*bsums_j;
// Q2_K's mins give a separate msum = Σ min_j*bsums_j.
func k16(kind string) {
	name := "dot" + kind + "AVX2"
	TEXT(name, NOSPLIT, "func(w, y *byte, nb int) float32")
	Pragma("noescape")
	Doc(name + " is the reference " + kind + " dot of nb super-blocks of one row.")
	w := Load(Param("w"), GP64())
	y := Load(Param("y"), GP64())
	nb := Load(Param("nb"), GP64())
	sum := XMM()
	VXORPS(sum, sum, sum)
	lowNib := YMM()
	VMOVDQU(splat32("nib32", 0x0f), lowNib)
	m03, m04, m0C, m30 := splat32("x03_32", 0x03), splat32("x04_32", 0x04), splat32("x0c_32", 0x0c), splat32("x30_32", 0x30)
	// Shuffle g puts scale 2g in bytes 0..7 and scale 2g+1 in bytes 8..15.
	var shuf [8]Mem
	for g := range shuf {
		b := make([]byte, 16)
		for k := range b {
			b[k] = byte(2*g + k/8)
		}
		shuf[g] = constBytes(fmt.Sprintf("scale6_%d", g), b)
	}
	blockBytes := map[string]int{"Q2_K": 84, "Q3_K": 110, "Q6_K": 210}[kind]
	Label(name + "_loop")

	Comment("sc: the 16 sub-block scales as int8")
	sc := XMM()
	switch kind {
	case "Q2_K":
		VMOVDQU(mem(w, 0), sc)
		VPAND(lowNib.AsX(), sc, sc)
	case "Q3_K":
		// Low 4 bits from a nibble of scales[0:8], high 2 bits from
		// scales[8:12], 32 subtracted (ggml's kmask1/kmask2 unpacking).
		a0, a1, tmp := GP32(), GP32(), GP32()
		MOVL(mem(w, 96), a0)
		MOVL(mem(w, 100), a1)
		MOVL(mem(w, 104), tmp)
		words := make([]GPVirtual, 4)
		for k := range words {
			words[k] = GP32()
			src := a0
			if k%2 == 1 {
				src = a1
			}
			MOVL(src, words[k])
			if k >= 2 {
				SHRL(U8(4), words[k])
			}
			ANDL(U32(0x0f0f0f0f), words[k])
			t := GP32()
			MOVL(tmp, t)
			if k > 0 {
				SHRL(U8(2*k), t)
			}
			ANDL(U32(0x03030303), t)
			SHLL(U8(4), t)
			ORL(t, words[k])
		}
		VMOVD(words[0], sc)
		for k := 1; k < 4; k++ {
			VPINSRD(U8(k), words[k], sc, sc)
		}
		VPSUBB(splat32("x20_32", 0x20), sc, sc)
	case "Q6_K":
		VMOVDQU(mem(w, 192), sc)
	}

	acc := YMM()
	VPXOR(acc, acc, acc)
	for h := 0; h < 2; h++ {
		Commentf("half %d: elements %d..%d", h, 128*h, 128*h+127)
		var l0, l1, hb VecVirtual
		switch kind {
		case "Q2_K":
			l0 = YMM()
			VMOVDQU(mem(w, 16+32*h), l0)
		case "Q3_K":
			l0, hb = YMM(), YMM()
			VMOVDQU(mem(w, 32+32*h), l0)
			VMOVDQU(mem(w, 0), hb)
		case "Q6_K":
			l0, l1, hb = YMM(), YMM(), YMM()
			VMOVDQU(mem(w, 64*h), l0)
			VMOVDQU(mem(w, 64*h+32), l1)
			VMOVDQU(mem(w, 128+32*h), hb)
		}
		for s := 0; s < 4; s++ {
			q := YMM()
			switch kind {
			case "Q2_K", "Q3_K":
				// bits 2s..2s+1 of qs (16-bit shifts; the mask keeps the
				// bits that stayed in their byte)
				if s == 0 {
					VPAND(m03, l0, q)
				} else {
					VPSRLW(U8(2*s), l0, q)
					VPAND(m03, q, q)
				}
				if kind == "Q3_K" {
					// | bit 4h+s of hmask << 2 (set means no -4)
					k, b := 4*h+s, YMM()
					switch {
					case k < 2:
						VPSLLW(U8(2-k), hb, b)
						VPAND(m04, b, b)
					case k == 2:
						VPAND(m04, hb, b)
					default:
						VPSRLW(U8(k-2), hb, b)
						VPAND(m04, b, b)
					}
					VPOR(b, q, q)
				}
			case "Q6_K":
				// low nibble of ql | bits 2s..2s+1 of qh << 4
				b := YMM()
				switch s {
				case 0:
					VPAND(lowNib, l0, q)
					VPAND(m03, hb, b)
					VPSLLW(U8(4), b, b)
				case 1:
					VPAND(lowNib, l1, q)
					VPAND(m0C, hb, b)
					VPSLLW(U8(2), b, b)
				case 2:
					VPSRLW(U8(4), l0, q)
					VPAND(lowNib, q, q)
					VPAND(m30, hb, b)
				case 3:
					VPSRLW(U8(4), l1, q)
					VPAND(lowNib, q, q)
					VPSRLW(U8(2), hb, b)
					VPAND(m30, b, b)
				}
				VPOR(b, q, q)
			}
			VPMADDUBSW(mem(y, 4+128*h+32*s), q, q)
			sx := XMM()
			VPSHUFB(shuf[4*h+s], sc, sx)
			sv := YMM()
			VPMOVSXBW(sx, sv)
			VPMADDWD(sv, q, q)
			VPADDD(q, acc, acc)
		}
	}

	ax := XMM()
	VEXTRACTI128(U8(1), acc, ax)
	VPADDD(acc.AsX(), ax, ax)
	if kind == "Q2_K" {
		Comment("msum lanes: (scales[j] >> 4) * bsums_j")
		mins, m16, msum := XMM(), YMM(), YMM()
		VMOVDQU(mem(w, 0), mins)
		VPSRLW(U8(4), mins, mins)
		VPAND(lowNib.AsX(), mins, mins)
		VPMOVZXBW(mins, m16)
		VPMADDWD(mem(y, 260), m16, msum)
		mx := XMM()
		VEXTRACTI128(U8(1), msum, mx)
		VPADDD(msum.AsX(), mx, mx)
		Comment("[isum, msum] as float32")
		VPHADDD(mx, ax, ax)
		VPHADDD(ax, ax, ax)
		f := XMM()
		VCVTDQ2PS(ax, f)
		Comment("sum += float32(dall*isum) - float32(dmin*msum), dall = dy*d, dmin = dy*dmin")
		dd, dy := XMM(), XMM()
		VMOVD(mem(w, 80), dd)
		VCVTPH2PS(dd, dd)
		VBROADCASTSS(mem(y, 0), dy)
		VMULPS(dd, dy, dd)
		VMULPS(dd, f, f)
		g := XMM()
		VMOVSHDUP(f, g)
		VSUBSS(g, f, f)
		VADDSS(f, sum, sum)
	} else {
		Comment("- offset * Σ sc_j * bsums_j")
		sc16, corr := YMM(), YMM()
		VPMOVSXBW(sc, sc16)
		VPMADDWD(mem(y, 260), sc16, corr)
		cx := XMM()
		VEXTRACTI128(U8(1), corr, cx)
		VPADDD(corr.AsX(), cx, cx)
		shift := map[string]uint8{"Q3_K": 2, "Q6_K": 5}[kind]
		VPSLLD(U8(shift), cx, cx)
		VPSUBD(cx, ax, ax)
		Comment("sum += float32(float32(isum) * (dy * d))")
		VPHADDD(ax, ax, ax)
		VPHADDD(ax, ax, ax)
		f := XMM()
		VCVTDQ2PS(ax, f)
		dh := GP32()
		MOVWLZX(mem(w, blockBytes-2), dh)
		d := XMM()
		VMOVD(dh, d)
		VCVTPH2PS(d, d)
		VMULSS(mem(y, 0), d, d)
		VMULSS(d, f, f)
		VADDSS(f, sum, sum)
	}

	ADDQ(U32(blockBytes), w)
	ADDQ(U32(292), y)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	Store(sum, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// ------------------------------------------------------------------ activation quantisers

// f32s is a 32-byte constant of eight copies of the float32 bits v.
func f32s(name string, v uint32) Mem {
	b := make([]byte, 32)
	for k := 0; k < 32; k += 4 {
		binary.LittleEndian.PutUint32(b[k:], v)
	}
	return constBytes(name, b)
}

// packQ8 packs four YMMs of int32 in [-128, 127] (elements 0-7, 8-15, …)
// to 32 int8 in element order and stores them at dst.
func packQ8(q [4]VecVirtual, dst Mem) {
	VPACKSSDW(q[1], q[0], q[0]) // per half: q0 4, q1 4 (int16)
	VPACKSSDW(q[3], q[2], q[2])
	VPACKSSWB(q[2], q[0], q[0]) // dwords [q0a q1a q2a q3a | q0b q1b q2b q3b]
	perm := constBytes("permq8", []byte{
		0, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0,
		2, 0, 0, 0, 6, 0, 0, 0, 3, 0, 0, 0, 7, 0, 0, 0})
	idx := YMM()
	VMOVDQU(perm, idx)
	VPERMD(q[0], idx, q[0])
	VMOVDQU(q[0], dst)
}

// maxAbs returns an XMM whose lane 0 is the largest |v| of the vectors.
// max is exact and order-free, so this is the reference's running max.
func maxAbs(v []VecVirtual, absMask Mem) VecVirtual {
	a := make([]VecVirtual, len(v))
	for k := range v {
		a[k] = YMM()
		VANDPS(absMask, v[k], a[k])
	}
	for len(a) > 1 {
		for k := 0; k < len(a)/2; k++ {
			VMAXPS(a[2*k+1], a[2*k], a[2*k])
		}
		for k := 0; k < len(a)/2; k++ {
			a[k] = a[2*k]
		}
		a = a[:len(a)/2]
	}
	m, t := XMM(), XMM()
	VEXTRACTF128(U8(1), a[0], m)
	VMAXPS(a[0].AsX(), m, m)
	VMOVHLPS(m, m, t)
	VMAXPS(t, m, m)
	VMOVSHDUP(m, t)
	VMAXSS(t, m, m)
	return m
}

// quantQ8_0 generates func(dst *byte, x *float32, nb int): quantizeQ8_0 of
// nb blocks. roundQ8 (halves away from zero) is trunc(v) plus v's sign
// where |v - trunc(v)| >= 0.5; the clamp is on the int32, where NaN reads
// as -2^31 as it does for Go's conversion on amd64.
func quantQ8_0() {
	TEXT("quantQ8_0AVX2", NOSPLIT, "func(dst *byte, x *float32, nb int)")
	Pragma("noescape")
	Doc("quantQ8_0AVX2 is quantizeQ8_0 of nb blocks of 32 values.")
	dst, x, nb := Load(Param("dst"), GP64()), Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	absMask := f32s("absmask32", 0x7fffffff)
	signMask := f32s("signmask32", 0x80000000)
	one, half, c127 := f32s("one32", 0x3f800000), f32s("half32", 0x3f000000), f32s("f127_32", 0x42fe0000)
	i127, im127 := f32s("i127_32", 127), f32s("im127_32", 0xffffff81)
	Label("q8_0_loop")
	v := make([]VecVirtual, 4)
	for k := range v {
		v[k] = YMM()
		VMOVUPS(mem(x, 32*k), v[k])
	}
	Comment("d = amax/127, id = 1/d or 0")
	amax := maxAbs(v, absMask)
	d, id, nz, zero := XMM(), XMM(), XMM(), XMM()
	VDIVSS(c127, amax, d)
	VMOVSS(one, id)
	VDIVSS(d, id, id)
	VXORPS(zero, zero, zero)
	VCMPSS(U8(4), zero, d, nz) // d != 0 (or NaN)
	VANDPS(nz, id, id)
	h := XMM()
	VCVTPS2PH(U8(0), d, h)
	VPEXTRW(U8(0), h, mem(dst, 0))
	idv := YMM()
	VBROADCASTSS(id, idv)
	var q [4]VecVirtual
	for k := range q {
		t, r, f := YMM(), YMM(), YMM()
		VMULPS(idv, v[k], t)
		VROUNDPS(U8(3), t, r) // trunc
		VSUBPS(r, t, f)
		VANDPS(absMask, f, f)
		VCMPPS(U8(13), half, f, f) // |frac| >= 0.5
		s := YMM()
		VANDPS(signMask, t, s)
		VORPS(one, s, s) // ±1
		VANDPS(s, f, f)
		VADDPS(f, r, r)
		q[k] = YMM()
		VCVTTPS2DQ(r, q[k])
		VPMINSD(i127, q[k], q[k])
		VPMAXSD(im127, q[k], q[k])
	}
	packQ8(q, mem(dst, 2))
	ADDQ(U32(128), x)
	ADDQ(U32(34), dst)
	DECQ(nb)
	JNZ(LabelRef("q8_0_loop"))
	VZEROUPPER()
	RET()
}

// quantQ8_K generates func(dst *byte, x *float32, nb int): quantizeQ8_K of
// nb super-blocks. The signed max is the first element whose magnitude is
// the block's largest, as the reference's strict > scan finds; rounding to
// nearest even is VCVTPS2DQ's default mode, the same as nearestInt.
func quantQ8_K() {
	TEXT("quantQ8_KAVX2", NOSPLIT, "func(dst *byte, x *float32, nb int)")
	Pragma("noescape")
	Doc("quantQ8_KAVX2 is quantizeQ8_K of nb blocks of 256 values.")
	dst, x, nb := Load(Param("dst"), GP64()), Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	absM := YMM()
	VMOVUPS(f32s("absmask32", 0x7fffffff), absM)
	i127, im127 := f32s("i127_32", 127), f32s("im127_32", 0xffffff81)
	Label("q8_K_loop")

	Comment("amax: the largest |x|")
	a := make([]VecVirtual, 4)
	for k := 0; k < 32; k++ {
		if k < 4 {
			a[k] = YMM()
			VANDPS(mem(x, 32*k), absM, a[k])
			continue
		}
		t := YMM()
		VANDPS(mem(x, 32*k), absM, t)
		VMAXPS(t, a[k%4], a[k%4])
	}
	VMAXPS(a[1], a[0], a[0])
	VMAXPS(a[3], a[2], a[2])
	VMAXPS(a[2], a[0], a[0])
	amax, t := XMM(), XMM()
	VEXTRACTF128(U8(1), a[0], amax)
	VMAXPS(a[0].AsX(), amax, amax)
	VMOVHLPS(amax, amax, t)
	VMAXPS(t, amax, amax)
	VMOVSHDUP(amax, t)
	VMAXSS(t, amax, amax)
	zero := XMM()
	VXORPS(zero, zero, zero)
	VUCOMISS(zero, amax)
	JE(LabelRef("q8_K_zero"))

	Comment("mx: the first element with |x| = amax")
	amaxv := YMM()
	VBROADCASTSS(amax, amaxv)
	j, m := GP64(), GP64()
	XORQ(j, j)
	Label("q8_K_find")
	e := YMM()
	VANDPS(Mem{Base: x, Index: j, Scale: 4}, absM, e)
	VCMPPS(U8(0), amaxv, e, e)
	VMOVMSKPS(e, m.As32())
	TESTL(m.As32(), m.As32())
	JNZ(LabelRef("q8_K_found"))
	ADDQ(U32(8), j)
	JMP(LabelRef("q8_K_find"))
	Label("q8_K_found")
	BSFL(m.As32(), m.As32())
	ADDQ(m, j)

	Comment("iscale = -127/mx, d = 1/iscale")
	iscale, d := XMM(), XMM()
	VMOVSS(f32s("fm127_32", 0xc2fe0000), iscale)
	VDIVSS(Mem{Base: x, Index: j, Scale: 4}, iscale, iscale)
	VMOVSS(f32s("one32", 0x3f800000), d)
	VDIVSS(iscale, d, d)
	VMOVSS(d, mem(dst, 0))
	isv := YMM()
	VBROADCASTSS(iscale, isv)
	for g := 0; g < 8; g++ {
		Commentf("values %d..%d", 32*g, 32*g+31)
		var q [4]VecVirtual
		for k := range q {
			q[k] = YMM()
			VMULPS(mem(x, 128*g+32*k), isv, q[k])
			VCVTPS2DQ(q[k], q[k])
			VPMINSD(i127, q[k], q[k])
			VPMAXSD(im127, q[k], q[k])
		}
		// bsums[2g], bsums[2g+1]: sums of q[0..1] and of q[2..3].
		sa, sb := YMM(), YMM()
		VPADDD(q[1], q[0], sa)
		VPADDD(q[3], q[2], sb)
		VPHADDD(sb, sa, sa)
		VPHADDD(sa, sa, sa)
		sx := XMM()
		VEXTRACTI128(U8(1), sa, sx)
		VPADDD(sa.AsX(), sx, sx)
		VPACKSSDW(sx, sx, sx)
		VMOVD(sx, mem(dst, 260+4*g))
		packQ8(q, mem(dst, 4+32*g))
	}
	JMP(LabelRef("q8_K_next"))

	Label("q8_K_zero")
	z := YMM()
	VPXOR(z, z, z)
	for off := 0; off+32 <= 292; off += 32 {
		VMOVDQU(z, mem(dst, off))
	}
	MOVL(U32(0), mem(dst, 288))

	Label("q8_K_next")
	ADDQ(U32(1024), x)
	ADDQ(U32(292), dst)
	DECQ(nb)
	JNZ(LabelRef("q8_K_loop"))
	VZEROUPPER()
	RET()
}
