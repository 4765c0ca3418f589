package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/sample"
	"github.com/forgepipe/forgepipe/trace"
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
	trace         string
	pipe          pipelineFlags
}

// pipelineFlags choose between the actor pipeline and the eager path and
// tune the pipeline; run and bench share them.
type pipelineFlags struct {
	eager        bool
	backend      string
	prefetch     int
	weightBudget string
	inline       bool
	cold         bool
	maxBatch     int
	readAhead    string
	noChain      bool
}

func (pf *pipelineFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&pf.eager, "eager", false, "use the sequential path: every weight loaded before the first token, no actors")
	f.StringVar(&pf.backend, "backend", "auto", "device: auto (a GPU if one works, else the host), host, cuda, rocm")
	f.IntVar(&pf.maxBatch, "max-batch", 128, "most rows (prompt tokens and decoded tokens of all sequences) in one layer step")
	f.BoolVar(&pf.cold, "cold", false, "drop the model file from the page cache first (posix_fadvise), to measure a cold start")
	f.IntVar(&pf.prefetch, "prefetch", 2, "layers the uploader copies ahead of the one being computed")
	f.BoolVar(&pf.inline, "inline-layers", false, "run the layer actors on their sender's goroutine (no thread handoff per hop; no overlap between layers)")
	f.StringVar(&pf.weightBudget, "weight-budget", "0", "most device memory for the blocks' weights, in bytes or with a KiB/MiB/GiB suffix (0: no limit)")
	f.BoolVar(&pf.noChain, "no-chain", false, "on a GPU, send a greedy sequence's next step only once its token is back on the host (to measure what chaining on the device gains)")
	f.StringVar(&pf.readAhead, "read-ahead", "auto", "weights read into the page cache in the background from the start, in layer order: auto (up to half the memory), off, or bytes with a KiB/MiB/GiB suffix")
}

// options turns the flags into pipeline options.
func (pf *pipelineFlags) options(a *app, ctxSize int) ([]forgepipe.Option, error) {
	if pf.prefetch < 0 {
		return nil, fmt.Errorf("--prefetch %d: want >= 0", pf.prefetch)
	}
	budget, err := parseBytes(pf.weightBudget)
	if err != nil {
		return nil, fmt.Errorf("--weight-budget %q: %w", pf.weightBudget, err)
	}
	if err := checkBackend(pf.backend); err != nil {
		return nil, err
	}
	if pf.maxBatch <= 0 {
		return nil, fmt.Errorf("--max-batch %d: want > 0", pf.maxBatch)
	}
	readAhead := int64(0) // auto
	switch pf.readAhead {
	case "auto", "":
	case "off":
		readAhead = -1
	default:
		n, err := parseBytes(pf.readAhead)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("--read-ahead %q: want auto, off or a size > 0", pf.readAhead)
		}
		readAhead = n
	}
	opts := []forgepipe.Option{
		forgepipe.WithMaxBatch(pf.maxBatch),
		forgepipe.WithBackend(pf.backend), forgepipe.WithPrefetch(pf.prefetch),
		forgepipe.WithWeightBudget(budget), forgepipe.WithContextSize(ctxSize), forgepipe.WithLogger(a.log),
		forgepipe.WithReadAhead(readAhead),
	}
	if pf.inline {
		opts = append(opts, forgepipe.WithInlineLayers())
	}
	if pf.noChain {
		opts = append(opts, forgepipe.WithoutChaining())
	}
	return opts, nil
}

// parseBytes reads a size such as 1073741824, 512MiB or 2GiB.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 || math.IsInf(n, 0) || n*float64(mult) > math.MaxInt64 {
		return 0, errors.New("want a number of bytes >= 0, optionally with a KiB/MiB/GiB suffix")
	}
	return int64(n * float64(mult)), nil
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
	// LoadMs is the eager path's load, or the pipeline's plan (Open).
	LoadMs float64 `json:"load_ms"`
	TTFTMs float64 `json:"ttft_ms"`
	// FirstTokenMs is the time from the command's start (the process's,
	// within a few milliseconds) to the first token: a cold start's
	// figure. The actor pipeline only.
	FirstTokenMs float64 `json:"first_token_ms,omitempty"`
	PromptTokS   float64 `json:"prompt_tok_s"`
	DecodeTokS   float64 `json:"decode_tok_s"`
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
	f.StringVar(&fl.trace, "trace", "", "write a Chrome trace (Perfetto: ui.perfetto.dev) of the run from the command's start: the device's start, the disk's read-ahead, uploads, layer steps, sampling")
	fl.pipe.register(f)
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
	case fl.trace != "" && fl.pipe.eager:
		return sample.Params{}, fmt.Errorf("--trace: the timeline is of the actor pipeline, not --eager")
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

// run generates through the actor pipeline (or, with --eager, the
// sequential path), streaming text unless --json is set.
func (a *app) run(ctx context.Context, fl *runFlags, params sample.Params) error {
	var stream func(string)
	var streamed strings.Builder
	if !fl.asJSON {
		stream = func(piece string) {
			// os.Stdout is unbuffered: each piece is written (flushed) at once.
			_, _ = io.WriteString(a.stdout, piece)
			streamed.WriteString(piece)
		}
	}
	a.log.Debug().Uint64("seed", params.Seed).Float32("temperature", params.Temperature).
		Int("top_k", params.TopK).Float32("top_p", params.TopP).Float32("min_p", params.MinP).
		Float32("repeat_penalty", params.RepeatPenalty).Msg("sampling")
	var res *model.Result
	var ttft, firstToken time.Duration
	var err error
	if fl.pipe.cold {
		if err := dropFromPageCache(fl.model); err != nil {
			return err
		}
	}
	if fl.pipe.eager {
		res, err = a.runEager(ctx, fl, params, stream)
	} else {
		res, ttft, firstToken, err = a.runPipeline(ctx, fl, params, stream)
	}
	cancelled := errors.Is(err, context.Canceled)
	if err != nil && !(cancelled && res != nil) {
		return err
	}
	if cancelled {
		res.StopReason = stopCancelled
	}

	if fl.asJSON {
		out := runOutput{
			PromptTokens: nonNil(res.PromptTokens), Tokens: nonNil(res.Tokens),
			Text: res.Text, StopReason: res.StopReason,
			Timings: runTimings{
				LoadMs:       float64(res.LoadDuration.Microseconds()) / 1000,
				TTFTMs:       float64(ttft.Microseconds()) / 1000,
				FirstTokenMs: float64(firstToken.Microseconds()) / 1000,
				PromptTokS:   res.PromptTokensPerSecond(),
				DecodeTokS:   res.DecodeTokensPerSecond(),
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

// runEager loads every weight, then generates with the sequential forward.
func (a *app) runEager(ctx context.Context, fl *runFlags, params sample.Params, stream func(string)) (*model.Result, error) {
	progress, done := a.progress("loading")
	start := time.Now()
	if err := checkBackend(fl.pipe.backend); err != nil {
		return nil, err
	}
	m, err := openEager(fl.model, fl.pipe.backend, fl.ctx, progress, a.log)
	done()
	if err != nil {
		return nil, err
	}
	defer m.Close()
	loadTime := time.Since(start)
	c := m.host.Config
	a.log.Info().Str("model", fl.model).Str("arch", c.Arch).Int("layers", c.Layers).Int("dim", c.Dim).
		Int("vocab", c.Vocab).Int("ctx", m.ContextSize()).Str("device", m.Device()).Dur("load", loadTime).Msg("model loaded")
	opts := model.GenerateOptions{MaxTokens: fl.maxTokens, Sampling: params}
	genStart := time.Now()
	res, err := m.Generate(ctx, fl.prompt, opts, stream)
	if res != nil {
		if errors.Is(err, context.Canceled) && res.DecodeDuration == 0 { // cut short before Generate timed the decoding
			res.DecodeDuration = time.Since(genStart) - res.PromptDuration
		}
		if res.LoadDuration == 0 {
			res.LoadDuration = loadTime
		}
	}
	return res, err
}

// runPipeline opens the model as an actor pipeline (headers only: the
// weights are uploaded as the prompt reaches each layer) and generates.
// runPipeline generates through the actor pipeline; it returns the result,
// the time to first token (from the request) and the time from the
// command's start to the first token.
func (a *app) runPipeline(ctx context.Context, fl *runFlags, params sample.Params, stream func(string)) (*model.Result, time.Duration, time.Duration, error) {
	opts, err := fl.pipe.options(a, fl.ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	var rec *trace.Recorder // --trace: its time zero is the process's start, near enough
	var track *trace.Track
	if fl.trace != "" {
		rec = trace.New(trace.Options{})
		track = rec.Track("startup", "run")
		opts = append(opts, forgepipe.WithTrace(rec))
	}
	at := track.Now()
	p, err := forgepipe.Open(fl.model, opts...)
	if err != nil {
		return nil, 0, 0, err
	}
	track.Span("open", "startup", at, trace.Args{})
	closed := false
	defer func() {
		if !closed {
			p.Close()
		}
	}()
	at = track.Now()
	s, err := p.Generate(ctx, forgepipe.Request{Prompt: fl.prompt, MaxTokens: fl.maxTokens, Sampling: params})
	if err != nil {
		return nil, 0, 0, err
	}
	// The weights are uploaded while the prompt goes through the layers:
	// show that progress until the first token.
	stopProgress := a.uploadProgress(p)
	var firstToken time.Duration
	for first := true; ; first = false {
		tok, err := s.Next()
		if first {
			firstToken = time.Since(started)
			stopProgress()
			track.Span("prompt to first token", "startup", at, trace.Args{})
		}
		if err != nil {
			break
		}
		if stream != nil && tok.Text != "" {
			stream(tok.Text)
		}
	}
	r, err := s.Result()
	st := p.Stats().Uploader
	a.log.Info().Int64("uploads", st.Uploads).Int64("uploaded_bytes", st.BytesUploaded).Int64("hits", st.Hits).
		Int64("evictions", st.Evictions).Dur("upload_wait", time.Duration(st.WaitNanos)).Msg("uploader")
	res := &model.Result{PromptTokens: r.PromptTokens, Tokens: r.Tokens, Text: r.Text, StopReason: r.StopReason,
		LoadDuration: p.PlanDuration(), PromptDuration: r.PromptDuration, DecodeDuration: r.DecodeDuration}
	if rec != nil { // written after Close, when every copy has been timed
		closed = true
		if cerr := p.Close(); cerr != nil {
			return res, r.TTFT, firstToken, errors.Join(err, cerr)
		}
		bt, werr := writeTrace(fl.trace, rec)
		if werr != nil {
			return res, r.TTFT, firstToken, errors.Join(err, werr)
		}
		a.log.Info().Str("file", bt.File).Int("events", bt.Events).Int64("dropped", bt.Dropped).
			Msg("trace written (open it at https://ui.perfetto.dev)")
	}
	return res, r.TTFT, firstToken, err
}

// uploadProgress reports the uploader's bytes until the returned function is
// called.
func (a *app) uploadProgress(p *forgepipe.Pipeline) func() {
	update, finish := a.progress("uploading weights")
	total := p.WeightBytes()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				update(min(p.Stats().Uploader.BytesUploaded, total), total)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			finish()
		})
	}
}
