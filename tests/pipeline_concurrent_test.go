package tests

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/sample"
)

func plPrompts(n int) []string {
	base := []string{"Once upon a time", "The cat", "Lily and Ben went to the", "One day, a little bird",
		"Tom had a red ball. He", "The sun was", "Mom said", "A big fish swam"}
	out := make([]string, n)
	for i := range out {
		out[i] = base[i%len(base)]
		if i >= len(base) {
			out[i] += fmt.Sprintf(" and %d", i)
		}
	}
	return out
}

func plGenerate(t *testing.T, p *forgepipe.Pipeline, prompt string, maxTokens int) *forgepipe.Result {
	t.Helper()
	s, err := p.Generate(context.Background(), forgepipe.Request{Prompt: prompt, MaxTokens: maxTokens})
	if err != nil {
		t.Error(err)
		return nil
	}
	r, err := s.Collect()
	if err != nil {
		t.Error(err)
	}
	return r
}

// TestPipelineConcurrentEqualsSolo runs 16 sequences at once and checks that
// each produces exactly its tokens alone, while the layers batch them.
func TestPipelineConcurrentEqualsSolo(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []forgepipe.Option
	}{{"goroutines", nil}, {"inline", []forgepipe.Option{forgepipe.WithInlineLayers()}}} {
		t.Run(tc.name, func(t *testing.T) { plConcurrentEqualsSolo(t, tc.opts) })
	}
}

func plConcurrentEqualsSolo(t *testing.T, opts []forgepipe.Option) {
	defer goleak.VerifyNone(t)
	path := testutil.BundledModel(t)
	ps := plPrompts(16)
	solo := make([][]int32, len(ps))
	{
		p, err := forgepipe.Open(path, forgepipe.WithBackend("host"))
		if err != nil {
			t.Fatal(err)
		}
		for i, pr := range ps {
			if r := plGenerate(t, p, pr, 8+i); r != nil {
				solo[i] = r.Tokens
			}
		}
		p.Close()
	}
	p, err := forgepipe.Open(path, append(opts, forgepipe.WithBackend("host"), forgepipe.WithMaxSequences(16))...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got := make([][]int32, len(ps))
	var wg sync.WaitGroup
	for i, pr := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := plGenerate(t, p, pr, 8+i); r != nil {
				got[i] = r.Tokens
			}
		}()
	}
	wg.Wait()
	for i := range ps {
		if !plSlicesEqual(got[i], solo[i]) {
			t.Errorf("sequence %d (%q): concurrent %v, alone %v", i, ps[i], got[i], solo[i])
		}
	}
	st := p.Stats()
	for i, l := range st.Layers {
		if l.MaxBatchRows < 2 || l.Batches >= l.Rows || l.MultiSeqBatches == 0 {
			t.Errorf("layer %d did not batch: %+v", i, l)
		}
	}
	// FreeSequence reaches the layers just after the Done reaches the caller.
	testutil.WaitFor(t, "all KV freed", func() bool { st := p.Stats(); return st.KVSequences() == 0 && st.KVBytes() == 0 })
	t.Logf("layer 0: %d rows in %d batches (max %d rows); batches by size 1, 2-3, 4-7, ...: %v",
		st.Layers[0].Rows, st.Layers[0].Batches, st.Layers[0].MaxBatchRows, st.Layers[0].BatchSizes)
}

// TestPipelineWeightBudget runs with a budget of about 30% of the model and
// gets the same tokens as without one, with evictions.
func TestPipelineWeightBudget(t *testing.T) {
	defer goleak.VerifyNone(t)
	path := testutil.BundledModel(t)
	m, err := model.Open(path, model.Options{NoPrefault: true})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, ti := range m.File.Tensors {
		total += int64(ti.Size)
	}
	m.Close()
	ps := plPrompts(4)
	run := func(opts ...forgepipe.Option) ([][]int32, forgepipe.Stats) {
		p, err := forgepipe.Open(path, append(opts, forgepipe.WithBackend("host"))...)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		out := make([][]int32, len(ps))
		var wg sync.WaitGroup
		for i, pr := range ps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r := plGenerate(t, p, pr, 16); r != nil {
					out[i] = r.Tokens
				}
			}()
		}
		wg.Wait()
		return out, p.Stats()
	}
	want, _ := run()
	budget := total * 3 / 10
	got, st := run(forgepipe.WithWeightBudget(budget), forgepipe.WithPrefetch(2))
	for i := range ps {
		if !plSlicesEqual(got[i], want[i]) {
			t.Errorf("sequence %d: with a budget %v, without %v", i, got[i], want[i])
		}
	}
	if st.Uploader.Evictions == 0 {
		t.Errorf("no evictions with a budget of %d of %d bytes: %+v", budget, total, st.Uploader)
	}
	if st.Uploader.PeakResident > budget {
		t.Errorf("peak resident %d bytes over the budget %d", st.Uploader.PeakResident, budget)
	}
	t.Logf("budget %d of %d bytes: %+v", budget, total, st.Uploader)

	// A budget that cannot hold one layer is a clear error, not a hang.
	p, err := forgepipe.Open(path, forgepipe.WithBackend("host"), forgepipe.WithWeightBudget(1024))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s, err := p.Generate(context.Background(), forgepipe.Request{Prompt: "Hi", MaxTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Collect(); err == nil {
		t.Error("a weight budget of 1 KiB: no error")
	} else {
		t.Log(err)
	}
}

// TestPipelineCancelFreesKV cancels a sequence mid-generation: its KV
// caches are freed everywhere, and Close leaves no goroutine.
func TestPipelineCancelFreesKV(t *testing.T) {
	defer goleak.VerifyNone(t)
	p, err := forgepipe.Open(testutil.BundledModel(t), forgepipe.WithBackend("host"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := p.Generate(ctx, forgepipe.Request{Prompt: "Once upon a time", MaxTokens: 100000,
		Sampling: sample.Params{Temperature: 0.8, Seed: 3}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := s.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if p.Stats().KVSequences() == 0 {
		t.Error("no KV cache while a sequence runs")
	}
	cancel()
	r, err := s.Collect()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled stream: err %v, want context.Canceled", err)
	}
	if r.StopReason != "cancelled" {
		t.Errorf("stop reason %q", r.StopReason)
	}
	testutil.WaitFor(t, "all KV freed", func() bool { st := p.Stats(); return st.KVSequences() == 0 && st.KVBytes() == 0 })
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Generate(context.Background(), forgepipe.Request{Prompt: "x", MaxTokens: 1}); !errors.Is(err, forgepipe.ErrClosed) {
		t.Errorf("Generate after Close: %v, want ErrClosed", err)
	}
}

// plWaitFor polls cond (state settles through messages, not time).
// TestPipelineBadInput checks that bad input gets clear errors.
func TestPipelineBadInput(t *testing.T) {
	defer goleak.VerifyNone(t)
	if _, err := forgepipe.Open(filepath.Join(t.TempDir(), "missing.gguf")); err == nil {
		t.Error("unknown model path: no error")
	}
	p, err := forgepipe.Open(testutil.BundledModel(t), forgepipe.WithBackend("host"), forgepipe.WithContextSize(16),
		forgepipe.WithMaxSequences(1), forgepipe.WithQueueSize(1))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	nan := float32(math.NaN())
	for _, tc := range []struct {
		name string
		req  forgepipe.Request
		want error
	}{
		{"empty prompt", forgepipe.Request{MaxTokens: 4}, forgepipe.ErrEmptyPrompt},
		{"too long", forgepipe.Request{Prompt: "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen", MaxTokens: 4}, forgepipe.ErrContextFull},
		{"nan temperature", forgepipe.Request{Prompt: "Hi", MaxTokens: 4, Sampling: sample.Params{Temperature: nan}}, sample.ErrInvalid},
		{"negative top-k", forgepipe.Request{Prompt: "Hi", MaxTokens: 4, Sampling: sample.Params{TopK: -1}}, sample.ErrInvalid},
		{"negative top-p", forgepipe.Request{Prompt: "Hi", MaxTokens: 4, Sampling: sample.Params{TopP: -0.5}}, sample.ErrInvalid},
		{"zero max tokens", forgepipe.Request{Prompt: "Hi"}, forgepipe.ErrInvalidRequest},
		{"bad token id", forgepipe.Request{Tokens: []int32{1, 1 << 30}, MaxTokens: 4}, forgepipe.ErrInvalidRequest},
	} {
		_, err := p.Generate(ctx, tc.req)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}

	// One slot, a queue of one: the third request is turned away.
	slow := sample.Params{Temperature: 1, Seed: 1}
	s1, err := p.Generate(ctx, forgepipe.Request{Prompt: "Once", MaxTokens: 8, Sampling: slow})
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() {
		s2, err := p.Generate(ctx, forgepipe.Request{Prompt: "Once", MaxTokens: 2})
		if err == nil {
			_, err = s2.Collect()
		}
		second <- err
	}()
	testutil.WaitFor(t, "one request queued", func() bool { return p.Queued() == 1 })
	if _, err := p.Generate(ctx, forgepipe.Request{Prompt: "Once", MaxTokens: 2}); !errors.Is(err, forgepipe.ErrQueueFull) {
		t.Errorf("third request: err %v, want ErrQueueFull", err)
	}
	if _, err := s1.Collect(); err != nil {
		t.Error(err)
	}
	if err := <-second; err != nil {
		t.Errorf("queued request: %v", err)
	}
}
