// Package synth writes synthetic llama-family models: GGUF files with the
// tensor names, shapes and metadata of a real llama or qwen2 model and
// random weights. They are used to benchmark and test the engine at sizes
// (1B, 8B) that are not shipped with the repository.
//
// The weights are deterministic for a seed, never exactly zero before
// quantisation, and scaled so that activations and logits stay in a sensible
// range through any number of layers.
package synth

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/model/quantize"
)

// Architectures lists the architectures Write can produce.
var Architectures = []string{"llama", "qwen2"}

// ErrInvalidSpec is wrapped by every Spec validation error.
var ErrInvalidSpec = errors.New("invalid synthetic model spec")

// Spec describes a synthetic model.
type Spec struct {
	Arch    string // "llama" or "qwen2" (q/k/v biases, NeoX rope, eps 1e-6)
	Name    string // general.name; "" gives "synthetic-<arch>"
	Dim     int    // embedding_length
	Layers  int    // block_count
	Heads   int    // attention.head_count
	KVHeads int    // attention.head_count_kv
	FFN     int    // feed_forward_length
	Context int    // context_length

	// Type is the type of every weight matrix, token_embd and output
	// included. Norms and biases are always F32.
	Type gguf.Type
	// Seed selects the weights; the same Spec writes the same bytes.
	Seed uint64

	// Tokenizer holds the tokenizer.* metadata to write (see TokenizerKVs);
	// the vocabulary size is then the length of tokenizer.ggml.tokens.
	Tokenizer []gguf.KV
	// Vocab is the vocabulary size of a model written without a tokenizer.
	// It must be 0 or agree with Tokenizer when Tokenizer is set.
	Vocab int
}

type preset struct {
	dim, layers, heads, kvHeads, ffn, ctx int
}

var presets = map[string]preset{
	"tiny": {dim: 256, layers: 2, heads: 8, kvHeads: 4, ffn: 512, ctx: 512},
	"1b":   {dim: 2048, layers: 16, heads: 32, kvHeads: 8, ffn: 8192, ctx: 4096},
	"8b":   {dim: 4096, layers: 32, heads: 32, kvHeads: 8, ffn: 14336, ctx: 8192},
}

// Presets lists the preset names, smallest first.
func Presets() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return presets[names[i]].dim < presets[names[j]].dim })
	return names
}

// Preset returns the shape of a named preset ("tiny", "1b", "8b") as a llama
// Spec with F16 matrices, seed 1 and no tokenizer. "1b" and "8b" have the
// shapes of Llama 3.2 1B and Llama 3.1 8B (apart from the vocabulary, which
// comes from the tokenizer); "tiny" is small enough for unit tests.
func Preset(name string) (Spec, error) {
	p, ok := presets[name]
	if !ok {
		return Spec{}, fmt.Errorf("%w: unknown preset %q (want one of %s)", ErrInvalidSpec, name, strings.Join(Presets(), ", "))
	}
	return Spec{
		Arch: "llama", Dim: p.dim, Layers: p.layers, Heads: p.heads, KVHeads: p.kvHeads,
		FFN: p.ffn, Context: p.ctx, Type: gguf.TypeF16, Seed: 1,
	}, nil
}

// TokenizerKVs returns the tokenizer.* entries of md, in file order, for
// Spec.Tokenizer.
func TokenizerKVs(md *gguf.Metadata) []gguf.KV {
	var out []gguf.KV
	for _, kv := range md.KVs {
		if strings.HasPrefix(kv.Key, "tokenizer.") {
			out = append(out, kv)
		}
	}
	return out
}

// TokenizerFrom opens a GGUF file (a model or a vocabulary-only file) and
// returns its tokenizer.* entries.
func TokenizerFrom(path string) ([]gguf.KV, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer source: %w", err)
	}
	defer f.Close()
	kvs := TokenizerKVs(f.Metadata)
	if len(kvs) == 0 {
		return nil, fmt.Errorf("tokenizer source %s: no tokenizer.* metadata", path)
	}
	return kvs, nil
}

// VocabSize is the number of tokens of the model: the length of
// tokenizer.ggml.tokens when a tokenizer is set, else Vocab.
func (s *Spec) VocabSize() int {
	for _, kv := range s.Tokenizer {
		if kv.Key == "tokenizer.ggml.tokens" {
			if a, ok := kv.Value.(gguf.Array); ok {
				return a.Len()
			}
		}
	}
	return s.Vocab
}

// HeadDim is the width of one attention head.
func (s *Spec) HeadDim() int { return s.Dim / s.Heads }

// Validate reports the first problem with s.
func (s *Spec) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
	}
	switch {
	case s.Arch != "llama" && s.Arch != "qwen2":
		return bad("architecture %q (want one of %s)", s.Arch, strings.Join(Architectures, ", "))
	case s.Dim <= 0 || s.Layers <= 0 || s.Heads <= 0 || s.KVHeads <= 0 || s.FFN <= 0 || s.Context <= 0:
		return bad("dim %d, layers %d, heads %d, kv-heads %d, ffn %d and ctx %d must all be > 0",
			s.Dim, s.Layers, s.Heads, s.KVHeads, s.FFN, s.Context)
	case s.Dim%s.Heads != 0:
		return bad("dim %d is not a multiple of heads %d", s.Dim, s.Heads)
	case s.Heads%s.KVHeads != 0:
		return bad("heads %d is not a multiple of kv-heads %d", s.Heads, s.KVHeads)
	case s.HeadDim()%2 != 0:
		return bad("head dim %d is odd (rope rotates pairs)", s.HeadDim())
	}
	if _, err := quantize.FileType(s.Type); err != nil {
		return bad("type: %v", err)
	}
	if !s.Type.Supported() {
		return bad("type %s is not supported", s.Type)
	}
	if bs := s.Type.BlockSize(); s.Dim%bs != 0 || s.FFN%bs != 0 {
		return bad("dim %d and ffn %d must be multiples of %s's block size %d", s.Dim, s.FFN, s.Type, bs)
	}
	vocab := s.VocabSize()
	if vocab <= 0 {
		return bad("no vocabulary: set a tokenizer or Vocab")
	}
	if s.Vocab != 0 && s.Vocab != vocab {
		return bad("vocab %d disagrees with the tokenizer's %d tokens", s.Vocab, vocab)
	}
	return nil
}

// Params is the number of weights (elements of all tensors) the model has.
func (s *Spec) Params() int64 {
	var n int64
	for _, t := range s.tensors() {
		n += int64(t.elements())
	}
	return n
}
