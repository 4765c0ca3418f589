package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/sample"
)

// HTTP sends requests to an OpenAI-compatible server.
type HTTP struct {
	URL         string // the server's base URL, e.g. http://127.0.0.1:8080
	Client      *http.Client
	Model       string
	MaxTokens   int
	Temperature float64
	Stream      bool // stream (SSE): needed to measure TTFT and inter-token latency
	Chat        bool // /v1/chat/completions (one user message) instead of /v1/completions
}

// NewHTTPClient is a client sized for concurrency connections.
func NewHTTPClient(concurrency int, timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = concurrency
	tr.MaxIdleConnsPerHost = concurrency
	return &http.Client{Transport: tr, Timeout: timeout}
}

func (h *HTTP) String() string {
	path := "/v1/completions"
	if h.Chat {
		path = "/v1/chat/completions"
	}
	mode := "non-streaming"
	if h.Stream {
		mode = "streaming"
	}
	return fmt.Sprintf("%s%s (%s, max_tokens %d)", strings.TrimRight(h.URL, "/"), path, mode, h.MaxTokens)
}

// chunk is the part of a response (or streamed chunk) the load test reads.
type chunk struct {
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// Do sends one request.
func (h *HTTP) Do(ctx context.Context, prompt string) Sample {
	body := map[string]any{"max_tokens": h.MaxTokens, "temperature": h.Temperature}
	if h.Model != "" {
		body["model"] = h.Model
	}
	path := "/v1/completions"
	if h.Chat {
		path = "/v1/chat/completions"
		body["messages"] = []map[string]string{{"role": "user", "content": prompt}}
	} else {
		body["prompt"] = prompt
	}
	if h.Stream {
		body["stream"] = true
		body["stream_options"] = map[string]bool{"include_usage": true}
	}
	b, _ := json.Marshal(body)
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(h.URL, "/")+path, bytes.NewReader(b))
	if err != nil {
		return Sample{Err: err, ErrKind: "request"}
	}
	req.Header.Set("Content-Type", "application/json")
	client := h.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return failed(err, start)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var c chunk
		if json.Unmarshal(msg, &c) == nil && c.Error != nil {
			msg = []byte(c.Error.Message)
		}
		return Sample{Err: fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg)),
			ErrKind: fmt.Sprintf("http_%d", resp.StatusCode), Latency: time.Since(start)}
	}
	if !h.Stream {
		var c chunk
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
			return failed(fmt.Errorf("decoding the response: %w", err), start)
		}
		if c.Usage == nil || len(c.Choices) != 1 {
			return Sample{Err: errors.New("response without usage or choice"), ErrKind: "protocol", Latency: time.Since(start)}
		}
		return Sample{Latency: time.Since(start), Tokens: c.Usage.CompletionTokens}
	}
	return readStream(resp.Body, start)
}

// readStream reads an SSE response, timing the pieces of text.
func readStream(r io.Reader, start time.Time) Sample {
	var (
		s        Sample
		last     time.Time
		finished bool
	)
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if err == io.EOF {
				err = errors.New("the stream ended without data: [DONE]")
				s.ErrKind = "protocol"
			}
			s.Err = err
			if s.ErrKind == "" {
				s.ErrKind = errKind(err)
			}
			s.Latency = time.Since(start)
			return s
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" || strings.HasPrefix(line, ":") {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			s.Latency = time.Since(start)
			if !finished {
				s.Err, s.ErrKind = errors.New("no chunk with a finish_reason"), "protocol"
			}
			return s
		}
		var c chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			s.Err, s.ErrKind, s.Latency = fmt.Errorf("chunk %q: %w", data, err), "protocol", time.Since(start)
			return s
		}
		if c.Error != nil {
			s.Err, s.ErrKind, s.Latency = errors.New(c.Error.Message), "stream_error", time.Since(start)
			return s
		}
		if c.Usage != nil {
			s.Tokens = c.Usage.CompletionTokens
		}
		for _, ch := range c.Choices {
			if ch.FinishReason != nil {
				finished = true
			}
			if ch.Text == "" && ch.Delta.Content == "" {
				continue
			}
			now := time.Now()
			if last.IsZero() {
				s.TTFT = now.Sub(start)
			} else {
				s.ITL = append(s.ITL, now.Sub(last))
			}
			last = now
		}
	}
}

func failed(err error, start time.Time) Sample {
	return Sample{Err: err, ErrKind: errKind(err), Latency: time.Since(start)}
}

// errKind classifies a transport error.
func errKind(err error) string {
	var ne net.Error
	var op *net.OpError
	switch {
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &op) && op.Op == "dial":
		return "connect"
	}
	return "transport"
}

// Generator is the part of *forgepipe.Pipeline the in-process target uses.
type Generator interface {
	Generate(ctx context.Context, req forgepipe.Request) (*forgepipe.Stream, error)
}

// InProcess sends requests to a pipeline through the Go API.
type InProcess struct {
	Engine    Generator
	MaxTokens int
	Sampling  sample.Params
}

func (p *InProcess) String() string {
	return fmt.Sprintf("in-process pipeline (max_tokens %d)", p.MaxTokens)
}

// Do runs one generation.
func (p *InProcess) Do(ctx context.Context, prompt string) Sample {
	start := time.Now()
	st, err := p.Engine.Generate(ctx, forgepipe.Request{Prompt: prompt, MaxTokens: p.MaxTokens, Sampling: p.Sampling})
	if err != nil {
		kind := "engine"
		switch {
		case errors.Is(err, forgepipe.ErrQueueFull):
			kind = "queue_full"
		case errors.Is(err, forgepipe.ErrInvalidRequest), errors.Is(err, forgepipe.ErrContextFull):
			kind = "invalid"
		case errors.Is(err, context.Canceled):
			kind = "cancelled"
		}
		return Sample{Err: err, ErrKind: kind, Latency: time.Since(start)}
	}
	var (
		s    Sample
		last time.Time
	)
	for {
		t, err := st.Next()
		if err != nil {
			s.Latency = time.Since(start)
			if err != io.EOF {
				s.Err, s.ErrKind = err, "engine"
				if errors.Is(err, context.Canceled) {
					s.ErrKind = "cancelled"
				}
			}
			return s
		}
		if t.ID < 0 {
			continue
		}
		s.Tokens++
		now := time.Now()
		if last.IsZero() {
			s.TTFT = now.Sub(start)
		} else {
			s.ITL = append(s.ITL, now.Sub(last))
		}
		last = now
	}
}
