package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
)

// The OpenAI wire types. Requests list every parameter OpenAI accepts, so
// that a parameter it does not know is rejected as OpenAI rejects it, and a
// known one the engine cannot honour gets a clear 400.

// sampling are the parameters both endpoints share. top_k, min_p and
// repeat_penalty are llama.cpp's extensions.
type sampling struct {
	Model            string          `json:"model"`
	MaxTokens        *int            `json:"max_tokens"`
	Temperature      *float64        `json:"temperature"`
	TopP             *float64        `json:"top_p"`
	TopK             *int            `json:"top_k"`
	MinP             *float64        `json:"min_p"`
	RepeatPenalty    *float64        `json:"repeat_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	Seed             *int64          `json:"seed"`
	Stop             *stopField      `json:"stop"`
	N                *int            `json:"n"`
	Stream           bool            `json:"stream"`
	StreamOptions    *streamOptions  `json:"stream_options"`
	LogitBias        map[string]any  `json:"logit_bias"`
	User             string          `json:"user"`
	Metadata         json.RawMessage `json:"metadata"`
	Store            *bool           `json:"store"`
	ServiceTier      *string         `json:"service_tier"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// completionRequest is POST /v1/completions.
type completionRequest struct {
	sampling
	Prompt   *promptField `json:"prompt"`
	Logprobs *int         `json:"logprobs"`
	Echo     bool         `json:"echo"`
	Suffix   *string      `json:"suffix"`
	BestOf   *int         `json:"best_of"`
}

// chatRequest is POST /v1/chat/completions.
type chatRequest struct {
	sampling
	Messages            []chatMessage   `json:"messages"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            *bool           `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
	ResponseFormat      *responseFormat `json:"response_format"`
	Tools               json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"`
	Functions           json.RawMessage `json:"functions"`
	FunctionCall        json.RawMessage `json:"function_call"`
	Modalities          []string        `json:"modalities"`
	ReasoningEffort     *string         `json:"reasoning_effort"`
}

type responseFormat struct {
	Type       string          `json:"type"`
	JSONSchema json.RawMessage `json:"json_schema"`
}

type chatMessage struct {
	Role       *string         `json:"role"`
	Content    messageContent  `json:"content"`
	Name       string          `json:"name"`
	ToolCalls  json.RawMessage `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
	Refusal    *string         `json:"refusal"`
}

// messageContent is a message's content: a string, null, or an array of
// parts of which only {"type": "text"} ones are supported.
type messageContent struct {
	Text    string
	NonText string // the type of the first part that is not text
}

type contentPart struct {
	Type string  `json:"type"`
	Text *string `json:"text"`
}

func (c *messageContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		return nil
	case len(b) > 0 && b[0] == '"':
		return json.Unmarshal(b, &c.Text)
	case len(b) > 0 && b[0] == '[':
		var parts []contentPart
		if err := json.Unmarshal(b, &parts); err != nil {
			return err
		}
		var buf bytes.Buffer
		for _, p := range parts {
			if p.Type != "text" || p.Text == nil {
				if c.NonText == "" {
					c.NonText = p.Type
				}
				continue
			}
			buf.WriteString(*p.Text)
		}
		c.Text = buf.String()
		return nil
	}
	return &json.UnmarshalTypeError{Value: string(firstByteKind(b)), Type: typeOfString, Field: "content"}
}

// stopField is stop: a string, an array of strings or null.
type stopField struct{ List []string }

func (s *stopField) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		return nil
	case len(b) > 0 && b[0] == '"':
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		s.List = []string{one}
		return nil
	case len(b) > 0 && b[0] == '[':
		return json.Unmarshal(b, &s.List)
	}
	return &json.UnmarshalTypeError{Value: string(firstByteKind(b)), Type: typeOfString, Field: "stop"}
}

// promptField is a completion prompt: a string, an array of one string, or
// an array of token ids.
type promptField struct {
	Text    *string
	Tokens  []int32
	Batched int // prompts in an array of strings or of token arrays
}

func (p *promptField) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		p.Text = &s
		return nil
	}
	if len(b) == 0 || b[0] != '[' {
		return &json.UnmarshalTypeError{Value: string(firstByteKind(b)), Type: typeOfString, Field: "prompt"}
	}
	var items []json.RawMessage
	if err := json.Unmarshal(b, &items); err != nil {
		return err
	}
	if len(items) == 0 {
		p.Tokens = []int32{}
		return nil
	}
	switch first := bytes.TrimSpace(items[0]); {
	case len(first) > 0 && first[0] == '"':
		var ss []string
		if err := json.Unmarshal(b, &ss); err != nil {
			return err
		}
		p.Batched = len(ss)
		p.Text = &ss[0]
	case len(first) > 0 && first[0] == '[':
		var tt [][]int32
		if err := json.Unmarshal(b, &tt); err != nil {
			return err
		}
		p.Batched = len(tt)
		p.Tokens = tt[0]
		if p.Tokens == nil {
			p.Tokens = []int32{}
		}
	default:
		if err := json.Unmarshal(b, &p.Tokens); err != nil {
			return err
		}
	}
	return nil
}

var typeOfString = reflect.TypeOf("")

// firstByteKind names the JSON kind starting with b's first byte, for type
// errors.
func firstByteKind(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}

// Responses.

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type completionResponse struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	Created           int64              `json:"created"`
	Model             string             `json:"model"`
	SystemFingerprint string             `json:"system_fingerprint,omitempty"`
	Choices           []completionChoice `json:"choices"`
	Usage             *usage             `json:"usage,omitempty"`
}

type completionChoice struct {
	Index        int                 `json:"index"`
	Text         string              `json:"text"`
	Logprobs     *completionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

// completionLogprobs is the legacy completions logprobs object.
type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type chatResponse struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint,omitempty"`
	Choices           []chatChoice `json:"choices"`
	Usage             *usage       `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int           `json:"index"`
	Message      *chatOut      `json:"message,omitempty"`
	Delta        *chatOut      `json:"delta,omitempty"`
	Logprobs     *chatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

type chatOut struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
	Refusal *string `json:"refusal,omitempty"`
}

type chatLogprobs struct {
	Content []tokenLogprob `json:"content"`
}

type tokenLogprob struct {
	Token       string       `json:"token"`
	Logprob     float64      `json:"logprob"`
	Bytes       []int        `json:"bytes"`
	TopLogprobs []topLogprob `json:"top_logprobs"`
}

type topLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

type modelList struct {
	Object string      `json:"object"`
	Data   []modelInfo `json:"data"`
}

type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// apiError is OpenAI's error body.
type apiError struct {
	Error errorBody `json:"error"`
}

type errorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// errorf is an error to send as an OpenAI error body with an HTTP status.
type httpError struct {
	status int
	body   errorBody
}

func (e *httpError) Error() string { return e.body.Message }

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// invalid is a 400 invalid_request_error about param.
func invalid(param, format string, args ...any) *httpError {
	return &httpError{status: 400, body: errorBody{Message: fmt.Sprintf(format, args...),
		Type: "invalid_request_error", Param: strPtr(param)}}
}
