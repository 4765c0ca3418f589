// Package uploader is the actor that owns the weights' device memory. On the
// first request for a layer it gets the tensors' host views from the loader,
// copies them to the device on its own stream through a pinned staging
// buffer, records an event and answers at once with weights bound to the
// device memory and that event: compute waits on the event, the uploader's
// thread never waits on a copy. It then prefetches the next layers (in the
// cyclic order 0..L-1). Everything uploaded is cached and shared by every
// sequence.
//
// With a weight budget, an upload that does not fit evicts the resident
// layer whose next use is farthest away (Belady's rule for the cyclic
// order). A layer in use is never freed under its holder: the holder is sent
// Evicted, answers with a Release carrying its last compute event, and the
// memory is freed on the copy stream after that event.
package uploader

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/forgepipe/forgepipe/actors/loader"
	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/kernels/gpu"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/gpustep"
	"github.com/forgepipe/forgepipe/trace"
)

// Errors a WeightsReady may carry.
var (
	// ErrOverBudget: a layer cannot fit the weight budget.
	ErrOverBudget = errors.New("weights do not fit the budget")
	// ErrLoadTimeout: the loader did not answer in time.
	ErrLoadTimeout = errors.New("timed out waiting for the loader")
)

// HostViewer is a device whose memory host code can read: the host driver
// (hip.HostDevice). Weights are bound to such views.
type HostViewer interface {
	HostView(p hip.DevicePtr, n int64) ([]byte, error)
}

// Config describes the uploader.
type Config struct {
	Header   *gguf.Header
	Model    *model.Config
	Loader   *actor.PID
	Device   hip.Device
	Prefetch int // layers uploaded ahead of the one requested
	// Budget caps the bytes of the blocks' weights on the device (0: no
	// limit). The weights outside the blocks are uploaded once and kept,
	// outside the budget: every token needs them.
	Budget int64
	// LoadTimeout bounds the wait for the loader's TensorViews (0: 30 s);
	// past it the layer's requesters get ErrLoadTimeout and a later
	// request tries again.
	LoadTimeout time.Duration
	Stats       *Stats
	Log         zerolog.Logger
	// CopyTrace, if set, gets a span per upload: the HtoD copy, timed on
	// the copy stream with events. FillTrace gets the staging fills.
	FillTrace, CopyTrace *trace.Track
	// GPU, when set, binds the weights for GPU compute (*gpustep.Block and
	// *gpustep.Globals) instead of host views of the device memory.
	GPU *gpustep.Runtime
}

// Stats are the uploader's counters.
type Stats struct {
	BytesUploaded atomic.Int64
	Uploads       atomic.Int64
	Prefetches    atomic.Int64 // uploads started ahead of a request
	Hits          atomic.Int64 // requests answered from resident weights
	Misses        atomic.Int64 // requests that had to wait for an upload
	Evictions     atomic.Int64
	WaitNanos     atomic.Int64 // requests' time from arrival to answer
	ResidentBytes atomic.Int64 // the blocks' weights on the device now (what the budget caps)
	PeakResident  atomic.Int64 // the most ResidentBytes has been
	GlobalsBytes  atomic.Int64 // embedding, output and norm weights (resident, outside the budget)
}

type phase int

const (
	idle phase = iota
	loading
	parked // views in hand, waiting for memory to be freed
	resident
)

type entry struct {
	layer   int
	bytes   int64
	tensors []*gguf.TensorInfo
	offsets []int64
	phase   phase
	reqID   uint64
	views   map[string][]byte
	demand  bool        // someone asked (not only a prefetch)
	timer   *time.Timer // the loader's answer is due
	asked   time.Time

	ptr       hip.DevicePtr
	ready     hip.Event
	weights   any
	waiters   []*actor.PID
	leases    int
	holders   []*actor.PID // who holds the leases
	releasing bool         // holders were sent Evicted; freed when the leases end
}

func (e *entry) lease(pid *actor.PID) {
	e.leases++
	for _, h := range e.holders {
		if h.Equal(pid) {
			return
		}
	}
	e.holders = append(e.holders, pid)
}

type state struct {
	entries  map[int]*entry
	byReq    map[uint64]*entry
	nextReq  uint64
	resident int64
	cursor   int               // the layer last asked for: distances are counted from it
	stream   hip.Stream        // the copy stream
	fill     hip.Stream        // runs the staging fills (host functions)
	stage    [2]hip.HostBuffer // pinned staging, each as large as the largest layer
	filled   [2]hip.Event      // on fill: staging i holds the next upload
	emptied  [2]hip.Event      // on stream: the copy out of staging i is done
	next     int               // the staging buffer of the next upload
	err      error             // a setup failure, reported to every request
	copies   []*copyTiming     // uploads being timed for the trace
}

type uploaderActor struct {
	cfg *Config
	st  *state
}

// Props returns the props of the uploader actor. Its state survives
// restarts.
func Props(cfg Config) *actor.Props {
	st := &state{entries: make(map[int]*entry), byReq: make(map[uint64]*entry)}
	return actor.PropsFromProducer(func() actor.Actor { return &uploaderActor{cfg: &cfg, st: st} })
}

// freeMsg comes back from the copy stream.
type loadTimeout struct{ reqID uint64 }

type freeMsg struct {
	layer int
	ptr   hip.DevicePtr
}

// Receive handles the uploader's messages.
func (a *uploaderActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if a.st.stream == nil && a.st.err == nil {
			if _, ok := a.cfg.Device.(HostViewer); !ok && a.cfg.GPU == nil {
				a.st.err = fmt.Errorf("uploader: the %s device cannot show its memory to host kernels and no GPU runtime was given", a.cfg.Device.Driver())
			} else if err := a.setup(); err != nil {
				a.st.err = fmt.Errorf("uploader: %w", err)
			}
		}
	case *WeightsRequest:
		a.request(ctx, m)
	case *loader.TensorViews:
		a.views(ctx, m)
	case *Release:
		a.release(ctx, m)
	case *freeMsg:
		a.free(ctx, m)
	case *copyDone:
		a.resolveCopy(m.ct)
	case *loadTimeout:
		if e := a.st.byReq[m.reqID]; e != nil && e.phase == loading {
			delete(a.st.byReq, m.reqID)
			a.failWaiters(ctx, e, fmt.Errorf("layer %d: %w after %v", e.layer, ErrLoadTimeout, a.loadTimeout()))
		}
	case *actor.Stopping:
		a.shutdown()
	}
}

// setup makes the copy and fill streams and the staging events.
func (a *uploaderActor) setup() error {
	dev := a.cfg.Device
	var err error
	if a.st.stream, err = dev.StreamCreate(); err != nil {
		return err
	}
	if a.st.fill, err = dev.StreamCreate(); err != nil {
		return err
	}
	for i := range a.st.filled {
		if a.st.filled[i], err = dev.EventCreate(); err != nil {
			return err
		}
		if a.st.emptied[i], err = dev.EventCreate(); err != nil {
			return err
		}
	}
	return nil
}

func (a *uploaderActor) entry(layer int) *entry {
	e := a.st.entries[layer]
	if e == nil {
		e = &entry{layer: layer}
		// On a GPU, Q, K, V and gate, up back to back (gpustep fuses them).
		e.tensors, e.offsets, e.bytes = gpustep.Layout(loader.LayerTensors(a.cfg.Header, layer))
		a.st.entries[layer] = e
	}
	return e
}

func (a *uploaderActor) request(ctx actor.Context, m *WeightsRequest) {
	if a.st.err != nil {
		ctx.Send(m.ReplyTo, &WeightsReady{Layer: m.Layer, Err: a.st.err})
		return
	}
	if m.Layer < loader.Globals || m.Layer >= a.cfg.Model.Layers {
		ctx.Send(m.ReplyTo, &WeightsReady{Layer: m.Layer, Err: fmt.Errorf("uploader: no layer %d", m.Layer)})
		return
	}
	e := a.entry(m.Layer)
	if m.Layer >= 0 {
		a.st.cursor = m.Layer
	}
	if e.phase == resident && !e.releasing {
		a.cfg.Stats.Hits.Add(1)
		e.lease(m.ReplyTo)
		ctx.Send(m.ReplyTo, &WeightsReady{Layer: e.layer, Weights: e.weights, Ready: e.ready})
	} else {
		a.cfg.Stats.Misses.Add(1)
		if !e.demand {
			e.demand, e.asked = true, time.Now()
		}
		e.waiters = append(e.waiters, m.ReplyTo)
		if e.phase == idle {
			a.load(ctx, e)
		}
	}
	if m.Layer >= 0 {
		a.prefetch(ctx, m.Layer)
	}
}

// prefetch starts the uploads of the layers after r and reads ahead the
// one after those.
func (a *uploaderActor) prefetch(ctx actor.Context, r int) {
	n := a.cfg.Model.Layers
	k := min(a.cfg.Prefetch, n-1)
	for i := 1; i <= k; i++ {
		if e := a.entry((r + i) % n); e.phase == idle && a.fits(e) {
			a.cfg.Stats.Prefetches.Add(1)
			a.load(ctx, e)
		}
	}
	if k+1 < n {
		ctx.Send(a.cfg.Loader, &loader.ReadAhead{Layer: (r + k + 1) % n})
	}
}

// fits reports whether a prefetch of e can get memory without evicting
// anything that will be needed before it.
func (a *uploaderActor) fits(e *entry) bool {
	if a.cfg.Budget <= 0 {
		return true
	}
	avail := a.cfg.Budget - a.st.resident
	d := a.dist(e.layer)
	for _, o := range a.st.entries {
		if o.phase == resident && !o.releasing && o.layer >= 0 && a.dist(o.layer) > d {
			avail += o.bytes
		}
	}
	for _, o := range a.st.entries { // uploads already on their way take memory too
		if o != e && (o.phase == loading || o.phase == parked) {
			avail -= o.bytes
		}
	}
	return avail >= e.bytes
}

func (a *uploaderActor) dist(layer int) int {
	n := a.cfg.Model.Layers
	return (layer - a.st.cursor + n) % n
}

func (a *uploaderActor) load(ctx actor.Context, e *entry) {
	names := make([]string, len(e.tensors))
	for i, t := range e.tensors {
		names[i] = t.Name
	}
	a.st.nextReq++
	e.reqID, e.phase = a.st.nextReq, loading
	a.st.byReq[e.reqID] = e
	ctx.Send(a.cfg.Loader, &loader.TensorRequest{ID: e.reqID, Names: names, ReplyTo: ctx.Self()})
	id, self, root := e.reqID, ctx.Self(), ctx.ActorSystem().Root
	e.timer = time.AfterFunc(a.loadTimeout(), func() { root.Send(self, &loadTimeout{reqID: id}) })
}

func (a *uploaderActor) loadTimeout() time.Duration {
	if a.cfg.LoadTimeout > 0 {
		return a.cfg.LoadTimeout
	}
	return 30 * time.Second
}

func (a *uploaderActor) views(ctx actor.Context, m *loader.TensorViews) {
	e := a.st.byReq[m.ID]
	if e == nil || e.phase != loading {
		return
	}
	delete(a.st.byReq, m.ID)
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	if m.Err != nil {
		a.failWaiters(ctx, e, m.Err)
		return
	}
	e.views = m.Views
	a.place(ctx, e)
}

// place uploads e if memory allows, evicting what is needed farthest in the
// future; otherwise e waits (parked) for evictions to finish.
func (a *uploaderActor) place(ctx actor.Context, e *entry) {
	if b := a.cfg.Budget; b > 0 && e.layer >= 0 {
		if e.bytes > b {
			a.failWaiters(ctx, e, fmt.Errorf("%w: layer %d needs %d bytes, the weight budget is %d bytes", ErrOverBudget, e.layer, e.bytes, b))
			return
		}
		avail := b - a.st.resident
		for _, o := range a.st.entries {
			if o.phase == resident && o.releasing {
				avail += o.bytes // on its way out
			}
		}
		for avail < e.bytes {
			v := a.victim(e)
			if v == nil {
				break
			}
			a.evict(ctx, v)
			avail += v.bytes
		}
		if a.cfg.Budget-a.st.resident < e.bytes {
			if avail < e.bytes && !e.demand {
				e.phase, e.views = idle, nil // a prefetch that does not fit: drop it
				return
			}
			e.phase = parked
			return
		}
	}
	if err := a.upload(ctx, e); err != nil {
		a.failWaiters(ctx, e, err)
	}
}

// victim is the resident layer whose next use is farthest; a prefetch only
// evicts layers needed after itself.
func (a *uploaderActor) victim(e *entry) *entry {
	var v *entry
	for _, o := range a.st.entries {
		if o == e || o.phase != resident || o.releasing || o.layer < 0 {
			continue
		}
		if !e.demand && a.dist(o.layer) <= a.dist(e.layer) {
			continue
		}
		if v == nil || a.dist(o.layer) > a.dist(v.layer) {
			v = o
		}
	}
	return v
}

// evict starts freeing o: at once when nobody holds it, else after its
// holders' Releases.
func (a *uploaderActor) evict(ctx actor.Context, o *entry) {
	a.cfg.Stats.Evictions.Add(1)
	o.releasing = true
	if o.leases == 0 {
		a.freeAfter(ctx, o, nil)
		return
	}
	for _, pid := range o.holders {
		ctx.Send(pid, &Evicted{Layer: o.layer})
	}
}

func (a *uploaderActor) upload(ctx actor.Context, e *entry) error {
	dev, s := a.cfg.Device, a.st.stream
	ptr, err := dev.Malloc(e.bytes)
	if err != nil {
		return fmt.Errorf("uploader: layer %d: %w", e.layer, err)
	}
	buf := a.st.next
	staging, err := a.staging(buf)
	if err != nil {
		_ = dev.Free(ptr)
		return fmt.Errorf("uploader: layer %d staging: %w", e.layer, err)
	}
	a.st.next = 1 - buf
	ev, err := dev.EventCreate()
	if err != nil {
		_ = dev.Free(ptr)
		return fmt.Errorf("uploader: %w", err)
	}
	ct := a.newCopyTiming(e) // nil unless tracing
	abort := func(err error) error {
		// Free only once nothing queued can still touch the memory.
		_ = s.Synchronize(context.Background())
		a.resolveCopy(ct)
		_ = dev.Free(ptr)
		_ = ev.Destroy()
		return fmt.Errorf("uploader: layer %d: %w", e.layer, err)
	}
	// Two streams, two pinned staging buffers in turn: the fill stream
	// copies mmap -> staging in a host function (the page reads happen
	// there, not on this thread), the copy stream staging -> device. The
	// fill of one buffer overlaps the copy out of the other; a fill waits
	// for the last copy out of its buffer, a copy for its fill.
	views, tensors, offsets, host := e.views, e.tensors, e.offsets, staging.Bytes()[:e.bytes]
	self, root := ctx.Self(), ctx.ActorSystem().Root
	fs := a.st.fill
	err = errors.Join(
		fs.WaitEvent(a.st.emptied[buf]),
		fs.LaunchHostFunc(func() {
			ct.fill(func() { fillStaging(host, tensors, offsets, views, a.cfg.GPU != nil) })
		}),
		a.st.filled[buf].Record(fs),
		s.WaitEvent(a.st.filled[buf]),
		ct.before(s),
		s.MemcpyHtoDAsync(ptr, host),
		ct.after(s),
		ev.Record(s),
		a.st.emptied[buf].Record(s),
		ct.notify(s, func(m *copyDone) { root.Send(self, m) }),
	)
	if err != nil {
		return abort(err)
	}
	var w any
	if gp := a.cfg.GPU; gp != nil {
		// Bound from the headers and the mapped bytes (only the small
		// vectors are read); the matrices are used where they land.
		src := &deviceTensors{header: a.cfg.Header, data: views}
		at := make(map[string]hip.DevicePtr, len(tensors))
		for i, t := range tensors {
			at[t.Name] = ptr.Add(offsets[i])
		}
		loc := func(name string) (hip.DevicePtr, bool) { p, ok := at[name]; return p, ok }
		if e.layer == loader.Globals {
			w, err = gp.BindGlobals(src, loc)
		} else {
			w, err = gp.BindBlock(e.layer, src, loc)
		}
		if err != nil {
			return abort(err)
		}
		return a.uploaded(ctx, e, ptr, ev, w)
	}
	mem, err := dev.(HostViewer).HostView(ptr, e.bytes)
	if err != nil {
		return abort(err)
	}
	src := &deviceTensors{header: a.cfg.Header, data: make(map[string][]byte, len(tensors))}
	needBytes := false
	for i, t := range tensors {
		src.data[t.Name] = mem[offsets[i] : offsets[i]+int64(t.Size) : offsets[i]+int64(t.Size)]
		if len(t.Shape) == 1 && t.Type != gguf.TypeF32 {
			needBytes = true // bound by dequantising now: the bytes must be there
		}
	}
	if needBytes {
		if err := ev.Synchronize(context.Background()); err != nil {
			return abort(err)
		}
	}
	if e.layer == loader.Globals {
		g := new(model.Globals)
		err, w = model.Bind(src, "", a.cfg.Model, g), g
	} else {
		b := new(model.Block)
		err, w = model.Bind(src, model.BlockPrefix(e.layer), a.cfg.Model, b), b
	}
	if err != nil {
		return abort(err)
	}
	return a.uploaded(ctx, e, ptr, ev, w)
}

// fillStaging copies a layer's tensors from the mapped file into the
// staging buffer, in pieces spread over a few goroutines: page faults on a
// cold file are served in parallel, and a warm one copies faster. With
// gpuLayout the bytes are written in the GPU kernels' device layout
// (gpu.ToDevice: Q8_0 matrices regrouped), else as in the file.
func fillStaging(dst []byte, tensors []*gguf.TensorInfo, offsets []int64, views map[string][]byte, gpuLayout bool) {
	type job struct {
		dst, src []byte
		t        gguf.Type
		cols     int
	}
	var jobs []job
	for i, t := range tensors {
		src := views[t.Name]
		// On a GPU some matrices are regrouped as they are copied
		// (gpu.ToDevice, a whole unit at a time): pieces hold whole units.
		cols, unit := 0, 1
		if gpuLayout && len(t.Shape) > 0 {
			cols = int(t.Shape[0])
			unit = gpu.DeviceUnit(t.Type, cols)
		}
		piece := (4 << 20) / unit * unit
		for off := 0; off < len(src); off += piece {
			end := min(off+piece, len(src))
			jobs = append(jobs, job{dst[offsets[i]+int64(off):], src[off:end], t.Type, cols})
		}
	}
	run := func(j job) {
		if j.cols > 0 {
			gpu.ToDevice(j.dst, j.src, j.t, j.cols)
		} else {
			copy(j.dst, j.src)
		}
	}
	workers := min(len(jobs), runtime.GOMAXPROCS(0), 8)
	if workers <= 1 {
		for _, j := range jobs {
			run(j)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for k := next.Add(1) - 1; k < int64(len(jobs)); k = next.Add(1) - 1 {
				run(jobs[k])
			}
		})
	}
	wg.Wait()
}

// uploaded makes e resident with its bound weights and answers its waiters.
func (a *uploaderActor) uploaded(ctx actor.Context, e *entry, ptr hip.DevicePtr, ev hip.Event, w any) error {
	e.ptr, e.ready, e.weights, e.views, e.phase = ptr, ev, w, nil, resident
	st := a.cfg.Stats
	if e.layer == loader.Globals {
		st.GlobalsBytes.Store(e.bytes)
	} else {
		a.st.resident += e.bytes
	}
	st.Uploads.Add(1)
	st.BytesUploaded.Add(e.bytes)
	st.ResidentBytes.Store(a.st.resident)
	if a.st.resident > st.PeakResident.Load() {
		st.PeakResident.Store(a.st.resident)
	}
	a.cfg.Log.Debug().Int("layer", e.layer).Int64("bytes", e.bytes).Int64("resident", a.st.resident).Msg("upload queued")
	if len(e.waiters) > 0 {
		st.WaitNanos.Add(time.Since(e.asked).Nanoseconds())
	}
	for _, w := range e.waiters {
		e.lease(w)
		ctx.Send(w, &WeightsReady{Layer: e.layer, Weights: e.weights, Ready: e.ready})
	}
	e.waiters, e.demand = nil, false
	return nil
}

func (a *uploaderActor) failWaiters(ctx actor.Context, e *entry, err error) {
	for _, w := range e.waiters {
		ctx.Send(w, &WeightsReady{Layer: e.layer, Err: err})
	}
	e.waiters, e.demand, e.views, e.phase = nil, false, nil, idle
}

func (a *uploaderActor) release(ctx actor.Context, m *Release) {
	e := a.st.entries[m.Layer]
	if e == nil || e.phase != resident || e.leases == 0 {
		return
	}
	e.leases--
	if e.leases == 0 {
		e.holders = nil
	}
	if e.leases == 0 && e.releasing {
		a.freeAfter(ctx, e, m.LastUse)
	}
}

// freeAfter frees e's memory on the copy stream once the copy that filled
// it and lastUse (the holder's last compute, if any) are done.
func (a *uploaderActor) freeAfter(ctx actor.Context, e *entry, lastUse hip.Event) {
	s := a.st.stream
	self, root, layer, ptr := ctx.Self(), ctx.ActorSystem().Root, e.layer, e.ptr
	if lastUse != nil {
		_ = s.WaitEvent(lastUse)
	}
	if err := s.LaunchHostFunc(func() { root.Send(self, &freeMsg{layer: layer, ptr: ptr}) }); err != nil {
		a.free(ctx, &freeMsg{layer: layer, ptr: ptr}) // the stream is broken: nothing more will run on it
	}
}

func (a *uploaderActor) free(ctx actor.Context, m *freeMsg) {
	e := a.st.entries[m.layer]
	if e == nil || e.ptr != m.ptr || e.phase != resident {
		return
	}
	if f, ok := e.weights.(interface{ Free() }); ok {
		f.Free()
	}
	_ = a.cfg.Device.Free(e.ptr)
	if e.ready != nil {
		_ = e.ready.Destroy()
	}
	a.st.resident -= e.bytes
	a.cfg.Stats.ResidentBytes.Store(a.st.resident)
	e.ptr, e.ready, e.weights, e.releasing, e.phase = 0, nil, nil, false, idle
	a.cfg.Log.Debug().Int("layer", e.layer).Int64("resident", a.st.resident).Msg("evicted")
	if len(e.waiters) > 0 {
		a.load(ctx, e)
	}
	for _, o := range a.st.entries {
		if o.phase == parked {
			a.place(ctx, o)
		}
	}
}

// staging returns pinned staging buffer i, allocated on first use with the
// size of the largest layer (headers only).
func (a *uploaderActor) staging(i int) (hip.HostBuffer, error) {
	if a.st.stage[i] != nil {
		return a.st.stage[i], nil
	}
	var size int64
	for l := loader.Globals; l < a.cfg.Model.Layers; l++ {
		size = max(size, a.entry(l).bytes)
	}
	b, err := a.cfg.Device.HostAlloc(size)
	if err != nil {
		return nil, err
	}
	a.st.stage[i] = b
	return b, nil
}

func (a *uploaderActor) shutdown() {
	for _, e := range a.st.entries {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
	for _, s := range []*hip.Stream{&a.st.fill, &a.st.stream} {
		if *s != nil {
			_ = (*s).Synchronize(context.Background())
			_ = (*s).Destroy()
			*s = nil
		}
	}
	a.resolveCopies()
	for i, b := range a.st.stage {
		if b != nil {
			_ = b.Free()
			a.st.stage[i] = nil
		}
	}
	for i := range a.st.filled {
		for _, e := range []*hip.Event{&a.st.filled[i], &a.st.emptied[i]} {
			if *e != nil {
				_ = (*e).Destroy()
				*e = nil
			}
		}
	}
	for _, e := range a.st.entries {
		if e.phase == resident {
			_ = a.cfg.Device.Free(e.ptr)
			e.ptr = 0
			if e.ready != nil {
				_ = e.ready.Destroy()
			}
			e.phase = idle
		}
	}
	a.st.resident = 0
	a.cfg.Stats.ResidentBytes.Store(0)
}

// deviceTensors lets model.Bind bind weights to device memory views.
type deviceTensors struct {
	header *gguf.Header
	data   map[string][]byte
}

func (d *deviceTensors) Tensor(name string) (*gguf.TensorInfo, bool) {
	if _, ok := d.data[name]; !ok {
		return nil, false
	}
	return d.header.Tensor(name)
}

func (d *deviceTensors) TensorData(t *gguf.TensorInfo) []byte { return d.data[t.Name] }
