package model

import (
	"fmt"
	"time"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/tokenizer"
)

// Model is a loaded model: configuration, tokenizer and weights bound to
// views of the mapped file.
type Model struct {
	Config    *Config
	Tokenizer *tokenizer.Tokenizer
	Globals   Globals
	Blocks    []*Block
	File      *gguf.File

	contextSize  int
	loadDuration time.Duration
}

// Options tune Open.
type Options struct {
	// ContextSize caps the tokens a sequence may hold; 0 means the model's
	// trained context length.
	ContextSize int
	// Progress, if set, is called while the weights are read in (pre-faulted)
	// with the bytes done and the total.
	Progress func(done, total int64)
	// NoPrefault skips reading the weights in at Open; pages are then read
	// on first use.
	NoPrefault bool
}

// Open maps a GGUF file, reads its configuration, builds its tokenizer and
// binds every weight. Errors name what is wrong (a missing tensor, an
// unsupported architecture or tensor type).
func Open(path string, opts Options) (*Model, error) {
	start := time.Now()
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := Load(f, opts)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.loadDuration = time.Since(start)
	return m, nil
}

// Load binds a model to an already open file. The model does not own f
// unless it was opened by Open.
func Load(f *gguf.File, opts Options) (*Model, error) {
	cfg, err := ConfigFromGGUF(f.Header)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.FromGGUF(f.Metadata)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if tok.VocabSize() > cfg.Vocab {
		return nil, fmt.Errorf("tokenizer has %d tokens but the embedding only %d rows", tok.VocabSize(), cfg.Vocab)
	}
	m := &Model{Config: cfg, Tokenizer: tok, File: f}
	if err := Bind(f, "", cfg, &m.Globals); err != nil {
		return nil, err
	}
	if m.Globals.Output == nil {
		m.Globals.Output = m.Globals.TokenEmbd
	}
	if m.Globals.RopeFreqs != nil {
		cfg.Rope.FreqFactors = m.Globals.RopeFreqs
	}
	m.Blocks = make([]*Block, cfg.Layers)
	for i := range m.Blocks {
		b := new(Block)
		if err := Bind(f, BlockPrefix(i), cfg, b); err != nil {
			return nil, fmt.Errorf("block %d: %w", i, err)
		}
		m.Blocks[i] = b
	}
	m.contextSize = cfg.ContextLen
	if opts.ContextSize > 0 {
		m.contextSize = opts.ContextSize
	}
	if !opts.NoPrefault {
		prefault(f, opts.Progress)
	}
	return m, nil
}

// ContextSize is the most tokens one sequence may hold.
func (m *Model) ContextSize() int { return m.contextSize }

// Close unmaps the model's file.
func (m *Model) Close() error { return m.File.Close() }

// prefault reads every tensor's pages so the first token does not wait on
// the disk, reporting progress by bytes.
func prefault(f *gguf.File, progress func(done, total int64)) {
	var total int64
	for _, t := range f.Tensors {
		total += int64(t.Size)
	}
	var done int64
	const page = 4096
	var sink byte
	for _, t := range f.Tensors {
		data := f.TensorData(t)
		for i := 0; i < len(data); i += page {
			sink ^= data[i]
		}
		done += int64(t.Size)
		if progress != nil {
			progress(done, total)
		}
	}
	prefaultSink = sink // keeps the reads from being optimised away
}

var prefaultSink byte
