package tokenizer

import (
	"container/heap"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// bpe is the byte-level BPE model (llama.cpp's llm_tokenizer_bpe): a
// pre-tokenizer, merge ranks, and a per-word result cache. llama.cpp does
// not cache, but a word's tokens depend only on the word, so the result is
// the same.
type bpe struct {
	t            *Tokenizer
	splitters    []splitter
	ranks        map[[2]string]int32
	ignoreMerges bool

	cache     [cacheShards]cacheShard // raw word -> ids
	cacheSeed maphash.Seed
	cacheSize atomic.Int64
}

// cacheShard is one lock-protected part of the word cache; sharding keeps
// concurrent encoders from contending on one lock.
type cacheShard struct {
	mu sync.RWMutex
	m  map[string][]int32
}

const cacheShards = 32

// Cache limits: words longer than maxCachedWord bytes are not cached, and
// the cache stops growing at maxCacheEntries words.
const (
	maxCachedWord   = 64
	maxCacheEntries = 1 << 18
)

func newBPE(t *Tokenizer, spec preSpec, merges []string) (*bpe, error) {
	b := &bpe{t: t, ignoreMerges: spec.ignoreMerges, ranks: make(map[[2]string]int32, len(merges)), cacheSeed: maphash.MakeSeed()}
	for i := range b.cache {
		b.cache[i].m = map[string][]int32{}
	}
	for _, r := range spec.regexes {
		s, err := newSplitter(r)
		if err != nil {
			return nil, err
		}
		b.splitters = append(b.splitters, s)
	}
	for i, m := range merges {
		// As llama.cpp: split at the first space after the first byte; a
		// merge without one is the pair ("", ""). The first rank wins.
		var key [2]string
		if len(m) > 1 {
			if j := strings.IndexByte(m[1:], ' '); j >= 0 {
				key = [2]string{m[:j+1], m[j+2:]}
			}
		}
		if _, dup := b.ranks[key]; !dup {
			b.ranks[key] = int32(i)
		}
	}
	return b, nil
}

// words splits text into pre-tokenizer words (raw UTF-8, invalid bytes
// replaced by U+FFFD as llama.cpp does) and calls fn on each.
func (b *bpe) words(text string, fn func(word string)) {
	cpts := decodeCpts(text, make([]rune, 0, len(text)))
	// The words are re-encoded from the codepoints; for valid UTF-8 that is
	// the input itself, so index it by codepoint instead of copying.
	norm := text
	if !utf8.ValidString(text) {
		buf := make([]byte, 0, len(text)+8)
		for _, c := range cpts {
			buf = appendCpt(buf, c)
		}
		norm = string(buf)
	}
	offsets := []int{len(cpts)}
	for _, s := range b.splitters {
		offsets = s.split(cpts, offsets)
	}
	pos, bytePos := 0, 0
	for _, n := range offsets {
		end := bytePos
		for _, c := range cpts[pos : pos+n] {
			end += cptLen(c)
		}
		fn(norm[bytePos:end])
		pos += n
		bytePos = end
	}
}

// cptLen is the length of appendCpt's encoding of c.
func cptLen(c rune) int {
	switch {
	case c < 0x80:
		return 1
	case c < 0x800:
		return 2
	case c < 0x10000:
		return 3
	}
	return 4
}

// encode appends the tokens of one raw-text fragment.
func (b *bpe) encode(text string, out []int32) []int32 {
	var scratch []byte
	b.words(text, func(word string) {
		cacheable := len(word) <= maxCachedWord
		var sh *cacheShard
		if cacheable {
			sh = &b.cache[maphash.String(b.cacheSeed, word)%cacheShards]
			sh.mu.RLock()
			ids, ok := sh.m[word]
			sh.mu.RUnlock()
			if ok {
				out = append(out, ids...)
				return
			}
		}
		scratch = byteLevelEncode(scratch[:0], word)
		n := len(out)
		out = b.mergeWord(string(scratch), out)
		if cacheable && b.cacheSize.Load() < maxCacheEntries {
			ids := append([]int32(nil), out[n:]...)
			sh.mu.Lock()
			if _, dup := sh.m[word]; !dup {
				sh.m[strings.Clone(word)] = ids
				b.cacheSize.Add(1)
			}
			sh.mu.Unlock()
		}
	})
	return out
}

// bpeSymbol is a span of the word; n == 0 once merged into its left
// neighbour.
type bpeSymbol struct {
	start, n   int
	prev, next int
}

type bpeBigram struct {
	left, right int
	rank        int32
	size        int
}

// bigramHeap orders by rank, then leftmost (llm_bigram_bpe::comparator).
type bigramHeap []bpeBigram

func (h bigramHeap) Len() int { return len(h) }
func (h bigramHeap) Less(i, j int) bool {
	return h[i].rank < h[j].rank || (h[i].rank == h[j].rank && h[i].left < h[j].left)
}
func (h bigramHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *bigramHeap) Push(x any)   { *h = append(*h, x.(bpeBigram)) }
func (h *bigramHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// mergeWord is llm_tokenizer_bpe_session::tokenize for one byte-level
// encoded word: start from its characters and repeatedly merge the adjacent
// pair of lowest rank (leftmost on ties).
func (b *bpe) mergeWord(word string, out []int32) []int32 {
	if b.ignoreMerges {
		if id, ok := b.t.tokenID[word]; ok {
			return append(out, id)
		}
	}
	syms := make([]bpeSymbol, 0, len(word))
	for off := 0; off < len(word); {
		n := min(utf8Len(word[off]), len(word)-off)
		i := len(syms)
		next := i + 1
		if off+n == len(word) {
			next = -1
		}
		syms = append(syms, bpeSymbol{start: off, n: n, prev: i - 1, next: next})
		off += n
	}
	text := func(s bpeSymbol) string { return word[s.start : s.start+s.n] }
	var h bigramHeap
	tryAdd := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		rank, ok := b.ranks[[2]string{text(syms[l]), text(syms[r])}]
		if !ok {
			return
		}
		heap.Push(&h, bpeBigram{left: l, right: r, rank: rank, size: syms[l].n + syms[r].n})
	}
	for i := 1; i < len(syms); i++ {
		tryAdd(i-1, i)
	}
	for h.Len() > 0 {
		bg := heap.Pop(&h).(bpeBigram)
		l, r := &syms[bg.left], &syms[bg.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != bg.size {
			continue // outdated
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
		s := text(syms[i])
		if id, ok := b.t.tokenID[s]; ok {
			out = append(out, id)
			continue
		}
		// As llama.cpp: look each byte up as a one-byte token, dropping
		// those that are not in the vocabulary.
		for j := 0; j < len(s); j++ {
			if id, ok := b.t.tokenID[s[j:j+1]]; ok {
				out = append(out, id)
			}
		}
	}
	return out
}
