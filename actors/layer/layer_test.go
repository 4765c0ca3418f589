package layer_test

import (
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/forgepipe/forgepipe/actors/layer"
	"github.com/forgepipe/forgepipe/actors/uploader"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
)

// TestLayerActor drives one layer actor with a stand-in uploader: messages
// that arrive before the weights wait and then run as one batch, each
// row bit-identical to Block.Forward alone; FreeSequence drops the KV cache;
// Evicted gives the weights back and the next activations ask again.
func TestLayerActor(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	m, err := model.Open(testutil.BundledModel(t), model.Options{NoPrefault: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.Config
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	defer sys.Shutdown()

	requests := make(chan *uploader.WeightsRequest, 8)
	releases := make(chan *uploader.Release, 8)
	up := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *uploader.WeightsRequest:
			requests <- m
		case *uploader.Release:
			releases <- m
		}
	}))
	outs := make(chan *layer.Activations, 8)
	next := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*layer.Activations); ok {
			outs <- m
		}
	}))
	var st layer.Stats
	pid := sys.Root.Spawn(layer.Props(layer.Config{Index: 1, Model: c, Next: next, Sampler: next, Uploader: up,
		MaxBatch: 6, Stats: &st, Log: zerolog.Nop()}))
	defer func() {
		for _, p := range []*actor.PID{pid, next, up} {
			_ = sys.Root.StopFuture(p).Wait()
		}
	}()

	// Three sequences' rows arrive before the weights: 2 + 1 + 3 rows.
	dim := c.Dim
	rows := func(n int, seed float32) []float32 {
		x := make([]float32, n*dim)
		for i := range x {
			x[i] = float32(math.Sin(float64(seed) + float64(i)*0.37))
		}
		return x
	}
	msgs := []*layer.Activations{
		{X: rows(2, 1), Segs: []layer.Segment{{Seq: 1, Pos: 0, N: 2}}},
		{X: rows(1, 2), Segs: []layer.Segment{{Seq: 2, Pos: 0, N: 1}}},
		{X: rows(3, 3), Segs: []layer.Segment{{Seq: 3, Pos: 0, N: 3}}},
	}
	want := make([][]float32, len(msgs))
	for i, msg := range msgs {
		want[i] = append([]float32(nil), msg.X...)
		var s model.Scratch
		m.Blocks[1].Forward(c, want[i], []model.Segment{{N: msg.Segs[0].N, Cache: new(model.LayerCache)}}, &s)
		sys.Root.Send(pid, msg)
	}
	req := recv(t, requests)
	if req.Layer != 1 {
		t.Fatalf("weights requested for layer %d", req.Layer)
	}
	if st.WeightRequests.Load() != 1 {
		t.Errorf("%d weight requests, want 1", st.WeightRequests.Load())
	}
	sys.Root.Send(pid, &uploader.WeightsReady{Layer: 1, Weights: m.Blocks[1]})
	out := recv(t, outs)
	if len(out.Segs) != 3 || st.Batches.Load() != 1 || st.MaxBatchRows.Load() != 6 {
		t.Fatalf("one batch of 6 rows expected: segs %v, batches %d, max rows %d", out.Segs, st.Batches.Load(), st.MaxBatchRows.Load())
	}
	off := 0
	for i, w := range want {
		for j, v := range w {
			if math.Float32bits(out.X[off+j]) != math.Float32bits(v) {
				t.Fatalf("sequence %d row value %d differs from Block.Forward alone", i+1, j)
			}
		}
		off += len(w)
	}
	if st.Sequences.Load() != 3 || st.KVBytes.Load() == 0 {
		t.Errorf("KV: %d sequences, %d bytes", st.Sequences.Load(), st.KVBytes.Load())
	}

	// Evicted: the weights go back; the next rows ask for them again.
	sys.Root.Send(pid, &uploader.Evicted{Layer: 1})
	if rel := recv(t, releases); rel.Layer != 1 {
		t.Fatalf("release of layer %d", rel.Layer)
	}
	sys.Root.Send(pid, &layer.Activations{X: rows(1, 4), Segs: []layer.Segment{{Seq: 2, Pos: 1, N: 1}}})
	recv(t, requests)
	sys.Root.Send(pid, &uploader.WeightsReady{Layer: 1, Weights: m.Blocks[1]})
	if out := recv(t, outs); len(out.Segs) != 1 || out.Segs[0].Pos != 1 {
		t.Fatalf("decode step: %+v", out.Segs)
	}

	for _, seq := range []layer.SeqID{1, 2, 3} {
		sys.Root.Send(pid, &layer.FreeSequence{Seq: seq})
	}
	deadline := time.Now().Add(10 * time.Second)
	for (st.Sequences.Load() != 0 || st.KVBytes.Load() != 0) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st.Sequences.Load() != 0 || st.KVBytes.Load() != 0 {
		t.Errorf("after FreeSequence: %d sequences, %d bytes", st.Sequences.Load(), st.KVBytes.Load())
	}
}

func recv[T any](t *testing.T, ch chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received in 10s")
		var zero T
		return zero
	}
}
