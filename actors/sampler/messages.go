package sampler

import (
	"github.com/rs/zerolog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/forgepipe/forgepipe/actors/layer"
	"github.com/forgepipe/forgepipe/sample"
)

// Start begins a generation. A service that runs protoactor can send it to
// the sampler (Pipeline.Sampler) itself: it then receives the sequence's
// *Token messages and one final *Done at ReplyTo, in order. Seq must be
// unique in the pipeline (Pipeline.NewSeq hands out fresh ones).
type Start struct {
	Seq       layer.SeqID
	Tokens    []int32 // the prompt, tokenized; not empty, shorter than the context
	Params    sample.Params
	MaxTokens int      // > 0
	Stop      []string // generation ends when the text contains one; it is cut off
	// Logits attaches each step's logits (a copy) to its Token.
	Logits bool
	// Exactly one of ReplyTo and Sink receives the sequence's output.
	ReplyTo *actor.PID
	Sink    Sink
	// Log, if set, is this sequence's logger (e.g. one carrying the HTTP
	// request id); the sampler adds the sequence id and logs the
	// sequence's start, tokens (debug) and end with it.
	Log *zerolog.Logger
}

// Cancel ends a sequence early: its Done carries StopCancelled and Err.
type Cancel struct {
	Seq layer.SeqID
	Err error // reported in Done; nil means ErrCancelled
}

// Token is one generated token. Text is the text it releases: it may be
// empty while text that could begin a stop string is held back.
type Token struct {
	Seq    layer.SeqID
	Index  int // 0 for the first generated token
	ID     int32
	Text   string
	Logits []float32 // only when Start.Logits is set
}

// Done ends a sequence. Tail is text released at the end that belongs to
// no Token (held-back text, the decoder's last bytes). Err is set when the
// sequence failed or was cancelled; Result then holds what was done.
type Done struct {
	Seq    layer.SeqID
	Tail   string
	Result Result
	Err    error
}

// Result summarises a finished sequence.
type Result struct {
	PromptTokens []int32
	Tokens       []int32
	Text         string
	StopReason   string // model.StopEOS, StopMaxTokens, StopString, StopContext, or StopCancelled / StopError
	// TTFT is the time from Start to the first token; PromptDuration the
	// prompt's pass through the pipeline (the same moment, measured from
	// when the sampler had the embeddings); DecodeDuration the time after
	// the first token.
	TTFT           time.Duration
	PromptDuration time.Duration
	DecodeDuration time.Duration
}

// Stop reasons beyond those of model.Generate.
const (
	StopCancelled = "cancelled"
	StopError     = "error"
)

// Sink receives a sequence's output on the sampler's goroutine; it must not
// block (queue the values and return).
type Sink interface {
	Token(*Token)
	Done(*Done)
}

// Wire gives the sampler the layer actors, in order. It must be the
// sampler's first message.
type Wire struct {
	Layers []*actor.PID
}
