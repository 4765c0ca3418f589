package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/server"
)

// serveFlags are the flags of the serve command.
type serveFlags struct {
	model, addr, backend string
	modelID, template    string
	ctx                  int
	maxSeqs, queue       int
	grace, queueTimeout  time.Duration
}

func (a *app) serveCommand() *cobra.Command {
	var fl serveFlags
	cmd := &cobra.Command{
		Use:   "serve --model PATH [--addr 127.0.0.1:8080]",
		Short: "Serve an OpenAI-compatible HTTP API (completions, chat completions, metrics)",
		Long: `Serve an OpenAI-compatible HTTP API:

  POST /v1/completions, POST /v1/chat/completions (stream: true for SSE)
  GET /v1/models, GET /health (200 once the model is open), GET /metrics (Prometheus)

The listener opens at once; /health answers 503 until the model is ready.
SIGINT or SIGTERM stops accepting, lets running requests finish for --grace,
then cancels the rest.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := fl.validate(); err != nil {
				return err
			}
			return a.serve(cmd.Context(), &fl)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.model, "model", "", "GGUF model file")
	f.StringVar(&fl.addr, "addr", "127.0.0.1:8080", "address to listen on")
	f.StringVar(&fl.backend, "backend", "auto", "device: auto or host")
	f.StringVar(&fl.modelID, "model-id", "", "model name in responses and /v1/models (default: the file name without .gguf)")
	f.StringVar(&fl.template, "chat-template", "", "file holding a Jinja chat template to use instead of the model's")
	f.IntVar(&fl.ctx, "ctx", 0, "context size in tokens per sequence (0: the model's)")
	f.IntVar(&fl.maxSeqs, "max-sequences", 16, "sequences generating at once")
	f.IntVar(&fl.queue, "queue", 64, "requests waiting for a sequence slot; beyond it requests get 429")
	f.DurationVar(&fl.queueTimeout, "queue-timeout", 0, "how long a request may wait for a sequence slot before a 429 (0: until one frees; the queue is bounded by --queue)")
	f.DurationVar(&fl.grace, "grace", 30*time.Second, "on SIGINT/SIGTERM, how long running requests may finish before they are cancelled")
	_ = cmd.MarkFlagRequired("model")
	return cmd
}

func (fl *serveFlags) validate() error {
	switch {
	case fl.ctx < 0:
		return fmt.Errorf("--ctx %d: want >= 0 (0: the model's)", fl.ctx)
	case fl.maxSeqs <= 0:
		return fmt.Errorf("--max-sequences %d: want > 0", fl.maxSeqs)
	case fl.queue < 0:
		return fmt.Errorf("--queue %d: want >= 0", fl.queue)
	case fl.queueTimeout < 0:
		return fmt.Errorf("--queue-timeout %v: want >= 0", fl.queueTimeout)
	case fl.grace < 0:
		return fmt.Errorf("--grace %v: want >= 0", fl.grace)
	}
	if fl.template != "" {
		if err := checkFile("chat-template", fl.template); err != nil {
			return err
		}
	}
	return checkFile("model", fl.model)
}

// serve listens, opens the model, and serves until ctx is cancelled.
func (a *app) serve(ctx context.Context, fl *serveFlags) error {
	id := fl.modelID
	if id == "" {
		id = strings.TrimSuffix(filepath.Base(fl.model), ".gguf")
	}
	var tmpl string
	if fl.template != "" {
		b, err := os.ReadFile(fl.template)
		if err != nil {
			return fmt.Errorf("--chat-template: %w", err)
		}
		tmpl = string(b)
	}
	srv := server.New(server.Config{ModelID: id, Log: a.log, ChatTemplate: tmpl, QueueTimeout: fl.queueTimeout})
	ln, err := net.Listen("tcp", fl.addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", fl.addr, err)
	}
	a.log.Info().Str("addr", ln.Addr().String()).Str("model", fl.model).Msg("listening")

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, fl.grace) }()

	p, err := forgepipe.Open(fl.model, forgepipe.WithBackend(fl.backend), forgepipe.WithContextSize(fl.ctx),
		forgepipe.WithMaxSequences(fl.maxSeqs), forgepipe.WithQueueSize(fl.queue), forgepipe.WithLogger(a.log))
	if err == nil {
		err = srv.SetEngine(server.Pipeline(p))
	}
	if err != nil {
		cancel()
		<-served
		if p != nil {
			p.Close()
		}
		return err
	}
	err = <-served
	if cerr := p.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		a.log.Info().Msg("stopped")
	}
	return err
}
