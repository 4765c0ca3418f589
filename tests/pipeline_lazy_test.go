package tests

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/synth"
	"github.com/forgepipe/forgepipe/sample"
)

// plEagerRun generates greedily with the sequential forward pass, keeping the
// logits of every step.
func plEagerRun(t *testing.T, m *model.Model, ids []int32, maxTokens int) (tokens []int32, logits [][]float32) {
	t.Helper()
	st := m.NewState()
	l, err := m.Forward(st, ids, false)
	if err != nil {
		t.Fatal(err)
	}
	for {
		logits = append(logits, append([]float32(nil), l...))
		id := sample.Greedy(l)
		if m.Tokenizer.IsEOG(id) {
			return tokens, logits
		}
		tokens = append(tokens, id)
		if len(tokens) >= maxTokens || st.Pos >= m.ContextSize() {
			return tokens, logits
		}
		if l, err = m.Forward(st, []int32{id}, false); err != nil {
			t.Fatal(err)
		}
	}
}

func plLazyRun(t *testing.T, p *forgepipe.Pipeline, ids []int32, maxTokens int) (tokens []int32, logits [][]float32) {
	t.Helper()
	s, err := p.Generate(context.Background(), forgepipe.Request{Tokens: ids, MaxTokens: maxTokens, Logits: true})
	if err != nil {
		t.Fatal(err)
	}
	for {
		tok, err := s.Next()
		if err != nil {
			break
		}
		if tok.ID >= 0 {
			tokens = append(tokens, tok.ID)
			logits = append(logits, tok.Logits)
		}
	}
	r, err := s.Result()
	if err != nil {
		t.Fatal(err)
	}
	if r.StopReason == model.StopEOS {
		logits = append(logits, nil) // the EOS step's logits are not streamed
	}
	return tokens, logits
}

func plSameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// TestPipelineLazyMatchesEager checks the invariant that the lazily loaded
// actor pipeline computes exactly what the sequential forward computes:
// the same logits, bit for bit, at every step.
func TestPipelineLazyMatchesEager(t *testing.T) {
	qwen := filepath.Join(t.TempDir(), "qwen2.gguf")
	spec, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	spec.Arch = "qwen2"
	spec.Layers = 3
	if spec.Tokenizer, err = synth.TokenizerFrom(testutil.BundledModel(t)); err != nil {
		t.Fatal(err)
	}
	if err := synth.Write(qwen, spec, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		maxBatch   int
		opts       []forgepipe.Option
	}{
		{"bundled", testutil.BundledModel(t), 128, nil},
		{"bundled-chunked", testutil.BundledModel(t), 3, nil},
		{"bundled-inline", testutil.BundledModel(t), 128, []forgepipe.Option{forgepipe.WithInlineLayers()}},
		{"bundled-budget", testutil.BundledModel(t), 5, []forgepipe.Option{forgepipe.WithWeightBudget(3 << 20), forgepipe.WithPrefetch(1)}},
		{"qwen2-synthetic", qwen, 128, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := model.Open(tc.path, model.Options{NoPrefault: true})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			p, err := forgepipe.Open(tc.path, append(tc.opts, forgepipe.WithBackend("host"), forgepipe.WithMaxBatch(tc.maxBatch))...)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			for _, prompt := range []string{"Once upon a time", "The little dog ran to the park and saw", "Hi"} {
				ids := m.Tokenizer.Encode(prompt, true, true)
				wantTok, wantLog := plEagerRun(t, m, ids, 24)
				gotTok, gotLog := plLazyRun(t, p, ids, 24)
				if !plSlicesEqual(gotTok, wantTok) {
					t.Fatalf("%q: tokens\n got %v\nwant %v", prompt, gotTok, wantTok)
				}
				if len(gotLog) != len(wantLog) {
					t.Fatalf("%q: %d steps, want %d", prompt, len(gotLog), len(wantLog))
				}
				for i := range gotTok {
					if !plSameBits(gotLog[i], wantLog[i]) {
						t.Fatalf("%q: step %d: logits differ from the eager forward", prompt, i)
					}
				}
			}
		})
	}
}

func plSlicesEqual(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPipelineMatchesGenerate compares whole generations with
// model.Generate: sampled with a seed, with stop strings, the streamed
// pieces and the final text and stop reason.
func TestPipelineMatchesGenerate(t *testing.T) {
	path := testutil.BundledModel(t)
	m, err := model.Open(path, model.Options{NoPrefault: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p, err := forgepipe.Open(path, forgepipe.WithBackend("host"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, tc := range []struct {
		prompt string
		params sample.Params
		stop   []string
		max    int
	}{
		{"Prince Andrew", sample.Params{}, []string{"face"}, 40},
		{"Prince Andrew", sample.Params{}, []string{"\n\n"}, 40},
		{"Natasha", sample.Params{Temperature: 0.9, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1, Seed: 42}, nil, 48},
		{"The soldiers", sample.Params{Temperature: 1.2, Seed: 7}, []string{"the", "."}, 48},
	} {
		var want strings.Builder
		wr, err := m.Generate(context.Background(), tc.prompt, model.GenerateOptions{MaxTokens: tc.max, Sampling: tc.params, Stop: tc.stop},
			func(s string) { want.WriteString(s) })
		if err != nil {
			t.Fatal(err)
		}
		s, err := p.Generate(context.Background(), forgepipe.Request{Prompt: tc.prompt, MaxTokens: tc.max, Sampling: tc.params, Stop: tc.stop})
		if err != nil {
			t.Fatal(err)
		}
		var got strings.Builder
		for {
			tok, err := s.Next()
			if err != nil {
				break
			}
			got.WriteString(tok.Text)
		}
		r, err := s.Result()
		if err != nil {
			t.Fatal(err)
		}
		if !plSlicesEqual(r.Tokens, wr.Tokens) || r.Text != wr.Text || r.StopReason != wr.StopReason || got.String() != want.String() {
			t.Errorf("%q %+v stop %q:\npipeline %v %q %s streamed %q\ngenerate %v %q %s streamed %q",
				tc.prompt, tc.params, tc.stop, r.Tokens, r.Text, r.StopReason, got.String(), wr.Tokens, wr.Text, wr.StopReason, want.String())
		}
		t.Logf("%q: %d tokens, stop %s", tc.prompt, len(r.Tokens), r.StopReason)
	}
}

// TestPipelineContextFull: a sequence that fills the context stops as
// model.Generate does, with the same tokens.
func TestPipelineContextFull(t *testing.T) {
	path := testutil.BundledModel(t)
	m, err := model.Open(path, model.Options{NoPrefault: true, ContextSize: 12})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p, err := forgepipe.Open(path, forgepipe.WithBackend("host"), forgepipe.WithContextSize(12))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	want, err := m.Generate(context.Background(), "Prince Andrew", model.GenerateOptions{MaxTokens: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := p.Generate(context.Background(), forgepipe.Request{Prompt: "Prince Andrew", MaxTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Collect()
	if err != nil {
		t.Fatal(err)
	}
	if got.StopReason != model.StopContext || got.StopReason != want.StopReason || !plSlicesEqual(got.Tokens, want.Tokens) || got.Text != want.Text {
		t.Errorf("pipeline %s %v %q, generate %s %v %q", got.StopReason, got.Tokens, got.Text, want.StopReason, want.Tokens, want.Text)
	}
}
