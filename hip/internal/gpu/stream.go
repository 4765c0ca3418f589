package gpu

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/forgepipe/forgepipe/hip"
)

// stream is a non-blocking driver stream. Its sticky error is the driver's
// (a fault poisons the whole context) or that of a host function that
// panicked.
type stream struct {
	dev *Device
	h   uintptr

	mu        sync.RWMutex // held for reading across each driver call on the stream
	destroyed bool
	err       error
	capture   *capture // between BeginCapture and EndCapture
}

// StreamCreate makes a stream that does not synchronise with the legacy
// default stream.
func (d *Device) StreamCreate() (hip.Stream, error) {
	name := d.api.StreamCreate.Name
	if err := d.enter(name); err != nil {
		return nil, err
	}
	var h uintptr
	st := call(d.api.StreamCreate.Fn, uintptr(unsafe.Pointer(&h)), d.api.StreamFlags)
	leave()
	if st != 0 {
		return nil, d.err(name, st)
	}
	s := &stream{dev: d, h: h}
	d.mu.Lock()
	d.streams[s] = struct{}{}
	d.mu.Unlock()
	return s, nil
}

// stream returns s as a stream of this device.
func (d *Device) stream(call string, s hip.Stream) (*stream, error) {
	gs, ok := s.(*stream)
	if !ok || gs == nil || gs.dev != d {
		return nil, errf(call, hip.ErrInvalidHandle, "invalid handle: not a stream of this %s device", d.api.Driver)
	}
	return gs, nil
}

// captureRule says what a call does on a capturing stream.
type captureRule uint8

const (
	refuse    captureRule = iota // work a capture cannot record: refused, which fails the capture
	record                       // work a capture records
	untouched                    // no work: refused, the capture carries on
)

// begin read-locks the stream, checks that work can be enqueued on it, and
// binds the device to the thread. end undoes it. A failed begin has undone
// it. A capturing stream refuses the call, and the capture fails.
func (s *stream) begin(call string) error { return s.beginAs(call, refuse) }

// beginAs is begin with rule saying what to do while the stream is
// capturing. Between beginAs and end, s.capture may be read.
func (s *stream) beginAs(call string, rule captureRule) error {
	s.mu.RLock()
	switch {
	case s.dev.closed.Load():
		s.mu.RUnlock()
		return errf(call, hip.ErrClosed, "device closed")
	case s.destroyed:
		s.mu.RUnlock()
		return errf(call, hip.ErrInvalidHandle, "invalid handle: stream destroyed")
	case s.err != nil:
		err := s.err
		s.mu.RUnlock()
		return wrap(call, err)
	case s.capture != nil && rule != record:
		err := errNotCapturable(call)
		if rule == refuse {
			s.capture.fail(err)
		}
		s.mu.RUnlock()
		return err
	}
	if err := s.dev.enter(call); err != nil {
		s.mu.RUnlock()
		return err
	}
	return nil
}

func (s *stream) end() {
	leave()
	s.mu.RUnlock()
}

func (s *stream) isDestroyed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.destroyed
}

func (s *stream) sticky() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.err
}

// fail makes err the stream's sticky error, unless it has one.
func (s *stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// check returns the error a call with nothing to enqueue would get.
func (s *stream) check(call string) error {
	if err := s.beginAs(call, record); err != nil {
		return err
	}
	s.end()
	return nil
}

func (s *stream) MemcpyHtoDAsync(dst hip.DevicePtr, src []byte) error {
	api := s.dev.api
	n := int64(len(src))
	callName := func() string { return fmt.Sprintf("%s(%v, %d bytes)", api.MemcpyHtoDAsync.Name, dst, n) }
	if n == 0 {
		return s.check(api.MemcpyHtoDAsync.Name)
	}
	if err := s.dev.checkRange(callName, dst, n); err != nil {
		return err
	}
	if err := s.begin(api.MemcpyHtoDAsync.Name); err != nil {
		return err
	}
	st := call(api.MemcpyHtoDAsync.Fn, uintptr(dst), uintptr(unsafe.Pointer(unsafe.SliceData(src))), uintptr(n), s.h)
	s.end()
	if st != 0 {
		return s.dev.err(callName(), st)
	}
	s.dev.htod.Add(n)
	return nil
}

func (s *stream) MemcpyDtoHAsync(dst []byte, src hip.DevicePtr) error {
	api := s.dev.api
	n := int64(len(dst))
	callName := func() string { return fmt.Sprintf("%s(%v, %d bytes)", api.MemcpyDtoHAsync.Name, src, n) }
	if n == 0 {
		return s.check(api.MemcpyDtoHAsync.Name)
	}
	if err := s.dev.checkRange(callName, src, n); err != nil {
		return err
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(dst)))
	pinned := s.dev.isPinned(p, len(dst))
	if err := s.begin(api.MemcpyDtoHAsync.Name); err != nil {
		return err
	}
	defer s.end()
	if pinned {
		if st := call(api.MemcpyDtoHAsync.Fn, p, uintptr(src), uintptr(n), s.h); st != 0 {
			return s.dev.err(callName(), st)
		}
		s.dev.dtoh.Add(n)
		return nil
	}
	// Pageable memory: through a pinned staging buffer and a host function.
	b, st := s.dev.stage.get(s.dev, len(dst))
	if st != 0 {
		return s.dev.err(callName()+": staging buffer", st)
	}
	if st := call(api.MemcpyDtoHAsync.Fn, b.p, uintptr(src), uintptr(n), s.h); st != 0 {
		s.dev.stage.put(b)
		return s.dev.err(callName(), st)
	}
	if err := s.hostFunc(callName(), func() {
		copyOut(dst, b.bytes(len(dst)))
		s.dev.stage.put(b)
	}); err != nil {
		return err // b stays out of the pool: the device may still write it
	}
	s.dev.dtoh.Add(n)
	return nil
}

func (s *stream) MemcpyDtoDAsync(dst, src hip.DevicePtr, n int64) error {
	return s.captured(s.memcpyDtoD(dst, src, n))
}

func (s *stream) memcpyDtoD(dst, src hip.DevicePtr, n int64) error {
	api := s.dev.api
	callName := func() string { return fmt.Sprintf("%s(%v, %v, %d bytes)", api.MemcpyDtoDAsync.Name, dst, src, n) }
	if n < 0 {
		return errf(callName(), hip.ErrInvalidValue, "negative size")
	}
	if n == 0 {
		return s.check(api.MemcpyDtoDAsync.Name)
	}
	if err := s.dev.checkRange(callName, dst, n); err != nil {
		return err
	}
	if err := s.dev.checkRange(callName, src, n); err != nil {
		return err
	}
	if dst < src.Add(n) && src < dst.Add(n) {
		return errf(callName(), hip.ErrInvalidValue, "source and destination overlap")
	}
	if err := s.beginAs(api.MemcpyDtoDAsync.Name, record); err != nil {
		return err
	}
	st := call(api.MemcpyDtoDAsync.Fn, uintptr(dst), uintptr(src), uintptr(n), s.h)
	c := s.capture
	s.end()
	if st != 0 {
		return s.dev.err(callName(), st)
	}
	if c != nil {
		c.dtod.Add(n)
	} else {
		s.dev.dtod.Add(n)
	}
	return nil
}

func (s *stream) MemsetD8Async(dst hip.DevicePtr, v byte, n int64) error {
	return s.captured(s.memsetD8(dst, v, n))
}

func (s *stream) memsetD8(dst hip.DevicePtr, v byte, n int64) error {
	api := s.dev.api
	callName := func() string { return fmt.Sprintf("%s(%v, %#x, %d)", api.MemsetD8Async.Name, dst, v, n) }
	if n < 0 {
		return errf(callName(), hip.ErrInvalidValue, "negative size")
	}
	if n == 0 {
		return s.check(api.MemsetD8Async.Name)
	}
	if err := s.dev.checkRange(callName, dst, n); err != nil {
		return err
	}
	if err := s.beginAs(api.MemsetD8Async.Name, record); err != nil {
		return err
	}
	st := call(api.MemsetD8Async.Fn, uintptr(dst), uintptr(v), uintptr(n), s.h)
	s.end()
	if st != 0 {
		return s.dev.err(callName(), st)
	}
	return nil
}

func (s *stream) MemsetD32Async(dst hip.DevicePtr, v uint32, count int64) error {
	return s.captured(s.memsetD32(dst, v, count))
}

func (s *stream) memsetD32(dst hip.DevicePtr, v uint32, count int64) error {
	api := s.dev.api
	callName := func() string { return fmt.Sprintf("%s(%v, %#x, %d)", api.MemsetD32Async.Name, dst, v, count) }
	if count < 0 || count > 1<<60 {
		return errf(callName(), hip.ErrInvalidValue, "count out of range")
	}
	if dst%4 != 0 {
		return errf(callName(), hip.ErrInvalidValue, "destination not 4-byte aligned")
	}
	if count == 0 {
		return s.check(api.MemsetD32Async.Name)
	}
	if err := s.dev.checkRange(callName, dst, 4*count); err != nil {
		return err
	}
	if err := s.beginAs(api.MemsetD32Async.Name, record); err != nil {
		return err
	}
	st := call(api.MemsetD32Async.Fn, uintptr(dst), uintptr(v), uintptr(count), s.h)
	s.end()
	if st != 0 {
		return s.dev.err(callName(), st)
	}
	return nil
}

// copyOut copies a staging buffer to its destination, in parallel for
// large copies (one core copies about 4 GB/s, the device 55 GB/s).
func copyOut(dst, src []byte) {
	const chunk = 4 << 20
	if len(dst) <= 2*chunk {
		copy(dst, src)
		return
	}
	workers := min(runtime.GOMAXPROCS(0), 8, len(dst)/chunk)
	per := (len(dst) + workers - 1) / workers
	var wg sync.WaitGroup
	for off := 0; off < len(dst); off += per {
		end := min(off+per, len(dst))
		wg.Add(1)
		go func() {
			defer wg.Done()
			copy(dst[off:end], src[off:end])
		}()
	}
	wg.Wait()
}

// maxArgs is the most kernel arguments Launch takes.
const maxArgs = 64

// params is a kernel's parameter array: a slot per argument and the array
// of pointers to the slots that the launch call takes, and the
// configuration LaunchKernelEx takes, whose attrs points at attr. The
// driver copies all of it during the call, so a params is reused at once.
type params struct {
	vals [maxArgs]uint64
	ptrs [maxArgs]uintptr
	cfg  launchConfig
	attr launchAttribute
}

// launchConfig is CUlaunchConfig (cuda.h, CUDA 12.0 and later), laid out as
// C lays it out on 64-bit hosts: seven unsigned ints, 4 bytes of padding,
// the stream at offset 32, attrs at 40, numAttrs at 48; 56 bytes in all.
type launchConfig struct {
	gridDimX, gridDimY, gridDimZ    uint32
	blockDimX, blockDimY, blockDimZ uint32
	sharedMemBytes                  uint32
	_                               uint32
	hStream                         uintptr // CUstream
	attrs                           uintptr // CUlaunchAttribute *
	numAttrs                        uint32
	_                               uint32
}

// launchAttribute is CUlaunchAttribute: the CUlaunchAttributeID, 4 bytes of
// padding (char pad[8 - sizeof(CUlaunchAttributeID)]) and the 64-byte
// CUlaunchAttributeValue union at offset 8; 72 bytes in all. The union's
// int members (programmaticStreamSerializationAllowed) are its first 4 bytes.
type launchAttribute struct {
	id    uint32
	_     uint32
	value [16]uint32
}

var paramsPool = sync.Pool{New: func() any {
	p := new(params)
	for i := range p.ptrs {
		p.ptrs[i] = uintptr(unsafe.Pointer(&p.vals[i]))
	}
	p.cfg.attrs = uintptr(unsafe.Pointer(&p.attr))
	return p
}}

func (s *stream) Launch(f hip.Function, grid, block hip.Dim3, sharedMem uint32, args ...hip.Arg) error {
	return s.captured(s.launch(f, hip.LaunchConfig{Grid: grid, Block: block, SharedMem: sharedMem}, args))
}

// LaunchEx is Launch, through LaunchKernelEx with programmatic stream
// serialization allowed when c is Dependent and the device can.
func (s *stream) LaunchEx(f hip.Function, c hip.LaunchConfig, args ...hip.Arg) error {
	return s.captured(s.launch(f, c, args))
}

func (s *stream) launch(f hip.Function, lc hip.LaunchConfig, args []hip.Arg) error {
	grid, block, sharedMem := lc.Grid, lc.Block, lc.SharedMem
	api := s.dev.api
	fn, ok := f.(*function)
	if !ok || fn == nil || fn.mod.dev != s.dev {
		return errf(api.LaunchKernel.Name, hip.ErrInvalidHandle, "invalid handle: not a function of this %s device", api.Driver)
	}
	if fn.mod.unloaded.Load() {
		return errf(fn.launchCall, hip.ErrInvalidHandle, "invalid handle: module %q unloaded", fn.mod.name)
	}
	if grid.X == 0 || grid.Y == 0 || grid.Z == 0 || block.X == 0 || block.Y == 0 || block.Z == 0 {
		return errf(fn.launchCall, hip.ErrInvalidValue, "invalid configuration: grid %v, block %v", grid, block)
	}
	if len(args) > maxArgs {
		return errf(fn.launchCall, hip.ErrInvalidValue, "%d arguments, at most %d", len(args), maxArgs)
	}
	p := paramsPool.Get().(*params)
	for i, a := range args {
		if a.Size() == 0 {
			paramsPool.Put(p)
			return errf(fn.launchCall, hip.ErrInvalidValue, "argument %d is not a valid Arg (use hip.Ptr, hip.Int32, ...)", i)
		}
		// Little-endian: a 4-byte argument is the slot's first 4 bytes.
		p.vals[i] = a.Bits()
	}
	if err := s.beginAs(fn.launchCall, record); err != nil {
		paramsPool.Put(p)
		return err
	}
	var st Status
	dependent := lc.Dependent && api.LaunchKernelEx.Fn != 0
	if dependent {
		p.cfg.gridDimX, p.cfg.gridDimY, p.cfg.gridDimZ = grid.X, grid.Y, grid.Z
		p.cfg.blockDimX, p.cfg.blockDimY, p.cfg.blockDimZ = block.X, block.Y, block.Z
		p.cfg.sharedMemBytes, p.cfg.hStream, p.cfg.numAttrs = sharedMem, s.h, 1
		p.attr.id, p.attr.value[0] = api.LaunchAttrProgrammatic, 1
		st = call(api.LaunchKernelEx.Fn, uintptr(unsafe.Pointer(&p.cfg)), fn.h, uintptr(unsafe.Pointer(&p.ptrs[0])), 0)
	} else {
		st = call(api.LaunchKernel.Fn, fn.h,
			uintptr(grid.X), uintptr(grid.Y), uintptr(grid.Z),
			uintptr(block.X), uintptr(block.Y), uintptr(block.Z),
			uintptr(sharedMem), s.h, uintptr(unsafe.Pointer(&p.ptrs[0])), 0)
	}
	c := s.capture
	s.end()
	paramsPool.Put(p)
	if st != 0 {
		callName := fn.launchCall
		if dependent {
			callName = fmt.Sprintf("%s(%q) (programmatic stream serialization)", api.LaunchKernelEx.Name, fn.name)
		}
		return s.dev.err(fmt.Sprintf("%s grid %v block %v shared %d", callName, grid, block, sharedMem), st)
	}
	if c != nil {
		c.kernels.Add(1)
	} else {
		s.dev.launches.Add(1)
	}
	return nil
}

func (s *stream) LaunchHostFunc(fn func()) error {
	name := s.dev.api.LaunchHostFunc.Name
	if name == "" {
		name = s.dev.api.StreamAddCallback.Name
	}
	if fn == nil {
		return s.captured(errf(name, hip.ErrInvalidValue, "nil function"))
	}
	if err := s.begin(name); err != nil {
		return err
	}
	defer s.end()
	return s.hostFunc(name, fn)
}

// hostFunc enqueues fn; the stream is begun.
func (s *stream) hostFunc(callName string, fn func()) error {
	id := addHostFunc(s, fn)
	var st Status
	if api := s.dev.api; api.LaunchHostFunc.Fn != 0 {
		st = call(api.LaunchHostFunc.Fn, s.h, hostFuncCallback(), id)
	} else {
		st = call(api.StreamAddCallback.Fn, s.h, streamCallback(), id, 0)
	}
	if st != 0 {
		takeHostFunc(id)
		return s.dev.err(callName, st)
	}
	return nil
}

func (s *stream) WaitEvent(e hip.Event) error {
	api := s.dev.api
	name := api.StreamWaitEvent.Name
	ev, err := s.dev.event(name, e)
	if err != nil {
		return err
	}
	ev.mu.RLock()
	defer ev.mu.RUnlock()
	if ev.destroyed {
		return errf(name, hip.ErrInvalidHandle, "invalid handle: event destroyed")
	}
	if ev.rec != nil {
		if err := ev.rec.sticky(); err != nil {
			s.fail(err)
		}
	}
	if err := s.begin(name); err != nil {
		return err
	}
	st := call(api.StreamWaitEvent.Fn, s.h, ev.h, 0)
	s.end()
	if st != 0 {
		return s.dev.err(name, st)
	}
	return nil
}

// mark records a fresh internal event on the stream for a waiter to own.
func (s *stream) mark(call string) (uintptr, error) {
	api := s.dev.api
	if err := s.beginAs(call, untouched); err != nil {
		return 0, err
	}
	defer s.end()
	var ev uintptr
	if st := callC(api.EventCreate.Fn, uintptr(unsafe.Pointer(&ev)), api.EventDisableTiming); st != 0 {
		return 0, s.dev.err(api.EventCreate.Name, st)
	}
	if st := callC(api.EventRecord.Fn, ev, s.h); st != 0 {
		callC(api.EventDestroy.Fn, ev)
		return 0, s.dev.err(api.EventRecord.Name, st)
	}
	return ev, nil
}

func (s *stream) Synchronize(ctx context.Context) error {
	api := s.dev.api
	name := api.StreamSynchronize.Name
	if ev := s.before(); ev != nil { // capturing: wait for the work before the capture
		if err := s.dev.await(ctx, name, func() Status { return call(api.EventSynchronize.Fn, ev.h) }, ev.unhold); err != nil {
			return err
		}
		return s.stickyAs(name)
	}
	if ctx.Done() == nil {
		if err := s.beginAs(name, untouched); err != nil {
			return err
		}
		st := call(api.StreamSynchronize.Fn, s.h)
		s.end()
		if st != 0 {
			return s.dev.err(name, st)
		}
		return s.stickyAs(name)
	}
	if err := s.Query(); err == nil {
		return nil
	} else if !isNotReady(err) {
		return err
	}
	ev, err := s.mark(name)
	if err != nil {
		return err
	}
	d := s.dev
	err = d.await(ctx, name, func() Status { return call(api.EventSynchronize.Fn, ev) }, func() {
		d.withBound(func() { call(api.EventDestroy.Fn, ev) })
	})
	if err != nil {
		return err
	}
	return s.stickyAs(name)
}

func (s *stream) stickyAs(name string) error {
	if err := s.sticky(); err != nil {
		return wrap(name, err)
	}
	return nil
}

func isNotReady(err error) bool {
	he, ok := err.(*hip.Error)
	return ok && he.Err == hip.ErrNotReady
}

func (s *stream) Query() error {
	api := s.dev.api
	name := api.StreamQuery.Name
	var st Status
	if ev := s.before(); ev != nil { // capturing: query the work before the capture
		err := s.dev.enter(name)
		if err == nil {
			st = call(api.EventQuery.Fn, ev.h)
			leave()
		}
		ev.unhold()
		if err != nil {
			return err
		}
		if st == 0 {
			return s.stickyAs(name)
		}
	} else {
		if err := s.beginAs(name, untouched); err != nil {
			return err
		}
		st = call(api.StreamQuery.Fn, s.h)
		s.end()
	}
	switch st {
	case 0:
		return nil
	case api.NotReady:
		return wrap(name, hip.ErrNotReady)
	}
	return s.dev.err(name, st)
}

// Destroy releases the stream once its queued work is done; it does not wait.
func (s *stream) Destroy() error {
	api := s.dev.api
	name := api.StreamDestroy.Name
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.dev.closed.Load():
		return errf(name, hip.ErrClosed, "device closed")
	case s.destroyed:
		return errf(name, hip.ErrInvalidHandle, "invalid handle: stream already destroyed")
	}
	if err := s.dev.enter(name); err != nil {
		return err
	}
	s.dropCapture()
	st := call(api.StreamDestroy.Fn, s.h)
	leave()
	s.destroyed = true
	s.dev.mu.Lock()
	delete(s.dev.streams, s)
	s.dev.mu.Unlock()
	if st != 0 {
		return s.dev.err(name, st)
	}
	return nil
}

// withBound runs fn on a locked thread with the device current, if it can.
func (d *Device) withBound(fn func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if d.api.Bind() == 0 {
		fn()
	}
}

// callC is call, for use where a local variable shadows it.
//
//go:uintptrescapes
func callC(fn uintptr, args ...uintptr) Status { return call(fn, args...) }
