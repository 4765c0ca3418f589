package gpu

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/forgepipe/forgepipe/hip"
)

// capture is what the core keeps of a stream's capture beside the
// driver's own recording.
type capture struct {
	// before is recorded on the stream just before the capture began: while
	// the stream captures, Synchronize and Query wait for it instead.
	before *event
	// kernels and dtod count the recorded launches and device-to-device
	// bytes, added to the device's Stats at each launch of the graph.
	kernels, dtod atomic.Int64

	mu  sync.Mutex
	err error // the first call that failed while capturing
}

// fail makes err the capture's error, unless it has one.
func (c *capture) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

func (c *capture) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// errNotCapturable is call's error on a capturing stream when the call
// cannot be recorded.
func errNotCapturable(call string) error {
	return errf(call, hip.ErrNotSupported, "not supported while the stream is capturing "+
		"(a capture records kernel launches, device-to-device copies and memsets)")
}

// captured returns err, which a call that a capture records returned, and
// makes it the capture's error if the stream is capturing.
func (s *stream) captured(err error) error {
	if err != nil {
		s.mu.RLock()
		if c := s.capture; c != nil {
			c.fail(err)
		}
		s.mu.RUnlock()
	}
	return err
}

// before returns, while the stream is capturing, the event that marks the
// work enqueued before the capture, held for the caller, who must unhold
// it; nil when the stream is not capturing.
func (s *stream) before() *event {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.capture == nil {
		return nil
	}
	if _, err := s.capture.before.hold(""); err != nil {
		return nil // device closed: the caller's own path says so
	}
	return s.capture.before
}

// graphAPI returns the graph entry points, or call's ErrNotSupported.
func (d *Device) graphAPI(call string) (*GraphAPI, error) {
	if d.api.Graphs == nil {
		return nil, errf(call, hip.ErrNotSupported, "no stream capture in this %s runtime: %s", d.api.Driver, d.api.GraphsMissing)
	}
	return d.api.Graphs, nil
}

// BeginCapture records an event marking the work enqueued so far, then
// starts capturing in relaxed mode, so that other goroutines (and so other
// OS threads) may make any call meanwhile.
func (s *stream) BeginCapture() error {
	ga, err := s.dev.graphAPI("BeginCapture")
	if err != nil {
		return err
	}
	api := s.dev.api
	name := ga.BeginCapture.Name
	if err := s.dev.enter(name); err != nil {
		return err
	}
	var h uintptr
	st := call(api.EventCreate.Fn, uintptr(unsafe.Pointer(&h)), api.EventDisableTiming)
	leave()
	if st != 0 {
		return s.dev.err(api.EventCreate.Name, st)
	}
	before := &event{dev: s.dev, h: h, rec: s}
	if err := s.beginCapture(ga, before); err != nil {
		before.Destroy()
		return err
	}
	return nil
}

func (s *stream) beginCapture(ga *GraphAPI, before *event) error {
	api := s.dev.api
	name := ga.BeginCapture.Name
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.dev.closed.Load():
		return errf(name, hip.ErrClosed, "device closed")
	case s.destroyed:
		return errf(name, hip.ErrInvalidHandle, "invalid handle: stream destroyed")
	case s.err != nil:
		return wrap(name, s.err)
	case s.capture != nil:
		return errf(name, hip.ErrInvalidValue, "the stream is already capturing")
	}
	if err := s.dev.enter(name); err != nil {
		return err
	}
	defer leave()
	if st := call(api.EventRecord.Fn, before.h, s.h); st != 0 {
		return s.dev.err(api.EventRecord.Name, st)
	}
	if st := call(ga.BeginCapture.Fn, s.h, ga.CaptureModeRelaxed); st != 0 {
		return s.dev.err(name, st)
	}
	s.capture = &capture{before: before}
	return nil
}

// EndCapture ends the driver's capture, then instantiates the graph.
func (s *stream) EndCapture() (hip.Graph, error) {
	ga, err := s.dev.graphAPI("EndCapture")
	if err != nil {
		return nil, err
	}
	d := s.dev
	name := ga.EndCapture.Name
	s.mu.Lock()
	c := s.capture
	switch {
	case d.closed.Load():
		s.mu.Unlock()
		return nil, errf(name, hip.ErrClosed, "device closed")
	case s.destroyed:
		s.mu.Unlock()
		return nil, errf(name, hip.ErrInvalidHandle, "invalid handle: stream destroyed")
	case c == nil:
		s.mu.Unlock()
		return nil, errf(name, hip.ErrInvalidValue, "the stream is not capturing (no BeginCapture)")
	}
	if err := d.enter(name); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	defer leave()
	var h uintptr
	st := call(ga.EndCapture.Fn, s.h, uintptr(unsafe.Pointer(&h)))
	s.capture = nil
	sticky := s.err
	s.mu.Unlock()
	c.before.Destroy()

	fail := func(err error) (hip.Graph, error) {
		if h != 0 {
			call(ga.Destroy.Fn, h)
		}
		return nil, err
	}
	switch {
	case c.failure() != nil:
		err := c.failure()
		return fail(&hip.Error{Call: name, Msg: "a call failed during the capture: " + err.Error(), Err: err})
	case st != 0:
		return fail(d.err(name, st))
	case sticky != nil:
		return fail(wrap(name, sticky))
	case h == 0:
		return fail(errf(name, hip.ErrNotSupported, "the driver returned no graph"))
	}
	var exec uintptr
	if st := call(ga.Instantiate.Fn, uintptr(unsafe.Pointer(&exec)), h, 0); st != 0 {
		return fail(d.err(ga.Instantiate.Name, st))
	}
	var n uintptr
	if st := call(ga.GetNodes.Fn, h, 0, uintptr(unsafe.Pointer(&n))); st != 0 {
		call(ga.ExecDestroy.Fn, exec)
		return fail(d.err(ga.GetNodes.Name, st))
	}
	g := &graph{dev: d, h: h, exec: exec, nodes: int(n), kernels: c.kernels.Load(), dtod: c.dtod.Load()}
	d.mu.Lock()
	d.graphs[g] = struct{}{}
	d.mu.Unlock()
	return g, nil
}

// dropCapture ends a capture and throws its graph away; s.mu is held and
// the device is current on the thread.
func (s *stream) dropCapture() {
	c := s.capture
	if c == nil {
		return
	}
	s.capture = nil
	ga := s.dev.api.Graphs
	var h uintptr
	if call(ga.EndCapture.Fn, s.h, uintptr(unsafe.Pointer(&h))) == 0 && h != 0 {
		call(ga.Destroy.Fn, h)
	}
	c.before.Destroy()
}

// graph is an instantiated graph: the driver's graph (kept for Nodes and
// later updates) and its executable form.
type graph struct {
	dev           *Device
	h, exec       uintptr
	nodes         int
	kernels, dtod int64 // added to the device's counters at each launch

	mu        sync.RWMutex // held for reading across each launch
	destroyed bool
}

// Launch enqueues the graph on s: one driver call, like a kernel launch.
func (g *graph) Launch(s hip.Stream) error {
	d := g.dev
	ga := d.api.Graphs
	name := ga.Launch.Name
	gs, err := d.stream(name, s)
	if err != nil {
		return err
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.destroyed {
		return errf(name, hip.ErrInvalidHandle, "invalid handle: graph destroyed")
	}
	if err := gs.begin(name); err != nil {
		return err
	}
	st := call(ga.Launch.Fn, g.exec, gs.h)
	gs.end()
	if st != 0 {
		return d.err(name, st)
	}
	d.launches.Add(g.kernels)
	d.dtod.Add(g.dtod)
	d.graphLaunches.Add(1)
	return nil
}

// Nodes is the number of nodes in the driver's graph.
func (g *graph) Nodes() int { return g.nodes }

// Destroy releases the executable graph and the graph; the driver frees
// them once launches in flight are done.
func (g *graph) Destroy() error {
	d := g.dev
	ga := d.api.Graphs
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.destroyed:
		return errf(ga.ExecDestroy.Name, hip.ErrInvalidHandle, "invalid handle: graph already destroyed")
	case d.closed.Load():
		g.destroyed = true
		return nil // Close released it
	}
	g.destroyed = true
	d.mu.Lock()
	delete(d.graphs, g)
	d.mu.Unlock()
	if err := d.enter(ga.ExecDestroy.Name); err != nil {
		return err
	}
	defer leave()
	if st := call(ga.ExecDestroy.Fn, g.exec); st != 0 {
		call(ga.Destroy.Fn, g.h)
		return d.err(ga.ExecDestroy.Name, st)
	}
	if st := call(ga.Destroy.Fn, g.h); st != 0 {
		return d.err(ga.Destroy.Name, st)
	}
	return nil
}

// release destroys the graph for Close; the device is current.
func (g *graph) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.destroyed {
		return
	}
	g.destroyed = true
	ga := g.dev.api.Graphs
	call(ga.ExecDestroy.Fn, g.exec)
	call(ga.Destroy.Fn, g.h)
}

var _ hip.Graph = (*graph)(nil)
