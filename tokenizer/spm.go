package tokenizer

import (
	"container/heap"
	"strings"
)

// spaceEscape is the SentencePiece space symbol U+2581 "▁".
const spaceEscape = "\u2581"

type spmBigram struct {
	left, right int
	score       float32
	size        int
}

// spmHeap orders by score, highest first, then leftmost
// (llm_bigram_spm::comparator).
type spmHeap []spmBigram

func (h spmHeap) Len() int { return len(h) }
func (h spmHeap) Less(i, j int) bool {
	return h[i].score > h[j].score || (h[i].score == h[j].score && h[i].left < h[j].left)
}
func (h spmHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *spmHeap) Push(x any)   { *h = append(*h, x.(spmBigram)) }
func (h *spmHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// spmEncode is llm_tokenizer_spm_session::tokenize on one raw-text
// fragment (already prefixed with a space where llama.cpp does so): spaces
// become "▁", the text is split into UTF-8 characters, and adjacent symbols
// whose concatenation is a token are merged, highest score first. Symbols
// left that are not tokens fall back to their bytes' <0xXX> tokens.
func (t *Tokenizer) spmEncode(text string, out []int32) []int32 {
	text = strings.ReplaceAll(text, " ", spaceEscape)
	syms := make([]bpeSymbol, 0, len(text))
	for off := 0; off < len(text); {
		n := min(utf8Len(text[off]), len(text)-off)
		i := len(syms)
		next := i + 1
		if off+n == len(text) {
			next = -1
		}
		syms = append(syms, bpeSymbol{start: off, n: n, prev: i - 1, next: next})
		off += n
	}
	var h spmHeap
	tryAdd := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		s := text[syms[l].start : syms[l].start+syms[l].n+syms[r].n]
		id, ok := t.tokenID[s]
		if !ok {
			return
		}
		heap.Push(&h, spmBigram{left: l, right: r, score: t.scores[id], size: len(s)})
	}
	for i := 1; i < len(syms); i++ {
		tryAdd(i-1, i)
	}
	for h.Len() > 0 {
		bg := heap.Pop(&h).(spmBigram)
		l, r := &syms[bg.left], &syms[bg.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != bg.size {
			continue // one of them was merged already
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = bg.left
		}
		tryAdd(l.prev, bg.left)
		tryAdd(bg.left, l.next)
	}
	for i := 0; i >= 0 && i < len(syms); i = syms[i].next {
		s := text[syms[i].start : syms[i].start+syms[i].n]
		if id, ok := t.tokenID[s]; ok {
			out = append(out, id)
			continue
		}
		// Every multi-character symbol is a token (it was merged into
		// one), so only single characters reach the byte fallback; the
		// rev_merge re-segmentation of llama.cpp never applies.
		for j := 0; j < len(s); j++ {
			if id := t.byteToken[s[j]]; id >= 0 {
				out = append(out, id)
			}
		}
	}
	return out
}
