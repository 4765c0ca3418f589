package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/loadtest"
	"github.com/forgepipe/forgepipe/sample"
)

// loadtestFlags are the flags of the loadtest command.
type loadtestFlags struct {
	url, prompts, model, backend string
	concurrency, requests        int
	maxTokens, maxPrompts        int
	maxSeqs, queue               int
	temperature                  float64
	timeout                      time.Duration
	stream, chat, asJSON         bool
	inProcess                    bool
}

func (a *app) loadtestCommand() *cobra.Command {
	var fl loadtestFlags
	cmd := &cobra.Command{
		Use:   "loadtest (--url URL | --in-process --model PATH) [--concurrency C] [--requests N]",
		Short: "Fire concurrent prompts at a server (or a pipeline in this process) and report latencies",
		Long: `Fire concurrent prompts and report time to first token, inter-token latency
and end-to-end latency percentiles (p50/p90/p99), aggregate output tokens/s and
errors by kind.

--url targets a running "pipeline serve" (or any OpenAI-compatible server);
TTFT and inter-token latency need --stream there. --in-process opens --model
and drives the Go API directly (always streaming). Prompts are the non-blank
lines of --prompts (e.g. ../shared/data/war-and-peace.txt), used in turn.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := fl.validate(); err != nil {
				return err
			}
			return a.loadtest(cmd.Context(), &fl)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.url, "url", "", "base URL of the server, e.g. http://127.0.0.1:8080")
	f.BoolVar(&fl.inProcess, "in-process", false, "run against a pipeline opened in this process (needs --model)")
	f.StringVar(&fl.model, "model", "", "GGUF model file (with --in-process)")
	f.StringVar(&fl.backend, "backend", "auto", "device with --in-process: auto or host")
	f.IntVar(&fl.maxSeqs, "max-sequences", 16, "sequences generating at once with --in-process")
	f.IntVar(&fl.queue, "queue", 64, "requests waiting for a slot with --in-process")
	f.IntVar(&fl.concurrency, "concurrency", 8, "requests in flight at once")
	f.IntVar(&fl.requests, "requests", 100, "requests in all")
	f.StringVar(&fl.prompts, "prompts", "", "file with one prompt per line (blank lines skipped); default: a few built-in prompts")
	f.IntVar(&fl.maxPrompts, "max-prompts", 10000, "read at most this many prompts from --prompts")
	f.IntVar(&fl.maxTokens, "max-tokens", 64, "max_tokens of each request")
	f.Float64Var(&fl.temperature, "temperature", 0, "sampling temperature (0: greedy)")
	f.BoolVar(&fl.stream, "stream", false, "stream responses (SSE), to measure TTFT and inter-token latency over HTTP")
	f.BoolVar(&fl.chat, "chat", false, "use /v1/chat/completions (the prompt as one user message) instead of /v1/completions")
	f.DurationVar(&fl.timeout, "timeout", 5*time.Minute, "per-request timeout over HTTP")
	f.BoolVar(&fl.asJSON, "json", false, "print the report as JSON")
	return cmd
}

func (fl *loadtestFlags) validate() error {
	switch {
	case fl.inProcess == (fl.url != ""):
		return errors.New("give either --url or --in-process --model PATH")
	case fl.concurrency <= 0:
		return fmt.Errorf("--concurrency %d: want > 0", fl.concurrency)
	case fl.requests <= 0:
		return fmt.Errorf("--requests %d: want > 0", fl.requests)
	case fl.maxTokens <= 0:
		return fmt.Errorf("--max-tokens %d: want > 0", fl.maxTokens)
	case fl.maxPrompts <= 0:
		return fmt.Errorf("--max-prompts %d: want > 0", fl.maxPrompts)
	case math.IsNaN(fl.temperature) || fl.temperature < 0 || fl.temperature > 2:
		return fmt.Errorf("--temperature %v: want a number in [0, 2]", fl.temperature)
	case fl.timeout <= 0:
		return fmt.Errorf("--timeout %v: want > 0", fl.timeout)
	}
	if fl.prompts != "" {
		if err := checkFile("prompts", fl.prompts); err != nil {
			return err
		}
	}
	if fl.inProcess {
		if fl.maxSeqs <= 0 || fl.queue < 0 {
			return fmt.Errorf("--max-sequences %d, --queue %d: want > 0 and >= 0", fl.maxSeqs, fl.queue)
		}
		return checkFile("model", fl.model)
	}
	u, err := url.Parse(fl.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url %q: want http://HOST:PORT", fl.url)
	}
	return nil
}

// loadtest runs the load test and prints its report.
func (a *app) loadtest(ctx context.Context, fl *loadtestFlags) error {
	prompts := loadtest.DefaultPrompts
	if fl.prompts != "" {
		var err error
		if prompts, err = loadtest.ReadPrompts(fl.prompts, fl.maxPrompts); err != nil {
			return err
		}
	}
	var target loadtest.Target
	if fl.inProcess {
		p, err := forgepipe.Open(fl.model, forgepipe.WithBackend(fl.backend), forgepipe.WithMaxSequences(fl.maxSeqs),
			forgepipe.WithQueueSize(fl.queue), forgepipe.WithLogger(a.log))
		if err != nil {
			return err
		}
		defer p.Close()
		target = &loadtest.InProcess{Engine: p, MaxTokens: fl.maxTokens,
			Sampling: sample.Params{Temperature: float32(fl.temperature), Seed: 1}}
	} else {
		client := loadtest.NewHTTPClient(fl.concurrency, fl.timeout)
		defer client.CloseIdleConnections()
		target = &loadtest.HTTP{URL: fl.url, Client: client, MaxTokens: fl.maxTokens, Temperature: fl.temperature,
			Stream: fl.stream, Chat: fl.chat}
	}
	a.log.Info().Stringer("target", target.(fmt.Stringer)).Int("concurrency", fl.concurrency).
		Int("requests", fl.requests).Int("prompts", len(prompts)).Msg("load test")
	progress, finish := a.requestProgress(fl.requests)
	report, err := loadtest.Run(ctx, loadtest.Config{Concurrency: fl.concurrency, Requests: fl.requests,
		Prompts: prompts, Progress: progress}, target)
	finish()
	if report == nil {
		return err
	}
	if fl.asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if e := enc.Encode(report); e != nil {
			return e
		}
	} else if e := report.WriteText(a.stdout); e != nil {
		return e
	}
	if errors.Is(err, context.Canceled) {
		return errCancelled
	}
	if err == nil && report.Succeeded < report.Requests {
		err = fmt.Errorf("%d of %d requests failed", report.Requests-report.Succeeded, report.Requests)
	}
	return err
}

// requestProgress is a progress bar of requests on a terminal, debug logs
// elsewhere.
func (a *app) requestProgress(total int) (func(done int), func()) {
	if !a.stderrIsTerminal() {
		var mu sync.Mutex
		last := time.Now()
		return func(done int) {
			mu.Lock()
			defer mu.Unlock()
			if time.Since(last) >= time.Second || done == total {
				last = time.Now()
				a.log.Debug().Int("done", done).Int("total", total).Msg("progress")
			}
		}, func() {}
	}
	bar := progressbar.NewOptions(total,
		progressbar.OptionSetWriter(a.stderr),
		progressbar.OptionSetDescription("requests"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("req"),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	return func(done int) { _ = bar.Set(done) }, func() { _ = bar.Finish() }
}
