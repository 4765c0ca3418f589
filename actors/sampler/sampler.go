// Package sampler is the actor at the ring's turning point. It embeds
// prompts and sends them to the first layer; when activations come back from
// the last layer it applies the final norm and the output projection to the
// rows that need logits, samples each sequence with its own parameters,
// streams the token to the sequence's caller, and sends the embedded token
// back to the first layer. Everything ready at the same moment goes out as
// one message so the layers compute it as one batch. On a GPU a greedy
// sequence's next step leaves before its token reaches the host: the
// device embeds the token it picked (chainable). It ends a sequence on
// an end-of-generation token, a stop string, the token limit, a full context
// or a Cancel, and frees the sequence's KV cache in every layer once none of
// its activations are in flight.
package sampler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/forgepipe/forgepipe/actors/layer"
	"github.com/forgepipe/forgepipe/actors/uploader"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/gpustep"
	"github.com/forgepipe/forgepipe/sample"
	"github.com/forgepipe/forgepipe/tokenizer"
	"github.com/forgepipe/forgepipe/trace"
)

// Errors a Done may carry.
var (
	ErrCancelled  = errors.New("sequence cancelled")
	ErrInvalid    = errors.New("invalid request")
	ErrDuplicate  = errors.New("sequence id already in use")
	ErrNoWeights  = errors.New("cannot load the output weights")
	errNotWired   = errors.New("sampler: no layers wired")
	weightTimeout = time.Minute
)

// Config describes the sampler.
type Config struct {
	Model       *model.Config
	Tokenizer   *tokenizer.Tokenizer
	ContextSize int
	MaxBatch    int // most rows in one message to the first layer
	Uploader    *actor.PID
	Stats       *Stats
	Log         zerolog.Logger
	// Trace, if set, gets a span per projection to logits and per round
	// of sampling.
	Trace *trace.Track
	// GPU, when set, is the device the ring computes on: the sampler embeds
	// and projects there, gives each sequence its KV cache there, picks
	// greedy tokens there and copies back only their ids (and the logits
	// of the sequences that sample on the host).
	GPU *gpustep.Runtime
	// NoChain, on a GPU, sends a greedy sequence's next token to the first
	// layer only once its id is back on the host, as for sampled ones.
	// By default the device embeds the id it picked and the next step is
	// in the ring while the host still waits for the id (see chainable).
	NoChain bool
}

// Stats are the sampler's counters.
type Stats struct {
	Live      atomic.Int64 // sequences started and not yet freed
	Started   atomic.Int64
	Finished  atomic.Int64
	Tokens    atomic.Int64 // tokens sampled
	Messages  atomic.Int64 // messages sent to the first layer
	Rows      atomic.Int64 // rows sent to the first layer
	LogitRows atomic.Int64 // rows projected to logits
	// TopRows are GPU rows sampled from their top candidates, and
	// TopFallbacks those of them that needed their whole logits after all.
	TopRows, TopFallbacks atomic.Int64
	// Chained are rows whose step left before their token was on the
	// host (greedy rows on a GPU: chainable).
	Chained atomic.Int64
}

// Props returns the props of the sampler actor. Its state survives a
// restart; the sequences of a message being handled when it panicked are
// failed.
func Props(cfg Config) *actor.Props {
	st := &state{seqs: make(map[layer.SeqID]*seqState)}
	return actor.PropsFromProducer(func() actor.Actor { return &samplerActor{cfg: &cfg, st: st} })
}

type seqState struct {
	start    *Start
	smp      *sample.Sampler
	dec      *tokenizer.Decoder
	text     strings.Builder
	emitted  int
	pos      int // positions filled in the KV caches once in-flight work is done
	tokens   []int32
	log      zerolog.Logger // the sampler's or Start.Log, with the sequence id
	inflight int            // segments in the ring
	done     bool
	t0       time.Time // Start received
	tEmbed   time.Time
	tFirst   time.Time
}

type outRow struct {
	seg layer.Segment
	x   []float32 // host: the embedded rows
	ids []int32   // GPU: the tokens, embedded when the message leaves
}

type state struct {
	layers   []*actor.PID
	seqs     map[layer.SeqID]*seqState
	m        *model.Model     // the globals bound, once uploaded (host)
	g        *gpustep.Globals // the globals on the GPU
	asked    bool
	waiting  []*Start // before the globals are ready
	out      []outRow
	flush    bool
	inflight []layer.SeqID // sequences of the message being handled
	timer    *time.Timer
	started  bool
}

type samplerActor struct {
	cfg *Config
	st  *state
}

type flushMsg struct{}
type globalsTimeout struct{}

// Receive handles the sampler's messages.
func (a *samplerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if a.st.started {
			a.restarted(ctx)
		}
		a.st.started = true
	case *Wire:
		a.st.layers = m.Layers
	case *Start:
		a.start(ctx, m)
	case *uploader.WeightsReady:
		a.globalsReady(ctx, m)
	case *globalsTimeout:
		if !a.ready() && a.st.asked {
			a.failWaiting(ctx, fmt.Errorf("%w: no answer from the uploader in %v", ErrNoWeights, weightTimeout))
		}
	case *layer.Activations:
		a.activations(ctx, m)
	case *flushMsg:
		a.st.flush = false
		a.flushOut(ctx)
	case *layer.Failed:
		for _, id := range m.Seqs {
			s := a.st.seqs[id]
			if s == nil {
				continue
			}
			s.inflight--
			if !s.done {
				a.finish(ctx, s, StopError, m.Err)
			}
			a.maybeFree(ctx, s)
		}
	case *Cancel:
		if s := a.st.seqs[m.Seq]; s != nil && !s.done {
			err := m.Err
			if err == nil {
				err = ErrCancelled
			}
			a.dropOut(m.Seq)
			a.finish(ctx, s, StopCancelled, err)
			a.maybeFree(ctx, s)
		}
	case *actor.Stopping:
		if a.st.timer != nil {
			a.st.timer.Stop()
		}
	}
}

// restarted recovers after a panic: the sequences of the message being
// handled fail (their state may be half updated), and a flush lost with
// the crash is queued again.
func (a *samplerActor) restarted(ctx actor.Context) {
	seqs := a.st.inflight
	a.st.inflight = nil
	for _, id := range seqs {
		if s := a.st.seqs[id]; s != nil && !s.done {
			a.finish(ctx, s, StopError, fmt.Errorf("sampler: %w", layer.ErrPanic))
			a.maybeFree(ctx, s)
		}
	}
	a.st.flush = false
	if len(a.st.out) > 0 {
		a.st.flush = true
		ctx.Send(ctx.Self(), &flushMsg{})
	}
}

// validate checks a Start before it enters the ring.
func (a *samplerActor) validate(m *Start) error {
	switch {
	case (m.ReplyTo == nil) == (m.Sink == nil):
		return fmt.Errorf("%w: exactly one of ReplyTo and Sink must be set", ErrInvalid)
	case len(m.Tokens) == 0:
		return fmt.Errorf("%w: %w", ErrInvalid, model.ErrEmptyPrompt)
	case len(m.Tokens) >= a.cfg.ContextSize:
		return fmt.Errorf("%w: the prompt has %d tokens, the context holds %d", model.ErrContextFull, len(m.Tokens), a.cfg.ContextSize)
	case m.MaxTokens <= 0:
		return fmt.Errorf("%w: max tokens must be > 0, got %d", ErrInvalid, m.MaxTokens)
	case a.st.seqs[m.Seq] != nil:
		return fmt.Errorf("%w: %d", ErrDuplicate, m.Seq)
	case len(a.st.layers) == 0:
		return errNotWired
	}
	for _, id := range m.Tokens {
		if id < 0 || int(id) >= a.cfg.Model.Vocab {
			return fmt.Errorf("%w: token id %d out of range [0, %d)", ErrInvalid, id, a.cfg.Model.Vocab)
		}
	}
	return m.Params.Validate()
}

func (a *samplerActor) start(ctx actor.Context, m *Start) {
	if err := a.validate(m); err != nil {
		if m.ReplyTo != nil || m.Sink != nil {
			a.deliverDone(ctx, m, &Done{Seq: m.Seq, Err: err, Result: Result{StopReason: StopError, PromptTokens: m.Tokens}})
		}
		return
	}
	s := &seqState{start: m, smp: sample.New(m.Params), dec: a.cfg.Tokenizer.NewDecoder(), t0: time.Now()}
	base := a.cfg.Log
	if m.Log != nil {
		base = *m.Log
	}
	s.log = base.With().Uint64("seq", uint64(m.Seq)).Logger()
	s.log.Debug().Int("prompt_tokens", len(m.Tokens)).Int("max_tokens", m.MaxTokens).Msg("sequence started")
	for _, id := range m.Tokens {
		s.smp.Accept(id)
	}
	if gp := a.cfg.GPU; gp != nil {
		// The KV cache holds the prompt and every token that may follow.
		if err := gp.AddSeq(uint64(m.Seq), min(a.cfg.ContextSize, len(m.Tokens)+m.MaxTokens)); err != nil {
			a.deliverDone(ctx, m, &Done{Seq: m.Seq, Err: err, Result: Result{StopReason: StopError, PromptTokens: m.Tokens}})
			return
		}
	}
	a.st.seqs[m.Seq] = s
	a.cfg.Stats.Live.Add(1)
	a.cfg.Stats.Started.Add(1)
	if !a.ready() {
		a.st.waiting = append(a.st.waiting, m)
		if !a.st.asked {
			a.st.asked = true
			self, root := ctx.Self(), ctx.ActorSystem().Root
			a.st.timer = time.AfterFunc(weightTimeout, func() { root.Send(self, &globalsTimeout{}) })
			ctx.Send(a.cfg.Uploader, &uploader.WeightsRequest{Layer: uploader.Globals, ReplyTo: self})
		}
		return
	}
	a.embedPrompt(ctx, s)
}

// ready reports whether the globals are bound.
func (a *samplerActor) ready() bool { return a.st.m != nil || a.st.g != nil }

func (a *samplerActor) globalsReady(ctx actor.Context, m *uploader.WeightsReady) {
	if a.st.timer != nil {
		a.st.timer.Stop()
		a.st.timer = nil
	}
	if a.ready() {
		return
	}
	if a.cfg.GPU != nil {
		a.gpuGlobalsReady(ctx, m)
		return
	}
	err := m.Err
	g, ok := m.Weights.(*model.Globals)
	if err == nil && !ok {
		err = fmt.Errorf("uploader sent %T, want *model.Globals", m.Weights)
	}
	if err == nil && m.Ready != nil {
		// The sampler computes on this thread (host backend): it needs the
		// bytes themselves, once, before the first embedding.
		err = m.Ready.Synchronize(context.Background())
	}
	if err != nil {
		a.st.asked = false // a later Start asks again
		a.failWaiting(ctx, fmt.Errorf("%w: %w", ErrNoWeights, err))
		return
	}
	if g.Output == nil {
		g.Output = g.TokenEmbd
	}
	if g.RopeFreqs != nil {
		// Set before any activations leave: the layers read it after
		// receiving them.
		a.cfg.Model.Rope.FreqFactors = g.RopeFreqs
	}
	a.st.m = &model.Model{Config: a.cfg.Model, Tokenizer: a.cfg.Tokenizer, Globals: *g}
	a.embedWaiting(ctx)
}

// gpuGlobalsReady takes the globals on the GPU: the compute stream waits
// for their upload, nobody else does.
func (a *samplerActor) gpuGlobalsReady(ctx actor.Context, m *uploader.WeightsReady) {
	err := m.Err
	g, ok := m.Weights.(*gpustep.Globals)
	if err == nil && !ok {
		err = fmt.Errorf("uploader sent %T, want *gpustep.Globals", m.Weights)
	}
	if err == nil && m.Ready != nil {
		err = a.cfg.GPU.WaitEvent(m.Ready)
	}
	if err != nil {
		a.st.asked = false
		a.failWaiting(ctx, fmt.Errorf("%w: %w", ErrNoWeights, err))
		return
	}
	a.st.g = g
	a.embedWaiting(ctx)
}

// embedWaiting sends the prompts that waited for the globals.
func (a *samplerActor) embedWaiting(ctx actor.Context) {
	waiting := a.st.waiting
	a.st.waiting = nil
	for _, w := range waiting {
		if s := a.st.seqs[w.Seq]; s != nil && !s.done {
			a.embedPrompt(ctx, s)
		}
	}
}

func (a *samplerActor) failWaiting(ctx actor.Context, err error) {
	waiting := a.st.waiting
	a.st.waiting = nil
	for _, w := range waiting {
		if s := a.st.seqs[w.Seq]; s != nil && !s.done {
			a.finish(ctx, s, StopError, err)
			a.maybeFree(ctx, s)
		}
	}
}

// embedPrompt queues the prompt in chunks of at most MaxBatch rows; the
// last chunk asks for logits.
func (a *samplerActor) embedPrompt(ctx actor.Context, s *seqState) {
	s.tEmbed = time.Now()
	ids, dim := s.start.Tokens, a.cfg.Model.Dim
	for off := 0; off < len(ids); off += a.cfg.MaxBatch {
		chunk := ids[off:min(off+a.cfg.MaxBatch, len(ids))]
		last := off+len(chunk) == len(ids)
		if a.cfg.GPU != nil {
			a.queue(ctx, outRow{seg: layer.Segment{Seq: s.start.Seq, Pos: off, N: len(chunk), Logits: last}, ids: chunk})
			continue
		}
		x := make([]float32, len(chunk)*dim)
		if err := a.st.m.Embed(x, chunk); err != nil {
			a.finish(ctx, s, StopError, err)
			a.dropOut(s.start.Seq)
			a.maybeFree(ctx, s)
			return
		}
		a.queue(ctx, outRow{seg: layer.Segment{Seq: s.start.Seq, Pos: off, N: len(chunk), Logits: last}, x: x})
	}
	s.pos = len(ids)
}

// queue adds a segment for the first layer and makes sure a flush follows
// what is already in the mailbox.
func (a *samplerActor) queue(ctx actor.Context, r outRow) {
	a.st.out = append(a.st.out, r)
	if !a.st.flush {
		a.st.flush = true
		ctx.Send(ctx.Self(), &flushMsg{})
	}
}

// dropOut removes a sequence's segments that have not been sent yet.
func (a *samplerActor) dropOut(id layer.SeqID) {
	out := a.st.out[:0]
	for _, r := range a.st.out {
		if r.seg.Seq != id {
			out = append(out, r)
		}
	}
	a.st.out = out
}

// flushOut sends the queued segments to the first layer, packed in order
// into messages of at most MaxBatch rows.
func (a *samplerActor) flushOut(ctx actor.Context) {
	dim := a.cfg.Model.Dim
	for len(a.st.out) > 0 {
		n, rows := 0, 0
		for n < len(a.st.out) && (n == 0 || rows+a.st.out[n].seg.N <= a.cfg.MaxBatch) {
			rows += a.st.out[n].seg.N
			n++
		}
		batch := a.st.out[:n]
		a.st.out = a.st.out[n:]
		msg := &layer.Activations{Segs: make([]layer.Segment, 0, n)}
		for _, r := range batch {
			msg.Segs = append(msg.Segs, r.seg)
		}
		if a.cfg.GPU != nil {
			if err := a.gpuEmbed(msg, batch, rows); err != nil {
				for _, r := range batch {
					if s := a.st.seqs[r.seg.Seq]; s != nil && !s.done {
						a.finish(ctx, s, StopError, err)
						a.maybeFree(ctx, s)
					}
				}
				continue
			}
		} else {
			msg.X = make([]float32, 0, rows*dim)
			for _, r := range batch {
				msg.X = append(msg.X, r.x...)
			}
		}
		for _, r := range batch {
			a.st.seqs[r.seg.Seq].inflight++
		}
		a.cfg.Stats.Messages.Add(1)
		a.cfg.Stats.Rows.Add(int64(rows))
		ctx.Send(a.st.layers[0], msg)
	}
	a.st.out = nil
}

// gpuEmbed embeds a message's rows on the GPU.
func (a *samplerActor) gpuEmbed(msg *layer.Activations, batch []outRow, rows int) error {
	ids := make([]int32, 0, rows)
	segs := make([]gpustep.Segment, len(batch))
	for i, r := range batch {
		ids = append(ids, r.ids...)
		segs[i] = gpustep.Segment{Seq: uint64(r.seg.Seq), Pos: r.seg.Pos, N: r.seg.N}
	}
	x, err := a.cfg.GPU.Embed(a.st.g, ids, segs)
	if err != nil {
		return err
	}
	msg.Dev = x
	return nil
}

// activations handles rows back from the last layer: logits for the rows
// that need them (one projection for all), then a step per sequence.
func (a *samplerActor) activations(ctx actor.Context, m *layer.Activations) {
	need, rows := a.arrived(ctx, m)
	if len(need) == 0 {
		if a.cfg.GPU != nil {
			a.cfg.GPU.Release(m.Dev)
		}
		a.st.inflight = nil
		return
	}
	var t0 time.Duration
	if tr := a.cfg.Trace; tr != nil {
		t0 = tr.Now()
	}
	nc := 0
	if a.chainNow() {
		need, rows, nc = a.chainFirst(need, rows)
	}
	logits, ids, chained, err := a.project(ctx, m, need, rows, nc)
	a.cfg.Stats.LogitRows.Add(int64(len(need)))
	if tr := a.cfg.Trace; tr != nil {
		tr.Span("logits", "sample", t0, trace.Args{trace.Int("rows", len(need)), trace.Int("chained", chained)})
		t0 = tr.Now()
	}
	for i, s := range need {
		switch {
		case err != nil:
			a.finish(ctx, s, StopError, err)
			a.maybeFree(ctx, s)
		case logits[i] != nil:
			a.step(ctx, s, logits[i], -1, false)
		default:
			a.step(ctx, s, nil, ids[i], i < chained)
		}
	}
	if tr := a.cfg.Trace; tr != nil {
		tr.Span("sample", "sample", t0, trace.Args{trace.Int("seqs", len(need))})
	}
	a.st.inflight = nil
}

// chainable reports whether the next step of s can leave before its token
// is back on the host (when chainNow allows it): a greedy sequence whose
// caller wants no logits and that will go on unless the token ends it (an
// end of generation or a stop string). The device embeds the token it picked and
// the step enters the ring at once, so the GPU never idles while the host
// reads the token and the actors pass it round; a sequence that the token
// does end wastes that one step, whose row comes back and is dropped.
func (a *samplerActor) chainable(s *seqState) bool {
	return !s.start.Logits && s.smp.IsGreedy() && len(s.tokens)+1 < s.start.MaxTokens && s.pos < a.cfg.ContextSize
}

// chainNow reports whether the rows of the message being handled may
// chain: only when nothing else is in the ring (no other message's rows,
// no rows waiting to be flushed). A chained message circulates as it is,
// so rows that came back in two messages would stay two steps a layer
// for good; queued and flushed instead, they are packed into one message
// again (with a new prompt's rows too), and the next round chains.
func (a *samplerActor) chainNow() bool {
	if a.cfg.GPU == nil || a.cfg.NoChain || len(a.st.out) > 0 {
		return false
	}
	for _, s := range a.st.seqs {
		if s.inflight > 0 {
			return false
		}
	}
	return true
}

// chainFirst orders need (and rows with it) so that the chainable
// sequences come first, and returns how many there are.
func (a *samplerActor) chainFirst(need []*seqState, rows []int) ([]*seqState, []int, int) {
	var first, rest []*seqState
	var firstRows, restRows []int
	for i, s := range need {
		if a.chainable(s) {
			first, firstRows = append(first, s), append(firstRows, rows[i])
		} else {
			rest, restRows = append(rest, s), append(restRows, rows[i])
		}
	}
	if len(first) == 0 {
		return need, rows, 0
	}
	return append(first, rest...), append(firstRows, restRows...), len(first)
}

// arrived accounts for a message's segments and returns the live
// sequences that need logits, with the row of each one's last token.
func (a *samplerActor) arrived(ctx actor.Context, m *layer.Activations) (need []*seqState, rows []int) {
	row := 0
	a.st.inflight = a.st.inflight[:0]
	for _, sg := range m.Segs {
		s := a.st.seqs[sg.Seq]
		last := row + sg.N - 1
		row += sg.N
		if s == nil {
			continue
		}
		s.inflight--
		if s.done {
			a.maybeFree(ctx, s)
			continue
		}
		if !sg.Logits {
			continue
		}
		need = append(need, s)
		rows = append(rows, last)
		a.st.inflight = append(a.st.inflight, sg.Seq)
	}
	return need, rows
}

// project computes the logits of the given rows of m. On the host every
// row's logits come back. On the GPU the token of each row is picked
// there: greedy rows get the argmax (ids), sampling rows their top
// candidates, from which the sampler draws here (ids again); only the rows
// whose caller asked for logits, whose penalties need the whole row, or
// whose draw fell past the candidates get their logits (a second, rare
// projection for the last). The first nc rows are chainable: their next
// step is sent to the first layer before the ids are waited for, and
// chained says how many were (all or none).
func (a *samplerActor) project(ctx actor.Context, m *layer.Activations, need []*seqState, rows []int, nc int) (logits [][]float32, ids []int32, chained int, err error) {
	c := a.cfg.Model
	logits = make([][]float32, len(need))
	if gp := a.cfg.GPU; gp != nil {
		want := make([]gpustep.Want, len(need))
		for i, s := range need {
			switch {
			case s.start.Logits || (!s.smp.IsGreedy() && !s.smp.TopOK()):
				want[i].Logits = make([]float32, c.Vocab)
			case s.smp.TopOK():
				want[i].Top, want[i].Temperature = new(sample.Top), s.smp.Temperature()
			}
		}
		// The rows go back to the pool once the projection is enqueued,
		// before the chained step leaves (see StartProject), unless a
		// sampled row may need its logits projected again below.
		keep := false
		for _, w := range want {
			keep = keep || w.Top != nil
		}
		if keep {
			defer gp.Release(m.Dev)
		}
		p, err := gp.StartProject(a.st.g, m.Dev, rows, want, a.chainSegs(need[:nc]))
		if !keep {
			gp.Release(m.Dev)
		}
		if err != nil {
			return nil, nil, 0, err
		}
		waited := false
		defer func() {
			if !waited { // a panic in between: the next projection must not wait for this one's lock
				_, _ = p.Wait()
			}
		}()
		if nc > 0 && a.chain(ctx, p, need[:nc]) {
			chained = nc
		}
		ids, err = p.Wait()
		waited = true
		if err != nil {
			return nil, nil, 0, err
		}
		var again []int
		tops := 0
		for i, s := range need {
			logits[i] = want[i].Logits
			if want[i].Top == nil {
				continue
			}
			tops++
			id, ok := s.smp.SampleTop(want[i].Top)
			ids[i] = id
			if !ok {
				again = append(again, i)
			}
		}
		a.cfg.Stats.TopRows.Add(int64(tops))
		if len(again) == 0 {
			return logits, ids, chained, nil
		}
		a.cfg.Stats.TopFallbacks.Add(int64(len(again)))
		sub, subWant := make([]int, len(again)), make([]gpustep.Want, len(again))
		for j, i := range again {
			sub[j], logits[i] = rows[i], make([]float32, c.Vocab)
			subWant[j].Logits = logits[i]
		}
		_, err = gp.Project(a.st.g, m.Dev, sub, subWant)
		return logits, ids, chained, err
	}
	xs := make([]float32, 0, len(rows)*c.Dim)
	for _, r := range rows {
		xs = append(xs, m.X[r*c.Dim:(r+1)*c.Dim]...)
	}
	all := make([]float32, len(rows)*c.Vocab)
	a.st.m.Logits(all, xs, len(rows))
	for i := range logits {
		logits[i] = all[i*c.Vocab : (i+1)*c.Vocab]
	}
	return logits, nil, 0, nil
}

// chainSegs are the segments of the next step of chainable sequences: one
// row each, at the position its token will take.
func (a *samplerActor) chainSegs(seqs []*seqState) []gpustep.Segment {
	segs := make([]gpustep.Segment, len(seqs))
	for i, s := range seqs {
		segs[i] = gpustep.Segment{Seq: uint64(s.start.Seq), Pos: s.pos, N: 1}
	}
	return segs
}

// chain sends the next step of seqs (the first rows of p, chainable) to
// the first layer: their tokens embedded on the device from p's picks
// (chainSegs). It reports whether it did; if not, their steps are queued
// once the ids are back, as for any row.
func (a *samplerActor) chain(ctx actor.Context, p *gpustep.Projection, seqs []*seqState) bool {
	x, err := p.Next()
	if err != nil {
		a.cfg.Log.Warn().Err(err).Int("seqs", len(seqs)).Msg("sampler: cannot chain the next step on the device; it waits for the tokens")
		return false
	}
	msg := &layer.Activations{Segs: make([]layer.Segment, len(seqs)), Dev: x}
	for i, s := range seqs {
		msg.Segs[i] = layer.Segment{Seq: s.start.Seq, Pos: s.pos, N: 1, Logits: true}
		s.inflight++
	}
	a.cfg.Stats.Messages.Add(1)
	a.cfg.Stats.Rows.Add(int64(len(seqs)))
	a.cfg.Stats.Chained.Add(int64(len(seqs)))
	ctx.Send(a.st.layers[0], msg)
	return true
}

// step samples one token for s, as model.Generate does: from logits, or
// the token id already picked on the device when logits is nil. chained
// says that the token's step is in the ring already (chain).
func (a *samplerActor) step(ctx actor.Context, s *seqState, logits []float32, picked int32, chained bool) {
	now := time.Now()
	first := s.tFirst.IsZero()
	if first {
		s.tFirst = now
	}
	var kept []float32
	if s.start.Logits {
		kept = append([]float32(nil), logits...)
	}
	id := picked
	if logits != nil {
		id = s.smp.Sample(logits)
	}
	s.smp.Accept(id)
	a.cfg.Stats.Tokens.Add(1)
	if a.cfg.Tokenizer.IsEOG(id) {
		a.finish(ctx, s, model.StopEOS, nil)
		a.maybeFree(ctx, s)
		return
	}
	s.tokens = append(s.tokens, id)
	s.text.WriteString(s.dec.Next(id))
	tok := &Token{Seq: s.start.Seq, Index: len(s.tokens) - 1, ID: id, Logits: kept}
	text := s.text.String()
	if stop, cut := model.FindStop(text, s.start.Stop); stop {
		tok.Text = cut[min(s.emitted, len(cut)):]
		s.emitted = max(s.emitted, len(cut))
		a.deliverToken(ctx, s, tok)
		a.finishText(ctx, s, model.StopString, cut, nil)
		a.maybeFree(ctx, s)
		return
	}
	upto := len(text) - model.HeldBack(text, s.start.Stop)
	if upto > s.emitted {
		tok.Text = text[s.emitted:upto]
		s.emitted = upto
	}
	a.deliverToken(ctx, s, tok)
	if e := s.log.Debug(); e.Enabled() {
		e.Int32("token", id).Int("pos", s.pos).Msg("token")
	}
	switch {
	case len(s.tokens) >= s.start.MaxTokens:
		a.finish(ctx, s, model.StopMaxTokens, nil)
	case s.pos >= a.cfg.ContextSize:
		a.finish(ctx, s, model.StopContext, nil)
	case chained:
		s.pos++
	case a.cfg.GPU != nil:
		a.queue(ctx, outRow{seg: layer.Segment{Seq: s.start.Seq, Pos: s.pos, N: 1, Logits: true}, ids: []int32{id}})
		s.pos++
	default:
		x := make([]float32, a.cfg.Model.Dim)
		if err := a.st.m.Embed(x, []int32{id}); err != nil {
			a.finish(ctx, s, StopError, err)
			break
		}
		a.queue(ctx, outRow{seg: layer.Segment{Seq: s.start.Seq, Pos: s.pos, N: 1, Logits: true}, x: x})
		s.pos++
	}
	a.maybeFree(ctx, s)
}

// finish ends s with everything decoded so far as its text (the decoder
// flushed, unless it failed).
func (a *samplerActor) finish(ctx actor.Context, s *seqState, reason string, err error) {
	if err == nil {
		s.text.WriteString(s.dec.Flush())
	}
	a.finishText(ctx, s, reason, s.text.String(), err)
}

// finishText sends the Done of s with its final text and the text not
// streamed yet as the Tail.
func (a *samplerActor) finishText(ctx actor.Context, s *seqState, reason, text string, err error) {
	s.done = true
	a.dropOut(s.start.Seq)
	d := &Done{Seq: s.start.Seq, Err: err}
	if err == nil && len(text) > s.emitted {
		d.Tail = text[s.emitted:]
		s.emitted = len(text)
	}
	r := Result{PromptTokens: s.start.Tokens, Tokens: s.tokens, Text: text, StopReason: reason}
	if !s.tFirst.IsZero() {
		r.TTFT = s.tFirst.Sub(s.t0)
		r.PromptDuration = s.tFirst.Sub(s.tEmbed)
		r.DecodeDuration = time.Since(s.tFirst)
	}
	d.Result = r
	a.cfg.Stats.Finished.Add(1)
	s.log.Debug().Str("stop", reason).Int("tokens", len(s.tokens)).Err(err).Dur("ttft_ms", r.TTFT).Msg("sequence finished")
	a.deliverDone(ctx, s.start, d)
}

// maybeFree forgets a finished sequence once none of its segments are in
// the ring, and tells every layer to drop its KV cache.
func (a *samplerActor) maybeFree(ctx actor.Context, s *seqState) {
	if !s.done || s.inflight > 0 {
		return
	}
	if _, ok := a.st.seqs[s.start.Seq]; !ok {
		return
	}
	delete(a.st.seqs, s.start.Seq)
	a.cfg.Stats.Live.Add(-1)
	if a.cfg.GPU != nil {
		// Every step that reads the cache has been enqueued: its last
		// segment came back.
		a.cfg.GPU.DropSeq(uint64(s.start.Seq))
	}
	for _, pid := range a.st.layers {
		ctx.Send(pid, &layer.FreeSequence{Seq: s.start.Seq})
	}
}

func (a *samplerActor) deliverToken(ctx actor.Context, s *seqState, t *Token) {
	if s.start.ReplyTo != nil {
		ctx.Send(s.start.ReplyTo, t)
		return
	}
	s.start.Sink.Token(t)
}

func (a *samplerActor) deliverDone(ctx actor.Context, m *Start, d *Done) {
	if m.ReplyTo != nil {
		ctx.Send(m.ReplyTo, d)
		return
	}
	m.Sink.Done(d)
}
