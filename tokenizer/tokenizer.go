// Package tokenizer turns text into token ids and back exactly as
// llama.cpp does for GGUF vocabularies: SentencePiece-style BPE
// (tokenizer.ggml.model "llama"), byte-level BPE ("gpt2") with llama.cpp's
// pre-tokenizers (gpt-2, llama-bpe, qwen2, smollm, falcon, deepseek-*, ...
// see SupportedPreTokenizers), and BERT's WordPiece ("bert").
//
// The reference is llama.cpp's src/llama-vocab.cpp and src/unicode.cpp; the
// tests check llama.cpp's own tokenizer vectors, tiktoken and sentencepiece.
// A Tokenizer is immutable after New apart from an internal word cache and
// is safe for concurrent use.
package tokenizer

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/forgepipe/forgepipe/gguf"
)

// Token attributes (llama_token_attr), derived from the token types and
// llama.cpp's by-name fix-ups.
const (
	attrUnknown uint8 = 1 << iota
	attrUnused
	attrNormal
	attrControl
	attrUserDefined
	attrByte
)

// Tokenizer encodes and decodes text for one vocabulary.
type Tokenizer struct {
	vocab   *Vocab
	spm     bool
	wpm     bool
	texts   []string // token texts (empty ones renamed as llama.cpp does)
	tokenID map[string]int32
	scores  []float32
	attr    []uint8

	byteToken [256]int32 // SPM byte fallback; -1 where missing
	bpe       *bpe
	pre       preSpec

	specials       []int32 // control, user-defined and unknown, longest first
	hasUserDefined bool
	eog            map[int32]bool

	piece       []string // token_to_piece(special=false)
	pieceFull   []string // token_to_piece(special=true)
	removeLead  bool     // add_space_prefix: Detokenize strips one leading space
	maxTokenLen int      // WordPiece: longest token in bytes
}

// FromGGUF builds the tokenizer stored in a GGUF file's metadata.
func FromGGUF(md *gguf.Metadata) (*Tokenizer, error) {
	v, err := VocabFromGGUF(md)
	if err != nil {
		return nil, err
	}
	return New(v)
}

// EOG token texts (llama.cpp's special_eog_ids by text).
var eogTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
	"<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]",
	"[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
	"<｜end▁of▁sentence｜>", "[e~["}

// FIM token texts; llama.cpp marks the one it finds of each kind as control,
// and pad, repo and file separator also end generation.
var fimTexts = []struct {
	eog   bool
	texts []string
}{
	{false, []string{"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"}},
	{false, []string{"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"}},
	{false, []string{"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"}},
	{true, []string{"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}},
	{true, []string{"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}},
	{true, []string{"<|file_sep|>"}},
}

// New builds a tokenizer from a vocabulary; it keeps v's slices, which
// must not be modified afterwards. For "gpt2" an unknown
// pre-tokenizer is an error wrapping ErrUnsupported that lists the
// supported ones; an empty one means llama.cpp's "default" regexes.
func New(v *Vocab) (*Tokenizer, error) {
	if v == nil {
		return nil, fmt.Errorf("%w: nil vocabulary", ErrInvalidVocab)
	}
	if err := v.check(); err != nil {
		return nil, err
	}
	n := len(v.Tokens)
	vc := *v
	t := &Tokenizer{
		vocab:   &vc,
		texts:   make([]string, n),
		tokenID: make(map[string]int32, n),
		scores:  v.Scores,
		attr:    make([]uint8, n),
		eog:     map[int32]bool{},
	}
	if t.scores == nil {
		t.scores = make([]float32, n)
	}
	for i, s := range v.Tokens {
		if s == "" {
			s = "[EMPTY_" + strconv.Itoa(i) + "]"
		}
		if prev, dup := t.tokenID[s]; dup {
			return nil, fmt.Errorf("%w: duplicate token %q at ids %d and %d", ErrInvalidVocab, s, prev, i)
		}
		t.tokenID[s] = int32(i)
		t.texts[i] = s
		typ := TokenNormal
		if v.Types != nil {
			typ = v.Types[i]
		}
		switch typ {
		case TokenNormal:
			t.attr[i] = attrNormal
		case TokenUnknown:
			t.attr[i] = attrUnknown
		case TokenControl:
			t.attr[i] = attrControl
		case TokenUserDefined:
			t.attr[i] = attrUserDefined
		case TokenUnused:
			t.attr[i] = attrUnused
		case TokenByte:
			t.attr[i] = attrByte
		}
	}

	switch v.Model {
	case ModelSPM:
		t.spm = true
		const hex = "0123456789ABCDEF"
		for b := 0; b < 256; b++ {
			t.byteToken[b] = -1
			if id, ok := t.tokenID["<0x"+string(hex[b>>4])+string(hex[b&15])+">"]; ok {
				t.byteToken[b] = id
			} else if id, ok := t.tokenID[string([]byte{byte(b)})]; ok {
				t.byteToken[b] = id
			}
		}
	case ModelBPE:
		spec, ok := preTokenizers[v.Pre]
		if !ok {
			return nil, fmt.Errorf("%w: pre-tokenizer %q (supported: %s)", ErrUnsupported, v.Pre, strings.Join(SupportedPreTokenizers(), ", "))
		}
		t.pre = spec
		b, err := newBPE(t, spec, v.Merges)
		if err != nil {
			return nil, err
		}
		t.bpe = b
	case ModelWPM:
		t.wpm = true
		t.pre.cleanSpaces = true
		for _, s := range t.texts {
			t.maxTokenLen = max(t.maxTokenLen, len(s))
		}
	default:
		return nil, fmt.Errorf("%w: tokenizer model %q (supported: %q, %q, %q)", ErrUnsupported, v.Model, ModelSPM, ModelBPE, ModelWPM)
	}
	t.fixAttributes()
	t.removeLead = v.AddSpacePrefix

	for id := range t.attr {
		if t.attr[id]&(attrControl|attrUserDefined|attrUnknown) != 0 {
			t.specials = append(t.specials, int32(id))
			if t.attr[id]&attrUserDefined != 0 {
				t.hasUserDefined = true
			}
		}
	}
	sort.SliceStable(t.specials, func(i, j int) bool {
		return len(t.texts[t.specials[i]]) > len(t.texts[t.specials[j]])
	})

	t.piece = make([]string, n)
	t.pieceFull = make([]string, n)
	for id := range t.texts {
		t.piece[id] = t.tokenToPiece(int32(id), false)
		t.pieceFull[id] = t.tokenToPiece(int32(id), true)
	}
	return t, nil
}

// fixAttributes applies llama.cpp's by-text corrections: end-of-generation
// and FIM tokens become control tokens, a few gpt-oss tokens become
// user-defined, and the EOG set is collected.
func (t *Tokenizer) fixAttributes() {
	v := t.vocab
	for _, fim := range fimTexts {
		for _, s := range fim.texts {
			if id, ok := t.tokenID[s]; ok {
				t.attr[id] |= attrControl
				if fim.eog {
					t.eog[id] = true
				}
				break
			}
		}
	}
	for _, s := range eogTexts {
		if id, ok := t.tokenID[s]; ok {
			t.eog[id] = true
			t.attr[id] |= attrControl
		}
	}
	for _, s := range []string{"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"} {
		if id, ok := t.tokenID[s]; ok {
			t.attr[id] = attrUserDefined
		}
	}
	for _, id := range []int32{v.EOS, v.EOT, v.EOM} {
		if id >= 0 {
			t.eog[id] = true
		}
	}
	has := func(s string) (int32, bool) {
		id, ok := t.tokenID[s]
		return id, ok && t.eog[id]
	}
	_, ret := has("<|return|>")
	_, call := has("<|call|>")
	_, calls := has("<|calls|>")
	_, flush := has("<|flush|>")
	if end, ok := has("<|end|>"); ok && ((ret && call) || ((call || calls) && flush)) {
		delete(t.eog, end)
		t.attr[end] = attrUserDefined
	}
	if s, ok := has("</s>"); ok {
		if _, tr := has("<|tool_response>"); tr {
			delete(t.eog, s)
			t.attr[s] = attrNormal
		}
	}
}

// tokenToPiece is llama_vocab::token_to_piece without lstrip: the bytes a
// token stands for. Control and unknown tokens are empty unless special.
func (t *Tokenizer) tokenToPiece(id int32, special bool) string {
	a := t.attr[id]
	if !special && a&(attrUnknown|attrControl) != 0 {
		return ""
	}
	text := t.texts[id]
	switch {
	case a&(attrUnknown|attrControl|attrUserDefined) != 0:
		return text
	case a&attrNormal != 0:
		if t.spm || t.wpm {
			return strings.ReplaceAll(text, spaceEscape, " ")
		}
		return decodeByteLevel(text)
	case a&attrByte != 0:
		if len(text) >= 5 {
			if b, err := strconv.ParseUint(text[3:5], 16, 8); err == nil {
				return string([]byte{byte(b)})
			}
		}
		return "\x00" // strtol's answer for a malformed byte token
	}
	return ""
}

// decodeByteLevel maps GPT-2 byte-level characters back to bytes
// (llama_decode_text), marking characters outside the mapping as llama.cpp
// does.
func decodeByteLevel(text string) string {
	var b []byte
	for _, c := range decodeCpts(text, nil) {
		if by, ok := runeToByte[c]; ok {
			b = append(b, by)
			continue
		}
		u := appendCpt(nil, c)
		b = append(b, "[UNK_BYTE_0x"...)
		for _, x := range u {
			b = append(b, fmt.Sprintf("%02x", x)...)
		}
		b = append(b, text...)
		b = append(b, ']')
	}
	return string(b)
}

// fragment is a piece of the input: raw text [start, end) or a token.
type fragment struct {
	id         int32 // -1 for raw text
	start, end int
}

// partition is llama.cpp's tokenizer_st_partition: special-token texts,
// longest first, are cut out of the raw text. Without parseSpecial only
// user-defined tokens are.
func (t *Tokenizer) partition(text string, parseSpecial bool) []fragment {
	if text == "" {
		return nil
	}
	frags := []fragment{{id: -1, start: 0, end: len(text)}}
	if !parseSpecial && !t.hasUserDefined {
		return frags
	}
	var next []fragment
	for _, id := range t.specials {
		if !parseSpecial && t.attr[id]&(attrControl|attrUnknown) != 0 {
			continue
		}
		tok := t.texts[id]
		next = next[:0]
		changed := false
		for _, f := range frags {
			if f.id >= 0 {
				next = append(next, f)
				continue
			}
			pos := f.start
			for pos < f.end {
				i := strings.Index(text[pos:f.end], tok)
				if i < 0 {
					break
				}
				changed = true
				if i > 0 {
					next = append(next, fragment{id: -1, start: pos, end: pos + i})
				}
				next = append(next, fragment{id: id})
				pos += i + len(tok)
			}
			if pos < f.end {
				next = append(next, fragment{id: -1, start: pos, end: f.end})
			}
		}
		if changed {
			frags, next = next, frags
		}
	}
	return frags
}

// Encode returns the token ids of text as llama_tokenize does. addSpecial
// adds BOS and EOS as the vocabulary asks (AddBOS, AddEOS); parseSpecial
// turns the text of control tokens (e.g. "<|eot_id|>") into those tokens
// instead of tokenizing it as text. User-defined tokens are always matched.
func (t *Tokenizer) Encode(text string, addSpecial, parseSpecial bool) []int32 {
	v := t.vocab
	frags := t.partition(text, parseSpecial)
	out := make([]int32, 0, len(text)/3+2)
	if addSpecial && (v.AddBOS || (t.wpm && v.BOS >= 0)) { // WordPiece always adds [CLS]
		out = append(out, v.BOS)
	}
	prevSpecial := true // SPM: a space is prefixed to text after a special token
	for _, f := range frags {
		if f.id >= 0 {
			out = append(out, f.id)
			prevSpecial = true
			continue
		}
		raw := text[f.start:f.end]
		if t.spm {
			if v.AddSpacePrefix && prevSpecial {
				raw = " " + raw
			}
			out = t.spmEncode(raw, out)
		} else if t.wpm {
			out = t.wpmEncode(raw, out)
		} else {
			out = t.bpe.encode(raw, out)
		}
		prevSpecial = false
	}
	if addSpecial && v.AddEOS {
		out = append(out, v.EOS)
	}
	if addSpecial && t.wpm && v.SEP >= 0 {
		out = append(out, v.SEP)
	}
	return out
}

// Piece returns the bytes token id stands for, as llama.cpp's
// token_to_piece with special = true: control and user-defined tokens give
// their text, a byte token its single byte (not valid UTF-8 alone). An id
// outside the vocabulary gives "".
func (t *Tokenizer) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.pieceFull) {
		return ""
	}
	return t.pieceFull[id]
}

// pieceText is the piece Decode renders: control and unknown tokens are not
// rendered (llama.cpp's detokenize with unparse_special = false).
func (t *Tokenizer) pieceText(id int32) string {
	if id < 0 || int(id) >= len(t.piece) {
		return ""
	}
	return t.piece[id]
}

// Decode returns the text of ids: the concatenation of their pieces, with
// control and unknown tokens not rendered, as llama.cpp's token_to_piece
// (special = false) gives them. Byte sequences that are not valid UTF-8
// become U+FFFD, one per byte, so that the result equals what a Decoder
// streams. Ids outside the vocabulary are skipped.
func (t *Tokenizer) Decode(ids []int32) string {
	var raw []byte
	for _, id := range ids {
		raw = append(raw, t.pieceText(id)...)
	}
	var sb strings.Builder
	rest := appendValid(&sb, raw)
	appendFlush(&sb, rest)
	return sb.String()
}

// DecodeBytes is Decode without the UTF-8 repair: llama.cpp's bytes exactly.
func (t *Tokenizer) DecodeBytes(ids []int32) []byte {
	var raw []byte
	for _, id := range ids {
		raw = append(raw, t.pieceText(id)...)
	}
	return raw
}

// Detokenize is llama_detokenize: removeSpecial drops a leading BOS and
// trailing EOS the vocabulary adds, unparseSpecial renders control tokens,
// a vocabulary with AddSpacePrefix loses one leading space, and the BPE
// pre-tokenizers that ask for it get clean_up_tokenization_spaces (" ." ->
// "." and the like). The bytes are returned as they are.
func (t *Tokenizer) Detokenize(ids []int32, removeSpecial, unparseSpecial bool) string {
	v := t.vocab
	removeSpace := t.removeLead
	if removeSpecial && v.AddBOS && len(ids) > 0 && ids[0] == v.BOS {
		removeSpace = false
		ids = ids[1:]
	}
	if removeSpecial && v.AddEOS && len(ids) > 0 && ids[len(ids)-1] == v.EOS {
		ids = ids[:len(ids)-1]
	}
	var text []byte
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.piece) {
			continue
		}
		p := t.piece[id]
		if unparseSpecial {
			p = t.pieceFull[id]
		}
		if removeSpace && strings.HasPrefix(p, " ") {
			p = p[1:]
		}
		removeSpace = false
		text = append(text, p...)
	}
	if t.pre.cleanSpaces {
		text = cleanSpaces(text)
	}
	return string(text)
}

// cleanSpaces is the three in-place passes of llama.cpp's clean_spaces,
// ported literally (including the NUL it writes over a dropped space).
func cleanSpaces(text []byte) []byte {
	text = append([]byte(nil), text...)
	// " ?", " !", " .", " ," lose the space.
	n := len(text)
	total := min(n, 1)
	for i := 1; i < n; i++ {
		x := text[i]
		if text[i-1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') {
			total--
		}
		text[total] = x
		total++
	}
	// " ' " loses both spaces.
	n = total
	total = min(n, 1)
	for i := 1; i < n; i++ {
		x := text[i]
		if x == '\'' && i+1 < n && text[i-1] == ' ' && text[i+1] == ' ' {
			total--
			i++
			text[i] = 0
		}
		text[total] = x
		total++
	}
	// " 's", " 'm", " 're", " 've" lose the space.
	n = total
	total = min(n, 1)
	for i := 1; i < n; i++ {
		x := text[i]
		if text[i-1] == ' ' && x == '\'' && i+1 < n {
			x1 := text[i+1]
			if x1 == 's' || x1 == 'm' {
				total--
			} else if x1 != 't' && x1 != 'd' && i+2 < n {
				x2 := text[i+2]
				if (x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e') {
					total--
				}
			}
		}
		text[total] = x
		total++
	}
	return text[:total]
}

// VocabSize is the number of tokens.
func (t *Tokenizer) VocabSize() int { return len(t.texts) }

// BOS is the beginning-of-sequence token id, -1 if none.
func (t *Tokenizer) BOS() int32 { return t.vocab.BOS }

// EOS is the end-of-sequence token id, -1 if none.
func (t *Tokenizer) EOS() int32 { return t.vocab.EOS }

// AddBOS reports whether Encode with addSpecial prepends BOS.
func (t *Tokenizer) AddBOS() bool { return t.vocab.AddBOS }

// IsEOG reports whether id ends generation: EOS, EOT, EOM and the tokens
// llama.cpp recognises by text (<|eot_id|>, <|im_end|>, <|endoftext|>, ...).
func (t *Tokenizer) IsEOG(id int32) bool { return t.eog[id] }

// Vocab returns the vocabulary the tokenizer was built from; callers must
// not modify it.
func (t *Tokenizer) Vocab() *Vocab { return t.vocab }

// IsControl reports whether id is a control token (not rendered by Decode).
func (t *Tokenizer) IsControl(id int32) bool {
	return id >= 0 && int(id) < len(t.attr) && t.attr[id]&attrControl != 0
}

// appendValid writes the longest prefix of b that can be decided: complete
// UTF-8 sequences as they are, invalid bytes as U+FFFD. It returns the
// undecided tail (an incomplete sequence of at most 3 bytes).
func appendValid(sb *strings.Builder, b []byte) []byte {
	i := 0
	for i < len(b) {
		if !utf8.FullRune(b[i:]) {
			break
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			sb.WriteString("\uFFFD")
		} else {
			sb.Write(b[i : i+size])
		}
		i += size
	}
	return b[i:]
}

// appendFlush writes an undecided tail at the end of the input: each byte
// is U+FFFD.
func appendFlush(sb *strings.Builder, tail []byte) {
	for range tail {
		sb.WriteString("\uFFFD")
	}
}
