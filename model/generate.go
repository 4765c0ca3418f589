package model

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/forgepipe/forgepipe/sample"
	"github.com/forgepipe/forgepipe/tokenizer"
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
	st := m.NewState()
	return GenerateWith(ctx, hostStepper{m, st}, m.Tokenizer, m.contextSize, prompt, opts, onText, m.loadDuration)
}

// Stepper is one sequence on some device: Step runs tokens through the
// model at the next positions and returns the last one's logits (or, when
// the sampler is greedy and the device can pick on its own, only the token:
// logits nil).
type Stepper interface {
	Step(ids []int32, greedy bool) (logits []float32, token int32, err error)
	// Pos is the number of positions filled.
	Pos() int
}

type hostStepper struct {
	m  *Model
	st *State
}

func (h hostStepper) Step(ids []int32, _ bool) ([]float32, int32, error) {
	l, err := h.m.Forward(h.st, ids, false)
	return l, -1, err
}

func (h hostStepper) Pos() int { return h.st.Pos }

// GenerateWith is Generate over any Stepper: tok tokenizes and decodes,
// contextSize bounds the sequence, load is reported as the load time.
func GenerateWith(ctx context.Context, sp Stepper, tok *tokenizer.Tokenizer, contextSize int, prompt string,
	opts GenerateOptions, onText func(string), load time.Duration) (*Result, error) {
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
		ids = tok.Encode(prompt, true, true)
	}
	if len(ids) == 0 {
		return nil, ErrEmptyPrompt
	}
	if len(ids) >= contextSize {
		return nil, fmt.Errorf("%w: the prompt has %d tokens, the context holds %d", ErrContextFull, len(ids), contextSize)
	}
	res := &Result{PromptTokens: append([]int32(nil), ids...), LoadDuration: load}
	smp := sample.New(opts.Sampling)
	for _, id := range ids {
		smp.Accept(id)
	}
	greedy := smp.IsGreedy()
	dec := tok.NewDecoder()
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
	logits, picked, err := sp.Step(ids, greedy)
	if err != nil {
		return nil, err
	}
	res.PromptDuration = time.Since(start)
	decodeStart := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		id := picked
		if logits != nil {
			id = smp.Sample(logits)
		}
		smp.Accept(id)
		if tok.IsEOG(id) {
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
		if sp.Pos() >= contextSize {
			res.StopReason = StopContext
			break
		}
		if logits, picked, err = sp.Step([]int32{id}, greedy); err != nil {
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
