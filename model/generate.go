package model

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/forgepipe/forgepipe/sample"
)

// Stop reasons reported in Result.StopReason.
const (
	StopEOS       = "eos"        // the model produced an end-of-generation token
	StopMaxTokens = "max_tokens" // MaxTokens were generated
	StopString    = "stop"       // a stop string appeared in the text
	StopContext   = "context"    // the context filled up
)

// ErrEmptyPrompt is returned for a prompt that tokenizes to nothing.
var ErrEmptyPrompt = errors.New("empty prompt")

// GenerateOptions control one generation.
type GenerateOptions struct {
	MaxTokens int // > 0
	Sampling  sample.Params
	Stop      []string // generation ends when the text contains one; it is cut off
	// Tokens, if set, is used as the prompt instead of tokenizing the text.
	Tokens []int32
}

// Result is a finished generation.
type Result struct {
	PromptTokens   []int32
	Tokens         []int32
	Text           string
	StopReason     string
	LoadDuration   time.Duration
	PromptDuration time.Duration
	DecodeDuration time.Duration
}

// PromptTokensPerSecond is the prefill speed.
func (r *Result) PromptTokensPerSecond() float64 {
	return rate(len(r.PromptTokens), r.PromptDuration)
}

// DecodeTokensPerSecond is the generation speed after the first token.
func (r *Result) DecodeTokensPerSecond() float64 {
	return rate(len(r.Tokens)-1, r.DecodeDuration)
}

func rate(n int, d time.Duration) float64 {
	if n <= 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Generate runs a prompt through the model with the plain sequential
// forward pass and samples up to MaxTokens tokens, streaming each new piece
// of text to onText (which may be nil). ctx cancels between tokens.
func (m *Model) Generate(ctx context.Context, prompt string, opts GenerateOptions, onText func(string)) (*Result, error) {
	if opts.MaxTokens <= 0 {
		return nil, fmt.Errorf("max tokens must be > 0, got %d", opts.MaxTokens)
	}
	if err := opts.Sampling.Validate(); err != nil {
		return nil, err
	}
	ids := opts.Tokens
	if ids == nil {
		if prompt == "" {
			return nil, ErrEmptyPrompt
		}
		ids = m.Tokenizer.Encode(prompt, true, true)
	}
	if len(ids) == 0 {
		return nil, ErrEmptyPrompt
	}
	if len(ids) >= m.contextSize {
		return nil, fmt.Errorf("%w: the prompt has %d tokens, the context holds %d", ErrContextFull, len(ids), m.contextSize)
	}
	res := &Result{PromptTokens: append([]int32(nil), ids...), LoadDuration: m.loadDuration}
	smp := sample.New(opts.Sampling)
	for _, id := range ids {
		smp.Accept(id)
	}
	st := m.NewState()
	dec := m.Tokenizer.NewDecoder()
	var text strings.Builder
	// emit streams text[emitted:upto]; text that might begin a stop string
	// is held back until it is known not to.
	emitted := 0
	emit := func(upto string) {
		if onText != nil && len(upto) > emitted {
			onText(upto[emitted:])
		}
		emitted = max(emitted, len(upto))
	}

	start := time.Now()
	logits, err := m.Forward(st, ids, false)
	if err != nil {
		return nil, err
	}
	res.PromptDuration = time.Since(start)
	decodeStart := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		id := smp.Sample(logits)
		smp.Accept(id)
		if m.Tokenizer.IsEOG(id) {
			res.StopReason = StopEOS
			break
		}
		res.Tokens = append(res.Tokens, id)
		text.WriteString(dec.Next(id))
		if stop, cut := findStop(text.String(), opts.Stop); stop {
			res.Text = cut
			res.StopReason = StopString
			emit(cut)
			break
		}
		emit(text.String()[:text.Len()-heldBack(text.String(), opts.Stop)])
		if len(res.Tokens) >= opts.MaxTokens {
			res.StopReason = StopMaxTokens
			break
		}
		if st.Pos >= m.contextSize {
			res.StopReason = StopContext
			break
		}
		if logits, err = m.Forward(st, []int32{id}, false); err != nil {
			return res, err
		}
	}
	res.DecodeDuration = time.Since(decodeStart)
	if res.StopReason != StopString {
		text.WriteString(dec.Flush())
		res.Text = text.String()
		emit(res.Text)
	}
	return res, nil
}

// findStop reports whether text contains a stop string, and text cut before
// the earliest one.
func findStop(text string, stops []string) (bool, string) {
	cut := -1
	for _, s := range stops {
		if s == "" {
			continue
		}
		if i := strings.Index(text, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut < 0 {
		return false, ""
	}
	return true, text[:cut]
}

// heldBack is the length of the longest suffix of text that is a proper
// prefix of a stop string: text that may yet turn into a stop.
func heldBack(text string, stops []string) int {
	n := 0
	for _, s := range stops {
		for k := min(len(s)-1, len(text)); k > n; k-- {
			if strings.HasSuffix(text, s[:k]) {
				n = k
				break
			}
		}
	}
	return n
}
