// Package model describes the llama-family transformers forgepipe runs:
// their configuration read from GGUF metadata, their weights bound to plain
// structs by GGUF tensor name, and a plain sequential forward pass (the
// "eager" reference the actor pipeline is compared with).
package model

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/kernels"
)

// ErrUnknownArch is wrapped when general.architecture is not supported.
var ErrUnknownArch = errors.New("unsupported architecture")

// archSpec is what differs between the architectures we run. Adding an
// architecture is adding an entry here (and, if its block differs, a field
// in Block).
type archSpec struct {
	rope       kernels.RopeMode
	defaultEps float32
}

var archs = map[string]archSpec{
	"llama": {rope: kernels.RopeNormal, defaultEps: 1e-5}, // llama 2/3, TinyLlama, SmolLM, Mistral dense
	"qwen2": {rope: kernels.RopeNeoX, defaultEps: 1e-6},   // q/k/v biases
}

// SupportedArchitectures lists the general.architecture values we run.
func SupportedArchitectures() []string {
	names := make([]string, 0, len(archs))
	for n := range archs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Config is a model's shape and numerics, read from GGUF metadata.
type Config struct {
	Arch       string
	Name       string
	Layers     int // block_count
	Dim        int // embedding_length
	FFN        int // feed_forward_length
	Heads      int // attention.head_count
	KVHeads    int // attention.head_count_kv
	HeadDim    int // attention.key_length, default Dim/Heads
	Vocab      int
	ContextLen int     // context_length (trained)
	RMSEps     float32 // attention.layer_norm_rms_epsilon
	Rope       kernels.Rope
}

// QDim is the width of all query heads together.
func (c *Config) QDim() int { return c.Heads * c.HeadDim }

// KVDim is the width of all key (or value) heads together.
func (c *Config) KVDim() int { return c.KVHeads * c.HeadDim }

// ConfigFromGGUF reads a model's configuration from its header. It touches
// no tensor data.
func ConfigFromGGUF(h *gguf.Header) (*Config, error) {
	md := h.Metadata
	arch := h.Architecture()
	spec, ok := archs[arch]
	if !ok {
		if arch == "" {
			arch = "(none)"
		}
		return nil, fmt.Errorf("%w %q: supported are %s", ErrUnknownArch, arch, strings.Join(SupportedArchitectures(), ", "))
	}
	c := &Config{Arch: arch}
	c.Name, _ = md.String("general.name")
	key := func(k string) string { return arch + "." + k }

	var err error
	req := func(k string) int {
		if err != nil {
			return 0
		}
		v, ok := md.Uint(key(k))
		if !ok {
			if kv, present := md.Get(key(k)); present {
				err = fmt.Errorf("metadata %s: want an unsigned integer, got %s", key(k), kv.Type)
			} else {
				err = fmt.Errorf("metadata %s: missing", key(k))
			}
			return 0
		}
		if v == 0 || v > 1<<24 {
			err = fmt.Errorf("metadata %s: %d out of range", key(k), v)
		}
		return int(v)
	}
	opt := func(k string, def int) int {
		if !md.Has(key(k)) {
			return def
		}
		return req(k)
	}
	c.Layers = req("block_count")
	c.Dim = req("embedding_length")
	c.FFN = req("feed_forward_length")
	c.Heads = req("attention.head_count")
	c.KVHeads = opt("attention.head_count_kv", c.Heads)
	c.ContextLen = opt("context_length", 2048)
	if err != nil {
		return nil, err
	}
	if c.Dim%c.Heads != 0 && !md.Has(key("attention.key_length")) {
		return nil, fmt.Errorf("embedding_length %d is not a multiple of head_count %d", c.Dim, c.Heads)
	}
	c.HeadDim = opt("attention.key_length", c.Dim/c.Heads)
	if vl := opt("attention.value_length", c.HeadDim); vl != c.HeadDim {
		return nil, fmt.Errorf("attention.value_length %d differs from key_length %d: not supported", vl, c.HeadDim)
	}
	if c.Heads%c.KVHeads != 0 {
		return nil, fmt.Errorf("head_count %d is not a multiple of head_count_kv %d", c.Heads, c.KVHeads)
	}
	if err != nil {
		return nil, err
	}

	c.RMSEps = spec.defaultEps
	if v, ok := md.Float(key("attention.layer_norm_rms_epsilon")); ok {
		c.RMSEps = float32(v)
	}
	if !(c.RMSEps > 0) || c.RMSEps > 1 {
		return nil, fmt.Errorf("attention.layer_norm_rms_epsilon %g out of range", c.RMSEps)
	}

	if err := c.readRope(md, key, spec); err != nil {
		return nil, err
	}

	if emb, ok := h.Tensor("token_embd.weight"); ok && len(emb.Shape) == 2 {
		c.Vocab = int(emb.Shape[1])
	} else if v, ok := md.Uint(key("vocab_size")); ok {
		c.Vocab = int(v)
	} else if toks, ok := md.Strings("tokenizer.ggml.tokens"); ok {
		c.Vocab = len(toks)
	}
	return c, nil
}

func (c *Config) readRope(md *gguf.Metadata, key func(string) string, spec archSpec) error {
	r := kernels.Rope{Dims: c.HeadDim, Base: 10000, Mode: spec.rope, FreqScale: 1, AttnFactor: 1}
	if v, ok := md.Uint(key("rope.dimension_count")); ok {
		r.Dims = int(v)
	}
	if r.Dims <= 0 || r.Dims > c.HeadDim || r.Dims%2 != 0 {
		return fmt.Errorf("rope.dimension_count %d: want an even number in [2, %d]", r.Dims, c.HeadDim)
	}
	if v, ok := md.Float(key("rope.freq_base")); ok {
		r.Base = float32(v)
	}
	if !(r.Base > 1) || math.IsInf(float64(r.Base), 0) {
		return fmt.Errorf("rope.freq_base %g out of range", r.Base)
	}
	// Older files carry rope.scale_linear; newer ones rope.scaling.{type,factor}.
	factor := 1.0
	if v, ok := md.Float(key("rope.scale_linear")); ok {
		factor = v
	}
	scaling, _ := md.String(key("rope.scaling.type"))
	if v, ok := md.Float(key("rope.scaling.factor")); ok && v > 0 {
		factor = v
	}
	switch scaling {
	case "", "none":
		if scaling == "none" {
			factor = 1
		}
	case "linear":
	case "yarn":
		r.ExtFactor = 1
		r.BetaFast, r.BetaSlow = 32, 1
		if v, ok := md.Float(key("rope.scaling.yarn_ext_factor")); ok && v >= 0 {
			r.ExtFactor = float32(v)
		}
		if v, ok := md.Float(key("rope.scaling.attn_factor")); ok && v > 0 {
			r.AttnFactor = float32(v)
		}
		if v, ok := md.Float(key("rope.scaling.yarn_beta_fast")); ok {
			r.BetaFast = float32(v)
		}
		if v, ok := md.Float(key("rope.scaling.yarn_beta_slow")); ok {
			r.BetaSlow = float32(v)
		}
		r.OrigCtx = c.ContextLen
		if v, ok := md.Uint(key("rope.scaling.original_context_length")); ok {
			r.OrigCtx = int(v)
		}
	default:
		return fmt.Errorf("rope.scaling.type %q not supported (none, linear, yarn)", scaling)
	}
	if !(factor > 0) || math.IsInf(factor, 0) {
		return fmt.Errorf("rope scaling factor %g out of range", factor)
	}
	r.FreqScale = float32(1 / factor)
	c.Rope = r
	return nil
}
