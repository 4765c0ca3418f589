package hip

import "sync/atomic"

// hostCapture is what a capturing host stream has recorded so far.
type hostCapture struct {
	ops []hostOp
	err error // the first call that failed while capturing
}

// fail makes err the capture's error, unless it has one; the stream's mu
// is held.
func (c *hostCapture) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// errNotCapturable is call's error on a capturing stream when the call
// cannot be recorded.
func errNotCapturable(call string) error {
	return errf(call, ErrNotSupported, "not supported while the stream is capturing "+
		"(a capture records kernel launches, device-to-device copies and memsets)")
}

// captured returns err, which a call that a capture records returned, and
// makes it the capture's error if the stream is capturing.
func (s *hostStream) captured(err error) error {
	if err != nil {
		s.mu.Lock()
		if s.capture != nil {
			s.capture.fail(err)
		}
		s.mu.Unlock()
	}
	return err
}

// refuseCapturing fails call, and the capture, if the stream is capturing.
func (s *hostStream) refuseCapturing(call string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.capture == nil {
		return nil
	}
	err := errNotCapturable(call)
	s.capture.fail(err)
	return err
}

// BeginCapture makes the stream record the work enqueued on it instead of
// queueing it.
func (s *hostStream) BeginCapture() error {
	const call = "hipStreamBeginCapture"
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(call); err != nil {
		return err
	}
	if s.capture != nil {
		return errf(call, ErrInvalidValue, "the stream is already capturing")
	}
	s.capture = &hostCapture{}
	return nil
}

// EndCapture stops the recording and returns it as a graph.
func (s *hostStream) EndCapture() (Graph, error) {
	const call = "hipStreamEndCapture"
	s.mu.Lock()
	c, sticky := s.capture, s.err
	s.capture = nil
	s.mu.Unlock()
	switch {
	case s.dev.closed.Load():
		return nil, errf(call, ErrClosed, "device closed")
	case s.isDestroyed():
		return nil, errf(call, ErrInvalidHandle, "invalid handle: stream destroyed")
	case c == nil:
		return nil, errf(call, ErrInvalidValue, "the stream is not capturing (no BeginCapture)")
	case c.err != nil:
		return nil, &Error{Call: call, Msg: "a call failed during the capture: " + c.err.Error(), Err: c.err}
	case sticky != nil:
		return nil, wrap(call, sticky)
	}
	return &hostGraph{dev: s.dev, ops: c.ops}, nil
}

func (s *hostStream) isDestroyed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.destroyed || s.exited
}

// hostGraph is a host stream's recording: its operations, run in order as
// one operation of the stream the graph is launched on.
type hostGraph struct {
	dev       *HostDevice
	ops       []hostOp
	destroyed atomic.Bool
}

// Launch enqueues the recorded operations on s as one operation, which
// stops at the first that fails; that failure becomes s's sticky error.
func (g *hostGraph) Launch(s Stream) error {
	const call = "hipGraphLaunch"
	hs, err := g.dev.stream(call, s)
	if err != nil {
		return err
	}
	if g.destroyed.Load() {
		return errf(call, ErrInvalidHandle, "invalid handle: graph destroyed")
	}
	if len(g.ops) == 0 {
		if err = hs.checkUsable(call); err == nil {
			err = hs.refuseCapturing(call)
		}
	} else {
		err = hs.enqueue(call, hostOp{kind: opRun, run: g.run}, false)
	}
	if err != nil {
		return err
	}
	for _, o := range g.ops {
		if o.counter != nil {
			o.counter.Add(o.n)
		}
	}
	g.dev.graphLaunches.Add(1)
	return nil
}

// run runs the operations in order, up to the first that fails.
func (g *hostGraph) run() error {
	for _, o := range g.ops {
		if err := o.run(); err != nil {
			return err
		}
	}
	return nil
}

// Nodes is the number of operations recorded.
func (g *hostGraph) Nodes() int { return len(g.ops) }

// Destroy releases the graph; launches already enqueued keep its operations.
func (g *hostGraph) Destroy() error {
	if !g.destroyed.CompareAndSwap(false, true) {
		return errf("hipGraphDestroy", ErrInvalidHandle, "invalid handle: graph already destroyed")
	}
	return nil
}

var _ Graph = (*hostGraph)(nil)
