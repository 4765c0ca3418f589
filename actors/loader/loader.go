// Package loader is the actor that owns a model's mapped GGUF file. It
// answers requests for tensors' host bytes with zero-copy views of the
// mapping and reads ahead the layers about to be needed, so the uploader's
// copies find the pages in memory.
package loader

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/sys/unix"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/model"
)

// Globals is the layer number of the tensors outside the blocks
// (token_embd, output_norm, output, rope_freqs).
const Globals = -1

// TensorRequest asks for the host bytes of the named tensors. The reply,
// sent to ReplyTo, is a *TensorViews carrying the same ID.
type TensorRequest struct {
	ID      uint64
	Names   []string
	ReplyTo *actor.PID
}

// TensorViews answers a TensorRequest: a zero-copy view of each named
// tensor's bytes in the mapped file (valid until the file is closed), or
// Err naming a tensor the file lacks.
type TensorViews struct {
	ID    uint64
	Views map[string][]byte
	Err   error
}

// ReadAhead asks the loader to have a layer's pages read in the background
// (Layer == Globals for the tensors outside the blocks). It has no reply.
type ReadAhead struct {
	Layer int
}

// Stats are the loader's counters, readable at any time.
type Stats struct {
	Requests   atomic.Int64 // TensorRequests answered
	Tensors    atomic.Int64 // tensor views handed out
	Bytes      atomic.Int64 // bytes in the views handed out
	ReadAheads atomic.Int64 // ReadAhead messages acted upon
}

// ErrNoTensor is wrapped when a requested tensor is not in the file.
var ErrNoTensor = errors.New("no such tensor")

// LayerTensors lists the tensors of one layer (Globals: those outside the
// blocks), in file order. It reads the header only.
func LayerTensors(h *gguf.Header, layer int) []*gguf.TensorInfo {
	var out []*gguf.TensorInfo
	prefix := model.BlockPrefix(layer)
	for _, t := range h.Tensors {
		in := strings.HasPrefix(t.Name, "blk.")
		if (layer == Globals && !in) || (layer >= 0 && strings.HasPrefix(t.Name, prefix)) {
			out = append(out, t)
		}
	}
	return out
}

// Props returns the props of a loader actor owning f. The actor does not
// close f. Counters go to st.
func Props(f *gguf.File, st *Stats) *actor.Props {
	var wg sync.WaitGroup // page-touching goroutines, waited for on stop
	return actor.PropsFromProducer(func() actor.Actor {
		return &loaderActor{file: f, stats: st, touching: &wg}
	})
}

type loaderActor struct {
	file     *gguf.File
	stats    *Stats
	touching *sync.WaitGroup
}

// Receive handles the loader's messages.
func (a *loaderActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *TensorRequest:
		ctx.Send(m.ReplyTo, a.views(m))
	case *ReadAhead:
		a.readAhead(m.Layer)
	case *actor.Stopping:
		a.touching.Wait()
	}
}

func (a *loaderActor) views(m *TensorRequest) *TensorViews {
	a.stats.Requests.Add(1)
	out := &TensorViews{ID: m.ID, Views: make(map[string][]byte, len(m.Names))}
	for _, name := range m.Names {
		t, ok := a.file.Tensor(name)
		if !ok {
			return &TensorViews{ID: m.ID, Err: fmt.Errorf("%w %q in %s", ErrNoTensor, name, a.file.Path)}
		}
		data := a.file.TensorData(t)
		out.Views[name] = data
		a.stats.Tensors.Add(1)
		a.stats.Bytes.Add(int64(len(data)))
	}
	return out
}

// readAhead advises the kernel that a layer's byte range is needed soon
// (MADV_WILLNEED; where that is not possible, one byte per page is read).
// Either runs on a goroutine of its own: submitting a layer's reads can
// wait for the disk's queue, and the loader must go on answering requests.
func (a *loaderActor) readAhead(layer int) {
	a.stats.ReadAheads.Add(1)
	a.touching.Add(1)
	go func() {
		defer a.touching.Done()
		if region, advised := advise(a.file, layer); region != nil && !advised {
			touch(region)
		}
	}()
}

// advise asks the kernel to start reading a layer's pages (Globals: the
// weights outside the blocks) and returns the layer's page-aligned region
// (nil: none) and whether the advice was taken. It waits while the disk's
// queue is full.
func advise(f *gguf.File, layer int) ([]byte, bool) {
	lo, hi, ok := layerSpan(f, layer)
	if !ok || hi > f.Size() {
		return nil, false
	}
	page := int64(unix.Getpagesize())
	region := f.Bytes()[lo/page*page : hi]
	return region, madviseWillNeed(region)
}

// layerSpan is the file's byte range from a layer's first tensor byte to
// its last (Globals: the tensors outside the blocks); false when the layer
// has no bytes.
func layerSpan(f *gguf.File, layer int) (lo, hi int64, ok bool) {
	lo = math.MaxInt64
	for _, t := range LayerTensors(f.Header, layer) {
		lo = min(lo, int64(f.DataOffset+t.Offset))
		hi = max(hi, int64(f.DataOffset+t.Offset+t.Size))
	}
	return lo, hi, lo < hi
}

// madviseWillNeed asks the kernel to start reading region (page-aligned,
// of the mapping) and reports whether it could.
func madviseWillNeed(region []byte) bool {
	return unix.Madvise(region, unix.MADV_WILLNEED) == nil
}

// touch reads one byte per page of region.
func touch(region []byte) {
	page := unix.Getpagesize()
	var sink byte
	for i := 0; i < len(region); i += page {
		sink ^= region[i]
	}
	touchSink.Store(uint32(sink))
}

var touchSink atomic.Uint32 // keeps the page reads from being optimised away
