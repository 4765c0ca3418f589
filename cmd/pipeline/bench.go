package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/sample"
	"github.com/forgepipe/forgepipe/tokenizer"
	"github.com/forgepipe/forgepipe/trace"
)

// benchFlags are the flags of the bench command.
type benchFlags struct {
	model        string
	promptTokens int
	genTokens    int
	concurrency  int
	reps         int
	asJSON       bool
	trace        string
	pipe         pipelineFlags
}

// benchRep is one repetition: Concurrency sequences started together.
type benchRep struct {
	Rep           int     `json:"rep"`
	Sequences     int     `json:"sequences"`
	Tokens        int     `json:"tokens"`
	WallMs        float64 `json:"wall_ms"`
	TTFTMs        float64 `json:"ttft_ms"` // mean over the sequences
	PromptTokS    float64 `json:"prompt_tok_s"`
	DecodeTokS    float64 `json:"decode_tok_s"`          // mean per sequence
	DecodeGBs     float64 `json:"decode_gb_s,omitempty"` // weight bytes read per second at DecodeTokS
	AggregateTokS float64 `json:"aggregate_tok_s"`       // all sequences' tokens / wall time
}

// benchReport is what bench --json prints.
type benchReport struct {
	Model  string `json:"model"`
	Mode   string `json:"mode"` // "actors" or "eager"
	Device string `json:"device"`
	// WeightBytes is the bytes of weights a decode step reads: decode_gb_s
	// is WeightBytes × decode_tok_s, to compare with the device's bandwidth.
	WeightBytes  int64                    `json:"weight_bytes,omitempty"`
	PromptTokens int                      `json:"prompt_tokens"`
	GenTokens    int                      `json:"gen_tokens"`
	Concurrency  int                      `json:"concurrency"`
	PlanMs       float64                  `json:"plan_ms"` // Open: headers only (actors) or every weight read (eager)
	Reps         []benchRep               `json:"reps"`
	Uploader     *forgepipe.UploaderStats `json:"uploader,omitempty"`
	MaxBatchRows int64                    `json:"max_batch_rows,omitempty"`
	GPU          *forgepipe.GPUStats      `json:"gpu,omitempty"`
	Sampler      *forgepipe.SamplerStats  `json:"sampler,omitempty"` // Chained: rows whose step left before their token was read
	Trace        *benchTrace              `json:"trace,omitempty"`
}

// benchTrace says where --trace wrote the timeline and what it holds.
type benchTrace struct {
	File    string               `json:"file"`
	Events  int                  `json:"events"`
	Dropped int64                `json:"dropped"`
	Tracks  []trace.TrackSummary `json:"tracks"`
}

func (a *app) benchCommand() *cobra.Command {
	var fl benchFlags
	cmd := &cobra.Command{
		Use:   "bench --model PATH",
		Short: "Measure plan time, time to first token, prompt, decode and aggregate tokens/s",
		Long: `Measure a model through the actor pipeline (or, with --eager, the sequential
path): the plan (opening the model), then --reps repetitions of --concurrency
sequences started together, each with a prompt of --prompt-tokens tokens and
up to --gen-tokens greedy tokens. The first repetition of the pipeline
includes the lazy upload of the weights.

--trace FILE writes a timeline of the whole run (uploads on the copy stream,
every layer's steps, the sampler, waits for weights) as a Chrome trace: open
it at https://ui.perfetto.dev.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case fl.promptTokens <= 0:
				return fmt.Errorf("--prompt-tokens %d: want > 0", fl.promptTokens)
			case fl.genTokens <= 0:
				return fmt.Errorf("--gen-tokens %d: want > 0", fl.genTokens)
			case fl.concurrency <= 0:
				return fmt.Errorf("--concurrency %d: want > 0", fl.concurrency)
			case fl.reps <= 0:
				return fmt.Errorf("--reps %d: want > 0", fl.reps)
			case fl.trace != "" && fl.pipe.eager:
				return fmt.Errorf("--trace: the timeline is of the actor pipeline, not --eager")
			}
			if err := checkFile("model", fl.model); err != nil {
				return err
			}
			return a.bench(cmd.Context(), &fl)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.model, "model", "", "GGUF model file")
	f.IntVar(&fl.promptTokens, "prompt-tokens", 32, "prompt length in tokens")
	f.IntVar(&fl.genTokens, "gen-tokens", 64, "tokens to generate per sequence (fewer if the model ends it)")
	f.IntVar(&fl.concurrency, "concurrency", 1, "sequences run at once")
	f.IntVar(&fl.reps, "reps", 3, "repetitions")
	f.BoolVar(&fl.asJSON, "json", false, "print one JSON object")
	f.StringVar(&fl.trace, "trace", "", "write a Chrome trace (Perfetto: ui.perfetto.dev) of uploads, layer steps and sampling to this file")
	fl.pipe.register(f)
	_ = cmd.MarkFlagRequired("model")
	return cmd
}

// benchPrompt is n tokens of text (BOS first), shifted by seq so that
// concurrent sequences differ.
func benchPrompt(tok *tokenizer.Tokenizer, n, seq int) []int32 {
	const text = "Prince Andrew looked at the old man and said nothing. The carriage drove on along the road past the fields, and the soldiers sang. "
	ids := tok.Encode(text, true, true)
	body := ids[1:]
	out := []int32{ids[0]}
	for i := 0; len(out) < n; i++ {
		out = append(out, body[(i+seq)%len(body)])
	}
	return out[:n]
}

type benchSeq struct {
	tokens               int
	ttft, prompt, decode time.Duration
}

func (a *app) bench(ctx context.Context, fl *benchFlags) error {
	rep := benchReport{Model: fl.model, Mode: "actors", PromptTokens: fl.promptTokens, GenTokens: fl.genTokens, Concurrency: fl.concurrency}
	var run func(ctx context.Context, seq int) (benchSeq, error)
	start := time.Now()
	var pipe *forgepipe.Pipeline
	var rec *trace.Recorder // --trace
	if fl.pipe.eager {
		rep.Mode = "eager"
		if err := checkBackend(fl.pipe.backend); err != nil {
			return err
		}
		if fl.pipe.cold {
			if err := dropFromPageCache(fl.model); err != nil {
				return err
			}
		}
		m, err := openEager(fl.model, fl.pipe.backend, 0, nil, a.log)
		if err != nil {
			return err
		}
		defer m.Close()
		rep.Device, rep.WeightBytes = m.Device(), m.WeightBytes()
		if fl.promptTokens >= m.ContextSize() {
			return fmt.Errorf("--prompt-tokens %d: the context holds %d", fl.promptTokens, m.ContextSize())
		}
		run = func(ctx context.Context, seq int) (benchSeq, error) {
			r, err := m.Generate(ctx, "", model.GenerateOptions{MaxTokens: fl.genTokens,
				Tokens: benchPrompt(m.host.Tokenizer, fl.promptTokens, seq)}, nil)
			if err != nil {
				return benchSeq{}, err
			}
			return benchSeq{tokens: len(r.Tokens), ttft: r.PromptDuration, prompt: r.PromptDuration, decode: r.DecodeDuration}, nil
		}
	} else {
		opts, err := fl.pipe.options(a, 0)
		if err != nil {
			return err
		}
		opts = append(opts, forgepipe.WithMaxSequences(fl.concurrency), forgepipe.WithQueueSize(0))
		if fl.trace != "" {
			rec = trace.New(trace.Options{})
			opts = append(opts, forgepipe.WithTrace(rec))
		}
		if fl.pipe.cold {
			if err := dropFromPageCache(fl.model); err != nil {
				return err
			}
		}
		if pipe, err = forgepipe.Open(fl.model, opts...); err != nil {
			return err
		}
		defer pipe.Close()
		rep.Device, rep.WeightBytes = pipe.Device(), pipe.DecodeBytes()
		if fl.promptTokens >= pipe.ContextSize() {
			return fmt.Errorf("--prompt-tokens %d: the context holds %d", fl.promptTokens, pipe.ContextSize())
		}
		run = func(ctx context.Context, seq int) (benchSeq, error) {
			s, err := pipe.Generate(ctx, forgepipe.Request{Tokens: benchPrompt(pipe.Tokenizer(), fl.promptTokens, seq),
				MaxTokens: fl.genTokens, Sampling: sample.Params{}})
			if err != nil {
				return benchSeq{}, err
			}
			r, err := s.Collect()
			if err != nil {
				return benchSeq{}, err
			}
			return benchSeq{tokens: len(r.Tokens), ttft: r.TTFT, prompt: r.PromptDuration, decode: r.DecodeDuration}, nil
		}
	}
	rep.PlanMs = ms(time.Since(start))
	a.log.Info().Str("mode", rep.Mode).Float64("plan_ms", rep.PlanMs).Msg("plan")

	for r := 1; r <= fl.reps; r++ {
		res := make([]benchSeq, fl.concurrency)
		errs := make([]error, fl.concurrency)
		var wg sync.WaitGroup
		t0 := time.Now()
		for i := range res {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i], errs[i] = run(ctx, i)
			}()
		}
		wg.Wait()
		wall := time.Since(t0)
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		br := benchRep{Rep: r, Sequences: fl.concurrency, WallMs: ms(wall)}
		var ttft, prompt time.Duration
		var decode float64
		for _, s := range res {
			br.Tokens += s.tokens
			ttft += s.ttft
			prompt += s.prompt
			if s.tokens > 1 && s.decode > 0 {
				decode += float64(s.tokens-1) / s.decode.Seconds()
			}
		}
		n := float64(fl.concurrency)
		br.TTFTMs = ms(ttft) / n
		if prompt > 0 {
			br.PromptTokS = float64(fl.promptTokens) * n / prompt.Seconds()
		}
		br.DecodeTokS = decode / n
		br.DecodeGBs = float64(rep.WeightBytes) * br.DecodeTokS / 1e9
		br.AggregateTokS = float64(br.Tokens) / wall.Seconds()
		rep.Reps = append(rep.Reps, br)
		a.log.Info().Int("rep", r).Int("tokens", br.Tokens).Float64("ttft_ms", round1(br.TTFTMs)).
			Float64("decode_tok_s", round1(br.DecodeTokS)).Float64("aggregate_tok_s", round1(br.AggregateTokS)).Msg("rep")
		if err := ctx.Err(); err != nil {
			return errCancelled
		}
	}
	if pipe != nil {
		st := pipe.Stats()
		rep.Uploader = &st.Uploader
		rep.GPU = st.GPU
		rep.Sampler = &st.Sampler
		for _, l := range st.Layers {
			rep.MaxBatchRows = max(rep.MaxBatchRows, l.MaxBatchRows)
		}
	}
	if rec != nil {
		// Closing first lets the uploader time the copies still pending.
		if err := pipe.Close(); err != nil {
			return err
		}
		bt, err := writeTrace(fl.trace, rec)
		if err != nil {
			return err
		}
		rep.Trace = bt
		a.log.Info().Str("file", rep.Trace.File).Int("events", rep.Trace.Events).Int64("dropped", rep.Trace.Dropped).
			Msg("trace written (open it at https://ui.perfetto.dev)")
	}
	if fl.asJSON {
		return json.NewEncoder(a.stdout).Encode(rep)
	}
	fmt.Fprintf(a.stdout, "model %s, %s, prompt %d tokens, up to %d generated, concurrency %d\n",
		fl.model, rep.Mode, fl.promptTokens, fl.genTokens, fl.concurrency)
	fmt.Fprintf(a.stdout, "plan %.1f ms\n", rep.PlanMs)
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rep\ttokens\twall ms\tTTFT ms\tprompt tok/s\tdecode tok/s\taggregate tok/s\t")
	for _, r := range rep.Reps {
		fmt.Fprintf(tw, "%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", r.Rep, r.Tokens, r.WallMs, r.TTFTMs, r.PromptTokS, r.DecodeTokS, r.AggregateTokS)
	}
	tw.Flush()
	if u := rep.Uploader; u != nil {
		fmt.Fprintf(a.stdout, "uploader: %d uploads (%d prefetched), %d bytes, %d hits, %d evictions, %.1f ms waited; max batch %d rows\n",
			u.Uploads, u.Prefetches, u.BytesUploaded, u.Hits, u.Evictions, float64(u.WaitNanos)/1e6, rep.MaxBatchRows)
	}
	if t := rep.Trace; t != nil {
		fmt.Fprintf(a.stdout, "trace: %d events (%d dropped) in %s; open it at https://ui.perfetto.dev\n", t.Events, t.Dropped, t.File)
	}
	return nil
}

// writeTrace writes rec to path as a Chrome trace.
func writeTrace(path string, rec *trace.Recorder) (*benchTrace, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--trace: %w", err)
	}
	if err := errors.Join(rec.WriteJSON(f), f.Close()); err != nil {
		return nil, fmt.Errorf("--trace %s: %w", path, err)
	}
	bt := &benchTrace{File: path, Dropped: rec.Dropped(), Tracks: rec.Summary()}
	for _, t := range bt.Tracks {
		bt.Events += t.Events
	}
	return bt, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
