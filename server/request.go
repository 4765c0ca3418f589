package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/chat"
	"github.com/forgepipe/forgepipe/sample"
)

// Limits of a request.
const (
	maxStops       = 4  // as OpenAI
	maxLogprobs    = 5  // completions' logprobs, as OpenAI
	maxTopLogprobs = 20 // chat's top_logprobs, as OpenAI
	// defaultCompletionTokens is OpenAI's max_tokens default for
	// /v1/completions; chat completions default to the rest of the context.
	defaultCompletionTokens = 16
)

// decode reads r's JSON body into dst, rejecting unknown fields, trailing
// data and bodies over limit bytes. The Content-Type is not checked (curl -d
// sends form-urlencoded).
func decode(w http.ResponseWriter, r *http.Request, limit int64, dst any) *httpError {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if err == nil {
		if _, e := dec.Token(); e != io.EOF {
			return invalid("", "We could not parse the JSON body of your request: unexpected data after the JSON object.")
		}
		return nil
	}
	var (
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
		tooLarge *http.MaxBytesError
	)
	switch {
	case errors.As(err, &tooLarge):
		return &httpError{status: http.StatusRequestEntityTooLarge, body: errorBody{
			Message: fmt.Sprintf("The request body is larger than %d bytes.", limit), Type: "invalid_request_error"}}
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return invalid("", "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)")
	case errors.As(err, &typ):
		field := fieldPath(typ.Field)
		if field == "" {
			return invalid("", "The request body must be a JSON object, got %s.", typ.Value)
		}
		return invalid(field, "Invalid type for '%s': expected %s, but got %s.", field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return invalid(name, "Unrecognized request argument supplied: %s", name)
	}
	return invalid("", "Invalid request body: %v", err)
}

// fieldPath cleans encoding/json's path of a field: without the embedded
// struct's name, and without the repetition a custom unmarshaler's own
// error adds ("stop.stop").
func fieldPath(f string) string {
	var parts []string
	for _, p := range strings.Split(f, ".") {
		if p == "sampling" || p == "" || (len(parts) > 0 && parts[len(parts)-1] == p) {
			continue
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ".")
}

// jsonKind names a Go kind as JSON does.
func jsonKind(k string) string {
	switch {
	case strings.HasPrefix(k, "int"), strings.HasPrefix(k, "uint"), strings.HasPrefix(k, "float"):
		return "a number"
	case k == "string":
		return "a string"
	case k == "bool":
		return "a boolean"
	case k == "slice":
		return "an array"
	case k == "map", k == "struct":
		return "an object"
	}
	return k
}

// job is a validated generation request.
type job struct {
	chat         bool
	tokens       []int32
	req          forgepipe.Request
	stream       bool
	includeUsage bool
	// logprobs: -1 none; else the number of alternatives per token.
	logprobs int
}

// params validates the shared parameters into the engine's request.
func (s *sampling) params(maxTokens *int, maxTokensParam string, defaultMax int) (forgepipe.Request, *httpError) {
	var req forgepipe.Request
	if s.N != nil && *s.N != 1 {
		return req, invalid("n", "n=%d is not supported: this server generates one choice per request (n=1).", *s.N)
	}
	p := sample.Params{Temperature: 1, TopP: 1} // OpenAI's defaults; the extensions are off
	finite := func(name string, v *float64, lo, hi float64, loOpen bool) *httpError {
		if v == nil {
			return nil
		}
		if math.IsNaN(*v) || *v < lo || *v > hi || (loOpen && *v == lo) {
			open := "["
			if loOpen {
				open = "("
			}
			return invalid(name, "'%s' must be a number in %s%g, %g], got %g.", name, open, lo, hi, *v)
		}
		return nil
	}
	for _, c := range []struct {
		name   string
		v      *float64
		lo, hi float64
		open   bool
	}{
		{"temperature", s.Temperature, 0, 2, false},
		{"top_p", s.TopP, 0, 1, false},
		{"min_p", s.MinP, 0, 1, false},
		{"repeat_penalty", s.RepeatPenalty, 0, 10, true},
		{"frequency_penalty", s.FrequencyPenalty, -2, 2, false},
		{"presence_penalty", s.PresencePenalty, -2, 2, false},
	} {
		if err := finite(c.name, c.v, c.lo, c.hi, c.open); err != nil {
			return req, err
		}
	}
	if s.Temperature != nil {
		p.Temperature = float32(*s.Temperature)
	}
	if s.TopP != nil {
		if *s.TopP == 0 { // the single most likely token
			p.Temperature = 0
		} else {
			p.TopP = float32(*s.TopP)
		}
	}
	if s.TopK != nil {
		if *s.TopK < 0 {
			return req, invalid("top_k", "'top_k' must be >= 0 (0: off), got %d.", *s.TopK)
		}
		p.TopK = *s.TopK
	}
	if s.MinP != nil {
		p.MinP = float32(*s.MinP)
	}
	if s.RepeatPenalty != nil {
		p.RepeatPenalty = float32(*s.RepeatPenalty)
	}
	if s.FrequencyPenalty != nil {
		p.FrequencyPenalty = float32(*s.FrequencyPenalty)
	}
	if s.PresencePenalty != nil {
		p.PresencePenalty = float32(*s.PresencePenalty)
	}
	if s.Seed != nil {
		p.Seed = uint64(*s.Seed)
	} else {
		p.Seed = rand.Uint64() >> 1
	}
	if err := p.Validate(); err != nil {
		return req, invalid("", "Invalid sampling parameters: %v", err)
	}
	req.Sampling = p
	req.MaxTokens = defaultMax
	if maxTokens != nil {
		if *maxTokens <= 0 {
			return req, invalid(maxTokensParam, "'%s' must be at least 1, got %d.", maxTokensParam, *maxTokens)
		}
		req.MaxTokens = *maxTokens
	}
	if s.Stop != nil {
		if len(s.Stop.List) > maxStops {
			return req, invalid("stop", "'stop' holds at most %d sequences, got %d.", maxStops, len(s.Stop.List))
		}
		for _, st := range s.Stop.List {
			if st != "" {
				req.Stop = append(req.Stop, st)
			}
		}
	}
	if len(s.LogitBias) > 0 {
		return req, invalid("logit_bias", "'logit_bias' is not supported by this server.")
	}
	return req, nil
}

// completionJob validates a completion request against the engine.
func completionJob(c *completionRequest, st *engineState) (*job, *httpError) {
	req, herr := c.params(c.MaxTokens, "max_tokens", defaultCompletionTokens)
	if herr != nil {
		return nil, herr
	}
	j := &job{req: req, stream: c.Stream, logprobs: -1}
	switch {
	case c.Echo:
		return nil, invalid("echo", "'echo' is not supported by this server.")
	case c.Suffix != nil && *c.Suffix != "":
		return nil, invalid("suffix", "'suffix' is not supported by this server.")
	case c.BestOf != nil && *c.BestOf != 1:
		return nil, invalid("best_of", "best_of=%d is not supported: this server generates one choice per request.", *c.BestOf)
	case c.Logprobs != nil && (*c.Logprobs < 0 || *c.Logprobs > maxLogprobs):
		return nil, invalid("logprobs", "'logprobs' must be in [0, %d], got %d.", maxLogprobs, *c.Logprobs)
	case c.Prompt == nil:
		return nil, invalid("prompt", "Missing required parameter: 'prompt'.")
	case c.Prompt.Batched > 1:
		return nil, invalid("prompt", "An array of %d prompts is not supported: send one prompt per request.", c.Prompt.Batched)
	}
	if c.Logprobs != nil {
		j.logprobs = *c.Logprobs
	}
	if c.StreamOptions != nil {
		if !c.Stream {
			return nil, invalid("stream_options", "'stream_options' is only allowed when 'stream' is true.")
		}
		j.includeUsage = c.StreamOptions.IncludeUsage
	}
	tok := st.engine.Tokenizer()
	if c.Prompt.Text != nil {
		j.tokens = tok.Encode(*c.Prompt.Text, true, true)
	} else {
		j.tokens = c.Prompt.Tokens
		vocab := tok.VocabSize()
		for _, id := range j.tokens {
			if id < 0 || int(id) >= vocab {
				return nil, invalid("prompt", "Token id %d is outside the vocabulary [0, %d).", id, vocab)
			}
		}
	}
	if len(j.tokens) == 0 {
		return nil, invalid("prompt", "The prompt is empty.")
	}
	return j, checkContext(j, st.engine.ContextSize(), "prompt")
}

// chatJob validates a chat request and renders its messages.
func chatJob(c *chatRequest, st *engineState) (*job, *httpError) {
	maxTok, param := c.MaxTokens, "max_tokens"
	if c.MaxCompletionTokens != nil {
		maxTok, param = c.MaxCompletionTokens, "max_completion_tokens"
	}
	req, herr := c.params(maxTok, param, st.engine.ContextSize())
	if herr != nil {
		return nil, herr
	}
	j := &job{chat: true, req: req, stream: c.Stream, logprobs: -1}
	switch {
	case len(c.Tools) > 0 && string(c.Tools) != "null" && string(c.Tools) != "[]":
		return nil, invalid("tools", "'tools' (function calling) is not supported by this server.")
	case len(c.Functions) > 0 && string(c.Functions) != "null":
		return nil, invalid("functions", "'functions' (function calling) is not supported by this server.")
	case c.ResponseFormat != nil && c.ResponseFormat.Type != "" && c.ResponseFormat.Type != "text":
		return nil, invalid("response_format", "response_format %q is not supported by this server: only \"text\".", c.ResponseFormat.Type)
	case c.TopLogprobs != nil && (*c.TopLogprobs < 0 || *c.TopLogprobs > maxTopLogprobs):
		return nil, invalid("top_logprobs", "'top_logprobs' must be in [0, %d], got %d.", maxTopLogprobs, *c.TopLogprobs)
	case c.TopLogprobs != nil && (c.Logprobs == nil || !*c.Logprobs):
		return nil, invalid("top_logprobs", "'top_logprobs' requires 'logprobs' to be true.")
	case len(c.Messages) == 0:
		return nil, invalid("messages", "'messages' must be a non-empty array.")
	}
	if c.Logprobs != nil && *c.Logprobs {
		j.logprobs = 0
		if c.TopLogprobs != nil {
			j.logprobs = *c.TopLogprobs
		}
	}
	if c.StreamOptions != nil {
		if !c.Stream {
			return nil, invalid("stream_options", "'stream_options' is only allowed when 'stream' is true.")
		}
		j.includeUsage = c.StreamOptions.IncludeUsage
	}
	msgs := make([]chat.Message, len(c.Messages))
	for i, m := range c.Messages {
		param := fmt.Sprintf("messages[%d]", i)
		if m.Role == nil {
			return nil, invalid(param+".role", "Missing required parameter: '%s.role'.", param)
		}
		role := *m.Role
		switch role {
		case "system", "user", "assistant", "tool":
		case "developer":
			role = "system"
		default:
			return nil, invalid(param+".role", "Invalid value: '%s'. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'.", role)
		}
		if m.Content.NonText != "" {
			return nil, invalid(param+".content", "Content parts of type %q are not supported by this server: only \"text\".", m.Content.NonText)
		}
		if len(m.ToolCalls) > 0 && string(m.ToolCalls) != "null" && string(m.ToolCalls) != "[]" {
			return nil, invalid(param+".tool_calls", "'tool_calls' is not supported by this server.")
		}
		msgs[i] = chat.Message{Role: role, Content: m.Content.Text}
	}
	prompt, err := st.render(msgs)
	if err != nil {
		if errors.Is(err, chat.ErrRejected) {
			return nil, invalid("messages", "%v", err)
		}
		return nil, &httpError{status: http.StatusInternalServerError, body: errorBody{
			Message: err.Error(), Type: "server_error"}}
	}
	j.tokens = st.engine.Tokenizer().Encode(prompt, true, true)
	return j, checkContext(j, st.engine.ContextSize(), "messages")
}

// checkContext rejects a prompt that fills the context and caps max_tokens
// to the room left (the reply then ends with finish_reason "length").
func checkContext(j *job, ctxSize int, param string) *httpError {
	n := len(j.tokens)
	if n >= ctxSize {
		e := invalid(param, "This model's maximum context length is %d tokens. However, your prompt has %d tokens. Please reduce the length of the prompt.", ctxSize, n)
		e.body.Code = strPtr("context_length_exceeded")
		return e
	}
	if room := ctxSize - n; j.req.MaxTokens > room {
		j.req.MaxTokens = room
	}
	j.req.Tokens = j.tokens
	j.req.Logits = j.logprobs >= 0
	return nil
}
