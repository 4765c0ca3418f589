package tokenizer

import (
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// wpmEncode is llm_tokenizer_wpm_session::tokenize (BERT's WordPiece): the
// text is normalised and split into words, and each word, prefixed with
// "▁", is cut greedily into the longest tokens from the left. A word that
// cannot be covered becomes UNK.
func (t *Tokenizer) wpmEncode(text string, out []int32) []int32 {
	for _, word := range t.wpmPreprocess(text) {
		w := spaceEscape + word
		n := len(w)
		start := len(out)
		for i := 0; i < n; i++ {
			match := false
			for j := min(n, i+t.maxTokenLen+1); j > i; j-- {
				if id, ok := t.tokenID[w[i:j]]; ok {
					out = append(out, id)
					match = true
					i = j - 1
					break
				}
			}
			if !match { // discard the word's tokens
				out = out[:start]
				break
			}
		}
		if len(out) == start && t.vocab.UNK >= 0 {
			out = append(out, t.vocab.UNK)
		}
	}
	return out
}

// wpmPreprocess is llm_tokenizer_wpm_session::preprocess: optional accent
// stripping (each codepoint replaced by the first codepoint of its NFD form,
// combining marks dropped), optional lowercasing, whitespace splits words,
// control characters vanish, and punctuation, ASCII symbols and CJK
// ideographs are words of their own.
func (t *Tokenizer) wpmPreprocess(text string) []string {
	v := t.vocab
	lower, strip := !v.NoLowercase, !v.KeepAccents
	var words []string
	var cur []byte
	flush := func() {
		if len(cur) > 0 {
			words = append(words, string(cur))
			cur = cur[:0]
		}
	}
	for _, c := range decodeCpts(text, nil) {
		if strip {
			c = nfdFirst(c)
		}
		f := cptFlags(c)
		if f&flagWhitespace != 0 {
			flush()
			continue
		}
		if c == 0 || c == 0xFFFD || f&flagControl != 0 {
			continue
		}
		if strip && f&flagAccentMark != 0 {
			continue
		}
		s := c
		if lower {
			s = unicode.ToLower(c)
		}
		if f&flagPunctuation != 0 || (c < 0x7F && f&flagSymbol != 0) || isChineseChar(c) {
			flush()
			cur = appendCpt(cur, s)
			flush()
			continue
		}
		cur = appendCpt(cur, s)
	}
	flush()
	return words
}

// nfdFirst is the first codepoint of c's canonical decomposition (llama.cpp's
// unicode_cpts_normalize_nfd keeps only that one).
func nfdFirst(c rune) rune {
	if c < 0xC0 || c > unicode.MaxRune || (c >= 0xD800 && c <= 0xDFFF) {
		return c
	}
	var buf [4]byte
	n := len(appendCpt(buf[:0], c))
	if norm.NFD.IsNormal(buf[:n]) {
		return c
	}
	for _, r := range norm.NFD.String(string(buf[:n])) {
		return r
	}
	return c
}

// isChineseChar is the CJK test of BERT's tokenizer (as llama.cpp has it).
func isChineseChar(c rune) bool {
	return (c >= 0x4E00 && c <= 0x9FFF) ||
		(c >= 0x3400 && c <= 0x4DBF) ||
		(c >= 0x20000 && c <= 0x2A6DF) ||
		(c >= 0x2A700 && c <= 0x2B73F) ||
		(c >= 0x2B740 && c <= 0x2B81F) ||
		(c >= 0x2B920 && c <= 0x2CEAF) ||
		(c >= 0xF900 && c <= 0xFAFF) ||
		(c >= 0x2F800 && c <= 0x2FA1F)
}
