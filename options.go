package forgepipe

import (
	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/forgepipe/forgepipe/trace"
)

// Option configures Open.
type Option func(*options)

type options struct {
	backend     string
	prefetch    int
	budget      int64
	maxSeqs     int
	queueSize   int
	contextSize int
	maxBatch    int
	system      *actor.ActorSystem
	log         zerolog.Logger
	fault       func(layer int, seq SeqID) // tests only
	dispatcher  actor.Dispatcher
	trace       *trace.Recorder
	emulate     bool
	readAhead   int64 // bytes; 0: loader.ReadAheadLimit; < 0: none
	noChain     bool
}

func defaultOptions() options {
	return options{backend: "auto", prefetch: 2, maxSeqs: 16, queueSize: 64, maxBatch: 128, log: zerolog.Nop()}
}

// WithBackend picks the device: "auto" (the default: a GPU if one can be
// used, else the CPU) or "host".
func WithBackend(name string) Option { return func(o *options) { o.backend = name } }

// WithPrefetch sets how many layers the uploader copies ahead of the one
// being asked for (default 2).
func WithPrefetch(layers int) Option { return func(o *options) { o.prefetch = layers } }

// WithWeightBudget caps the device memory held by the transformer blocks'
// weights, in bytes; blocks are evicted and uploaded again as needed, so a
// model larger than the budget still runs (0, the default: no cap). The
// embedding and output weights, needed by every token, stay resident
// outside the budget. A block larger than the budget is an error.
func WithWeightBudget(bytes int64) Option { return func(o *options) { o.budget = bytes } }

// WithMaxSequences sets how many sequences generate at once (default 16);
// further requests wait in the queue.
func WithMaxSequences(n int) Option { return func(o *options) { o.maxSeqs = n } }

// WithQueueSize sets how many requests may wait for a free slot (default
// 64); beyond it Generate fails with ErrQueueFull.
func WithQueueSize(n int) Option { return func(o *options) { o.queueSize = n } }

// WithContextSize caps the tokens of one sequence (default: the model's
// trained context length).
func WithContextSize(tokens int) Option { return func(o *options) { o.contextSize = tokens } }

// WithMaxBatch sets the most rows a layer computes in one step (default
// 128); prompts are split into chunks of this size.
func WithMaxBatch(rows int) Option { return func(o *options) { o.maxBatch = rows } }

// WithActorSystem runs the pipeline's actors in an existing actor system.
// Close then stops only the pipeline's actors, not the system.
func WithActorSystem(system *actor.ActorSystem) Option {
	return func(o *options) { o.system = system }
}

// WithLogger sets the logger (default: none). When the pipeline makes its
// own actor system, protoactor's log goes to it too.
func WithLogger(log zerolog.Logger) Option { return func(o *options) { o.log = log } }

// WithInlineLayers runs the layer actors on the goroutine of whoever sends
// them activations (protoactor's synchronized dispatcher) instead of a
// goroutine per mailbox run: a token then crosses the ring without a thread
// handoff, which is faster for few sequences on few cores, but the layers no
// longer overlap with each other.
func WithInlineLayers() Option {
	return func(o *options) { o.dispatcher = actor.NewSynchronizedDispatcher(300) }
}

// WithTrace records a timeline of the pipeline into r: the uploader's
// staging fills and copies, every layer actor's steps and waits for
// weights, and the sampler's logits and sampling, one track each (see
// package trace). Write it with r.WriteJSON after Close, when every copy
// has been timed. Without it (the default) nothing is recorded.
func WithTrace(r *trace.Recorder) Option { return func(o *options) { o.trace = r } }

// WithReadAhead sets how many bytes of weights Open has the OS read into
// the page cache in the background, in the order the layers need them,
// while the device starts and ahead of the uploader: 0 (the default) is up
// to half of the machine's memory, which on most machines is the whole
// model; a negative value turns it off, leaving only the uploader's
// read-ahead of the next few layers. It makes a cold start bounded by the
// disk rather than by the disk and the device start one after the other.
func WithReadAhead(bytes int64) Option { return func(o *options) { o.readAhead = bytes } }

// WithoutChaining makes a greedy sequence on a GPU wait, as sampled ones
// do, for its token to reach the host before its next step is sent to the
// first layer. By default that step leaves at once, the device embedding
// the token it picked, so the GPU never idles between tokens; the price is
// one wasted step when the token ends the sequence. The tokens are the
// same either way: this is for measuring what the chaining gains.
func WithoutChaining() Option { return func(o *options) { o.noChain = true } }

// WithEmulatedGPU runs the GPU backend's code path — device rows, the
// uploader's GPU binding, model/gpustep's steps and graphs — on the host
// driver, with Go emulations of the GPU kernels: slow, for testing that
// path where there is no GPU. It overrides WithBackend.
func WithEmulatedGPU() Option { return func(o *options) { o.emulate = true } }
