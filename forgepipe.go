// Package forgepipe runs GGUF language models as a pipeline of actors and is
// the API for embedding it in a Go service.
//
// Open reads a model's headers and spawns the actors (a loader owning the
// mapped file, an uploader owning the weights' device memory, one actor per
// transformer layer and a sampler); no weight is read until the first
// prompt. Generate starts a sequence and returns a Stream of its tokens;
// many sequences run at once and the layer actors batch them.
//
// A service that already runs protoactor can hand its actor system in
// (WithActorSystem) and talk to the pipeline with actor messages instead:
// send a sampler.Start to Sampler() with its own PID as ReplyTo, and receive
// *sampler.Token and *sampler.Done messages.
package forgepipe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/forgepipe/forgepipe/actors/layer"
	"github.com/forgepipe/forgepipe/actors/loader"
	"github.com/forgepipe/forgepipe/actors/sampler"
	"github.com/forgepipe/forgepipe/actors/uploader"
	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/gpustep"
	"github.com/forgepipe/forgepipe/sample"
	"github.com/forgepipe/forgepipe/tokenizer"
	"github.com/forgepipe/forgepipe/trace"
)

// SeqID names one sequence in a pipeline.
type SeqID = layer.SeqID

// Errors callers branch on (with errors.Is).
var (
	// ErrQueueFull: every sequence slot is busy and the queue is full.
	ErrQueueFull = errors.New("forgepipe: request queue is full")
	// ErrClosed: the pipeline was closed.
	ErrClosed = errors.New("forgepipe: pipeline closed")
	// ErrInvalidRequest wraps a request's validation error.
	ErrInvalidRequest = errors.New("forgepipe: invalid request")
	// ErrEmptyPrompt and ErrContextFull are the model package's.
	ErrEmptyPrompt = model.ErrEmptyPrompt
	ErrContextFull = model.ErrContextFull
)

// Pipeline is an opened model and its actors. Its methods are safe for
// concurrent use.
type Pipeline struct {
	opts    options
	file    *gguf.File
	cfg     *model.Config // shared with the actors
	cfgCopy model.Config  // what Config returns
	tok     *tokenizer.Tokenizer
	ctxSize int
	dev     hip.Device
	gpu     *gpustep.Runtime // nil on the host backend

	system     *actor.ActorSystem
	ownSystem  bool
	supervisor *actor.PID
	spawned    chan struct{}
	stopped    chan struct{}

	loaderPID, uploaderPID, samplerPID *actor.PID
	layerPIDs                          []*actor.PID

	loaderStats   loader.Stats
	uploaderStats uploader.Stats
	samplerStats  sampler.Stats
	layerStats    []*layer.Stats

	slots   chan struct{}
	waiting atomic.Int64
	nextSeq atomic.Uint64
	closing chan struct{}

	mu      sync.Mutex
	closed  bool
	streams map[SeqID]*Stream

	planDuration time.Duration
	readAhead    <-chan struct{} // closed when Open's read-ahead has ended (nil: none)
}

// Open reads the model's headers, opens the device and spawns the actors.
// It reads no weights: its cost does not grow with the model's size.
func Open(path string, opts ...Option) (*Pipeline, error) {
	start := time.Now()
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case o.prefetch < 0:
		return nil, fmt.Errorf("%w: prefetch %d < 0", ErrInvalidRequest, o.prefetch)
	case o.budget < 0:
		return nil, fmt.Errorf("%w: weight budget %d < 0", ErrInvalidRequest, o.budget)
	case o.maxSeqs <= 0:
		return nil, fmt.Errorf("%w: max sequences %d <= 0", ErrInvalidRequest, o.maxSeqs)
	case o.queueSize < 0:
		return nil, fmt.Errorf("%w: queue size %d < 0", ErrInvalidRequest, o.queueSize)
	case o.contextSize < 0:
		return nil, fmt.Errorf("%w: context size %d < 0", ErrInvalidRequest, o.contextSize)
	case o.maxBatch <= 0:
		return nil, fmt.Errorf("%w: max batch %d <= 0", ErrInvalidRequest, o.maxBatch)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{opts: o, file: f, spawned: make(chan struct{}), stopped: make(chan struct{}),
		closing: make(chan struct{}), streams: make(map[SeqID]*Stream), slots: make(chan struct{}, o.maxSeqs)}
	if err := p.plan(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// Keep the disk busy from here to the first token: it reads the weights
	// while the device initialises (a GPU driver takes a few hundred
	// milliseconds) and ahead of the uploader's copies.
	if o.readAhead >= 0 {
		p.readAhead = loader.StartReadAhead(f, p.cfg.Layers, o.readAhead, p.closing, o.trace.Track("startup", "disk read-ahead"))
	}
	startup := o.trace.Track("startup", "open")
	at := startup.Now()
	if o.emulate {
		p.dev, p.gpu, err = openEmulated(p.cfg, p.ctxSize, o.maxBatch, o.log)
	} else {
		p.dev, p.gpu, err = openDevice(o.backend, p.cfg, p.ctxSize, o.maxBatch, o.log)
	}
	startup.Span("open device and runtime", "startup", at, trace.Args{})
	if err != nil {
		p.stopReadAhead()
		f.Close()
		return nil, err
	}
	p.system, p.ownSystem = o.system, o.system == nil
	if p.ownSystem {
		log := o.log.With().Str("lib", "protoactor").Logger()
		p.system = actor.NewActorSystem(
			actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
				return slog.New(zerolog.NewSlogHandler(log))
			}),
			actor.WithDeadLetterThrottleInterval(10*time.Millisecond))
	}
	p.supervisor = p.system.Root.SpawnPrefix(supervisorProps(p), "forgepipe-")
	<-p.spawned
	p.planDuration = time.Since(start)
	o.log.Info().Str("model", path).Str("arch", p.cfg.Arch).Int("layers", p.cfg.Layers).
		Str("device", p.dev.Name()).Dur("plan", p.planDuration).Msg("pipeline ready")
	return p, nil
}

// plan reads the configuration and the tokenizer from the header.
func (p *Pipeline) plan() error {
	cfg, err := model.ConfigFromGGUF(p.file.Header)
	if err != nil {
		return err
	}
	tok, err := tokenizer.FromGGUF(p.file.Metadata)
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	if tok.VocabSize() > cfg.Vocab {
		return fmt.Errorf("tokenizer has %d tokens but the embedding only %d rows", tok.VocabSize(), cfg.Vocab)
	}
	for i := 0; i < cfg.Layers; i++ {
		if len(loader.LayerTensors(p.file.Header, i)) == 0 {
			return fmt.Errorf("block %d has no tensors", i)
		}
	}
	p.cfg, p.cfgCopy, p.tok = cfg, *cfg, tok
	p.ctxSize = cfg.ContextLen
	if p.opts.contextSize > 0 {
		p.ctxSize = p.opts.contextSize
	}
	p.layerStats = make([]*layer.Stats, cfg.Layers)
	for i := range p.layerStats {
		p.layerStats[i] = new(layer.Stats)
	}
	return nil
}

// openDevice opens the backend: "auto" takes a GPU when a driver finds one
// and its kernels load, else the host. A GPU device comes with the runtime
// the actors compute through.
func openDevice(name string, cfg *model.Config, ctxSize, maxBatch int, log zerolog.Logger) (hip.Device, *gpustep.Runtime, error) {
	if name == "" {
		name = "auto"
	}
	start := time.Now()
	dev, err := hip.Open(name, hip.Options{Logger: &log})
	if err != nil {
		return nil, nil, fmt.Errorf("backend %q: %w", name, err)
	}
	if _, ok := dev.(uploader.HostViewer); ok {
		return dev, nil, nil
	}
	opened := time.Now()
	rt, err := gpustep.New(dev, cfg, gpustep.Options{ContextSize: ctxSize, MaxBatch: maxBatch})
	if err == nil {
		// The start-up costs that the file's read-ahead overlaps: the
		// driver (context, libraries) and the runtime (kernels, BLAS).
		log.Info().Str("driver", dev.Driver()).Str("device", dev.Name()).
			Dur("open", opened.Sub(start)).Dur("runtime", time.Since(opened)).Msg("layers compute on the GPU")
		return dev, rt, nil
	}
	dev.Close()
	if name != "auto" {
		return nil, nil, fmt.Errorf("backend %q: %w", name, err)
	}
	log.Warn().Err(err).Msg("the GPU cannot run the model: using the host")
	dev, err = hip.Open("host", hip.Options{Logger: &log})
	return dev, nil, err
}

// openEmulated opens the host device with the GPU runtime on emulated
// kernels (WithEmulatedGPU).
func openEmulated(cfg *model.Config, ctxSize, maxBatch int, log zerolog.Logger) (hip.Device, *gpustep.Runtime, error) {
	dev, err := hip.Open("host", hip.Options{Logger: &log})
	if err != nil {
		return nil, nil, err
	}
	rt, err := gpustep.New(dev, cfg, gpustep.Options{ContextSize: ctxSize, MaxBatch: maxBatch, Emulate: true})
	if err != nil {
		dev.Close()
		return nil, nil, fmt.Errorf("emulated GPU: %w", err)
	}
	return dev, rt, nil
}

// Config is the model's configuration, as read from the header (the
// actors' copy gains the rope frequency factors once the weights are read).
func (p *Pipeline) Config() model.Config { return p.cfgCopy }

// Tokenizer is the model's tokenizer.
func (p *Pipeline) Tokenizer() *tokenizer.Tokenizer { return p.tok }

// ContextSize is the most tokens one sequence may hold.
func (p *Pipeline) ContextSize() int { return p.ctxSize }

// WeightBytes is the size of all the model's tensors: what the uploader
// copies to the device when nothing is evicted.
func (p *Pipeline) WeightBytes() int64 {
	var n int64
	for _, t := range p.file.Tensors {
		n += int64(t.Size)
	}
	return n
}

// DecodeBytes is the bytes of weights one decode step reads: every tensor
// but the token embedding (one row of it is looked up), plus the output
// projection (the embedding again when they are tied).
func (p *Pipeline) DecodeBytes() int64 {
	var n, embd int64
	tied := true
	for _, t := range p.file.Tensors {
		switch t.Name {
		case "token_embd.weight":
			embd = int64(t.Size)
			continue
		case "output.weight":
			tied = false
		}
		n += int64(t.Size)
	}
	if tied {
		n += embd
	}
	return n
}

// Device names the device the layers compute on.
func (p *Pipeline) Device() string { return p.dev.Name() }

// PlanDuration is how long Open took.
func (p *Pipeline) PlanDuration() time.Duration { return p.planDuration }

// Sampler is the sampler actor's PID: the address for sampler.Start and
// sampler.Cancel messages. Sequences started this way bypass Generate's
// admission control (WithMaxSequences, WithQueueSize): the sender paces
// itself. Their input is validated by the sampler, and an invalid Start is
// answered with a Done carrying the error.
func (p *Pipeline) Sampler() *actor.PID { return p.samplerPID }

// System is the actor system the pipeline runs in.
func (p *Pipeline) System() *actor.ActorSystem { return p.system }

// NewSeq returns a sequence id not used before in this pipeline, for
// callers that send sampler.Start themselves.
func (p *Pipeline) NewSeq() SeqID { return SeqID(p.nextSeq.Add(1)) }

// Request is one generation.
type Request struct {
	// Prompt is tokenized with the model's special tokens (BOS) unless
	// Tokens is set, which is then used as is.
	Prompt    string
	Tokens    []int32
	MaxTokens int // > 0
	Sampling  sample.Params
	// Stop strings end the generation; the text is cut before them.
	Stop []string
	// Logits attaches each step's logits to its Token.
	Logits bool
}

// Generate validates req, waits for a sequence slot (ErrQueueFull when too
// many requests are already waiting) and starts the sequence. Cancelling
// ctx ends it and frees its KV caches. A zerolog logger carried by ctx
// (zerolog.Ctx) logs the sequence in the pipeline, so a caller's request id
// appears in the pipeline's own log lines.
func (p *Pipeline) Generate(ctx context.Context, req Request) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req.MaxTokens <= 0 {
		return nil, fmt.Errorf("%w: max tokens must be > 0, got %d", ErrInvalidRequest, req.MaxTokens)
	}
	if err := req.Sampling.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	ids := req.Tokens
	if ids == nil && req.Prompt != "" {
		ids = p.tok.Encode(req.Prompt, true, true)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, ErrEmptyPrompt)
	}
	if len(ids) >= p.ctxSize {
		return nil, fmt.Errorf("%w: the prompt has %d tokens, the context holds %d", ErrContextFull, len(ids), p.ctxSize)
	}
	for _, id := range ids {
		if id < 0 || int(id) >= p.cfg.Vocab {
			return nil, fmt.Errorf("%w: token id %d out of range [0, %d)", ErrInvalidRequest, id, p.cfg.Vocab)
		}
	}
	queued := time.Now()
	if err := p.admit(ctx); err != nil {
		return nil, err
	}
	s := newStream(p, p.NewSeq(), time.Since(queued))
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.slots
		return nil, ErrClosed
	}
	p.streams[s.seq] = s
	p.mu.Unlock()
	root, pid, seq := p.system.Root, p.samplerPID, s.seq
	start := &sampler.Start{
		Seq: seq, Tokens: append([]int32(nil), ids...), Params: req.Sampling, MaxTokens: req.MaxTokens,
		Stop: req.Stop, Logits: req.Logits, Sink: s,
	}
	// A logger the caller put in ctx (zerolog's WithContext, e.g. carrying
	// an HTTP request id) logs this sequence in the pipeline too.
	if l := zerolog.Ctx(ctx); l.GetLevel() != zerolog.Disabled {
		start.Log = l
	}
	root.Send(pid, start)
	// Registered after the Start was sent, so a Cancel always follows it.
	s.setCancel(context.AfterFunc(ctx, func() {
		root.Send(pid, &sampler.Cancel{Seq: seq, Err: context.Cause(ctx)})
	}))
	return s, nil
}

// admit takes a sequence slot, waiting in the bounded queue if need be.
func (p *Pipeline) admit(ctx context.Context) error {
	select {
	case <-p.closing:
		return ErrClosed
	case p.slots <- struct{}{}:
		return nil
	default:
	}
	if p.waiting.Add(1) > int64(p.opts.queueSize) {
		p.waiting.Add(-1)
		return fmt.Errorf("%w: %d sequences running, %d waiting", ErrQueueFull, p.opts.maxSeqs, p.opts.queueSize)
	}
	defer p.waiting.Add(-1)
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.closing:
		return ErrClosed
	}
}

// finished is called by a stream when its sequence ends.
func (p *Pipeline) finished(s *Stream) {
	p.mu.Lock()
	_, ok := p.streams[s.seq]
	delete(p.streams, s.seq)
	p.mu.Unlock()
	if ok {
		<-p.slots
	}
}

// Close stops the pipeline's actors (and the actor system, unless it was
// handed in), fails the sequences still running with ErrClosed and releases
// the device and the file. It leaves no goroutine behind.
func (p *Pipeline) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.closing)
	p.mu.Unlock()

	p.system.Root.Stop(p.supervisor)
	<-p.stopped
	p.mu.Lock()
	live := make([]*Stream, 0, len(p.streams))
	for _, s := range p.streams {
		live = append(live, s)
	}
	p.mu.Unlock()
	for _, s := range live {
		s.Done(&sampler.Done{Seq: s.seq, Err: ErrClosed, Result: sampler.Result{StopReason: sampler.StopError}})
	}
	if p.ownSystem {
		p.system.Shutdown()
	}
	var gpuErr error
	if p.gpu != nil {
		gpuErr = p.gpu.Close()
	}
	p.stopReadAhead()
	return errors.Join(gpuErr, p.dev.Close(), p.file.Close())
}

// stopReadAhead ends the background read-ahead (Open's) and waits for it,
// so that the file is never unmapped under it. p.closing must be closed
// or about to be: it is what stops the goroutine early.
func (p *Pipeline) stopReadAhead() {
	if p.readAhead == nil {
		return
	}
	select {
	case <-p.closing:
	default:
		close(p.closing)
	}
	<-p.readAhead
}

// Queued is the number of requests waiting for a sequence slot.
func (p *Pipeline) Queued() int { return int(p.waiting.Load()) }
