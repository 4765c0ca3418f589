package loader_test

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"

	"github.com/forgepipe/forgepipe/actors/loader"
	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/internal/testutil"
)

func TestLoader(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, err := gguf.Open(testutil.BundledModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := len(loader.LayerTensors(f.Header, 0)); n != 9 {
		t.Errorf("layer 0 has %d tensors, want 9", n)
	}
	for _, ti := range loader.LayerTensors(f.Header, loader.Globals) {
		if ti.Name[:4] == "blk." {
			t.Errorf("global tensor %s", ti.Name)
		}
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	defer sys.Shutdown()
	var st loader.Stats
	ld := sys.Root.Spawn(loader.Props(f, &st))
	defer func() { _ = sys.Root.StopFuture(ld).Wait() }()
	got := make(chan *loader.TensorViews, 2)
	probe := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*loader.TensorViews); ok {
			got <- m
		}
	}))
	defer func() { _ = sys.Root.StopFuture(probe).Wait() }()

	sys.Root.Send(ld, &loader.ReadAhead{Layer: 1})
	sys.Root.Send(ld, &loader.TensorRequest{ID: 7, Names: []string{"blk.0.attn_q.weight", "output_norm.weight"}, ReplyTo: probe})
	sys.Root.Send(ld, &loader.TensorRequest{ID: 8, Names: []string{"blk.0.nope"}, ReplyTo: probe})
	for _, want := range []uint64{7, 8} {
		select {
		case m := <-got:
			if m.ID != want {
				t.Fatalf("reply %d, want %d", m.ID, want)
			}
			if want == 7 {
				ti, _ := f.Tensor("blk.0.attn_q.weight")
				if m.Err != nil || &m.Views["blk.0.attn_q.weight"][0] != &f.TensorData(ti)[0] {
					t.Errorf("views %v, err %v: want zero-copy views of the file", len(m.Views), m.Err)
				}
			} else if !errors.Is(m.Err, loader.ErrNoTensor) {
				t.Errorf("missing tensor: err %v", m.Err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no reply")
		}
	}
	if st.Requests.Load() != 2 || st.Tensors.Load() != 2 || st.ReadAheads.Load() != 1 {
		t.Errorf("stats: requests %d, tensors %d, read-aheads %d", st.Requests.Load(), st.Tensors.Load(), st.ReadAheads.Load())
	}
}
