package hip

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// hostMark is a point in a stream: done is closed when the stream reaches
// it, after at and err are set.
type hostMark struct {
	done chan struct{}
	at   time.Time // when it was reached
	err  error     // the stream's sticky error then, if any
}

func newMark() *hostMark { return &hostMark{done: make(chan struct{})} }

type opKind uint8

const (
	opRun  opKind = iota // run fn
	opWait               // wait for another stream's mark
	opMark               // reach mark
)

// hostOp is one queued operation. When it is enqueued, counter (if any)
// grows by n: a graph's operations count at each launch of the graph.
type hostOp struct {
	kind    opKind
	run     func() error
	mark    *hostMark
	counter *atomic.Int64
	n       int64
}

// hostStream is a FIFO of operations run in order by its own goroutine.
type hostStream struct {
	dev  *HostDevice
	wake chan struct{} // capacity 1: "the queue may have work"

	mu        sync.Mutex
	queue     []hostOp
	pending   int          // enqueued and not finished, including the running one
	err       error        // sticky: set by the first failed operation
	destroyed bool         // Destroy was called: drain, then exit
	exited    bool         // the queue is closed (drained after Destroy, or aborted): nothing more is enqueued
	capture   *hostCapture // between BeginCapture and EndCapture
}

// captureRule says what an operation does on a capturing stream.
type captureRule uint8

const (
	refuse captureRule = iota // work a capture cannot record: refused, which fails the capture
	record                    // work a capture records instead of queueing it
	bypass                    // a wait: queued behind the work enqueued before the capture
)

// enqueue appends o, or returns why it cannot: the device is closed, the
// stream destroyed (unless internal), the stream has a sticky error, or it
// is capturing.
func (s *hostStream) enqueue(call string, o hostOp, internal bool) error {
	return s.put(call, o, internal, refuse)
}

// put is enqueue with rule saying what to do while the stream is capturing.
func (s *hostStream) put(call string, o hostOp, internal bool, rule captureRule) error {
	s.mu.Lock()
	switch {
	case s.dev.closed.Load() || (s.exited && !s.destroyed):
		s.mu.Unlock()
		return errf(call, ErrClosed, "device closed")
	case s.exited || (s.destroyed && !internal):
		s.mu.Unlock()
		return errf(call, ErrInvalidHandle, "invalid handle: stream destroyed")
	case s.err != nil:
		err := s.err
		s.mu.Unlock()
		return wrap(call, err)
	case s.capture != nil && rule == refuse:
		err := errNotCapturable(call)
		s.capture.fail(err)
		s.mu.Unlock()
		return err
	case s.capture != nil && rule == record:
		s.capture.ops = append(s.capture.ops, o)
		s.mu.Unlock()
		return nil
	}
	s.queue = append(s.queue, o)
	s.pending++
	s.mu.Unlock()
	if o.counter != nil {
		o.counter.Add(o.n)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// loop runs the queue until the stream is destroyed and drained, or the
// device closes.
func (s *hostStream) loop() {
	defer s.dev.wg.Done()
	for {
		o, ok := s.next()
		if !ok {
			return
		}
		s.exec(o)
	}
}

// next takes the next operation, waiting for one; false means exit.
func (s *hostStream) next() (hostOp, bool) {
	for {
		select {
		case <-s.dev.quit:
			s.abort()
			return hostOp{}, false
		default:
		}
		s.mu.Lock()
		if len(s.queue) > 0 {
			o := s.queue[0]
			s.queue[0] = hostOp{}
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return o, true
		}
		if s.destroyed {
			s.exited = true
			s.mu.Unlock()
			s.dev.mu.Lock()
			delete(s.dev.streams, s)
			s.dev.mu.Unlock()
			return hostOp{}, false
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-s.dev.quit:
		}
	}
}

// exec runs one operation. Once the stream has failed, work is skipped but
// marks are still reached, carrying the error, so nobody waits forever.
func (s *hostStream) exec(o hostOp) {
	s.mu.Lock()
	sticky := s.err
	s.mu.Unlock()
	var err error
	switch o.kind {
	case opRun:
		if sticky == nil {
			err = s.runGuarded(o.run)
		}
	case opWait:
		if sticky == nil {
			select {
			case <-o.mark.done:
				if o.mark.err != nil {
					err = &Error{Call: "hipStreamWaitEvent",
						Msg: "the event's stream failed: " + o.mark.err.Error(), Err: o.mark.err}
				}
			case <-s.dev.quit: // closing: abort releases everything
			}
		}
	}
	s.mu.Lock()
	if err != nil && s.err == nil {
		s.err = err
	}
	if !s.exited { // abort zeroed pending while o ran
		s.pending--
	}
	s.mu.Unlock()
	// A mark is reached after the bookkeeping, so that a Query right after
	// a Synchronize sees the stream idle.
	if o.kind == opMark {
		o.mark.at = time.Now()
		o.mark.err = sticky
		close(o.mark.done)
	}
}

// runGuarded runs fn, turning a panic into an error and logging its stack;
// kernels and host functions recover their own panics with a better message.
func (s *hostStream) runGuarded(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.dev.log.Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("hip host stream operation panicked")
			err = errf("hip host stream", ErrLaunchFailure, "launch failure: operation panicked: %v", r)
		}
	}()
	return fn()
}

// abort drops the queue when the device closes: marks are reached with
// ErrClosed, so Synchronize callers and waiting streams are released. Close
// calls it, and so does the stream's goroutine on its way out; the second
// call finds nothing left.
func (s *hostStream) abort() {
	s.mu.Lock()
	q := s.queue
	s.queue = nil
	s.pending = 0
	s.exited = true
	s.mu.Unlock()
	for _, o := range q {
		if o.kind == opMark {
			o.mark.at = time.Now()
			o.mark.err = errf("hip host stream", ErrClosed, "device closed before the stream reached this point")
			close(o.mark.done)
		}
	}
}

// sync enqueues a mark and waits for it or for ctx.
func (s *hostStream) sync(ctx context.Context, call string, internal bool) error {
	m := newMark()
	if err := s.put(call, hostOp{kind: opMark, mark: m}, internal, bypass); err != nil {
		if internal && isInvalidHandle(err) {
			return nil // destroyed and drained: nothing to wait for
		}
		return err
	}
	select {
	case <-m.done:
		if m.err != nil {
			return wrap(call, m.err)
		}
		return nil
	case <-ctx.Done():
		return wrap(call, ctx.Err())
	}
}

func isInvalidHandle(err error) bool {
	e, ok := err.(*Error)
	return ok && e.Err == ErrInvalidHandle
}

func (s *hostStream) Synchronize(ctx context.Context) error {
	return s.sync(ctx, "hipStreamSynchronize", false)
}

func (s *hostStream) Query() error {
	const call = "hipStreamQuery"
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.dev.closed.Load():
		return errf(call, ErrClosed, "device closed")
	case s.destroyed:
		return errf(call, ErrInvalidHandle, "invalid handle: stream destroyed")
	case s.err != nil:
		return wrap(call, s.err)
	case s.pending > 0:
		return wrap(call, ErrNotReady)
	}
	return nil
}

func (s *hostStream) Destroy() error {
	const call = "hipStreamDestroy"
	s.mu.Lock()
	switch {
	case s.dev.closed.Load():
		s.mu.Unlock()
		return errf(call, ErrClosed, "device closed")
	case s.destroyed:
		s.mu.Unlock()
		return errf(call, ErrInvalidHandle, "invalid handle: stream already destroyed")
	}
	s.destroyed = true
	s.capture = nil // dropped
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// checkUsable returns the error a call would get on this stream, for calls
// with nothing to enqueue (zero-length copies).
func (s *hostStream) checkUsable(call string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usable(call)
}

// usable is checkUsable with s.mu held.
func (s *hostStream) usable(call string) error {
	switch {
	case s.dev.closed.Load():
		return errf(call, ErrClosed, "device closed")
	case s.destroyed || s.exited:
		return errf(call, ErrInvalidHandle, "invalid handle: stream destroyed")
	case s.err != nil:
		return wrap(call, s.err)
	}
	return nil
}

// enqueueCopy checks the device ranges now, so that a bad call fails at
// once, and enqueues run, which resolves them again when it runs (the memory
// may have been freed in between). counter counts n bytes on success. rule
// says whether a capture records the copy.
func (s *hostStream) enqueueCopy(name string, n int64, counter *atomic.Int64, rule captureRule, check func() error, run func() error) error {
	if err := s.checkUsable(name); err != nil || n == 0 {
		return err
	}
	if err := check(); err != nil {
		return err
	}
	return s.put(name, hostOp{kind: opRun, run: run, counter: counter, n: n}, false, rule)
}

func (s *hostStream) MemcpyHtoDAsync(dst DevicePtr, src []byte) error {
	n := int64(len(src))
	call := fmt.Sprintf("hipMemcpyHtoDAsync(%v, %d bytes)", dst, n)
	view := func() ([]byte, error) { return s.dev.view(call, dst, n) }
	return s.enqueueCopy("hipMemcpyHtoDAsync", n, &s.dev.htod, refuse, discard(view), func() error {
		d, err := view()
		if err != nil {
			return err
		}
		copy(d, src)
		return nil
	})
}

func (s *hostStream) MemcpyDtoHAsync(dst []byte, src DevicePtr) error {
	n := int64(len(dst))
	call := fmt.Sprintf("hipMemcpyDtoHAsync(%v, %d bytes)", src, n)
	view := func() ([]byte, error) { return s.dev.view(call, src, n) }
	return s.enqueueCopy("hipMemcpyDtoHAsync", n, &s.dev.dtoh, refuse, discard(view), func() error {
		d, err := view()
		if err != nil {
			return err
		}
		copy(dst, d)
		return nil
	})
}

func (s *hostStream) MemcpyDtoDAsync(dst, src DevicePtr, n int64) error {
	return s.captured(s.memcpyDtoD(dst, src, n))
}

func (s *hostStream) memcpyDtoD(dst, src DevicePtr, n int64) error {
	call := fmt.Sprintf("hipMemcpyDtoDAsync(%v, %v, %d bytes)", dst, src, n)
	views := func() (d, sv []byte, err error) {
		if d, err = s.dev.view(call, dst, n); err != nil {
			return nil, nil, err
		}
		if sv, err = s.dev.view(call, src, n); err != nil {
			return nil, nil, err
		}
		return d, sv, nil
	}
	check := func() error {
		if _, _, err := views(); err != nil {
			return err
		}
		dID, dOff := splitPtr(dst)
		sID, sOff := splitPtr(src)
		if dID == sID && dOff < sOff+n && sOff < dOff+n {
			return errf(call, ErrInvalidValue, "source and destination overlap")
		}
		return nil
	}
	if n < 0 {
		return errf(call, ErrInvalidValue, "negative size")
	}
	return s.enqueueCopy("hipMemcpyDtoDAsync", n, &s.dev.dtod, record, check, func() error {
		d, sv, err := views()
		if err != nil {
			return err
		}
		copy(d, sv)
		return nil
	})
}

func (s *hostStream) MemsetD8Async(dst DevicePtr, v byte, n int64) error {
	return s.captured(s.memsetD8(dst, v, n))
}

func (s *hostStream) memsetD8(dst DevicePtr, v byte, n int64) error {
	call := fmt.Sprintf("hipMemsetD8Async(%v, %#x, %d)", dst, v, n)
	if n < 0 {
		return errf(call, ErrInvalidValue, "negative size")
	}
	view := func() ([]byte, error) { return s.dev.view(call, dst, n) }
	return s.enqueueCopy("hipMemsetD8Async", n, nil, record, discard(view), func() error {
		d, err := view()
		if err != nil {
			return err
		}
		for i := range d {
			d[i] = v
		}
		return nil
	})
}

func (s *hostStream) MemsetD32Async(dst DevicePtr, v uint32, count int64) error {
	return s.captured(s.memsetD32(dst, v, count))
}

func (s *hostStream) memsetD32(dst DevicePtr, v uint32, count int64) error {
	call := fmt.Sprintf("hipMemsetD32Async(%v, %#x, %d)", dst, v, count)
	if count < 0 || count > hostMaxAlloc/4 {
		return errf(call, ErrInvalidValue, "count out of range")
	}
	if _, off := splitPtr(dst); off%4 != 0 {
		return errf(call, ErrInvalidValue, "destination not 4-byte aligned")
	}
	view := func() ([]byte, error) { return s.dev.view(call, dst, 4*count) }
	return s.enqueueCopy("hipMemsetD32Async", count, nil, record, discard(view), func() error {
		d, err := view()
		if err != nil {
			return err
		}
		for i := 0; i < len(d); i += 4 {
			binary.LittleEndian.PutUint32(d[i:], v)
		}
		return nil
	})
}

func discard(view func() ([]byte, error)) func() error {
	return func() error { _, err := view(); return err }
}

func (s *hostStream) Launch(f Function, grid, block Dim3, sharedMem uint32, args ...Arg) error {
	return s.captured(s.launch(f, grid, block, sharedMem, args))
}

// LaunchEx is Launch: the host driver runs a stream's operations one after
// another, so a dependent kernel is an ordinary one.
func (s *hostStream) LaunchEx(f Function, c LaunchConfig, args ...Arg) error {
	return s.captured(s.launch(f, c.Grid, c.Block, c.SharedMem, args))
}

func (s *hostStream) launch(f Function, grid, block Dim3, sharedMem uint32, args []Arg) error {
	const name = "hipModuleLaunchKernel"
	hf, ok := f.(*hostFunction)
	if !ok || hf == nil || hf.mod.dev != s.dev {
		return errf(name, ErrInvalidHandle, "invalid handle: not a function of this host device")
	}
	call := hf.launchCall
	if hf.mod.unloaded.Load() {
		return errf(call, ErrInvalidHandle, "invalid handle: module %q unloaded", hf.mod.name)
	}
	if grid.X == 0 || grid.Y == 0 || grid.Z == 0 || block.X == 0 || block.Y == 0 || block.Z == 0 {
		return errf(call, ErrInvalidValue, "invalid configuration: grid %v, block %v", grid, block)
	}
	for i, a := range args {
		if a.Size() == 0 {
			return errf(call, ErrInvalidValue, "argument %d is not a valid Arg (use hip.Ptr, hip.Int32, ...)", i)
		}
	}
	l := &HostLaunch{Kernel: hf.name, Grid: grid, Block: block, SharedMem: sharedMem,
		Args: slices.Clone(args), dev: s.dev}
	return s.put(name, hostOp{kind: opRun, run: func() error { return hf.call(l) }, counter: &s.dev.launches, n: 1}, false, record)
}

func (s *hostStream) LaunchHostFunc(fn func()) error {
	const call = "hipLaunchHostFunc"
	if fn == nil {
		return s.captured(errf(call, ErrInvalidValue, "nil function"))
	}
	return s.enqueue(call, hostOp{kind: opRun, run: func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				s.dev.log.Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("hip host function panicked")
				err = errf(call, ErrLaunchFailure, "host function panicked: %v", r)
			}
		}()
		fn()
		return nil
	}}, false)
}

func (s *hostStream) WaitEvent(e Event) error {
	const call = "hipStreamWaitEvent"
	he, err := s.dev.event(call, e)
	if err != nil {
		return err
	}
	m, err := he.latest(call)
	if err != nil {
		return err
	}
	if m == nil { // never recorded: nothing to wait for
		if err := s.checkUsable(call); err != nil {
			return err
		}
		return s.refuseCapturing(call)
	}
	return s.enqueue(call, hostOp{kind: opWait, mark: m}, false)
}

// hostEvent is an event: the latest record, a mark in some stream.
type hostEvent struct {
	dev *HostDevice

	mu        sync.Mutex
	rec       *hostMark
	destroyed bool
}

// latest returns the most recent record (nil if never recorded).
func (e *hostEvent) latest(call string) (*hostMark, error) {
	if e.dev.closed.Load() {
		return nil, errf(call, ErrClosed, "device closed")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.destroyed {
		return nil, errf(call, ErrInvalidHandle, "invalid handle: event destroyed")
	}
	return e.rec, nil
}

// reached returns the most recent record if it was reached, ErrNotReady if
// not yet, or the recording stream's error.
func (e *hostEvent) reached(call string) (*hostMark, error) {
	m, err := e.latest(call)
	if err != nil || m == nil {
		return m, err
	}
	select {
	case <-m.done:
		if m.err != nil {
			return nil, wrap(call, m.err)
		}
		return m, nil
	default:
		return nil, wrap(call, ErrNotReady)
	}
}

func (e *hostEvent) Record(s Stream) error {
	const call = "hipEventRecord"
	hs, err := e.dev.stream(call, s)
	if err != nil {
		return err
	}
	if _, err := e.latest(call); err != nil {
		return err
	}
	m := newMark()
	if err := hs.enqueue(call, hostOp{kind: opMark, mark: m}, false); err != nil {
		return err
	}
	e.mu.Lock()
	e.rec = m
	e.mu.Unlock()
	return nil
}

func (e *hostEvent) Synchronize(ctx context.Context) error {
	const call = "hipEventSynchronize"
	m, err := e.latest(call)
	if err != nil || m == nil {
		return err
	}
	select {
	case <-m.done:
		if m.err != nil {
			return wrap(call, m.err)
		}
		return nil
	case <-ctx.Done():
		return wrap(call, ctx.Err())
	}
}

func (e *hostEvent) Query() error {
	_, err := e.reached("hipEventQuery")
	return err
}

func (e *hostEvent) Destroy() error {
	const call = "hipEventDestroy"
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.destroyed {
		return errf(call, ErrInvalidHandle, "invalid handle: event already destroyed")
	}
	e.destroyed = true
	return nil
}
