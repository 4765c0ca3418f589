package model

import (
	"context"
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/sample"
)

func openBundled(t testing.TB, opts Options) *Model {
	t.Helper()
	m, err := Open(testutil.BundledModel(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestBundledConfig(t *testing.T) {
	m := openBundled(t, Options{NoPrefault: true})
	c := m.Config
	// Values from shared/models/README.md.
	want := Config{Arch: "llama", Layers: 6, Dim: 256, FFN: 704, Heads: 8, KVHeads: 4, HeadDim: 32, Vocab: 4096, ContextLen: 512}
	if c.Arch != want.Arch || c.Layers != want.Layers || c.Dim != want.Dim || c.FFN != want.FFN ||
		c.Heads != want.Heads || c.KVHeads != want.KVHeads || c.HeadDim != want.HeadDim ||
		c.Vocab != want.Vocab || c.ContextLen != want.ContextLen {
		t.Errorf("config = %+v, want %+v", *c, want)
	}
	if c.RMSEps != 1e-5 || c.Rope.Base != 10000 || c.Rope.Dims != 32 {
		t.Errorf("eps %g, rope base %g dims %d", c.RMSEps, c.Rope.Base, c.Rope.Dims)
	}
	if m.Globals.Output == m.Globals.TokenEmbd {
		t.Error("the bundled model has an untied output.weight, but Output is tied")
	}
}

// TestBatchedPrefillMatchesTokenByToken: running a prompt as one batch gives
// bit-identical logits at every position to feeding it one token at a time.
func TestBatchedPrefillMatchesTokenByToken(t *testing.T) {
	m := openBundled(t, Options{})
	ids := m.Tokenizer.Encode("Natasha looked at Pierre, and he smiled.", true, true)
	if len(ids) < 5 {
		t.Fatalf("prompt tokenized to only %d ids", len(ids))
	}
	batched, err := m.Forward(m.NewState(), ids, true)
	if err != nil {
		t.Fatal(err)
	}
	batched = append([]float32(nil), batched...)
	st := m.NewState()
	v := m.Config.Vocab
	for i, id := range ids {
		one, err := m.Forward(st, []int32{id}, false)
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < v; j++ {
			if math.Float32bits(one[j]) != math.Float32bits(batched[i*v+j]) {
				t.Fatalf("position %d logit %d: token-by-token %v, batched %v", i, j, one[j], batched[i*v+j])
			}
		}
	}
}

func TestForwardErrors(t *testing.T) {
	m := openBundled(t, Options{ContextSize: 8, NoPrefault: true})
	st := m.NewState()
	if _, err := m.Forward(st, []int32{int32(m.Config.Vocab)}, false); err == nil {
		t.Error("out-of-range token id: no error")
	}
	if _, err := m.Forward(st, []int32{-1}, false); err == nil {
		t.Error("negative token id: no error")
	}
	if _, err := m.Forward(st, make([]int32, 9), false); !errors.Is(err, ErrContextFull) {
		t.Errorf("9 tokens in a context of 8: %v, want ErrContextFull", err)
	}
	if _, err := m.Forward(st, nil, false); err == nil {
		t.Error("no tokens: no error")
	}
}

func TestGenerateErrorsAndStops(t *testing.T) {
	m := openBundled(t, Options{ContextSize: 64})
	ctx := context.Background()
	greedy := GenerateOptions{MaxTokens: 8}
	if _, err := m.Generate(ctx, "", greedy, nil); !errors.Is(err, ErrEmptyPrompt) {
		t.Errorf("empty prompt: %v", err)
	}
	long := ""
	for i := 0; i < 100; i++ {
		long += "Pierre said "
	}
	if _, err := m.Generate(ctx, long, greedy, nil); !errors.Is(err, ErrContextFull) {
		t.Errorf("prompt longer than the context: %v", err)
	}
	if _, err := m.Generate(ctx, "Pierre", GenerateOptions{MaxTokens: 0}, nil); err == nil {
		t.Error("max tokens 0: no error")
	}
	if _, err := m.Generate(ctx, "Pierre", GenerateOptions{MaxTokens: 4, Sampling: sample.Params{Temperature: float32(math.NaN())}}, nil); !errors.Is(err, sample.ErrInvalid) {
		t.Errorf("NaN temperature: %v", err)
	}

	// Streaming pieces add up to the text; max tokens stops it.
	var streamed string
	res, err := m.Generate(ctx, "The battle of Austerlitz", greedy, func(s string) { streamed += s })
	if err != nil {
		t.Fatal(err)
	}
	if res.StopReason != StopMaxTokens || len(res.Tokens) != 8 {
		t.Errorf("stop %q after %d tokens, want max_tokens after 8", res.StopReason, len(res.Tokens))
	}
	if streamed != res.Text || res.Text == "" {
		t.Errorf("streamed %q, text %q", streamed, res.Text)
	}

	// A stop string cuts the text before it.
	stop := res.Text[len(res.Text)/2:]
	stop = stop[:min(len(stop), 3)]
	streamed = ""
	res2, err := m.Generate(ctx, "The battle of Austerlitz", GenerateOptions{MaxTokens: 8, Stop: []string{stop}}, func(s string) { streamed += s })
	if err != nil {
		t.Fatal(err)
	}
	if res2.StopReason != StopString {
		t.Errorf("stop reason %q, want %q (stop %q in %q)", res2.StopReason, StopString, stop, res.Text)
	}
	if want := res.Text[:strings.Index(res.Text, stop)]; res2.Text != want {
		t.Errorf("cut text %q, want %q (the text before %q)", res2.Text, want, stop)
	}
	if streamed != res2.Text {
		t.Errorf("streamed %q, text %q", streamed, res2.Text)
	}

	// Cancellation.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Generate(cctx, "Pierre", greedy, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// benchModel opens $FORGEPIPE_BENCH_MODEL, or the bundled model.
func benchModel(b *testing.B) *Model {
	path := os.Getenv("FORGEPIPE_BENCH_MODEL")
	if path == "" {
		return openBundled(b, Options{})
	}
	m, err := Open(path, Options{ContextSize: 1024})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// BenchmarkDecode measures single-sequence decode (tokens/s) on the bundled
// model or $FORGEPIPE_BENCH_MODEL, after a 5-token prompt.
func BenchmarkDecode(b *testing.B) {
	m := benchModel(b)
	ids := m.Tokenizer.Encode("Prince Andrew", true, true)
	st := m.NewState()
	logits, err := m.Forward(st, ids, false)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if st.Pos >= m.ContextSize() {
			st = m.NewState()
		}
		id := sample.Greedy(logits)
		if logits, err = m.Forward(st, []int32{id}, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
}

// BenchmarkPrefill measures prompt processing of 128 tokens (tokens/s) on
// the bundled model or $FORGEPIPE_BENCH_MODEL.
func BenchmarkPrefill(b *testing.B) {
	m := benchModel(b)
	ids := make([]int32, 128)
	for i := range ids {
		ids[i] = int32(2 + i*7%(m.Config.Vocab-2))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Forward(m.NewState(), ids, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(ids))/b.Elapsed().Seconds(), "tok/s")
}
