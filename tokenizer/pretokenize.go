package tokenizer

import (
	"fmt"
	"sort"
	"strings"
	"unicode"

	"github.com/dlclark/regexp2"
)

// A pre-tokenizer splits text into words before BPE, as llama.cpp's
// unicode_regex_split does: a list of regexes, each splitting every segment
// the previous ones produced into its matches and the gaps between them.
//
// Two regexes llama.cpp implements by hand (unicode.cpp) and so do we: the
// GPT-2 pattern and the Llama 3 pattern. Every other regex runs through
// regexp2 on the same transformed text std::regex sees in llama.cpp: when the
// regex uses \p{..} classes, each non-ASCII codepoint is collapsed to one
// marker character per Unicode category (whitespace to \v), and the classes
// become "marker or the ASCII members"; otherwise the codepoints are matched
// as they are, non-ASCII whitespace replaced by \v.

// Regexes shared by several pre-tokenizers, verbatim from llama-vocab.cpp.
const (
	reGPT2   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
	reLlama3 = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	reQwen2  = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	rePoro   = ` ?[^(\s|.,!?…。，、।۔،)]+`
)

// preSpec is one pre-tokenizer type of llama.cpp (LLAMA_VOCAB_PRE_TYPE_*).
type preSpec struct {
	kind         string // llama.cpp's type, for messages
	regexes      []string
	ignoreMerges bool // a word that is a token is taken whole
	addBOS       bool // add_bos default
	noBOS        bool // no default BOS id
	cleanSpaces  bool // clean_up_tokenization_spaces in Detokenize
}

var preTokenizers = func() map[string]preSpec {
	m := map[string]preSpec{}
	add := func(s preSpec, names ...string) {
		for _, n := range names {
			m[n] = s
		}
	}
	add(preSpec{kind: "default", cleanSpaces: true, regexes: []string{
		`[\p{P}\$\+<=>\^~\|]+`, reGPT2, `\p{N}+`, `[0-9][0-9][0-9]`}}, "", "default")
	add(preSpec{kind: "llama3", ignoreMerges: true, addBOS: true, cleanSpaces: true, regexes: []string{reLlama3}},
		"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano")
	add(preSpec{kind: "dbrx", cleanSpaces: true, regexes: []string{reLlama3}}, "dbrx", "smaug-bpe")
	// U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126 and U+212A are written as
	// escapes: Unicode normalisation of this file would change them.
	add(preSpec{kind: "deepseek-llm", regexes: []string{
		"[\r\n]",
		"\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1F7Dᾀ-ᾴᾶ-ᾼ\u1FBEῂ-ῄῆ-ῌῐ-\u1FD3ῖ-\u1FDBῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212A-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
		`\s?[!-/:-~！-／：-～‘-‟　-。]+`,
		`\s+$`,
		`[一-龥ࠀ-一가-퟿]+`,
		`\p{N}+`,
	}}, "deepseek-llm")
	add(preSpec{kind: "deepseek3-llm", regexes: []string{
		`\p{N}{1,3}`,
		`[一-龥぀-ゟ゠-ヿ]+`,
		"[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
	}}, "deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4")
	add(preSpec{kind: "deepseek-coder", regexes: []string{
		"[\r\n]", `\s?\p{L}+`, `\s?\p{P}+`, `[一-龥ࠀ-一가-퟿]+`, `\p{N}`,
	}}, "deepseek-coder")
	add(preSpec{kind: "falcon", cleanSpaces: true, regexes: []string{
		"[\\p{P}\\$\\+<=>\\^~\\|`]+", reGPT2, `[0-9][0-9][0-9]`}}, "falcon")
	starcoder := []string{`\p{N}`, reGPT2}
	add(preSpec{kind: "starcoder", cleanSpaces: true, regexes: starcoder},
		"starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2")
	add(preSpec{kind: "starcoder", regexes: starcoder}, "command-r", "smollm")
	add(preSpec{kind: "gpt2", cleanSpaces: true, regexes: []string{reGPT2}},
		"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
		"mellum", "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "exaone4", "mpt", "olmo", "jais")
	add(preSpec{kind: "gpt2", regexes: []string{reGPT2}}, "trillion", "granite-docling")
	add(preSpec{kind: "qwen2", regexes: []string{reQwen2}}, "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open")
	add(preSpec{kind: "qwen2", cleanSpaces: true, regexes: []string{reQwen2}}, "megrez", "stablelm2")
	add(preSpec{kind: "grok-2", regexes: []string{reQwen2}}, "grok-2")
	add(preSpec{kind: "qwen35", regexes: []string{
		`(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
	}}, "qwen35")
	add(preSpec{kind: "poro", regexes: []string{rePoro}}, "poro-chat")
	add(preSpec{kind: "bloom", cleanSpaces: true, regexes: []string{rePoro}}, "bloom", "gpt3-finnish")
	add(preSpec{kind: "chatglm4", noBOS: true, cleanSpaces: true, regexes: []string{reLlama3}}, "glm4", "chatglm-bpe")
	add(preSpec{kind: "viking", regexes: []string{rePoro, `\p{N}`}}, "viking")
	add(preSpec{kind: "tekken", ignoreMerges: true, addBOS: true, regexes: []string{
		`[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
	}}, "tekken")
	add(preSpec{kind: "gpt-4o", regexes: []string{
		`[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
	}}, "gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2")
	add(preSpec{kind: "seed-coder", regexes: []string{
		`(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+`,
	}}, "seed-coder")
	add(preSpec{kind: "bailingmoe", regexes: []string{
		`'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`,
	}}, "bailingmoe", "bailingmoe2", "llada-moe")
	add(preSpec{kind: "ufakzeka", regexes: []string{
		`[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
	}}, "ufakzeka")
	return m
}()

// SupportedPreTokenizers lists the tokenizer.ggml.pre values New accepts for
// "gpt2" vocabularies ("" means absent: llama.cpp's "default").
func SupportedPreTokenizers() []string {
	names := make([]string, 0, len(preTokenizers))
	for n := range preTokenizers {
		if n != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// splitter refines a segmentation: offsets are segment lengths in
// codepoints, summing to len(cpts); the result splits each segment further.
type splitter interface {
	split(cpts []rune, offsets []int) []int
}

// newSplitter returns the hand-written splitter for the GPT-2 and Llama 3
// patterns (as llama.cpp does) and the regexp2 one for everything else.
func newSplitter(expr string) (splitter, error) {
	switch expr {
	case reGPT2:
		return gpt2Splitter{}, nil
	case reLlama3:
		return llama3Splitter{}, nil
	}
	return newRegexSplitter(expr)
}

// segment walks one segment [ini, end) of a codepoint array, emitting the
// lengths of the words it is cut into.
type segment struct {
	cpts     []rune
	flags    []uint16
	ini, end int
	prevEnd  int
	out      []int
}

const outOfRange rune = -1

func (s *segment) cpt(pos int) rune {
	if pos >= s.ini && pos < s.end {
		return s.cpts[pos]
	}
	return outOfRange
}

func (s *segment) flag(pos int) uint16 {
	if pos >= s.ini && pos < s.end {
		c := s.cpts[pos]
		if c >= 0 && c < maxCodepoints {
			return s.flags[c]
		}
		return flagUndefined
	}
	return 0
}

// add closes the word ending at end and returns its length.
func (s *segment) add(end int) int {
	n := end - s.prevEnd
	if n > 0 {
		s.out = append(s.out, n)
	}
	s.prevEnd = end
	return n
}

const notWordOrSpace = flagWhitespace | flagLetter | flagNumber

// gpt2Splitter is llama.cpp's unicode_regex_split_custom_gpt2 for
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
type gpt2Splitter struct{}

func (gpt2Splitter) split(cpts []rune, offsets []int) []int {
	s := segment{cpts: cpts, flags: flagsTable(), out: make([]int, 0, len(offsets)+len(cpts)/4)}
	start := 0
	for _, off := range offsets {
		s.ini, s.end, s.prevEnd = start, start+off, start
		start += off
		for pos := s.ini; pos < s.end; {
			c := s.cpt(pos)
			f := s.flag(pos)
			// 's|'t|'re|'ve|'m|'ll|'d
			if c == '\'' && pos+1 < s.end {
				n := s.cpt(pos + 1)
				if n == 's' || n == 't' || n == 'm' || n == 'd' {
					pos += s.add(pos + 2)
					continue
				}
				if pos+2 < s.end {
					nn := s.cpt(pos + 2)
					if (n == 'r' && nn == 'e') || (n == 'v' && nn == 'e') || (n == 'l' && nn == 'l') {
						pos += s.add(pos + 3)
						continue
					}
				}
			}
			f2 := f
			if c == ' ' {
				f2 = s.flag(pos + 1)
			}
			// <space>?\p{L}+
			if f2&flagLetter != 0 {
				if c == ' ' {
					pos++
				}
				for f2&flagLetter != 0 {
					pos++
					f2 = s.flag(pos)
				}
				s.add(pos)
				continue
			}
			// <space>?\p{N}+
			if f2&flagNumber != 0 {
				if c == ' ' {
					pos++
				}
				for f2&flagNumber != 0 {
					pos++
					f2 = s.flag(pos)
				}
				s.add(pos)
				continue
			}
			// <space>?[^\s\p{L}\p{N}]+
			if f2&notWordOrSpace == 0 && f2 != 0 {
				if c == ' ' {
					pos++
				}
				for f2&notWordOrSpace == 0 && f2 != 0 {
					pos++
					f2 = s.flag(pos)
				}
				s.add(pos)
				continue
			}
			nws := 0
			for s.flag(pos+nws)&flagWhitespace != 0 {
				nws++
			}
			// \s+(?!\S)
			if nws > 1 && s.cpt(pos+nws) != outOfRange {
				pos += nws - 1
				s.add(pos)
				continue
			}
			// \s+
			if nws > 0 {
				pos += nws
				s.add(pos)
				continue
			}
			pos++
			s.add(pos)
		}
	}
	return s.out
}

// llama3Splitter is llama.cpp's unicode_regex_split_custom_llama3 for
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
type llama3Splitter struct{}

func (llama3Splitter) split(cpts []rune, offsets []int) []int {
	s := segment{cpts: cpts, flags: flagsTable(), out: make([]int, 0, len(offsets)+len(cpts)/4)}
	start := 0
	for _, off := range offsets {
		s.ini, s.end, s.prevEnd = start, start+off, start
		start += off
		for pos := s.ini; pos < s.end; {
			c := s.cpt(pos)
			f := s.flag(pos)
			// (?i:'s|'t|'re|'ve|'m|'ll|'d)
			if c == '\'' && pos+1 < s.end {
				n := toLower(s.cpt(pos + 1))
				if n == 's' || n == 't' || n == 'm' || n == 'd' {
					pos += s.add(pos + 2)
					continue
				}
				if pos+2 < s.end {
					nn := toLower(s.cpt(pos + 2))
					if (n == 'r' && nn == 'e') || (n == 'v' && nn == 'e') || (n == 'l' && nn == 'l') {
						pos += s.add(pos + 3)
						continue
					}
				}
			}
			// [^\r\n\p{L}\p{N}]?\p{L}+
			if !(c == '\r' || c == '\n' || f&flagNumber != 0) {
				if f&flagLetter != 0 || s.flag(pos+1)&flagLetter != 0 {
					pos++
					for s.flag(pos)&flagLetter != 0 {
						pos++
					}
					s.add(pos)
					continue
				}
			}
			// \p{N}{1,3}
			if f&flagNumber != 0 {
				ini := pos
				for s.flag(pos)&flagNumber != 0 {
					pos++
					if pos-ini >= 3 {
						s.add(pos)
						ini = pos
					}
				}
				s.add(pos)
				continue
			}
			// <space>?[^\s\p{L}\p{N}]+[\r\n]*
			f2 := f
			if c == ' ' {
				f2 = s.flag(pos + 1)
			}
			if f2&notWordOrSpace == 0 && f != 0 {
				if c == ' ' {
					pos++
				}
				for f2&notWordOrSpace == 0 && f2 != 0 {
					pos++
					f2 = s.flag(pos)
				}
				for c2 := s.cpt(pos); c2 == '\r' || c2 == '\n'; c2 = s.cpt(pos) {
					pos++
				}
				s.add(pos)
				continue
			}
			nws, lastRN := 0, 0
			for s.flag(pos+nws)&flagWhitespace != 0 {
				if c2 := s.cpt(pos + nws); c2 == '\r' || c2 == '\n' {
					lastRN = pos + nws + 1
				}
				nws++
			}
			// \s*[\r\n]+
			if lastRN > 0 {
				pos = lastRN
				s.add(pos)
				continue
			}
			// \s+(?!\S)
			if nws > 1 && s.cpt(pos+nws) != outOfRange {
				pos += nws - 1
				s.add(pos)
				continue
			}
			// \s+
			if nws > 0 {
				pos += nws
				s.add(pos)
				continue
			}
			pos++
			s.add(pos)
		}
	}
	return s.out
}

// toLower is unicode_tolower for the contraction letters.
func toLower(c rune) rune {
	if c >= 'A' && c <= 'Z' {
		return c + ('a' - 'A')
	}
	if c < 0 {
		return c
	}
	return unicode.ToLower(c)
}

// Unicode categories llama.cpp collapses (k_ucat_enum), their marker
// characters (k_ucat_cpt) and ASCII members (k_ucat_map).
var collapseClasses = map[string]struct {
	marker rune
	ascii  string
}{
	`\p{N}`:  {0xD1, `0-9`},
	`\p{L}`:  {0xD2, `A-Za-z`},
	`\p{P}`:  {0xD3, `!-#%-*,-/:-;?-@\[-\]_\{\}`},
	`\p{M}`:  {0xD4, ``},
	`\p{S}`:  {0xD5, "\\$\\+<->^`\\|"},
	`\p{Lu}`: {0xD2, `A-Za-z`},
	`\p{Ll}`: {0xD2, `A-Za-z`},
	`\p{Lt}`: {0xD2, `A-Za-z`},
	`\p{Lm}`: {0xD2, `A-Za-z`},
	`\p{Lo}`: {0xD2, `A-Za-z`},
}

// regexSplitter runs one regex the way llama.cpp's std::regex fallback does.
type regexSplitter struct {
	expr      string
	re        *regexp2.Regexp
	collapsed bool
}

func newRegexSplitter(expr string) (*regexSplitter, error) {
	collapsed := false
	for k := range collapseClasses {
		if strings.Contains(expr, k) {
			collapsed = true
			break
		}
	}
	src := expr
	if collapsed {
		for _, r := range expr {
			if r >= 128 {
				return nil, fmt.Errorf("%w: regex %q mixes unicode categories and non-ASCII characters", ErrUnsupported, expr)
			}
		}
		src = collapseRegex(expr)
	}
	pat, err := ecmaToRegexp2(src)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: regex %q: %w", expr, err)
	}
	re, err := regexp2.Compile(pat, regexp2.None)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: regex %q (as %q): %w", expr, pat, err)
	}
	return &regexSplitter{expr: expr, re: re, collapsed: collapsed}, nil
}

// collapseRegex rewrites \p{..} classes as llama.cpp does: outside brackets
// to "[marker ascii]", inside brackets to "marker ascii". The marker is
// written as a \u escape.
func collapseRegex(expr string) string {
	var b strings.Builder
	inside := false
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		if c == '[' && (i == 0 || expr[i-1] != '\\') {
			b.WriteByte('[')
			inside = true
			continue
		}
		if inside && c == ']' && expr[i-1] != '\\' {
			b.WriteByte(']')
			inside = false
			continue
		}
		if c == '\\' && i+3 < len(expr) && expr[i+1] == 'p' && expr[i+2] == '{' {
			if j := strings.IndexByte(expr[i+3:], '}'); j >= 0 && i+3+j <= i+10 {
				pat := expr[i : i+3+j+1]
				if cls, ok := collapseClasses[pat]; ok {
					if !inside {
						b.WriteByte('[')
					}
					fmt.Fprintf(&b, `\u%04X`, cls.marker)
					b.WriteString(cls.ascii)
					if !inside {
						b.WriteByte(']')
					}
					i += 3 + j
					continue
				}
			}
		}
		b.WriteByte(c)
	}
	return b.String()
}

// ecmaToRegexp2 adapts an ECMAScript (std::regex) pattern to regexp2's .NET
// syntax where they differ for these patterns: \s and \S are ASCII-only in
// std::regex (the text has no other whitespace left), $ is the end of input
// only, and '[' inside a class is a literal (in .NET "-[" subtracts).
func ecmaToRegexp2(p string) (string, error) {
	const ws = `\t\n\v\f\r `
	var b strings.Builder
	inside := false
	rs := []rune(p)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch {
		case c == '\\' && i+1 < len(rs):
			i++
			switch n := rs[i]; {
			case n == 's' && inside:
				b.WriteString(ws)
			case n == 's':
				b.WriteString("[" + ws + "]")
			case n == 'S' && !inside:
				b.WriteString("[^" + ws + "]")
			case n == 'S' || n == 'd' || n == 'D' || n == 'w' || n == 'W' || n == 'b' || n == 'B':
				return "", fmt.Errorf("%w: escape \\%c", ErrUnsupported, n)
			default:
				b.WriteRune('\\')
				b.WriteRune(n)
			}
		case c == '[' && !inside:
			inside = true
			b.WriteRune(c)
			if i+1 < len(rs) && rs[i+1] == '^' {
				b.WriteRune('^')
				i++
			}
		case c == '[' && inside:
			b.WriteString(`\[`)
		case c == ']' && inside:
			inside = false
			b.WriteRune(c)
		case c == '$' && !inside:
			b.WriteString(`\z`)
		default:
			b.WriteRune(c)
		}
	}
	return b.String(), nil
}

// collapsedMarker is the character a non-ASCII codepoint becomes in the
// collapsed text.
func collapsedMarker(f uint16) rune {
	if f&flagWhitespace != 0 {
		return 0x0B
	}
	switch f & flagCategories {
	case flagNumber:
		return 0xD1
	case flagLetter:
		return 0xD2
	case flagPunctuation:
		return 0xD3
	case flagAccentMark:
		return 0xD4
	case flagSymbol:
		return 0xD5
	}
	return 0xD0
}

func (r *regexSplitter) split(cpts []rune, offsets []int) []int {
	text := make([]rune, len(cpts))
	for i, c := range cpts {
		switch {
		case c < 128:
			text[i] = c
		case r.collapsed:
			text[i] = collapsedMarker(cptFlags(c))
		case cptFlags(c)&flagWhitespace != 0:
			text[i] = 0x0B
		default:
			text[i] = c
		}
	}
	out := make([]int, 0, len(offsets)*2)
	start := 0
	for _, off := range offsets {
		seg := text[start : start+off]
		last := 0
		m, err := r.re.FindRunesMatch(seg)
		for err == nil && m != nil {
			if m.Length > 0 {
				if m.Index > last {
					out = append(out, m.Index-last)
				}
				out = append(out, m.Length)
				last = m.Index + m.Length
			}
			m, err = r.re.FindNextMatch(m)
		}
		if last < off {
			out = append(out, off-last)
		}
		start += off
	}
	return out
}
