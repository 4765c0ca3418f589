package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/chat"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/sample"
)

// openPipeline opens the bundled model on the host backend.
func openPipeline(t *testing.T, opts ...forgepipe.Option) *forgepipe.Pipeline {
	t.Helper()
	opts = append([]forgepipe.Option{forgepipe.WithBackend("host")}, opts...)
	p, err := forgepipe.Open(testutil.BundledModel(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// sequential is the greedy text of the plain sequential engine for tokens.
func sequential(t *testing.T, tokens []int32, maxTokens int) string {
	t.Helper()
	m, err := model.Open(testutil.BundledModel(t), model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	res, err := m.Generate(context.Background(), "", model.GenerateOptions{MaxTokens: maxTokens, Tokens: tokens,
		Sampling: sample.Params{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Text
}

func TestPipelineGreedyMatchesSequential(t *testing.T) {
	p := openPipeline(t)
	_, ts := newTestServer(t, Pipeline(p))
	tok := p.Tokenizer()

	// Completion, non-streaming.
	want := sequential(t, tok.Encode("Prince Andrew", true, true), 24)
	status, _, body := post(t, ts.URL+"/v1/completions", `{"prompt": "Prince Andrew", "max_tokens": 24, "temperature": 0}`)
	var r completionResponse
	if err := json.Unmarshal(body, &r); status != 200 || err != nil {
		t.Fatalf("status %d: %s", status, body)
	}
	if r.Choices[0].Text != want || r.Usage.CompletionTokens != 24 || *r.Choices[0].FinishReason != "length" {
		t.Errorf("completion %q (%+v), want %q", r.Choices[0].Text, r.Usage, want)
	}

	// Chat, streaming: the fallback template's prompt.
	prompt, err := chat.Fallback().Render([]chat.Message{{Role: "user", Content: "Who is Natasha?"}},
		chat.Options{AddGenerationPrompt: true})
	if err != nil {
		t.Fatal(err)
	}
	want = sequential(t, tok.Encode(prompt, true, true), 20)
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(
		`{"messages": [{"role": "user", "content": "Who is Natasha?"}], "max_tokens": 20, "temperature": 0, "stream": true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var text string
	for _, e := range readSSE(t, resp.Body) {
		var c chatResponse
		if e == "[DONE]" {
			break
		}
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatal(err)
		}
		if d := c.Choices[0].Delta; d.Content != nil {
			text += *d.Content
		}
	}
	if text != want {
		t.Errorf("chat %q, want %q", text, want)
	}
}

func TestPipelineDisconnectFreesKV(t *testing.T) {
	p := openPipeline(t)
	s, ts := newTestServer(t, Pipeline(p))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/completions", strings.NewReader(
		`{"prompt": "Natasha", "max_tokens": 500, "temperature": 0, "stream": true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for i := 0; i < 2; i++ { // the first token's event and its blank line
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	if st := p.Stats(); st.Sampler.Live != 1 {
		t.Logf("live sequences while streaming: %d", st.Sampler.Live)
	}
	cancel()
	resp.Body.Close()
	testutil.WaitFor(t, "no live sequences and no KV left", func() bool {
		st := p.Stats()
		return st.Sampler.Live == 0 && st.KVSequences() == 0 && st.KVBytes() == 0
	})
	testutil.WaitFor(t, "cancelled-generation metric updated", func() bool {
		return metricValue(t, gather(t, s), `forgepipe_generations_total{reason="cancelled"}`) == "1"
	})
	// A non-streaming request whose client gives up.
	ctx2, cancel2 := context.WithCancel(context.Background())
	req2, _ := http.NewRequestWithContext(ctx2, "POST", ts.URL+"/v1/completions", strings.NewReader(
		`{"prompt": "Pierre", "max_tokens": 500, "temperature": 0}`))
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req2)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	testutil.WaitFor(t, "one live sequence", func() bool { return p.Stats().Sampler.Live == 1 })
	cancel2()
	if err := <-errc; err == nil {
		t.Error("the cancelled request returned a response")
	}
	testutil.WaitFor(t, "no live sequences and no KV left", func() bool {
		st := p.Stats()
		return st.Sampler.Live == 0 && st.KVSequences() == 0
	})
	testutil.WaitFor(t, "cancelled-generation metric updated", func() bool {
		return metricValue(t, gather(t, s), `forgepipe_generations_total{reason="cancelled"}`) == "2"
	})
	// The engine carries on with other requests.
	if status, _, body := post(t, ts.URL+"/v1/completions", `{"prompt": "Pierre", "max_tokens": 4}`); status != 200 {
		t.Errorf("after a disconnect: %d %s", status, body)
	}
}

func TestPipelineOverload(t *testing.T) {
	p := openPipeline(t, forgepipe.WithMaxSequences(1), forgepipe.WithQueueSize(0))
	_, ts := newTestServer(t, Pipeline(p))
	// One long generation holds the only slot; a second request meanwhile is
	// refused. The long one may end before the second arrives on a slow
	// machine: try a few times.
	for attempt := 0; attempt < 5; attempt++ {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/completions", strings.NewReader(
			`{"prompt": "Natasha", "max_tokens": 500, "stream": true}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		status, h, body := post(t, ts.URL+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}`)
		cancel()
		resp.Body.Close()
		if status == http.StatusTooManyRequests {
			if h.Get("Retry-After") == "" || !strings.Contains(string(body), "rate_limit_exceeded") {
				t.Errorf("429 without Retry-After or code: %s", body)
			}
			testutil.WaitFor(t, "no live sequences", func() bool { return p.Stats().Sampler.Live == 0 })
			return
		}
		t.Logf("attempt %d: status %d", attempt, status)
		testutil.WaitFor(t, "no live sequences", func() bool { return p.Stats().Sampler.Live == 0 })
	}
	t.Fatal("no 429 while the only slot was busy")
}

func TestPipelineMetricsMove(t *testing.T) {
	p := openPipeline(t)
	s := New(Config{Log: zerolog.Nop()})
	if err := s.SetEngine(Pipeline(p)); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	post(t, ts.URL+"/v1/completions", `{"prompt": "Pierre", "max_tokens": 5, "temperature": 0}`)
	m := gather(t, s)
	for prefix, want := range map[string]string{
		"forgepipe_generated_tokens_total":             "5",
		"forgepipe_time_to_first_token_seconds_count":  "1",
		"forgepipe_inter_token_latency_seconds_count":  "4",
		"forgepipe_sequences_in_flight":                "0",
		`forgepipe_generations_total{reason="length"}`: "1",
	} {
		if got := metricValue(t, m, prefix); got != want {
			t.Errorf("%s = %q, want %q", prefix, got, want)
		}
	}
	if v := metricValue(t, m, "forgepipe_uploader_bytes_total"); v == "" || v == "0" {
		t.Errorf("uploader bytes %q, want > 0", v)
	}
}

// BenchmarkHTTPStreaming measures streamed completions of 16 tokens through
// the server on the bundled model, GOMAXPROCS clients at once.
func BenchmarkHTTPStreaming(b *testing.B) {
	p, err := forgepipe.Open(testutil.BundledModel(b), forgepipe.WithBackend("host"))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	s := New(Config{Log: zerolog.Nop()})
	if err := s.SetEngine(Pipeline(p)); err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	const body = `{"prompt": "Prince Andrew", "max_tokens": 16, "temperature": 0, "stream": true}`
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	b.ReportMetric(float64(b.N*16)/b.Elapsed().Seconds(), "tokens/s")
}
