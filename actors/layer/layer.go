// Package layer is the actor of one transformer block. Its weights are nil
// until activations first arrive; it then asks the uploader for them and
// keeps the messages that arrive meanwhile. It holds its layer's KV cache
// for every live sequence and runs everything waiting in its mailbox (up to
// a maximum number of rows) as one batched Block.Forward: sequences at
// different positions, prompt chunks and single decoded tokens together.
//
// A panic while computing is handled by the supervisor, which restarts the
// actor. The KV caches and the waiting messages live in a state that
// survives the restart; the restarted actor gives its weights back,
// requests them again and re-runs the interrupted batch one sequence at a
// time (a step writes the KV cache at fixed positions, so running it again
// is harmless). A sequence that fails on its own is reported to the sampler
// as Failed; the others carry on.
package layer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/forgepipe/forgepipe/actors/uploader"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/gpustep"
	"github.com/forgepipe/forgepipe/trace"
)

// ErrWeightsTimeout is wrapped when the uploader does not answer a weights
// request in time.
var ErrWeightsTimeout = errors.New("timed out waiting for weights")

// ErrPanic is wrapped in the error of a sequence whose step panicked.
var ErrPanic = errors.New("layer step panicked")

// Config describes one layer actor.
type Config struct {
	Index    int
	Model    *model.Config
	Next     *actor.PID // the next layer actor, or the sampler after the last
	Sampler  *actor.PID // receives Failed
	Uploader *actor.PID
	MaxBatch int // most rows in one step
	// WeightsTimeout bounds the wait for WeightsReady (0: one minute).
	WeightsTimeout time.Duration
	Stats          *Stats
	Log            zerolog.Logger
	// Dispatcher runs the actor's mailbox (nil: protoactor's default, a
	// goroutine per run). A synchronized dispatcher runs it on the sender's
	// goroutine: no thread handoff per hop, but no overlap between layers.
	Dispatcher actor.Dispatcher
	// Fault, if set, is called before each step for every sequence in it
	// and may panic: a test hook for the supervision path.
	Fault func(layer int, seq SeqID)
	// Trace, if set, gets a span per step (rows, sequences) and per wait
	// for weights: the request's round trip and the wait for the copy.
	Trace *trace.Track
	// GPU, when set, is the device the layer computes on: its weights are
	// a *gpustep.Block, its messages carry device rows, and a step only
	// enqueues work (the KV caches live with the runtime's sequences).
	GPU *gpustep.Runtime
}

// Props returns the props of a layer actor. The state the actor keeps
// across restarts is created here, once.
func Props(cfg Config) *actor.Props {
	if cfg.WeightsTimeout <= 0 {
		cfg.WeightsTimeout = time.Minute
	}
	st := &state{caches: make(map[SeqID]*model.LayerCache)}
	var opts []actor.PropsOption
	if cfg.Dispatcher != nil {
		opts = append(opts, actor.WithDispatcher(cfg.Dispatcher))
	}
	return actor.PropsFromProducer(func() actor.Actor {
		return &layerActor{cfg: &cfg, st: st}
	}, opts...)
}

// state is what survives a restart.
type state struct {
	caches  map[SeqID]*model.LayerCache
	kvBytes int64

	pending []*Activations // waiting messages, oldest first
	solo    int            // leading pending messages to run alone (after a crash)
	flush   bool           // a flush message is queued

	weights   *model.Block
	gweights  *gpustep.Block
	ready     uploader.Event
	lastUse   uploader.Event
	requested bool
	reqGen    uint64
	timer     *time.Timer
	asked     time.Duration // trace time of the weights request

	inflight     []*Activations // the batch being computed, nil between steps
	inflightSolo bool
	started      bool

	scratch model.Scratch
}

type layerActor struct {
	cfg *Config
	st  *state
}

// flushMsg tells the actor to run a step over what is pending.
type flushMsg struct{}

// weightsTimeout fires when a weights request of generation gen is unanswered.
type weightsTimeout struct{ gen uint64 }

// Receive handles the layer's messages.
func (a *layerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.started(ctx)
	case *Activations:
		a.st.pending = append(a.st.pending, m)
		a.schedule(ctx)
	case *flushMsg:
		a.st.flush = false
		a.step(ctx)
	case *uploader.WeightsReady:
		a.weightsReady(ctx, m)
	case *uploader.Evicted:
		a.release(ctx)
	case *FreeSequence:
		if c, ok := a.st.caches[m.Seq]; ok {
			a.st.kvBytes -= int64(c.Bytes())
			delete(a.st.caches, m.Seq)
			a.publish()
		}
	case *weightsTimeout:
		if a.st.requested && m.gen == a.st.reqGen {
			a.st.requested = false
			a.failPending(ctx, fmt.Errorf("layer %d: %w after %v", a.cfg.Index, ErrWeightsTimeout, a.cfg.WeightsTimeout))
		}
	case *actor.Stopping:
		if a.st.timer != nil {
			a.st.timer.Stop()
		}
	}
}

// started runs at spawn and after every restart. After a crash it fails
// the sequence that crashed alone, or queues the interrupted batch to be run
// again one sequence at a time, and gives the weights back.
func (a *layerActor) started(ctx actor.Context) {
	st := a.st
	if !st.started {
		st.started = true
		return
	}
	a.cfg.Stats.Restarts.Add(1)
	if st.inflight != nil {
		st.pending = st.pending[len(st.inflight):]
		if st.inflightSolo || a.cfg.GPU != nil {
			// On a GPU the batch's rows are not split again: its
			// sequences fail.
			seqs := seqsOf(st.inflight)
			a.cfg.Log.Warn().Int("layer", a.cfg.Index).Any("seqs", seqs).Msg("sequence failed alone after a panic")
			a.fail(ctx, seqs, fmt.Errorf("layer %d: %w", a.cfg.Index, ErrPanic))
		} else {
			split := splitBySeq(st.inflight)
			a.cfg.Log.Warn().Int("layer", a.cfg.Index).Int("seqs", len(split)).Msg("re-running the interrupted batch one sequence at a time")
			st.pending = append(split, st.pending...)
			st.solo += len(split)
		}
		st.inflight = nil
	}
	a.release(ctx)
	st.flush = false
	a.schedule(ctx)
}

// schedule makes sure pending work will run: by requesting the weights, or
// by queuing a flush behind what is already in the mailbox, so that one
// step takes everything that arrived before it.
func (a *layerActor) schedule(ctx actor.Context) {
	st := a.st
	if len(st.pending) == 0 {
		return
	}
	if !a.holds() {
		a.request(ctx)
		return
	}
	if !st.flush {
		st.flush = true
		ctx.Send(ctx.Self(), &flushMsg{})
	}
}

func (a *layerActor) request(ctx actor.Context) {
	st := a.st
	if st.requested {
		return
	}
	st.requested = true
	st.reqGen++
	gen, self, root := st.reqGen, ctx.Self(), ctx.ActorSystem().Root
	if st.timer != nil {
		st.timer.Stop()
	}
	st.timer = time.AfterFunc(a.cfg.WeightsTimeout, func() { root.Send(self, &weightsTimeout{gen: gen}) })
	a.cfg.Stats.WeightRequests.Add(1)
	st.asked = a.cfg.Trace.Now()
	ctx.Send(a.cfg.Uploader, &uploader.WeightsRequest{Layer: a.cfg.Index, ReplyTo: self})
}

func (a *layerActor) weightsReady(ctx actor.Context, m *uploader.WeightsReady) {
	st := a.st
	st.requested = false
	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	if m.Err != nil {
		a.failPending(ctx, fmt.Errorf("layer %d weights: %w", a.cfg.Index, m.Err))
		return
	}
	if a.holds() { // a second lease on what we hold: give it back
		ctx.Send(a.cfg.Uploader, &uploader.Release{Layer: a.cfg.Index})
		return
	}
	if a.cfg.GPU != nil {
		b, ok := m.Weights.(*gpustep.Block)
		if !ok {
			a.failPending(ctx, fmt.Errorf("layer %d: uploader sent %T, want *gpustep.Block", a.cfg.Index, m.Weights))
			return
		}
		if m.Ready != nil {
			// The compute stream waits for the copy; this thread does not.
			if err := a.cfg.GPU.WaitEvent(m.Ready); err != nil {
				ctx.Send(a.cfg.Uploader, &uploader.Release{Layer: a.cfg.Index})
				a.failPending(ctx, fmt.Errorf("layer %d weights: %w", a.cfg.Index, err))
				return
			}
		}
		st.gweights = b
	} else {
		b, ok := m.Weights.(*model.Block)
		if !ok {
			a.failPending(ctx, fmt.Errorf("layer %d: uploader sent %T, want *model.Block", a.cfg.Index, m.Weights))
			return
		}
		st.weights, st.ready = b, m.Ready
	}
	a.cfg.Trace.Span("wait weights", "wait", st.asked, trace.Args{trace.Int("layer", a.cfg.Index)})
	// Step now rather than after a queued flush: an Evicted already in the
	// mailbox would otherwise take the weights before they are used, and
	// under a tight budget the layers could pass them round without ever
	// computing. Everything that arrived while waiting is pending anyway.
	a.step(ctx)
}

// holds reports whether the actor has its weights.
func (a *layerActor) holds() bool { return a.st.weights != nil || a.st.gweights != nil }

// release gives the weights back to the uploader.
func (a *layerActor) release(ctx actor.Context) {
	st := a.st
	if !a.holds() {
		return
	}
	if st.gweights != nil {
		// The memory may go once the work enqueued so far has run.
		if ev, err := a.cfg.GPU.Device().EventCreate(); err == nil {
			if a.cfg.GPU.Record(ev) == nil {
				st.lastUse = ev
			} else {
				_ = ev.Destroy()
				_ = a.cfg.GPU.Stream().Synchronize(context.Background())
			}
		} else {
			_ = a.cfg.GPU.Stream().Synchronize(context.Background())
		}
	}
	ctx.Send(a.cfg.Uploader, &uploader.Release{Layer: a.cfg.Index, LastUse: st.lastUse})
	st.weights, st.gweights, st.ready, st.lastUse = nil, nil, nil, nil
}

// step runs one batch: the first pending message alone while recovering
// from a crash, otherwise as many whole pending messages as fit MaxBatch.
func (a *layerActor) step(ctx actor.Context) {
	st := a.st
	if len(st.pending) == 0 {
		return
	}
	if !a.holds() {
		a.request(ctx)
		return
	}
	n, rows := 1, st.pending[0].Rows()
	if st.solo > 0 {
		st.solo--
		st.inflightSolo = true
	} else {
		for n < len(st.pending) {
			r := st.pending[n].Rows()
			if rows+r > a.cfg.MaxBatch {
				break
			}
			rows += r
			n++
		}
		st.inflightSolo = false
	}
	batch := st.pending[:n:n]
	st.inflight = batch
	var out *Activations
	if a.cfg.GPU != nil {
		out = a.computeGPU(ctx, batch, rows)
	} else {
		out = a.compute(batch, rows)
	}
	st.inflight = nil
	st.pending = st.pending[n:]
	if out != nil {
		ctx.Send(a.cfg.Next, out)
	}
	a.schedule(ctx)
}

// compute runs the block over the batch's rows into a new message; the
// batch's own rows are left as they were, so a crashed step can run again.
func (a *layerActor) compute(batch []*Activations, rows int) *Activations {
	st, c := a.st, a.cfg.Model
	out := &Activations{X: make([]float32, rows*c.Dim)}
	off := 0
	for _, m := range batch {
		off += copy(out.X[off:], m.X)
		out.Segs = append(out.Segs, m.Segs...)
	}
	segs := make([]model.Segment, len(out.Segs))
	seqs := make(map[SeqID]struct{}, len(out.Segs))
	for i, s := range out.Segs {
		if a.cfg.Fault != nil {
			a.cfg.Fault(a.cfg.Index, s.Seq)
		}
		cache, ok := st.caches[s.Seq]
		if !ok {
			cache = new(model.LayerCache)
			st.caches[s.Seq] = cache
		} else if _, seen := seqs[s.Seq]; !seen {
			st.kvBytes -= int64(cache.Bytes())
		}
		seqs[s.Seq] = struct{}{}
		segs[i] = model.Segment{N: s.N, Pos: s.Pos, Cache: cache}
	}
	if st.ready != nil {
		// On the host backend the step runs on this thread, so it waits for
		// the copy here (only if it is still running); a GPU step would
		// instead make its stream wait on the event.
		start, t0 := time.Now(), a.cfg.Trace.Now()
		if err := st.ready.Synchronize(context.Background()); err != nil {
			panic(fmt.Errorf("layer %d: waiting for weights: %w", a.cfg.Index, err))
		}
		st.ready = nil
		a.cfg.Stats.WeightWaitNanos.Add(time.Since(start).Nanoseconds())
		a.cfg.Trace.Span("wait copy", "wait", t0, trace.Args{trace.Int("layer", a.cfg.Index)})
	}
	var t0 time.Duration
	if tr := a.cfg.Trace; tr != nil {
		t0 = tr.Now()
	}
	st.weights.Forward(c, out.X, segs, &st.scratch)
	if tr := a.cfg.Trace; tr != nil {
		tr.Span("forward", "compute", t0, trace.Args{trace.Int("layer", a.cfg.Index), trace.Int("rows", rows), trace.Int("seqs", len(seqs))})
	}
	for seq := range seqs {
		st.kvBytes += int64(st.caches[seq].Bytes())
	}
	a.cfg.Stats.noteBatch(rows, len(seqs))
	a.publish()
	if e := a.cfg.Log.Debug(); e.Enabled() {
		e.Int("layer", a.cfg.Index).Int("rows", rows).Int("seqs", len(seqs)).Msg("step")
	}
	return out
}

// computeGPU enqueues the block over the batch's device rows and returns
// the message of its output rows, or nil when the step could not be
// enqueued (its sequences are failed).
func (a *layerActor) computeGPU(ctx actor.Context, batch []*Activations, rows int) *Activations {
	gp, st := a.cfg.GPU, a.st
	out := &Activations{}
	for _, m := range batch {
		out.Segs = append(out.Segs, m.Segs...)
	}
	seqs := make(map[SeqID]struct{}, len(out.Segs))
	for _, s := range out.Segs {
		if a.cfg.Fault != nil {
			a.cfg.Fault(a.cfg.Index, s.Seq)
		}
		seqs[s.Seq] = struct{}{}
	}
	var t0 time.Duration
	if tr := a.cfg.Trace; tr != nil {
		t0 = tr.Now()
	}
	in := batch[0].Dev
	var err error
	if len(batch) > 1 {
		parts := make([]gpustep.Rows, len(batch))
		segs := make([]gpustep.Segment, len(out.Segs))
		for i, m := range batch {
			parts[i] = m.Dev
		}
		for i, s := range out.Segs {
			segs[i] = gpustep.Segment{Seq: uint64(s.Seq), Pos: s.Pos, N: s.N}
		}
		in, err = gp.Concat(parts, segs)
	}
	var res gpustep.Rows
	if err == nil {
		res, err = gp.Step(st.gweights, in)
	}
	if err != nil {
		a.cfg.Log.Error().Err(err).Int("layer", a.cfg.Index).Msg("step failed")
		a.fail(ctx, seqsOf(batch), fmt.Errorf("layer %d: %w", a.cfg.Index, err))
		for _, m := range batch {
			gp.Release(m.Dev)
		}
		if len(batch) > 1 && in.X != 0 {
			gp.Release(in)
		}
		return nil
	}
	// The parts' last use is enqueued: they go back to the pool. The
	// step computed in place: its rows are in's.
	if len(batch) > 1 {
		for _, m := range batch {
			gp.Release(m.Dev)
		}
	}
	out.Dev = res
	if tr := a.cfg.Trace; tr != nil {
		tr.Span("enqueue", "compute", t0, trace.Args{trace.Int("layer", a.cfg.Index), trace.Int("rows", rows), trace.Int("seqs", len(seqs))})
	}
	a.cfg.Stats.noteBatch(rows, len(seqs))
	return out
}

func (a *layerActor) publish() {
	a.cfg.Stats.Sequences.Store(int64(len(a.st.caches)))
	a.cfg.Stats.KVBytes.Store(a.st.kvBytes)
}

// failPending fails every waiting sequence (the weights could not be had).
func (a *layerActor) failPending(ctx actor.Context, err error) {
	if len(a.st.pending) == 0 {
		return
	}
	a.fail(ctx, seqsOf(a.st.pending), err)
	a.st.pending, a.st.solo = nil, 0
}

func (a *layerActor) fail(ctx actor.Context, seqs []SeqID, err error) {
	a.cfg.Stats.Failed.Add(int64(len(seqs)))
	ctx.Send(a.cfg.Sampler, &Failed{Layer: a.cfg.Index, Seqs: seqs, Err: err})
}

// seqsOf lists the sequence of every segment in msgs, in order (a
// sequence appears once per segment: the sampler counts segments in flight).
func seqsOf(msgs []*Activations) []SeqID {
	var out []SeqID
	for _, m := range msgs {
		for _, s := range m.Segs {
			out = append(out, s.Seq)
		}
	}
	return out
}

// splitBySeq regroups msgs into one message per sequence, keeping each
// sequence's rows in order.
func splitBySeq(msgs []*Activations) []*Activations {
	dim := 0
	for _, m := range msgs {
		if r := m.Rows(); r > 0 {
			dim = len(m.X) / r
			break
		}
	}
	bySeq := map[SeqID]*Activations{}
	var order []*Activations
	for _, m := range msgs {
		row := 0
		for _, s := range m.Segs {
			o, ok := bySeq[s.Seq]
			if !ok {
				o = &Activations{}
				bySeq[s.Seq] = o
				order = append(order, o)
			}
			o.X = append(o.X, m.X[row*dim:(row+s.N)*dim]...)
			o.Segs = append(o.Segs, s)
			row += s.N
		}
	}
	return order
}
