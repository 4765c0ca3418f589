package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/rs/zerolog"
)

func newTestServer(t *testing.T, e Engine) (*Server, *httptest.Server) {
	t.Helper()
	s := New(Config{ModelID: "tiny", Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if e != nil {
		if err := s.SetEngine(e); err != nil {
			t.Fatal(err)
		}
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

func post(t *testing.T, url, body string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestValidation(t *testing.T) {
	f := newFake(t)
	_, ts := newTestServer(t, f)
	long := strings.Repeat("Pierre and Natasha ", 80)
	cases := []struct {
		name, path, body string
		status           int
		param            string // expected error.param; "-" for null
		code             string
	}{
		{"malformed json", "/v1/completions", `{"prompt": "a"`, 400, "-", ""},
		{"not json", "/v1/chat/completions", `hello`, 400, "-", ""},
		{"not an object", "/v1/completions", `[1, 2]`, 400, "-", ""},
		{"trailing data", "/v1/completions", `{"prompt": "a"} {}`, 400, "-", ""},
		{"max_tokens string", "/v1/completions", `{"prompt": "a", "max_tokens": "ten"}`, 400, "max_tokens", ""},
		{"temperature string", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}`, 400, "temperature", ""},
		{"stream string", "/v1/completions", `{"prompt": "a", "stream": "yes"}`, 400, "stream", ""},
		{"stop number", "/v1/completions", `{"prompt": "a", "stop": 5}`, 400, "stop", ""},
		{"prompt number", "/v1/completions", `{"prompt": 5}`, 400, "prompt", ""},
		{"messages string", "/v1/chat/completions", `{"messages": "hi"}`, 400, "messages", ""},
		{"content number", "/v1/chat/completions", `{"messages": [{"role": "user", "content": 5}]}`, 400, "messages.content", ""},
		{"seed fraction", "/v1/completions", `{"prompt": "a", "seed": 1.5}`, 400, "seed", ""},
		{"top_k fraction", "/v1/completions", `{"prompt": "a", "top_k": 2.5}`, 400, "top_k", ""},
		{"n string", "/v1/completions", `{"prompt": "a", "n": "1"}`, 400, "n", ""},
		{"role number", "/v1/chat/completions", `{"messages": [{"role": 5, "content": "hi"}]}`, 400, "messages.role", ""},
		{"stop list of numbers", "/v1/completions", `{"prompt": "a", "stop": [1, 2]}`, 400, "stop", ""},
		{"prompt list of objects", "/v1/completions", `{"prompt": [{"a": 1}]}`, 400, "prompt", ""},
		{"unknown field", "/v1/completions", `{"prompt": "a", "foo": 1}`, 400, "foo", ""},
		{"unknown field chat", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "echo": true}`, 400, "echo", ""},
		{"unknown message field", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi", "mood": "ok"}]}`, 400, "mood", ""},
		{"empty messages", "/v1/chat/completions", `{"messages": []}`, 400, "messages", ""},
		{"missing messages", "/v1/chat/completions", `{"model": "x"}`, 400, "messages", ""},
		{"missing role", "/v1/chat/completions", `{"messages": [{"content": "hi"}]}`, 400, "messages[0].role", ""},
		{"bad role", "/v1/chat/completions", `{"messages": [{"role": "wizard", "content": "hi"}]}`, 400, "messages[0].role", ""},
		{"image part", "/v1/chat/completions", `{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}`, 400, "messages[0].content", ""},
		{"missing prompt", "/v1/completions", `{"max_tokens": 3}`, 400, "prompt", ""},
		{"max_tokens 0", "/v1/completions", `{"prompt": "a", "max_tokens": 0}`, 400, "max_tokens", ""},
		{"max_tokens negative", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}`, 400, "max_tokens", ""},
		{"max_completion_tokens 0", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}`, 400, "max_completion_tokens", ""},
		{"n 2", "/v1/completions", `{"prompt": "a", "n": 2}`, 400, "n", ""},
		{"temperature 3", "/v1/completions", `{"prompt": "a", "temperature": 3}`, 400, "temperature", ""},
		{"top_p 1.5", "/v1/completions", `{"prompt": "a", "top_p": 1.5}`, 400, "top_p", ""},
		{"top_k negative", "/v1/completions", `{"prompt": "a", "top_k": -1}`, 400, "top_k", ""},
		{"min_p 2", "/v1/completions", `{"prompt": "a", "min_p": 2}`, 400, "min_p", ""},
		{"repeat_penalty 0", "/v1/completions", `{"prompt": "a", "repeat_penalty": 0}`, 400, "repeat_penalty", ""},
		{"frequency_penalty 3", "/v1/completions", `{"prompt": "a", "frequency_penalty": 3}`, 400, "frequency_penalty", ""},
		{"presence_penalty -3", "/v1/completions", `{"prompt": "a", "presence_penalty": -3}`, 400, "presence_penalty", ""},
		{"five stops", "/v1/completions", `{"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}`, 400, "stop", ""},
		{"logprobs 6", "/v1/completions", `{"prompt": "a", "logprobs": 6}`, 400, "logprobs", ""},
		{"top_logprobs without logprobs", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}`, 400, "top_logprobs", ""},
		{"top_logprobs 21", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 21}`, 400, "top_logprobs", ""},
		{"prompt too long", "/v1/completions", `{"prompt": "` + long + `"}`, 400, "prompt", "context_length_exceeded"},
		{"messages too long", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "` + long + `"}]}`, 400, "messages", "context_length_exceeded"},
		{"batched prompts", "/v1/completions", `{"prompt": ["a", "b"]}`, 400, "prompt", ""},
		{"token out of range", "/v1/completions", `{"prompt": [1, 99999]}`, 400, "prompt", ""},
		{"empty token prompt", "/v1/completions", `{"prompt": []}`, 400, "prompt", ""},
		{"echo", "/v1/completions", `{"prompt": "a", "echo": true}`, 400, "echo", ""},
		{"suffix", "/v1/completions", `{"prompt": "a", "suffix": "z"}`, 400, "suffix", ""},
		{"best_of 2", "/v1/completions", `{"prompt": "a", "best_of": 2}`, 400, "best_of", ""},
		{"logit_bias", "/v1/completions", `{"prompt": "a", "logit_bias": {"50256": -100}}`, 400, "logit_bias", ""},
		{"tools", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]}`, 400, "tools", ""},
		{"json mode", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}`, 400, "response_format", ""},
		{"stream_options without stream", "/v1/completions", `{"prompt": "a", "stream_options": {"include_usage": true}}`, 400, "stream_options", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, _, body := post(t, ts.URL+c.path, c.body)
			if status != c.status {
				t.Fatalf("status %d, want %d: %s", status, c.status, body)
			}
			var e struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
					Code    *string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("error body %q: %v", body, err)
			}
			if e.Error.Message == "" || e.Error.Type != "invalid_request_error" {
				t.Errorf("error body %s: want a message and type invalid_request_error", body)
			}
			param := "-"
			if e.Error.Param != nil {
				param = *e.Error.Param
			}
			if param != c.param {
				t.Errorf("param %q, want %q (%s)", param, c.param, e.Error.Message)
			}
			if c.code != "" && (e.Error.Code == nil || *e.Error.Code != c.code) {
				t.Errorf("code %v, want %q", e.Error.Code, c.code)
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	s := New(Config{MaxBodyBytes: 100})
	if err := s.SetEngine(newFake(t)); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	status, _, body := post(t, ts.URL+"/v1/completions", `{"prompt": "`+strings.Repeat("a", 200)+`"}`)
	if status != http.StatusRequestEntityTooLarge {
		t.Errorf("large body: status %d: %s", status, body)
	}
	resp, err := http.Post(ts.URL+"/v1/completions", "application/x-www-form-urlencoded", strings.NewReader(`{"prompt": "a"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("curl -d's content type: status %d", resp.StatusCode)
	}
}

func TestSamplingParameters(t *testing.T) {
	f := newFake(t)
	_, ts := newTestServer(t, f)
	status, _, body := post(t, ts.URL+"/v1/completions", `{"prompt": "Natasha", "max_tokens": 3,
		"temperature": 0.5, "top_p": 0.9, "top_k": 7, "min_p": 0.1, "repeat_penalty": 1.1,
		"frequency_penalty": 0.5, "presence_penalty": -0.5, "seed": 42, "stop": ["\n", ""], "n": 1, "model": "any", "user": "u"}`)
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	p := f.last.Sampling
	if p.Temperature != 0.5 || p.TopP != 0.9 || p.TopK != 7 || p.MinP != float32(0.1) || p.RepeatPenalty != float32(1.1) ||
		p.FrequencyPenalty != 0.5 || p.PresencePenalty != -0.5 || p.Seed != 42 {
		t.Errorf("sampling %+v", p)
	}
	if f.last.MaxTokens != 3 || len(f.last.Stop) != 1 || f.last.Stop[0] != "\n" {
		t.Errorf("request %+v", f.last)
	}
	want := f.tok.Encode("Natasha", true, true)
	if len(f.last.Tokens) != len(want) || f.last.Tokens[0] != want[0] {
		t.Errorf("tokens %v, want %v", f.last.Tokens, want)
	}
	// Defaults: OpenAI's temperature and top_p, 16 tokens for completions,
	// the rest of the context for chat; a single stop string.
	post(t, ts.URL+"/v1/completions", `{"prompt": "a", "stop": "x"}`)
	if p := f.last.Sampling; p.Temperature != 1 || p.TopP != 1 || p.TopK != 0 || f.last.MaxTokens != 16 || len(f.last.Stop) != 1 {
		t.Errorf("defaults: %+v", f.last)
	}
	post(t, ts.URL+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}]}`)
	if f.last.MaxTokens != f.ctxSize-len(f.last.Tokens) {
		t.Errorf("chat default max tokens %d, prompt %d", f.last.MaxTokens, len(f.last.Tokens))
	}
	// max_tokens beyond the context is capped.
	post(t, ts.URL+"/v1/completions", `{"prompt": [1, 2, 3], "max_tokens": 1000}`)
	if f.last.MaxTokens != f.ctxSize-3 {
		t.Errorf("capped max tokens %d", f.last.MaxTokens)
	}
}

func TestCompletion(t *testing.T) {
	f := newFake(t)
	_, ts := newTestServer(t, f)
	req, _ := http.NewRequest("POST", ts.URL+"/v1/completions", strings.NewReader(`{"prompt": "Prince", "max_tokens": 10}`))
	req.Header.Set("X-Request-Id", "abc-123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r completionResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("X-Request-Id") != "abc-123" || r.ID != "cmpl-abc-123" {
		t.Fatalf("status %d, id header %q, id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"), r.ID)
	}
	if r.Object != "text_completion" || r.Model != "tiny" || len(r.Choices) != 1 || r.Choices[0].Text != "Hello, world!" ||
		*r.Choices[0].FinishReason != "stop" || r.Choices[0].Logprobs != nil {
		t.Errorf("response %+v", r)
	}
	if r.Usage == nil || r.Usage.CompletionTokens != 4 || r.Usage.PromptTokens != len(f.tok.Encode("Prince", true, true)) ||
		r.Usage.TotalTokens != r.Usage.PromptTokens+4 {
		t.Errorf("usage %+v", r.Usage)
	}
	_, _, body := post(t, ts.URL+"/v1/completions", `{"prompt": "Prince", "max_tokens": 2}`)
	if err := json.Unmarshal(body, &r); err != nil || r.Choices[0].Text != "Hello," || *r.Choices[0].FinishReason != "length" {
		t.Errorf("max_tokens 2: %s", body)
	}
}

func TestChatCompletion(t *testing.T) {
	f := newFake(t)
	_, ts := newTestServer(t, f)
	status, _, body := post(t, ts.URL+"/v1/chat/completions", `{"model": "tiny", "messages": [
		{"role": "developer", "content": "Be brief."},
		{"role": "user", "content": [{"type": "text", "text": "Who is "}, {"type": "text", "text": "Pierre?"}]},
		{"role": "assistant", "content": null}]}`)
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	var r chatResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	if r.Object != "chat.completion" || !strings.HasPrefix(r.ID, "chatcmpl-") || r.Choices[0].Message.Role != "assistant" ||
		*r.Choices[0].Message.Content != "Hello, world!" || *r.Choices[0].FinishReason != "stop" {
		t.Errorf("response %s", body)
	}
	// The fallback ChatML template rendered the messages (developer -> system).
	prompt := "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho is Pierre?<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n<|im_start|>assistant\n"
	want := f.tok.Encode(prompt, true, true)
	if got := f.last.Tokens; len(got) != len(want) {
		t.Errorf("prompt tokens %d, want %d (%q)", len(got), len(want), f.tok.Decode(got))
	}
}

func TestChatTemplateRejection(t *testing.T) {
	s := New(Config{ChatTemplate: `{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}`})
	if err := s.SetEngine(newFake(t)); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	status, _, body := post(t, ts.URL+"/v1/chat/completions", `{"messages": [{"role": "system", "content": "x"}]}`)
	if status != 400 || !strings.Contains(string(body), "System role not supported") {
		t.Errorf("status %d: %s", status, body)
	}
	if status, _, body := post(t, ts.URL+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "x"}]}`); status != 200 {
		t.Errorf("status %d: %s", status, body)
	}
}

// readSSE reads a whole event stream, checking its framing, and returns
// the data payloads (the last one is "[DONE]").
func readSSE(t *testing.T, r io.Reader) []string {
	t.Helper()
	br := bufio.NewReader(r)
	var events []string
	for {
		line, err := br.ReadString('\n')
		if err == io.EOF && line == "" {
			break
		}
		if err != nil {
			t.Fatalf("reading the stream: %v (after %q)", err, line)
		}
		if !strings.HasPrefix(line, "data: ") || !strings.HasSuffix(line, "\n") {
			t.Fatalf("event line %q: want \"data: ...\\n\"", line)
		}
		blank, err := br.ReadString('\n')
		if err != nil || blank != "\n" {
			t.Fatalf("after %q: got %q, %v; want an empty line", line, blank, err)
		}
		events = append(events, strings.TrimSuffix(strings.TrimPrefix(line, "data: "), "\n"))
	}
	if len(events) == 0 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %q", events)
	}
	return events
}

func TestStreamingChat(t *testing.T) {
	f := newFake(t)
	_, ts := newTestServer(t, f)
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(
		`{"messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := readSSE(t, resp.Body)
	var chunks []chatResponse
	for _, e := range events[:len(events)-1] {
		var c chatResponse
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatalf("chunk %q: %v", e, err)
		}
		if c.Object != "chat.completion.chunk" || !strings.HasPrefix(c.ID, "chatcmpl-") {
			t.Errorf("chunk %q", e)
		}
		chunks = append(chunks, c)
	}
	// role, 4 pieces, finish, usage
	if len(chunks) != 7 {
		t.Fatalf("%d chunks: %q", len(chunks), events)
	}
	if d := chunks[0].Choices[0].Delta; d.Role != "assistant" || d.Content == nil || *d.Content != "" {
		t.Errorf("first chunk %q", events[0])
	}
	var text string
	for i, c := range chunks[1:5] {
		if c.Choices[0].FinishReason != nil || c.Choices[0].Delta.Role != "" {
			t.Errorf("content chunk %q", events[i+1])
		}
		text += *c.Choices[0].Delta.Content
	}
	if text != "Hello, world!" {
		t.Errorf("text %q", text)
	}
	if fr := chunks[5].Choices[0].FinishReason; fr == nil || *fr != "stop" || chunks[5].Usage != nil {
		t.Errorf("finish chunk %q", events[5])
	}
	if u := chunks[6]; len(u.Choices) != 0 || u.Usage == nil || u.Usage.CompletionTokens != 4 {
		t.Errorf("usage chunk %q", events[6])
	}
}

func TestStreamingCompletion(t *testing.T) {
	f := newFake(t)
	_, ts := newTestServer(t, f)
	resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(
		`{"prompt": "a", "stream": true, "max_tokens": 3}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := readSSE(t, resp.Body)
	if len(events) != 5 { // 3 pieces, finish, [DONE]
		t.Fatalf("events %q", events)
	}
	var text string
	for _, e := range events[:4] {
		var c completionResponse
		if err := json.Unmarshal([]byte(e), &c); err != nil || c.Object != "text_completion" || c.Usage != nil {
			t.Fatalf("chunk %q: %v", e, err)
		}
		text += c.Choices[0].Text
	}
	var last completionResponse
	_ = json.Unmarshal([]byte(events[3]), &last)
	if text != "Hello, world" || *last.Choices[0].FinishReason != "length" {
		t.Errorf("text %q, last %q", text, events[3])
	}
}

func TestLogprobs(t *testing.T) {
	f := newFake(t)
	_, ts := newTestServer(t, f)
	_, _, body := post(t, ts.URL+"/v1/completions", `{"prompt": "a", "max_tokens": 2, "logprobs": 2}`)
	var r completionResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	lp := r.Choices[0].Logprobs
	if lp == nil || len(lp.Tokens) != 2 || len(lp.TokenLogprobs) != 2 || len(lp.TopLogprobs[0]) != 2 || lp.TextOffset[1] != len("Hello") {
		t.Fatalf("logprobs %s", body)
	}
	if want := 5 - math.Log(math.Exp(5)+float64(f.tok.VocabSize()-1)); math.Abs(lp.TokenLogprobs[0]-want) > 1e-6 { // logit 5 against zeros
		t.Errorf("logprob %v", lp.TokenLogprobs[0])
	}
	_, _, body = post(t, ts.URL+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 3, "max_tokens": 1}`)
	var c chatResponse
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	if l := c.Choices[0].Logprobs; l == nil || len(l.Content) != 1 || len(l.Content[0].TopLogprobs) != 3 ||
		l.Content[0].TopLogprobs[0].Logprob != l.Content[0].Logprob {
		t.Errorf("chat logprobs %s", body)
	}
	if !f.last.Logits {
		t.Error("engine not asked for logits")
	}
}

func TestOverload429(t *testing.T) {
	f := newFake(t)
	f.full = true
	_, ts := newTestServer(t, f)
	for _, c := range []struct{ path, body string }{
		{"/v1/completions", `{"prompt": "a"}`},
		{"/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "stream": true}`},
	} {
		status, h, body := post(t, ts.URL+c.path, c.body)
		if status != 429 || h.Get("Retry-After") == "" || !strings.Contains(string(body), "rate_limit_exceeded") {
			t.Errorf("%s: status %d, Retry-After %q: %s", c.path, status, h.Get("Retry-After"), body)
		}
	}
}

func TestHealthModelsAndLoading(t *testing.T) {
	s, ts := newTestServer(t, nil)
	if status, _ := get(t, ts.URL+"/health"); status != 503 {
		t.Errorf("health before the engine: %d", status)
	}
	if status, _, body := post(t, ts.URL+"/v1/completions", `{"prompt": "a"}`); status != 503 {
		t.Errorf("completion before the engine: %d %s", status, body)
	}
	if err := s.SetEngine(newFake(t)); err != nil {
		t.Fatal(err)
	}
	if status, body := get(t, ts.URL+"/health"); status != 200 || !strings.Contains(string(body), `"ok"`) {
		t.Errorf("health: %d %s", status, body)
	}
	status, body := get(t, ts.URL+"/v1/models")
	var m modelList
	if err := json.Unmarshal(body, &m); status != 200 || err != nil || len(m.Data) != 1 || m.Data[0].ID != "tiny" || m.Object != "list" {
		t.Errorf("models: %d %s", status, body)
	}
	if status, body := get(t, ts.URL+"/v1/nothing"); status != 404 || !strings.Contains(string(body), "Unknown request URL") {
		t.Errorf("unknown path: %d %s", status, body)
	}
	if status, _ := get(t, ts.URL+"/v1/completions"); status != 405 {
		t.Errorf("GET completions: %d", status)
	}
}

// metricValue returns the value of the sample line starting with prefix.
func metricValue(t *testing.T, text, prefix string) string {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			return strings.TrimPrefix(line, prefix+" ")
		}
	}
	return ""
}

func TestMetrics(t *testing.T) {
	f := newFake(t)
	_, ts := newTestServer(t, f)
	_, before := get(t, ts.URL+"/metrics")
	for _, name := range []string{"forgepipe_queue_depth", "forgepipe_sequences_in_flight", "forgepipe_uploader_bytes_total",
		"forgepipe_uploader_hits_total", "forgepipe_uploader_evictions_total", "forgepipe_kv_cache_bytes",
		"forgepipe_time_to_first_token_seconds", "forgepipe_inter_token_latency_seconds", "forgepipe_generated_tokens_total"} {
		if !strings.Contains(string(before), "# TYPE "+name+" ") {
			t.Errorf("metric %s missing", name)
		}
	}
	if v := metricValue(t, string(before), "forgepipe_generated_tokens_total"); v != "0" {
		t.Errorf("tokens before: %q", v)
	}
	post(t, ts.URL+"/v1/completions", `{"prompt": "a"}`)
	post(t, ts.URL+"/v1/completions", `{"prompt": "a", "max_tokens": 0}`)
	f.full = true
	post(t, ts.URL+"/v1/completions", `{"prompt": "a"}`)
	_, after := get(t, ts.URL+"/metrics")
	for prefix, want := range map[string]string{
		"forgepipe_generated_tokens_total":                                 "4",
		`forgepipe_http_requests_total{code="200",endpoint="completions"}`: "1",
		`forgepipe_http_requests_total{code="400",endpoint="completions"}`: "1",
		`forgepipe_http_requests_total{code="429",endpoint="completions"}`: "1",
		"forgepipe_time_to_first_token_seconds_count":                      "1",
		"forgepipe_inter_token_latency_seconds_count":                      "3",
		`forgepipe_generations_total{reason="stop"}`:                       "1",
		"forgepipe_uploader_bytes_total":                                   "1234",
		"forgepipe_uploader_hits_total":                                    "5",
		"forgepipe_sequences_in_flight":                                    "0",
	} {
		if got := metricValue(t, string(after), prefix); got != want {
			t.Errorf("%s = %q, want %q", prefix, got, want)
		}
	}
}

func TestDisconnectCancels(t *testing.T) {
	f := newFake(t)
	f.block = make(chan struct{})
	s, ts := newTestServer(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/chat/completions", strings.NewReader(
		`{"messages": [{"role": "user", "content": "hi"}], "stream": true}`))
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	<-f.started
	cancel()
	<-done
	testutil.WaitFor(t, "no live sequences", func() bool { return f.Stats().Live == 0 })
	testutil.WaitFor(t, "cancelled-generation metric updated", func() bool {
		return metricValue(t, gather(t, s), `forgepipe_generations_total{reason="cancelled"}`) == "1"
	})
}

func gather(t *testing.T, s *Server) string {
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// waitFor polls cond for up to 10 s.
func TestGracefulShutdown(t *testing.T) {
	f := newFake(t)
	f.block = make(chan struct{})
	s := New(Config{Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err := s.SetEngine(f); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln, 200*time.Millisecond) }()
	url := "http://" + ln.Addr().String()
	result := make(chan int, 1)
	go func() {
		resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"prompt": "a"}`))
		if err != nil {
			result <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		result <- resp.StatusCode
	}()
	<-f.started
	stop() // the request is stuck in the engine: the grace period runs out and it is cancelled
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if status := <-result; status != http.StatusServiceUnavailable {
		t.Errorf("the cancelled request got %d, want 503", status)
	}
	testutil.WaitFor(t, "no live sequences", func() bool { return f.Stats().Live == 0 })
	if _, err := http.Get(url + "/health"); err == nil {
		t.Error("still accepting after shutdown")
	}
}

func TestChatTemplateBOS(t *testing.T) {
	// A template that writes bos_token itself (llama 3 style): the
	// tokenizer adds BOS too, so the server drops the template's copy.
	f := newFake(t)
	s := New(Config{ChatTemplate: `{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}`})
	if err := s.SetEngine(f); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	if status, _, body := post(t, ts.URL+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}]}`); status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	bos, eos := f.tok.BOS(), f.tok.EOS()
	want := f.tok.Encode("[user] hi"+f.tok.Piece(eos), true, true)
	got := f.last.Tokens
	if len(got) != len(want) || got[0] != bos || (len(got) > 1 && got[1] == bos) || got[len(got)-1] != eos {
		t.Errorf("tokens %v, want %v", got, want)
	}
}

func TestQueueTimeout(t *testing.T) {
	f := newFake(t)
	s := New(Config{QueueTimeout: 20 * time.Millisecond})
	if err := s.SetEngine(f); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	f.waiting = true
	status, h, body := post(t, ts.URL+"/v1/completions", `{"prompt": "a"}`)
	if status != 429 || h.Get("Retry-After") == "" || !strings.Contains(string(body), "queue_timeout") {
		t.Errorf("status %d: %s", status, body)
	}
	// A request admitted in time runs to its end, past the timeout.
	f.waiting = false
	f.block = make(chan struct{})
	time.AfterFunc(100*time.Millisecond, func() { close(f.block) })
	status, _, body = post(t, ts.URL+"/v1/completions", `{"prompt": "a"}`)
	if status != 200 || !strings.Contains(string(body), "Hello, world!") {
		t.Errorf("status %d: %s", status, body)
	}
}

func TestStreamingLogprobs(t *testing.T) {
	f := newFake(t)
	_, ts := newTestServer(t, f)
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(
		`{"messages": [{"role": "user", "content": "hi"}], "stream": true, "logprobs": true, "max_tokens": 2}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := readSSE(t, resp.Body)
	n := 0
	for _, e := range events[1 : len(events)-2] { // between the role chunk and the finish chunk
		var c chatResponse
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatal(err)
		}
		// The fake's ids are not its text's: the token is the id's piece.
		if l := c.Choices[0].Logprobs; l == nil || len(l.Content) != 1 || l.Content[0].Token != f.tok.Decode([]int32{int32(n + 10)}) || l.Content[0].Logprob >= 0 {
			t.Errorf("chunk %s", e)
		}
		n++
	}
	if n != 2 {
		t.Errorf("%d content chunks: %q", n, events)
	}
}
