package tokenizer

import (
	"errors"
	"fmt"

	"github.com/forgepipe/forgepipe/gguf"
)

// Token types as stored in tokenizer.ggml.token_type (llama.cpp's
// llama_token_type).
const (
	TokenUndefined   int32 = 0
	TokenNormal      int32 = 1
	TokenUnknown     int32 = 2
	TokenControl     int32 = 3
	TokenUserDefined int32 = 4
	TokenUnused      int32 = 5
	TokenByte        int32 = 6
)

// Tokenizer model names (tokenizer.ggml.model) this package implements.
const (
	ModelSPM = "llama" // SentencePiece BPE with byte fallback
	ModelBPE = "gpt2"  // byte-level BPE
	ModelWPM = "bert"  // WordPiece (BERT embedding models)
)

// ErrUnsupported is wrapped by the errors for tokenizer models and
// pre-tokenizers this package does not implement.
var ErrUnsupported = errors.New("tokenizer: unsupported")

// ErrInvalidVocab is wrapped by the errors for missing or inconsistent
// tokenizer metadata.
var ErrInvalidVocab = errors.New("tokenizer: invalid vocabulary")

// Vocab is a tokenizer's data as a GGUF file stores it under tokenizer.*,
// with special ids and flags resolved the way llama.cpp's llama_vocab::load
// resolves them. Special ids are -1 when absent.
type Vocab struct {
	Model, Pre string // tokenizer.ggml.model, tokenizer.ggml.pre

	Tokens []string
	Scores []float32 // nil: all 0
	Types  []int32   // nil: all TokenNormal; see the Token* constants
	Merges []string  // "left right", rank = index (gpt2 only)

	BOS, EOS, UNK, PAD, EOT, EOM int32

	AddBOS, AddEOS, AddSpacePrefix bool

	ChatTemplate string

	// SEP is the separator token (tokenizer.ggml.seperator_token_id), which
	// WordPiece ("bert") appends with addSpecial; -1 when absent.
	// NoLowercase and KeepAccents (bert only) turn off the BERT
	// normaliser's defaults.
	SEP                      int32
	NoLowercase, KeepAccents bool
}

// GGUF metadata keys read by VocabFromGGUF.
const (
	KeyModel          = "tokenizer.ggml.model"
	KeyPre            = "tokenizer.ggml.pre"
	KeyTokens         = "tokenizer.ggml.tokens"
	KeyScores         = "tokenizer.ggml.scores"
	KeyTokenType      = "tokenizer.ggml.token_type"
	KeyMerges         = "tokenizer.ggml.merges"
	KeyBOS            = "tokenizer.ggml.bos_token_id"
	KeyEOS            = "tokenizer.ggml.eos_token_id"
	KeyEOT            = "tokenizer.ggml.eot_token_id"
	KeyEOM            = "tokenizer.ggml.eom_token_id"
	KeyUNK            = "tokenizer.ggml.unknown_token_id"
	KeyPAD            = "tokenizer.ggml.padding_token_id"
	KeyAddBOS         = "tokenizer.ggml.add_bos_token"
	KeyAddEOS         = "tokenizer.ggml.add_eos_token"
	KeyAddSpacePrefix = "tokenizer.ggml.add_space_prefix"
	KeyChatTemplate   = "tokenizer.chat_template"
	KeySEP            = "tokenizer.ggml.seperator_token_id" // sic
	KeyLowercase      = "tokenizer.ggml.normalizer.lowercase"
	KeyStripAccents   = "tokenizer.ggml.normalizer.strip_accents"
)

// VocabFromGGUF reads the tokenizer from a GGUF file's metadata. Defaults
// for absent keys follow llama.cpp: for "llama" BOS 1, EOS 2, UNK 0,
// add_bos true, add_space_prefix true; for "gpt2" BOS = EOS = 11 (dropped
// when out of range), no UNK, add_bos true only for the llama3 family of
// pre-tokenizers (and tekken), add_space_prefix false; for "bert" BOS
// ([CLS]) 101, UNK 100, SEP 102, PAD 0, lowercase and strip accents. EOT and EOM, when
// their keys are absent, are found by token text (<|eot_id|>, <|im_end|>,
// <|endoftext|>, ...) as llama.cpp does.
func VocabFromGGUF(md *gguf.Metadata) (*Vocab, error) {
	model, ok := md.String(KeyModel)
	if !ok {
		return nil, fmt.Errorf("%w: %s missing or not a string", ErrInvalidVocab, KeyModel)
	}
	if model != ModelSPM && model != ModelBPE && model != ModelWPM {
		return nil, fmt.Errorf("%w: tokenizer model %q (supported: %q, %q, %q)", ErrUnsupported, model, ModelSPM, ModelBPE, ModelWPM)
	}
	v := &Vocab{Model: model}
	if kv, has := md.Get(KeyPre); has {
		s, isStr := kv.Value.(string)
		if !isStr {
			return nil, fmt.Errorf("%w: %s is %s, want string", ErrInvalidVocab, KeyPre, kv.Type)
		}
		v.Pre = s
	}

	tokens, ok := md.Strings(KeyTokens)
	if !ok {
		return nil, fmt.Errorf("%w: %s missing or not an array of strings", ErrInvalidVocab, KeyTokens)
	}
	n := len(tokens)
	if n == 0 {
		return nil, fmt.Errorf("%w: %s is empty", ErrInvalidVocab, KeyTokens)
	}
	v.Tokens = tokens

	if md.Has(KeyScores) {
		scores, ok := md.Float32s(KeyScores)
		if !ok {
			ints, isInt := md.Int32s(KeyScores)
			if !isInt {
				return nil, fmt.Errorf("%w: %s is not an array of float32 or int32", ErrInvalidVocab, KeyScores)
			}
			scores = make([]float32, len(ints))
			for i, x := range ints {
				scores[i] = float32(x)
			}
		}
		if len(scores) < n {
			return nil, fmt.Errorf("%w: %s has %d entries for %d tokens", ErrInvalidVocab, KeyScores, len(scores), n)
		}
		v.Scores = scores[:n]
	}
	if md.Has(KeyTokenType) {
		types, ok := md.Int32s(KeyTokenType)
		if !ok {
			return nil, fmt.Errorf("%w: %s is not an array of integers", ErrInvalidVocab, KeyTokenType)
		}
		if len(types) < n {
			return nil, fmt.Errorf("%w: %s has %d entries for %d tokens", ErrInvalidVocab, KeyTokenType, len(types), n)
		}
		v.Types = types[:n]
	}
	if model == ModelBPE {
		merges, ok := md.Strings(KeyMerges)
		if !ok {
			return nil, fmt.Errorf("%w: %s missing or not an array of strings (required for gpt2)", ErrInvalidVocab, KeyMerges)
		}
		v.Merges = merges
	}

	// Defaults, as llama_vocab::impl::load sets them before reading keys.
	v.BOS, v.EOS, v.UNK, v.PAD, v.EOT, v.EOM, v.SEP = -1, -1, -1, -1, -1, -1, -1
	switch model {
	case ModelWPM:
		v.BOS, v.UNK, v.SEP, v.PAD = 101, 100, 102, 0
		v.AddBOS = true
	case ModelSPM:
		v.BOS, v.EOS, v.UNK = 1, 2, 0
		v.AddBOS, v.AddSpacePrefix = true, true
	case ModelBPE:
		v.BOS, v.EOS = 11, 11
		if spec, ok := preTokenizers[v.Pre]; ok {
			v.AddBOS = spec.addBOS
			if spec.noBOS {
				v.BOS = -1
			}
		}
	}
	if b, ok := md.Bool(KeyAddSpacePrefix); ok {
		v.AddSpacePrefix = b
	}
	for _, s := range []struct {
		key string
		id  *int32
	}{{KeyBOS, &v.BOS}, {KeyEOS, &v.EOS}, {KeyEOT, &v.EOT}, {KeyEOM, &v.EOM}, {KeyUNK, &v.UNK}, {KeyPAD, &v.PAD}, {KeySEP, &v.SEP}} {
		if *s.id >= int32(n) {
			*s.id = -1 // default out of range: disabled
		}
		if id, ok := md.Uint(s.key); ok && id < uint64(n) {
			*s.id = int32(id)
		}
	}
	if b, ok := md.Bool(KeyAddBOS); ok {
		v.AddBOS = b
	}
	if b, ok := md.Bool(KeyAddEOS); ok {
		v.AddEOS = b
	}
	if v.AddBOS && v.BOS < 0 {
		return nil, fmt.Errorf("%w: %s is true, but %s is not set", ErrInvalidVocab, KeyAddBOS, KeyBOS)
	}
	if v.AddEOS && v.EOS < 0 {
		return nil, fmt.Errorf("%w: %s is true, but %s is not set", ErrInvalidVocab, KeyAddEOS, KeyEOS)
	}
	if model == ModelWPM {
		if v.SEP < 0 {
			return nil, fmt.Errorf("%w: a bert vocabulary needs %s", ErrInvalidVocab, KeySEP)
		}
		lower, strip := true, true
		if b, ok := md.Bool(KeyLowercase); ok {
			lower, strip = b, b
		}
		if b, ok := md.Bool(KeyStripAccents); ok {
			strip = b
		}
		v.NoLowercase, v.KeepAccents = !lower, !strip
	}
	v.detectEOT()
	if s, ok := md.String(KeyChatTemplate); ok {
		v.ChatTemplate = s
	}
	return v, nil
}

// eotTexts and eomTexts are the token texts llama.cpp takes for EOT and EOM
// when the file does not name them.
var (
	eotTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
		"<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"}
	eomTexts = []string{"<|eom_id|>"}
)

// detectEOT fills EOT and EOM from token texts where they are unset. When
// several tokens qualify, the lowest id wins (llama.cpp takes whichever its
// hash map yields first).
func (v *Vocab) detectEOT() {
	for _, d := range []struct {
		id    *int32
		texts []string
	}{{&v.EOT, eotTexts}, {&v.EOM, eomTexts}} {
		if *d.id >= 0 {
			continue
		}
		for id, tok := range v.Tokens {
			if contains(d.texts, tok) {
				*d.id = int32(id)
				break
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// check validates array lengths and special ids.
func (v *Vocab) check() error {
	n := len(v.Tokens)
	if n == 0 {
		return fmt.Errorf("%w: no tokens", ErrInvalidVocab)
	}
	if v.Scores != nil && len(v.Scores) < n {
		return fmt.Errorf("%w: %d scores for %d tokens", ErrInvalidVocab, len(v.Scores), n)
	}
	if v.Types != nil && len(v.Types) < n {
		return fmt.Errorf("%w: %d token types for %d tokens", ErrInvalidVocab, len(v.Types), n)
	}
	for _, s := range []struct {
		name string
		id   int32
	}{{"BOS", v.BOS}, {"EOS", v.EOS}, {"UNK", v.UNK}, {"PAD", v.PAD}, {"EOT", v.EOT}, {"EOM", v.EOM}, {"SEP", v.SEP}} {
		if s.id < -1 || s.id >= int32(n) {
			return fmt.Errorf("%w: %s id %d outside the vocabulary of %d", ErrInvalidVocab, s.name, s.id, n)
		}
	}
	if v.AddBOS && v.BOS < 0 {
		return fmt.Errorf("%w: AddBOS without a BOS token", ErrInvalidVocab)
	}
	if v.AddEOS && v.EOS < 0 {
		return fmt.Errorf("%w: AddEOS without an EOS token", ErrInvalidVocab)
	}
	return nil
}

// SetMetadata stores the vocabulary under the tokenizer.* keys of a GGUF
// writer, so that VocabFromGGUF reads it back: arrays that are nil and
// special ids that are -1 are left out, and the add_* flags are written
// explicitly.
func (v *Vocab) SetMetadata(w *gguf.Writer) {
	w.Set(KeyModel, v.Model)
	if v.Pre != "" {
		w.Set(KeyPre, v.Pre)
	}
	w.Set(KeyTokens, v.Tokens)
	if v.Scores != nil {
		w.Set(KeyScores, v.Scores)
	}
	if v.Types != nil {
		w.Set(KeyTokenType, v.Types)
	}
	if v.Merges != nil {
		w.Set(KeyMerges, v.Merges)
	}
	for _, s := range []struct {
		key string
		id  int32
	}{{KeyBOS, v.BOS}, {KeyEOS, v.EOS}, {KeyEOT, v.EOT}, {KeyEOM, v.EOM}, {KeyUNK, v.UNK}, {KeyPAD, v.PAD}, {KeySEP, v.SEP}} {
		if s.id >= 0 {
			w.Set(s.key, uint32(s.id))
		}
	}
	if v.Model == ModelWPM {
		w.Set(KeyLowercase, !v.NoLowercase)
		w.Set(KeyStripAccents, !v.KeepAccents)
	}
	w.Set(KeyAddBOS, v.AddBOS)
	w.Set(KeyAddEOS, v.AddEOS)
	w.Set(KeyAddSpacePrefix, v.AddSpacePrefix)
	if v.ChatTemplate != "" {
		w.Set(KeyChatTemplate, v.ChatTemplate)
	}
}
