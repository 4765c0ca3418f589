package tokenizer

import (
	"sync"
	"unicode"
	"unicode/utf8"
)

// Codepoint classes, the same bits as llama.cpp's unicode_cpt_flags
// (src/unicode.h). Each assigned codepoint has exactly one category bit;
// unassigned ones (Cn) are flagUndefined, so a codepoint inside the text
// never has flags == 0 (positions outside a segment do).
const (
	flagUndefined   uint16 = 0x0001
	flagNumber      uint16 = 0x0002 // \p{N}
	flagLetter      uint16 = 0x0004 // \p{L}
	flagSeparator   uint16 = 0x0008 // \p{Z}
	flagAccentMark  uint16 = 0x0010 // \p{M}
	flagPunctuation uint16 = 0x0020 // \p{P}
	flagSymbol      uint16 = 0x0040 // \p{S}
	flagControl     uint16 = 0x0080 // \p{C} except Cn
	flagCategories  uint16 = 0x00FF
	flagWhitespace  uint16 = 0x0100 // \s as Python's regex module sees it
)

const maxCodepoints = 0x110000

var (
	cptFlagsOnce  sync.Once
	cptFlagsTable []uint16
)

// cptFlagsInit builds the codepoint table from Go's Unicode tables (Unicode
// 15.0), patched to the Unicode 15.1 data llama.cpp's unicode-data.cpp was
// generated from.
func cptFlagsInit() {
	t := make([]uint16, maxCodepoints)
	for i := range t {
		t[i] = flagUndefined
	}
	set := func(tab *unicode.RangeTable, f uint16) {
		for _, r := range tab.R16 {
			for c := uint32(r.Lo); c <= uint32(r.Hi); c += uint32(r.Stride) {
				t[c] = f
			}
		}
		for _, r := range tab.R32 {
			for c := r.Lo; c <= r.Hi; c += r.Stride {
				t[c] = f
			}
		}
	}
	set(unicode.C, flagControl) // Cc Cf Co Cs; Cn stays undefined
	set(unicode.N, flagNumber)
	set(unicode.L, flagLetter)
	set(unicode.Z, flagSeparator)
	set(unicode.M, flagAccentMark)
	set(unicode.P, flagPunctuation)
	set(unicode.S, flagSymbol)
	// Unicode 15.1 additions.
	for c := 0x2EBF0; c <= 0x2EE5D; c++ {
		t[c] = flagLetter // CJK Extension I
	}
	for c := 0x2FFC; c <= 0x2FFF; c++ {
		t[c] = flagSymbol // ideographic description characters
	}
	t[0x31EF] = flagSymbol
	for _, c := range whitespaceCpts {
		t[c] |= flagWhitespace
	}
	cptFlagsTable = t
}

// whitespaceCpts is llama.cpp's unicode_set_whitespace (the White_Space
// property; 0x1C-0x1F are not in it).
var whitespaceCpts = []rune{
	0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680,
	0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A,
	0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
}

// cptFlags returns the class bits of codepoint c.
func cptFlags(c rune) uint16 {
	cptFlagsOnce.Do(cptFlagsInit)
	if c < 0 || c >= maxCodepoints {
		return flagUndefined
	}
	return cptFlagsTable[c]
}

// flagsTable returns the whole table (for hot loops).
func flagsTable() []uint16 {
	cptFlagsOnce.Do(cptFlagsInit)
	return cptFlagsTable
}

// utf8Len is llama.cpp's unicode_len_utf8: the sequence length announced by
// a lead byte, without validation (continuation bytes count as 1).
func utf8Len(b byte) int {
	return [16]int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4}[b>>4]
}

// decodeCpts splits s into codepoints the way llama.cpp's
// unicode_cpts_from_utf8 does: an invalid byte becomes U+FFFD and is skipped
// alone. (It also accepts overlong forms and surrogates, as llama.cpp does.)
func decodeCpts(s string, out []rune) []rune {
	out = out[:0]
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x80 {
			out = append(out, rune(c))
			i++
			continue
		}
		r, n := decodeLlama(s, i)
		out = append(out, r)
		i += n
	}
	return out
}

// decodeLlama decodes one non-ASCII sequence at s[i] like
// unicode_cpt_from_utf8, returning U+FFFD and 1 on error.
func decodeLlama(s string, i int) (rune, int) {
	c := s[i]
	cont := func(j int) bool { return j < len(s) && s[j]&0xC0 == 0x80 }
	switch {
	case c&0x40 == 0:
		return utf8.RuneError, 1
	case c&0x20 == 0:
		if !cont(i + 1) {
			return utf8.RuneError, 1
		}
		return rune(c&0x1F)<<6 | rune(s[i+1]&0x3F), 2
	case c&0x10 == 0:
		if !cont(i+1) || !cont(i+2) {
			return utf8.RuneError, 1
		}
		return rune(c&0x0F)<<12 | rune(s[i+1]&0x3F)<<6 | rune(s[i+2]&0x3F), 3
	case c&0x08 == 0:
		if !cont(i+1) || !cont(i+2) || !cont(i+3) {
			return utf8.RuneError, 1
		}
		return rune(c&0x07)<<18 | rune(s[i+1]&0x3F)<<12 | rune(s[i+2]&0x3F)<<6 | rune(s[i+3]&0x3F), 4
	}
	return utf8.RuneError, 1
}

// appendCpt appends the UTF-8 encoding of c like unicode_cpt_to_utf8, which
// (unlike utf8.AppendRune) encodes surrogates as three bytes.
func appendCpt(b []byte, c rune) []byte {
	switch {
	case c < 0x80:
		return append(b, byte(c))
	case c < 0x800:
		return append(b, 0xC0|byte(c>>6), 0x80|byte(c&0x3F))
	case c < 0x10000:
		return append(b, 0xE0|byte(c>>12), 0x80|byte(c>>6&0x3F), 0x80|byte(c&0x3F))
	default:
		return append(b, 0xF0|byte(c>>18), 0x80|byte(c>>12&0x3F), 0x80|byte(c>>6&0x3F), 0x80|byte(c&0x3F))
	}
}

// byteToRune is GPT-2's bytes_to_unicode: printable bytes map to
// themselves, the others to U+0100 onwards in byte order.
var byteToRune, runeToByte = func() ([256]rune, map[rune]byte) {
	var fwd [256]rune
	back := make(map[rune]byte, 256)
	printable := func(b int) bool {
		return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
	}
	n := 0
	for b := 0; b < 256; b++ {
		if printable(b) {
			fwd[b] = rune(b)
		} else {
			fwd[b] = rune(256 + n)
			n++
		}
		back[fwd[b]] = byte(b)
	}
	return fwd, back
}()

// byteLevelEncode maps each byte of s to its GPT-2 byte-level character.
func byteLevelEncode(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		dst = utf8.AppendRune(dst, byteToRune[s[i]])
	}
	return dst
}
