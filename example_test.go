package forgepipe_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/actors/sampler"
)

// A Go service embeds the pipeline in two ways: through the Go API
// (Generate and a Stream), and, when it already runs protoactor, through
// actor messages: its own actor sends sampler.Start to the pipeline's
// sampler and receives the tokens as messages.
func Example() {
	// The service's own actor system; the pipeline's actors join it.
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler) // a real service routes this into its own log
	}))
	defer system.Shutdown()

	p, err := forgepipe.Open("models/forgepipe-tiny.f16.gguf",
		forgepipe.WithBackend("host"), forgepipe.WithActorSystem(system))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()

	// 1. The Go API: greedy decoding, streamed.
	s, err := p.Generate(context.Background(), forgepipe.Request{Prompt: "Prince Andrew", MaxTokens: 12})
	if err != nil {
		fmt.Println(err)
		return
	}
	var text strings.Builder
	for {
		tok, err := s.Next()
		if err != nil {
			break // io.EOF at the end
		}
		text.WriteString(tok.Text)
	}
	res, _ := s.Result()
	fmt.Printf("api:    %q (%d tokens, %s)\n", text.String(), len(res.Tokens), res.StopReason)

	// 2. Actor messages: a service actor starts a sequence and collects
	// the *sampler.Token and *sampler.Done messages sent back to it.
	done := make(chan string)
	var got strings.Builder
	collector := system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *sampler.Token:
			got.WriteString(m.Text)
		case *sampler.Done:
			got.WriteString(m.Tail)
			done <- fmt.Sprintf("%q (%d tokens, %s)", got.String(), len(m.Result.Tokens), m.Result.StopReason)
		}
	}))
	system.Root.Send(p.Sampler(), &sampler.Start{
		Seq:       p.NewSeq(),
		Tokens:    p.Tokenizer().Encode("Prince Andrew", true, true),
		MaxTokens: 12,
		ReplyTo:   collector,
	})
	fmt.Println("actors:", <-done)
	system.Root.Stop(collector)

	// Output:
	// api:    ", and\nthe expression of the face was happy.\n" (12 tokens, max_tokens)
	// actors: ", and\nthe expression of the face was happy.\n" (12 tokens, max_tokens)
}
