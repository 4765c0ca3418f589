package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"time"

	"github.com/rs/zerolog"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/actors/sampler"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/sample"
	"github.com/forgepipe/forgepipe/tokenizer"
)

// Finish reasons.
const (
	finishStop      = "stop"
	finishLength    = "length"
	finishCancelled = "cancelled" // metrics and logs only: the client is gone
	finishError     = "error"
)

// finishReason maps the engine's stop reason to OpenAI's finish_reason.
func finishReason(stop string) string {
	switch stop {
	case model.StopEOS, model.StopString:
		return finishStop
	case model.StopMaxTokens, model.StopContext:
		return finishLength
	case sampler.StopCancelled:
		return finishCancelled
	}
	return finishError
}

// engineError maps an error from Engine.Generate to an HTTP error.
func engineError(err error) *httpError {
	switch {
	case errors.Is(err, forgepipe.ErrQueueFull):
		return &httpError{status: http.StatusTooManyRequests, body: errorBody{
			Message: "The server is overloaded: every sequence slot is busy and the queue is full. Retry later.",
			Type:    "rate_limit_error", Code: strPtr("rate_limit_exceeded")}}
	case errors.Is(err, forgepipe.ErrContextFull):
		e := invalid("", "%v", err)
		e.body.Code = strPtr("context_length_exceeded")
		return e
	case errors.Is(err, forgepipe.ErrInvalidRequest), errors.Is(err, sample.ErrInvalid), errors.Is(err, forgepipe.ErrEmptyPrompt):
		return invalid("", "%v", err)
	case errors.Is(err, forgepipe.ErrClosed):
		return &httpError{status: http.StatusServiceUnavailable, body: errorBody{
			Message: "The server is shutting down.", Type: "server_error"}}
	}
	return &httpError{status: http.StatusInternalServerError, body: errorBody{Message: err.Error(), Type: "server_error"}}
}

// statusClientClosed is logged (nginx's convention) for a client that went
// away before its response was written.
const statusClientClosed = 499

// generate runs j and writes the response, streaming or not.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, st *engineState, j *job, endpoint string) {
	start := time.Now()
	ctx := r.Context()
	log := zerolog.Ctx(ctx)
	id := RequestID(ctx)
	if j.chat {
		id = "chatcmpl-" + id
	} else {
		id = "cmpl-" + id
	}
	s.metrics.inflight.Inc()
	defer s.metrics.inflight.Dec()
	defer func() { s.metrics.duration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds()) }()

	stream, err := s.admit(ctx, st.engine, j.req)
	if err != nil {
		if errors.Is(err, errQueueTimeout) {
			w.Header().Set("Retry-After", "1")
			writeError(w, &httpError{status: http.StatusTooManyRequests, body: errorBody{
				Message: fmt.Sprintf("The server is overloaded: no sequence slot freed within %v. Retry later.", s.cfg.QueueTimeout),
				Type:    "rate_limit_error", Code: strPtr("queue_timeout")}})
			return
		}
		if ctx.Err() != nil {
			w.WriteHeader(statusClientClosed)
			s.metrics.finished.WithLabelValues(finishCancelled).Inc()
			return
		}
		e := engineError(err)
		if e.status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		log.Debug().Err(err).Int("status", e.status).Msg("generate refused")
		writeError(w, e)
		return
	}
	if seq, ok := stream.(interface{ Seq() forgepipe.SeqID }); ok {
		// The pipeline's own logs name the sequence: this line ties it to
		// the request id.
		log.Debug().Uint64("seq", uint64(seq.Seq())).Int("prompt_tokens", len(j.tokens)).
			Int("max_tokens", j.req.MaxTokens).Bool("stream", j.stream).Msg("sequence started")
	}
	g := &gen{s: s, w: w, j: j, id: id, created: time.Now().Unix(), model: s.cfg.ModelID,
		tok: st.engine.Tokenizer(), start: start}
	if j.stream {
		g.sse = newSSE(w)
	}
	g.run(ctx, stream)
	res, rerr := stream.Result()
	reason := finishError
	if res != nil {
		reason = finishReason(res.StopReason)
	}
	if g.err != nil && ctx.Err() != nil || errors.Is(rerr, context.Canceled) {
		reason = finishCancelled
	}
	s.metrics.finished.WithLabelValues(reason).Inc()
	if res != nil {
		s.metrics.prompt.Add(float64(len(res.PromptTokens)))
	}
	e := log.Info()
	if res != nil {
		e = e.Int("prompt_tokens", len(res.PromptTokens)).Int("completion_tokens", len(res.Tokens)).
			Dur("queue_ms", res.QueueDuration).Dur("ttft_ms", res.TTFT)
	}
	if seq, ok := stream.(interface{ Seq() forgepipe.SeqID }); ok {
		e = e.Uint64("seq", uint64(seq.Seq()))
	}
	e.Str("finish", reason).Bool("stream", j.stream).AnErr("error", rerr).Msg("generation")

	switch {
	case reason == finishCancelled && errors.Is(context.Cause(ctx), errShuttingDown):
		// The client is still there: tell it why.
		body := errorBody{Message: "The server is shutting down: the generation was cancelled.", Type: "server_error"}
		if j.stream {
			g.sse.event(apiError{Error: body})
			g.sse.done()
		} else {
			writeError(w, &httpError{status: http.StatusServiceUnavailable, body: body})
		}
	case reason == finishCancelled:
		if !j.stream {
			w.WriteHeader(statusClientClosed)
		}
	case rerr != nil || res == nil:
		if j.stream {
			g.sse.event(apiError{Error: errorBody{Message: errString(rerr), Type: "server_error"}})
			g.sse.done()
		} else {
			writeError(w, &httpError{status: http.StatusInternalServerError, body: errorBody{Message: errString(rerr), Type: "server_error"}})
		}
	case j.stream:
		g.finishStream(res, reason)
	default:
		g.respond(res, reason)
	}
}

// errQueueTimeout cancels a request that waited Config.QueueTimeout for a
// slot.
var errQueueTimeout = errors.New("timed out waiting for a sequence slot")

// admit starts the generation, giving up after Config.QueueTimeout in the
// engine's queue. The timer only covers the wait: once Generate returns,
// the sequence runs under ctx alone.
func (s *Server) admit(ctx context.Context, e Engine, req forgepipe.Request) (Stream, error) {
	if s.cfg.QueueTimeout <= 0 {
		return e.Generate(ctx, req)
	}
	gctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(s.cfg.QueueTimeout, func() { cancel(errQueueTimeout) })
	stream, err := e.Generate(gctx, req)
	if timer.Stop() {
		// The sequence runs under gctx, a child of ctx: it ends with the
		// request (net/http cancels ctx when the handler returns).
		if err != nil {
			cancel(nil)
		}
		return stream, err
	}
	cancel(errQueueTimeout)
	// The timer fired: the wait timed out, or it fired just as the
	// sequence started, which is then cancelled; wait for its end.
	if err == nil {
		_, _ = stream.Result()
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, errQueueTimeout
}

func errString(err error) string {
	if err == nil {
		return "the generation failed"
	}
	return err.Error()
}

// gen is one generation being written.
type gen struct {
	s              *Server
	w              http.ResponseWriter
	sse            *sse
	j              *job
	id, model      string
	created        int64
	tok            *tokenizer.Tokenizer
	start, last    time.Time
	text           []byte
	err            error
	tokens         int
	chatLogprobs   []tokenLogprob
	legacyLogprobs *completionLogprobs
}

// run reads the stream to its end, sending chunks when streaming.
func (g *gen) run(ctx context.Context, stream Stream) {
	if g.j.stream && g.j.chat {
		empty := ""
		g.chunkChat(&chatOut{Role: "assistant", Content: &empty}, nil, nil)
	}
	for {
		t, err := stream.Next()
		if err != nil {
			if err != io.EOF {
				g.err = err
			}
			return
		}
		now := time.Now()
		if t.ID >= 0 {
			g.tokens++
			g.s.metrics.generated.Inc()
			if g.last.IsZero() {
				g.s.metrics.ttft.Observe(now.Sub(g.start).Seconds())
			} else {
				g.s.metrics.itl.Observe(now.Sub(g.last).Seconds())
			}
			g.last = now
		}
		var lp *tokenLogprob
		if g.j.logprobs >= 0 && t.ID >= 0 && t.Logits != nil {
			lp = logprobOf(g.tok, t.ID, t.Logits, g.j.logprobs)
		}
		if lp != nil && !g.j.stream {
			g.addLogprob(lp, len(g.text))
		}
		g.text = append(g.text, t.Text...)
		if g.j.stream && (t.Text != "" || lp != nil) {
			if g.j.chat {
				text := t.Text
				var l *chatLogprobs
				if lp != nil {
					l = &chatLogprobs{Content: []tokenLogprob{*lp}}
				}
				g.chunkChat(&chatOut{Content: &text}, l, nil)
			} else {
				var l *completionLogprobs
				if lp != nil {
					l = legacy(lp, len(g.text)-len(t.Text))
				}
				g.chunkCompletion(t.Text, l, nil)
			}
		}
	}
}

func (g *gen) addLogprob(lp *tokenLogprob, offset int) {
	if g.j.chat {
		g.chatLogprobs = append(g.chatLogprobs, *lp)
		return
	}
	if g.legacyLogprobs == nil {
		g.legacyLogprobs = &completionLogprobs{Tokens: []string{}, TokenLogprobs: []float64{},
			TopLogprobs: []map[string]float64{}, TextOffset: []int{}}
	}
	l := legacy(lp, offset)
	g.legacyLogprobs.Tokens = append(g.legacyLogprobs.Tokens, l.Tokens...)
	g.legacyLogprobs.TokenLogprobs = append(g.legacyLogprobs.TokenLogprobs, l.TokenLogprobs...)
	g.legacyLogprobs.TopLogprobs = append(g.legacyLogprobs.TopLogprobs, l.TopLogprobs...)
	g.legacyLogprobs.TextOffset = append(g.legacyLogprobs.TextOffset, l.TextOffset...)
}

func (g *gen) usage(res *forgepipe.Result) *usage {
	return &usage{PromptTokens: len(res.PromptTokens), CompletionTokens: len(res.Tokens),
		TotalTokens: len(res.PromptTokens) + len(res.Tokens)}
}

func (g *gen) chunkChat(delta *chatOut, lp *chatLogprobs, finish *string) {
	g.sse.event(chatResponse{ID: g.id, Object: "chat.completion.chunk", Created: g.created, Model: g.model,
		Choices: []chatChoice{{Index: 0, Delta: delta, Logprobs: lp, FinishReason: finish}}})
}

func (g *gen) chunkCompletion(text string, lp *completionLogprobs, finish *string) {
	g.sse.event(completionResponse{ID: g.id, Object: "text_completion", Created: g.created, Model: g.model,
		Choices: []completionChoice{{Index: 0, Text: text, Logprobs: lp, FinishReason: finish}}})
}

// finishStream sends the last chunk, the usage chunk if asked and [DONE].
func (g *gen) finishStream(res *forgepipe.Result, reason string) {
	if g.j.chat {
		g.chunkChat(&chatOut{}, nil, &reason)
	} else {
		g.chunkCompletion("", nil, &reason)
	}
	if g.j.includeUsage {
		if g.j.chat {
			g.sse.event(chatResponse{ID: g.id, Object: "chat.completion.chunk", Created: g.created, Model: g.model,
				Choices: []chatChoice{}, Usage: g.usage(res)})
		} else {
			g.sse.event(completionResponse{ID: g.id, Object: "text_completion", Created: g.created, Model: g.model,
				Choices: []completionChoice{}, Usage: g.usage(res)})
		}
	}
	g.sse.done()
}

// respond writes the whole, non-streaming response.
func (g *gen) respond(res *forgepipe.Result, reason string) {
	text := string(g.text)
	if g.j.chat {
		var lp *chatLogprobs
		if g.j.logprobs >= 0 {
			lp = &chatLogprobs{Content: g.chatLogprobs}
			if lp.Content == nil {
				lp.Content = []tokenLogprob{}
			}
		}
		writeJSON(g.w, http.StatusOK, chatResponse{ID: g.id, Object: "chat.completion", Created: g.created, Model: g.model,
			Choices: []chatChoice{{Index: 0, Message: &chatOut{Role: "assistant", Content: &text}, Logprobs: lp, FinishReason: &reason}},
			Usage:   g.usage(res)})
		return
	}
	writeJSON(g.w, http.StatusOK, completionResponse{ID: g.id, Object: "text_completion", Created: g.created, Model: g.model,
		Choices: []completionChoice{{Index: 0, Text: text, Logprobs: g.legacyLogprobs, FinishReason: &reason}},
		Usage:   g.usage(res)})
}

// logprobOf is the log-probability of id under the model's distribution
// (log-softmax of the raw logits, before the sampler's filters) and the top
// alternatives.
func logprobOf(tok *tokenizer.Tokenizer, id int32, logits []float32, top int) *tokenLogprob {
	maxv := float32(math.Inf(-1))
	for _, v := range logits {
		maxv = max(maxv, v)
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v - maxv))
	}
	logZ := float64(maxv) + math.Log(sum)
	lp := func(i int32) float64 { return float64(logits[i]) - logZ }
	text := tok.Decode([]int32{id})
	out := &tokenLogprob{Token: text, Logprob: lp(id), Bytes: bytesOf(text), TopLogprobs: []topLogprob{}}
	if top > 0 {
		idx := make([]int32, len(logits))
		for i := range idx {
			idx[i] = int32(i)
		}
		sort.Slice(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
		for _, i := range idx[:min(top, len(idx))] {
			t := tok.Decode([]int32{i})
			out.TopLogprobs = append(out.TopLogprobs, topLogprob{Token: t, Logprob: lp(i), Bytes: bytesOf(t)})
		}
	}
	return out
}

func bytesOf(s string) []int {
	b := make([]int, len(s))
	for i := 0; i < len(s); i++ {
		b[i] = int(s[i])
	}
	return b
}

// legacy is one token's logprobs in the completions format.
func legacy(lp *tokenLogprob, offset int) *completionLogprobs {
	top := map[string]float64{}
	for _, t := range lp.TopLogprobs {
		if _, seen := top[t.Token]; !seen {
			top[t.Token] = t.Logprob
		}
	}
	return &completionLogprobs{Tokens: []string{lp.Token}, TokenLogprobs: []float64{lp.Logprob},
		TopLogprobs: []map[string]float64{top}, TextOffset: []int{offset}}
}

// sse writes Server-Sent Events: "data: JSON\n\n" per event, flushed at once.
type sse struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	failed bool
}

func newSSE(w http.ResponseWriter) *sse {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := &sse{w: w, rc: http.NewResponseController(w)}
	s.flush()
	return s
}

func (s *sse) event(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(apiError{Error: errorBody{Message: err.Error(), Type: "server_error"}})
	}
	s.write(append(append([]byte("data: "), b...), '\n', '\n'))
}

func (s *sse) done() { s.write([]byte("data: [DONE]\n\n")) }

func (s *sse) write(b []byte) {
	if s.failed {
		return
	}
	if _, err := s.w.Write(b); err != nil {
		s.failed = true
		return
	}
	s.flush()
}

func (s *sse) flush() {
	if err := s.rc.Flush(); err != nil {
		s.failed = true
	}
}
