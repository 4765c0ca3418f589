package tests

import (
	"errors"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/actors/sampler"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
)

// TestPipelineActorMessages talks to the pipeline with actor messages: a
// valid Start streams Tokens and a Done, invalid ones get a Done with the
// error, and Cancel ends a sequence.
func TestPipelineActorMessages(t *testing.T) {
	defer goleak.VerifyNone(t)
	p, err := forgepipe.Open(testutil.BundledModel(t), forgepipe.WithBackend("host"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sys := p.System()
	got := make(chan any, 1024)
	probe := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *sampler.Token, *sampler.Done:
			got <- m
		}
	}))
	defer sys.Root.Stop(probe)
	done := func(seq forgepipe.SeqID) (*sampler.Done, int) {
		t.Helper()
		tokens := 0
		for {
			select {
			case m := <-got:
				switch m := m.(type) {
				case *sampler.Token:
					if m.Seq == seq {
						tokens++
					}
				case *sampler.Done:
					if m.Seq == seq {
						return m, tokens
					}
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no Done for sequence %d", seq)
			}
		}
	}
	ids := p.Tokenizer().Encode("Prince Andrew", true, true)

	seq := p.NewSeq()
	sys.Root.Send(p.Sampler(), &sampler.Start{Seq: seq, Tokens: ids, MaxTokens: 5, ReplyTo: probe})
	d, n := done(seq)
	if d.Err != nil || n != 5 || d.Result.StopReason != model.StopMaxTokens {
		t.Errorf("valid Start: err %v, %d tokens, stop %s", d.Err, n, d.Result.StopReason)
	}

	for _, tc := range []struct {
		name  string
		start *sampler.Start
		want  error
	}{
		{"empty", &sampler.Start{Seq: p.NewSeq(), MaxTokens: 5, ReplyTo: probe}, model.ErrEmptyPrompt},
		{"no max tokens", &sampler.Start{Seq: p.NewSeq(), Tokens: ids, ReplyTo: probe}, sampler.ErrInvalid},
		{"two sinks", &sampler.Start{Seq: p.NewSeq(), Tokens: ids, MaxTokens: 5, ReplyTo: probe, Sink: plNopSink{}}, sampler.ErrInvalid},
		{"too long", &sampler.Start{Seq: p.NewSeq(), Tokens: make([]int32, p.ContextSize()), MaxTokens: 5, ReplyTo: probe}, model.ErrContextFull},
	} {
		sys.Root.Send(p.Sampler(), tc.start)
		if d, _ := done(tc.start.Seq); !errors.Is(d.Err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, d.Err, tc.want)
		}
	}

	// A duplicate id while the first is running; then Cancel it.
	seq = p.NewSeq()
	sys.Root.Send(p.Sampler(), &sampler.Start{Seq: seq, Tokens: ids, MaxTokens: 100000, ReplyTo: probe})
	sys.Root.Send(p.Sampler(), &sampler.Start{Seq: seq, Tokens: ids, MaxTokens: 5, Sink: plNopSink{}})
	sys.Root.Send(p.Sampler(), &sampler.Cancel{Seq: seq})
	if d, _ := done(seq); !errors.Is(d.Err, sampler.ErrCancelled) || d.Result.StopReason != sampler.StopCancelled {
		t.Errorf("cancelled: err %v, stop %s", d.Err, d.Result.StopReason)
	}
	testutil.WaitFor(t, "no live sequences and no KV left", func() bool { return p.Stats().KVSequences() == 0 && p.Stats().Sampler.Live == 0 })
}

type plNopSink struct{}

func (plNopSink) Token(*sampler.Token) {}
func (plNopSink) Done(*sampler.Done)   {}
