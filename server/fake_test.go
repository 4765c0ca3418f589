package server

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/tokenizer"
)

// fakeEngine answers every prompt with the pieces in words, and can be
// made full (ErrQueueFull) or blocking (each stream waits for release).
type fakeEngine struct {
	tok     *tokenizer.Tokenizer
	ctxSize int
	words   []string

	mu      sync.Mutex
	full    bool
	waiting bool          // Generate waits for ctx, as a full engine's queue does
	block   chan struct{} // non-nil: streams wait for it to close before their first token
	started chan struct{} // receives once per started stream (buffered)
	last    forgepipe.Request
	live    int
}

var (
	tokOnce sync.Once
	tokVal  *tokenizer.Tokenizer
	tokErr  error
)

func bundledTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	tokOnce.Do(func() {
		f, err := gguf.Open(testutil.BundledModel(t))
		if err != nil {
			tokErr = err
			return
		}
		defer f.Close()
		tokVal, tokErr = tokenizer.FromGGUF(f.Metadata)
	})
	if tokErr != nil {
		t.Fatal(tokErr)
	}
	return tokVal
}

func newFake(t *testing.T) *fakeEngine {
	return &fakeEngine{tok: bundledTokenizer(t), ctxSize: 128, words: []string{"Hello", ",", " world", "!"},
		started: make(chan struct{}, 100)}
}

func (f *fakeEngine) Tokenizer() *tokenizer.Tokenizer { return f.tok }
func (f *fakeEngine) ContextSize() int                { return f.ctxSize }
func (f *fakeEngine) Stats() EngineStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return EngineStats{Live: f.live, UploadedBytes: 1234, UploadHits: 5, UploadEvictions: 1}
}

func (f *fakeEngine) Generate(ctx context.Context, req forgepipe.Request) (Stream, error) {
	f.mu.Lock()
	if f.waiting {
		f.mu.Unlock()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	defer f.mu.Unlock()
	if f.full {
		return nil, forgepipe.ErrQueueFull
	}
	f.last = req
	f.live++
	f.started <- struct{}{}
	s := &fakeStream{f: f, ctx: ctx, req: req, block: f.block}
	return s, nil
}

type fakeStream struct {
	f     *fakeEngine
	ctx   context.Context
	req   forgepipe.Request
	block chan struct{}
	i     int
	done  bool
	res   forgepipe.Result
	err   error
}

func (s *fakeStream) end(reason string, err error) {
	if s.done {
		return
	}
	s.done = true
	s.res = forgepipe.Result{PromptTokens: s.req.Tokens, StopReason: reason}
	for i := 0; i < s.i; i++ {
		s.res.Tokens = append(s.res.Tokens, int32(i+10))
	}
	s.err = err
	s.f.mu.Lock()
	s.f.live--
	s.f.mu.Unlock()
}

func (s *fakeStream) Next() (forgepipe.Token, error) {
	if s.done {
		if s.err != nil {
			return forgepipe.Token{}, s.err
		}
		return forgepipe.Token{}, io.EOF
	}
	if s.block != nil {
		select {
		case <-s.block:
		case <-s.ctx.Done():
			s.end("cancelled", s.ctx.Err())
			return forgepipe.Token{}, s.err
		}
	}
	if err := s.ctx.Err(); err != nil {
		s.end("cancelled", err)
		return forgepipe.Token{}, err
	}
	if s.i >= len(s.f.words) || s.i >= s.req.MaxTokens {
		reason := "eos"
		if s.i >= s.req.MaxTokens {
			reason = "max_tokens"
		}
		s.end(reason, nil)
		return forgepipe.Token{}, io.EOF
	}
	t := forgepipe.Token{ID: int32(s.i + 10), Text: s.f.words[s.i]}
	if s.req.Logits {
		t.Logits = make([]float32, s.f.tok.VocabSize())
		t.Logits[t.ID] = 5
	}
	s.i++
	return t, nil
}

func (s *fakeStream) Result() (*forgepipe.Result, error) {
	for !s.done {
		s.Next()
	}
	r := s.res
	return &r, s.err
}
