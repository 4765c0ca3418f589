package uploader_test

import (
	"errors"
	"log/slog"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/forgepipe/forgepipe/actors/loader"
	"github.com/forgepipe/forgepipe/actors/uploader"
	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/synth"
)

// rig is a loader and an uploader on a 4-layer synthetic model, and a probe
// actor whose messages the test reads.
type rig struct {
	t        *testing.T
	sys      *actor.ActorSystem
	file     *gguf.File
	cfg      *model.Config
	dev      *hip.HostDevice
	up       *actor.PID
	probe    *actor.PID
	got      chan any
	stats    *uploader.Stats
	ldStats  *loader.Stats
	layerLen int64
}

func newRig(t *testing.T, budgetLayers float64, prefetch int) *rig {
	t.Helper()
	spec, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	spec.Layers, spec.Vocab = 4, 512
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := synth.Write(path, spec, nil); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, got: make(chan any, 64), stats: new(uploader.Stats), ldStats: new(loader.Stats)}
	if r.file, err = gguf.Open(path); err != nil {
		t.Fatal(err)
	}
	if r.cfg, err = model.ConfigFromGGUF(r.file.Header); err != nil {
		t.Fatal(err)
	}
	if r.dev, err = hip.OpenHost(hip.Options{}); err != nil {
		t.Fatal(err)
	}
	for _, ti := range loader.LayerTensors(r.file.Header, 0) {
		r.layerLen += int64(ti.Size) + 256
	}
	r.sys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}), actor.WithDeadLetterThrottleInterval(time.Millisecond))
	ld := r.sys.Root.Spawn(loader.Props(r.file, r.ldStats))
	r.up = r.sys.Root.Spawn(uploader.Props(uploader.Config{
		Header: r.file.Header, Model: r.cfg, Loader: ld, Device: r.dev, Prefetch: prefetch,
		Budget: int64(budgetLayers * float64(r.layerLen)), Stats: r.stats, Log: zerolog.Nop(),
	}))
	r.probe = r.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *uploader.WeightsReady, *uploader.Evicted:
			r.got <- m
		}
	}))
	t.Cleanup(func() {
		for _, pid := range []*actor.PID{r.probe, r.up, ld} {
			if err := r.sys.Root.StopFuture(pid).Wait(); err != nil {
				t.Error(err)
			}
		}
		r.sys.Shutdown()
		r.dev.Close()
		r.file.Close()
	})
	return r
}

func (r *rig) request(layer int) {
	r.sys.Root.Send(r.up, &uploader.WeightsRequest{Layer: layer, ReplyTo: r.probe})
}

func (r *rig) next() any {
	r.t.Helper()
	select {
	case m := <-r.got:
		return m
	case <-time.After(10 * time.Second):
		r.t.Fatal("no message from the uploader in 10s")
		return nil
	}
}

func (r *rig) ready(layer int) *uploader.WeightsReady {
	r.t.Helper()
	m, ok := r.next().(*uploader.WeightsReady)
	if !ok || m.Layer != layer || m.Err != nil {
		r.t.Fatalf("got %#v, want WeightsReady for layer %d", m, layer)
	}
	return m
}

// TestUploadCopiesWeights checks that the weights are a real copy in device
// memory with the file's values once the ready event is reached.
func TestUploadCopiesWeights(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	r := newRig(t, 0, 0)
	r.request(1)
	m := r.ready(1)
	if err := m.Ready.Synchronize(t.Context()); err != nil {
		t.Fatal(err)
	}
	b := m.Weights.(*model.Block)
	want := new(model.Block)
	if err := model.Bind(r.file, model.BlockPrefix(1), r.cfg, want); err != nil {
		t.Fatal(err)
	}
	for i := range want.AttnNorm {
		if math.Float32bits(b.AttnNorm[i]) != math.Float32bits(want.AttnNorm[i]) {
			t.Fatalf("attn_norm[%d] = %v on the device, %v in the file", i, b.AttnNorm[i], want.AttnNorm[i])
		}
	}
	if &b.Query.Weight.Data[0] == &want.Query.Weight.Data[0] {
		t.Error("device weights alias the mapped file")
	}
	if string(b.Query.Weight.Data) != string(want.Query.Weight.Data) {
		t.Error("attn_q differs from the file")
	}
	if got := r.stats.Uploads.Load(); got != 1 {
		t.Errorf("%d uploads, want 1", got)
	}
	// A second request is a hit.
	r.request(1)
	r.ready(1)
	if r.stats.Hits.Load() != 1 {
		t.Errorf("hits %d, want 1", r.stats.Hits.Load())
	}
}

// TestEvictionLeases checks Belady eviction in the cyclic order and the
// lease protocol: a held layer is freed only after its Release.
func TestEvictionLeases(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	r := newRig(t, 2.5, 0) // room for two layers
	r.request(0)
	r.ready(0)
	r.request(1)
	r.ready(1)
	// Layer 2 needs room: from 2, layer 0 is next needed in 2 steps and
	// layer 1 in 3, so layer 1 goes. Its holder is told and must release.
	r.request(2)
	ev, ok := r.next().(*uploader.Evicted)
	if !ok || ev.Layer != 1 {
		t.Fatalf("got %#v, want Evicted for layer 1", ev)
	}
	if got := r.stats.ResidentBytes.Load(); got > 2*r.layerLen || r.stats.Uploads.Load() != 2 {
		t.Fatalf("layer 2 uploaded before layer 1 was released: resident %d, uploads %d", got, r.stats.Uploads.Load())
	}
	r.sys.Root.Send(r.up, &uploader.Release{Layer: 1})
	r.ready(2)
	if peak, budget := r.stats.PeakResident.Load(), int64(2.5*float64(r.layerLen)); peak > budget {
		t.Errorf("peak resident %d over the budget %d", peak, budget)
	}
	if r.stats.Evictions.Load() != 1 {
		t.Errorf("evictions %d, want 1", r.stats.Evictions.Load())
	}
	// Layer 1 again: from 1, layer 2 is next needed in 1 step and layer 0
	// in 3, so layer 0 goes.
	r.request(1)
	ev, ok = r.next().(*uploader.Evicted)
	if !ok || ev.Layer != 0 {
		t.Fatalf("got %#v, want Evicted for layer 0", ev)
	}
	r.sys.Root.Send(r.up, &uploader.Release{Layer: 0})
	r.ready(1)
}

// TestLayerOverBudget: a layer larger than the budget is a clear error.
func TestLayerOverBudget(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	r := newRig(t, 0.5, 0)
	r.request(0)
	m, ok := r.next().(*uploader.WeightsReady)
	if !ok || !errors.Is(m.Err, uploader.ErrOverBudget) {
		t.Fatalf("got %#v, want ErrOverBudget", m)
	}
	t.Log(m.Err)
}

// TestPrefetch: a request uploads the next layers ahead.
func TestPrefetch(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	r := newRig(t, 0, 2)
	r.request(3)
	r.ready(3)
	deadline := time.Now().Add(10 * time.Second)
	for r.stats.Uploads.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if r.stats.Uploads.Load() != 3 || r.stats.Prefetches.Load() != 2 {
		t.Fatalf("uploads %d, prefetches %d: want layers 3, 0 and 1", r.stats.Uploads.Load(), r.stats.Prefetches.Load())
	}
	r.request(0) // prefetched: a hit
	r.ready(0)
	if r.stats.Hits.Load() != 1 {
		t.Errorf("hits %d, want 1", r.stats.Hits.Load())
	}
}
