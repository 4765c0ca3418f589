package forgepipe

import (
	"io"
	"sync"
	"time"

	"github.com/forgepipe/forgepipe/actors/sampler"
)

// Token is one piece of a stream: a generated token and the text it
// releases (empty while text that may begin a stop string is held back).
// ID is -1 for text released at the end that belongs to no new token.
type Token struct {
	ID     int32
	Text   string
	Logits []float32 // with Request.Logits
}

// Result is a finished generation.
type Result struct {
	PromptTokens []int32
	Tokens       []int32
	Text         string
	// StopReason is "eos", "max_tokens", "stop", "context", "cancelled" or "error".
	StopReason     string
	QueueDuration  time.Duration // waiting for a sequence slot
	TTFT           time.Duration // from the start of the sequence to its first token
	PromptDuration time.Duration
	DecodeDuration time.Duration
}

// DecodeTokensPerSecond is the generation speed after the first token.
func (r *Result) DecodeTokensPerSecond() float64 {
	if len(r.Tokens) < 2 || r.DecodeDuration <= 0 {
		return 0
	}
	return float64(len(r.Tokens)-1) / r.DecodeDuration.Seconds()
}

// PromptTokensPerSecond is the prefill speed.
func (r *Result) PromptTokensPerSecond() float64 {
	if r.PromptDuration <= 0 {
		return 0
	}
	return float64(len(r.PromptTokens)) / r.PromptDuration.Seconds()
}

// Stream is one running sequence. The sampler hands it tokens without ever
// waiting: they queue here (unbounded) until Next takes them.
type Stream struct {
	p      *Pipeline
	seq    SeqID
	queued time.Duration

	mu         sync.Mutex
	stopCancel func() bool // stops the context watch; set once started
	items      []Token
	done       bool
	err        error
	result     Result
	notify     chan struct{} // a token or the end arrived
	ended      chan struct{} // closed at the end
}

func newStream(p *Pipeline, seq SeqID, queued time.Duration) *Stream {
	return &Stream{p: p, seq: seq, queued: queued, notify: make(chan struct{}, 1), ended: make(chan struct{})}
}

// Seq is the stream's sequence id.
func (s *Stream) Seq() SeqID { return s.seq }

// Next returns the next token. At the end it returns io.EOF, or the error
// that ended the sequence (a cancelled context's error, ErrClosed, a
// layer's failure).
func (s *Stream) Next() (Token, error) {
	for {
		s.mu.Lock()
		if len(s.items) > 0 {
			t := s.items[0]
			s.items[0] = Token{}
			s.items = s.items[1:]
			s.mu.Unlock()
			return t, nil
		}
		if s.done {
			err := s.err
			s.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return Token{}, err
		}
		s.mu.Unlock()
		<-s.notify
	}
}

// Result waits for the end of the sequence and returns its result, with
// the error that ended it, if any.
func (s *Stream) Result() (*Result, error) {
	<-s.ended
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.result
	return &r, s.err
}

// Token implements sampler.Sink.
func (s *Stream) Token(t *sampler.Token) {
	s.push(Token{ID: t.ID, Text: t.Text, Logits: t.Logits})
}

// Done implements sampler.Sink.
func (s *Stream) Done(d *sampler.Done) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	if d.Tail != "" {
		s.items = append(s.items, Token{ID: -1, Text: d.Tail})
	}
	r := d.Result
	s.result = Result{PromptTokens: r.PromptTokens, Tokens: r.Tokens, Text: r.Text, StopReason: r.StopReason,
		QueueDuration: s.queued, TTFT: r.TTFT, PromptDuration: r.PromptDuration, DecodeDuration: r.DecodeDuration}
	s.done, s.err = true, d.Err
	stop := s.stopCancel
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	close(s.ended)
	s.wake()
	s.p.finished(s)
}

// setCancel keeps the function that stops the cancellation watch, or
// calls it at once when the sequence has already ended.
func (s *Stream) setCancel(stop func() bool) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		stop()
		return
	}
	s.stopCancel = stop
	s.mu.Unlock()
}

func (s *Stream) push(t Token) {
	s.mu.Lock()
	s.items = append(s.items, t)
	s.mu.Unlock()
	s.wake()
}

func (s *Stream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Collect reads the stream to its end and returns the result.
func (s *Stream) Collect() (*Result, error) {
	for {
		if _, err := s.Next(); err != nil {
			if err == io.EOF {
				err = nil
			}
			r, _ := s.Result()
			return r, err
		}
	}
}
