package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/sample"
)

// runFlags are the flags of the run command.
type runFlags struct {
	model, prompt string
	maxTokens     int
	ctx           int
	seed          int64
	temperature   float32
	topK          int
	topP, minP    float32
	repeatPenalty float32
	asJSON        bool
}

// runOutput is what run --json prints.
type runOutput struct {
	PromptTokens []int32    `json:"prompt_tokens"`
	Tokens       []int32    `json:"tokens"`
	Text         string     `json:"text"`
	StopReason   string     `json:"stop_reason"`
	Timings      runTimings `json:"timings"`
}

type runTimings struct {
	LoadMs     float64 `json:"load_ms"`
	PromptTokS float64 `json:"prompt_tok_s"`
	DecodeTokS float64 `json:"decode_tok_s"`
}

// stopCancelled is the stop reason of a generation cut short by Ctrl-C.
const stopCancelled = "cancelled"

func (a *app) runCommand() *cobra.Command {
	var fl runFlags
	cmd := &cobra.Command{
		Use:   "run --model PATH --prompt TEXT",
		Short: "Generate text from a prompt, streaming it to stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			params, err := fl.validate()
			if err != nil {
				return err
			}
			return a.run(cmd.Context(), &fl, params)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.model, "model", "", "GGUF model file")
	f.StringVar(&fl.prompt, "prompt", "", "prompt text")
	f.IntVar(&fl.maxTokens, "max-tokens", 128, "most tokens to generate (> 0)")
	f.IntVar(&fl.ctx, "ctx", 0, "context size in tokens (0: the model's)")
	f.Int64Var(&fl.seed, "seed", -1, "sampling seed (-1: random)")
	f.Float32Var(&fl.temperature, "temperature", 0.8, "sampling temperature (0: greedy)")
	f.IntVar(&fl.topK, "top-k", 40, "keep the K most likely tokens (0: off)")
	f.Float32Var(&fl.topP, "top-p", 0.95, "keep the smallest set of tokens with this probability mass, in (0, 1] (1: off)")
	f.Float32Var(&fl.minP, "min-p", 0.05, "drop tokens less likely than this times the most likely one, in [0, 1] (0: off)")
	f.Float32Var(&fl.repeatPenalty, "repeat-penalty", 1, "penalty for repeated tokens (1: off)")
	f.BoolVar(&fl.asJSON, "json", false, "print one JSON object at the end instead of streaming")
	_ = cmd.MarkFlagRequired("model")
	_ = cmd.MarkFlagRequired("prompt")
	return cmd
}

// validate checks the flags and returns the sampling parameters.
func (fl *runFlags) validate() (sample.Params, error) {
	finite := func(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }
	switch {
	case fl.prompt == "":
		return sample.Params{}, fmt.Errorf("--prompt: empty")
	case !finite(fl.temperature) || fl.temperature < 0:
		return sample.Params{}, fmt.Errorf("--temperature %v: want a finite number >= 0", fl.temperature)
	case fl.topK < 0:
		return sample.Params{}, fmt.Errorf("--top-k %d: want >= 0", fl.topK)
	case !finite(fl.topP) || fl.topP <= 0 || fl.topP > 1:
		return sample.Params{}, fmt.Errorf("--top-p %v: want a number in (0, 1]", fl.topP)
	case !finite(fl.minP) || fl.minP < 0 || fl.minP > 1:
		return sample.Params{}, fmt.Errorf("--min-p %v: want a number in [0, 1]", fl.minP)
	case !finite(fl.repeatPenalty) || fl.repeatPenalty <= 0:
		return sample.Params{}, fmt.Errorf("--repeat-penalty %v: want a finite number > 0", fl.repeatPenalty)
	case fl.maxTokens <= 0:
		return sample.Params{}, fmt.Errorf("--max-tokens %d: want > 0", fl.maxTokens)
	case fl.ctx < 0:
		return sample.Params{}, fmt.Errorf("--ctx %d: want >= 0 (0: the model's)", fl.ctx)
	case fl.seed < -1:
		return sample.Params{}, fmt.Errorf("--seed %d: want >= 0, or -1 for a random seed", fl.seed)
	}
	if err := checkFile("model", fl.model); err != nil {
		return sample.Params{}, err
	}
	seed := uint64(fl.seed)
	if fl.seed == -1 {
		seed = rand.Uint64() >> 1
	}
	p := sample.Params{
		Temperature: fl.temperature, TopK: fl.topK, TopP: fl.topP, MinP: fl.minP,
		RepeatPenalty: fl.repeatPenalty, Seed: seed,
	}
	if err := p.Validate(); err != nil {
		return sample.Params{}, err
	}
	return p, nil
}

// run loads the model and generates, streaming text unless --json is set.
func (a *app) run(ctx context.Context, fl *runFlags, params sample.Params) error {
	progress, done := a.progress("loading")
	start := time.Now()
	m, err := model.Open(fl.model, model.Options{ContextSize: fl.ctx, Progress: progress})
	done()
	if err != nil {
		return err
	}
	defer m.Close()
	loadTime := time.Since(start)
	c := m.Config
	a.log.Info().Str("model", fl.model).Str("arch", c.Arch).Int("layers", c.Layers).Int("dim", c.Dim).
		Int("vocab", c.Vocab).Int("ctx", m.ContextSize()).Dur("load_ms", loadTime).Msg("model loaded")
	a.log.Debug().Uint64("seed", params.Seed).Float32("temperature", params.Temperature).
		Int("top_k", params.TopK).Float32("top_p", params.TopP).Float32("min_p", params.MinP).
		Float32("repeat_penalty", params.RepeatPenalty).Msg("sampling")

	var stream func(string)
	var streamed strings.Builder
	if !fl.asJSON {
		stream = func(piece string) {
			// os.Stdout is unbuffered: each piece is written (flushed) at once.
			_, _ = io.WriteString(a.stdout, piece)
			streamed.WriteString(piece)
		}
	}
	opts := model.GenerateOptions{MaxTokens: fl.maxTokens, Sampling: params}
	genStart := time.Now()
	res, err := m.Generate(ctx, fl.prompt, opts, stream)
	cancelled := errors.Is(err, context.Canceled)
	if err != nil && !(cancelled && res != nil) {
		return err
	}
	if cancelled {
		res.StopReason = stopCancelled
		if res.DecodeDuration == 0 { // cut short before Generate timed the decoding
			res.DecodeDuration = time.Since(genStart) - res.PromptDuration
		}
	}
	if res.LoadDuration == 0 {
		res.LoadDuration = loadTime
	}

	if fl.asJSON {
		out := runOutput{
			PromptTokens: nonNil(res.PromptTokens), Tokens: nonNil(res.Tokens),
			Text: res.Text, StopReason: res.StopReason,
			Timings: runTimings{
				LoadMs:     float64(res.LoadDuration.Microseconds()) / 1000,
				PromptTokS: res.PromptTokensPerSecond(),
				DecodeTokS: res.DecodeTokensPerSecond(),
			},
		}
		if err := json.NewEncoder(a.stdout).Encode(out); err != nil {
			return err
		}
	} else if s := streamed.String(); s != "" && !strings.HasSuffix(s, "\n") {
		fmt.Fprintln(a.stdout)
	}
	a.log.Info().Int("prompt_tokens", len(res.PromptTokens)).Int("tokens", len(res.Tokens)).
		Str("stop", res.StopReason).Float64("prompt_tok_s", round1(res.PromptTokensPerSecond())).
		Float64("decode_tok_s", round1(res.DecodeTokensPerSecond())).Msg("done")
	if cancelled {
		return errCancelled
	}
	return nil
}

func nonNil(ids []int32) []int32 {
	if ids == nil {
		return []int32{}
	}
	return ids
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }
