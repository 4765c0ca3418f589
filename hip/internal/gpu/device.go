package gpu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/forgepipe/forgepipe/hip"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/log"
)

// Config is what a driver may set beyond hip.Options.
type Config struct {
	// CacheDir holds compiled kernels. Empty means $FORGEPIPE_KERNEL_CACHE,
	// else os.UserCacheDir()/forgepipe/kernels.
	CacheDir string
}

// Device is an opened GPU. It implements hip.Device; its methods, and those
// of everything it makes, are safe for concurrent use.
//
// The device's context is current per OS thread, while goroutines move
// between threads: every method that calls the driver locks its goroutine
// to its thread for the call and makes the context current there first
// (API.Bind: one cheap check when it already is).
type Device struct {
	api      *API
	cacheDir string
	log      zerolog.Logger

	closed  atomic.Bool
	waiters sync.WaitGroup // goroutines blocked in the driver for a Synchronize with a context

	mu          sync.RWMutex
	allocs      spans // device memory, by address
	allocated   int64
	peak        int64
	pinned      spans // pinned host memory (HostAlloc, HostRegister), by address
	pinnedBytes int64
	buffers     map[*hostBuffer]struct{}
	streams     map[*stream]struct{}
	modules     map[*module]struct{}
	blases      map[*blasHandle]struct{}
	graphs      map[*graph]struct{}
	stage       stagePool

	htod, dtoh, dtod, launches atomic.Int64
	graphLaunches              atomic.Int64
	compiles, cacheHits        atomic.Int64
}

// Open makes a Device of api, which the driver package has filled with its
// symbols and a bound device.
func Open(api *API, opts hip.Options, cfg Config) (*Device, error) {
	logger := log.Logger
	if opts.Logger != nil {
		logger = *opts.Logger
	}
	dir := cfg.CacheDir
	if dir == "" {
		dir = os.Getenv("FORGEPIPE_KERNEL_CACHE")
	}
	if dir == "" {
		if base, err := os.UserCacheDir(); err == nil {
			dir = filepath.Join(base, "forgepipe", "kernels")
		} else {
			dir = filepath.Join(os.TempDir(), "forgepipe-kernels")
		}
	}
	return &Device{
		api:      api,
		cacheDir: dir,
		log:      logger,
		buffers:  map[*hostBuffer]struct{}{},
		streams:  map[*stream]struct{}{},
		modules:  map[*module]struct{}{},
		blases:   map[*blasHandle]struct{}{},
		graphs:   map[*graph]struct{}{},
	}, nil
}

// Driver returns the driver's name, "cuda" or "rocm".
func (d *Device) Driver() string { return d.api.Driver }

// Name describes the device.
func (d *Device) Name() string { return d.api.Name }

// Arch is the architecture kernels are compiled for, e.g. "sm_90".
func (d *Device) Arch() string { return d.api.Arch }

// CacheDir is the directory of compiled kernels.
func (d *Device) CacheDir() string { return d.cacheDir }

// Compiles counts the modules compiled by the run-time compiler since Open;
// CacheHits counts those loaded from the kernel cache instead.
func (d *Device) Compiles() int64 { return d.compiles.Load() }

// CacheHits counts the modules loaded from the kernel cache since Open.
func (d *Device) CacheHits() int64 { return d.cacheHits.Load() }

// DependentLaunch reports whether dependent launches (hip.LaunchConfig)
// overlap the kernel before them on this device, rather than run as
// ordinary launches.
func (d *Device) DependentLaunch() bool { return d.api.LaunchKernelEx.Fn != 0 }

// enter locks the goroutine to its OS thread and makes the device current
// there; leave undoes the lock. A failed enter has already unlocked.
func (d *Device) enter(call string) error {
	if d.closed.Load() {
		return errf(call, hip.ErrClosed, "device closed")
	}
	runtime.LockOSThread()
	if st := d.api.Bind(); st != 0 {
		runtime.UnlockOSThread()
		return d.err(call+": binding the device to the thread", st)
	}
	return nil
}

func leave() { runtime.UnlockOSThread() }

// MemGetInfo returns the free and total device memory.
func (d *Device) MemGetInfo() (free, total int64, err error) {
	name := d.api.MemGetInfo.Name
	if err := d.enter(name); err != nil {
		return 0, 0, err
	}
	var f, t uint64
	st := call(d.api.MemGetInfo.Fn, uintptr(unsafe.Pointer(&f)), uintptr(unsafe.Pointer(&t)))
	leave()
	if st != 0 {
		return 0, 0, d.err(name, st)
	}
	return int64(f), int64(t), nil
}

// span is an address range.
type span struct{ base, size uint64 }

// spans is a set of disjoint ranges sorted by base.
type spans []span

// find returns the index of the range holding address p.
func (s spans) find(p uint64) (int, bool) {
	i, _ := slices.BinarySearchFunc(s, p, func(sp span, p uint64) int {
		switch {
		case sp.base+sp.size <= p:
			return -1
		case sp.base > p:
			return 1
		}
		return 0
	})
	return i, i < len(s) && s[i].base <= p && p < s[i].base+s[i].size
}

func (s *spans) insert(sp span) {
	i, _ := slices.BinarySearchFunc(*s, sp.base, func(x span, p uint64) int {
		switch {
		case x.base < p:
			return -1
		case x.base > p:
			return 1
		}
		return 0
	})
	*s = slices.Insert(*s, i, sp)
}

// Malloc allocates device memory and records it in the allocation table.
func (d *Device) Malloc(size int64) (hip.DevicePtr, error) {
	name := d.api.MemAlloc.Name
	if size < 0 {
		return 0, errf(fmt.Sprintf("%s(%d)", name, size), hip.ErrInvalidValue, "negative size")
	}
	if size == 0 {
		if d.closed.Load() {
			return 0, errf(fmt.Sprintf("%s(0)", name), hip.ErrClosed, "device closed")
		}
		return 0, nil
	}
	if err := d.enter(name); err != nil {
		return 0, err
	}
	var p uint64
	st := call(d.api.MemAlloc.Fn, uintptr(unsafe.Pointer(&p)), uintptr(size))
	leave()
	if st != 0 {
		err := d.err(fmt.Sprintf("%s(%d)", name, size), st)
		if he, ok := err.(*hip.Error); ok && he.Err == hip.ErrOutOfMemory {
			d.mu.RLock()
			he.Msg += fmt.Sprintf(" (%d bytes allocated by forgepipe)", d.allocated)
			d.mu.RUnlock()
		}
		return 0, err
	}
	d.mu.Lock()
	d.allocs.insert(span{p, uint64(size)})
	d.allocated += size
	d.peak = max(d.peak, d.allocated)
	d.mu.Unlock()
	return hip.DevicePtr(p), nil
}

// Free releases an allocation; pointers that are not the start of a live
// allocation fail with ErrInvalidDevicePointer before the driver sees them.
func (d *Device) Free(p hip.DevicePtr) error {
	if p == 0 {
		return nil
	}
	name := d.api.MemFree.Name
	callName := func() string { return fmt.Sprintf("%s(%v)", name, p) }
	if d.closed.Load() {
		return errf(callName(), hip.ErrClosed, "device closed")
	}
	d.mu.Lock()
	i, ok := d.allocs.find(uint64(p))
	switch {
	case !ok:
		d.mu.Unlock()
		return errf(callName(), hip.ErrInvalidDevicePointer,
			"invalid device pointer: not a live allocation (already freed, or never allocated)")
	case d.allocs[i].base != uint64(p):
		base := d.allocs[i].base
		d.mu.Unlock()
		return errf(callName(), hip.ErrInvalidDevicePointer,
			"invalid device pointer: %d bytes into the allocation at %v; free that instead", uint64(p)-base, hip.DevicePtr(base))
	}
	sp := d.allocs[i]
	d.allocs = slices.Delete(d.allocs, i, i+1)
	d.allocated -= int64(sp.size)
	d.mu.Unlock()
	if err := d.enter(name); err != nil {
		return err
	}
	st := call(d.api.MemFree.Fn, uintptr(p))
	leave()
	if st != 0 {
		return d.err(callName(), st)
	}
	return nil
}

// checkRange returns call's error unless the n bytes at p lie in one live
// allocation.
func (d *Device) checkRange(call func() string, p hip.DevicePtr, n int64) error {
	if n < 0 {
		return errf(call(), hip.ErrInvalidValue, "negative size %d", n)
	}
	if p == 0 {
		return errf(call(), hip.ErrInvalidDevicePointer, "invalid device pointer: null")
	}
	d.mu.RLock()
	i, ok := d.allocs.find(uint64(p))
	var sp span
	if ok {
		sp = d.allocs[i]
	}
	d.mu.RUnlock()
	if !ok {
		return errf(call(), hip.ErrInvalidDevicePointer,
			"invalid device pointer %v: not in a live allocation (freed, or never allocated)", p)
	}
	if off := uint64(p) - sp.base; uint64(n) > sp.size-off {
		return errf(call(), hip.ErrInvalidValue, "out of bounds: %d bytes at offset %d of a %d-byte allocation", n, off, sp.size)
	}
	return nil
}

// isPinned reports whether the n bytes at p are in pinned host memory.
func (d *Device) isPinned(p uintptr, n int) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	i, ok := d.pinned.find(uint64(p))
	return ok && uint64(n) <= d.pinned[i].base+d.pinned[i].size-uint64(p)
}

// Stats returns the device's counters.
func (d *Device) Stats() hip.Stats {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return hip.Stats{
		Allocated:     d.allocated,
		PeakAllocated: d.peak,
		Allocations:   int64(len(d.allocs)),
		Pinned:        d.pinnedBytes,
		CopiedHtoD:    d.htod.Load(),
		CopiedDtoH:    d.dtoh.Load(),
		CopiedDtoD:    d.dtod.Load(),
		Launches:      d.launches.Load(),
		GraphLaunches: d.graphLaunches.Load(),
	}
}

// await runs wait, a blocking driver call, on a locked thread with the
// device current. With a context that can be cancelled it runs on its own
// goroutine, so the caller returns when ctx is done; that goroutine returns
// when the driver does (Close waits for it).
func (d *Device) await(ctx context.Context, call string, wait func() Status, done func()) error {
	if ctx.Done() == nil {
		if err := d.enter(call); err != nil {
			done()
			return err
		}
		st := wait()
		leave()
		done()
		if st != 0 {
			return d.err(call, st)
		}
		return nil
	}
	if err := ctx.Err(); err != nil {
		done()
		return wrap(call, err)
	}
	res := make(chan error, 1)
	d.waiters.Add(1)
	go func() {
		defer d.waiters.Done()
		defer done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if st := d.api.Bind(); st != 0 {
			res <- d.err(call, st)
			return
		}
		if st := wait(); st != 0 {
			res <- d.err(call, st)
			return
		}
		res <- nil
	}()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return wrap(call, ctx.Err())
	}
}

// Synchronize waits until every stream of the device has done the work
// enqueued so far, or ctx is done, and returns a stream's sticky error.
func (d *Device) Synchronize(ctx context.Context) error {
	name := d.api.CtxSynchronize.Name
	if d.closed.Load() {
		return errf(name, hip.ErrClosed, "device closed")
	}
	d.mu.RLock()
	streams := make([]*stream, 0, len(d.streams))
	for s := range d.streams {
		streams = append(streams, s)
	}
	d.mu.RUnlock()
	// One event per stream marks the work enqueued so far; waiting on them
	// leaves out streams made later, as hipDeviceSynchronize would not. A
	// capturing stream's mark is the event recorded before its capture.
	var evs, owned []uintptr
	var held []*event
	destroy := func() {
		for _, ev := range held {
			ev.unhold()
		}
		if len(owned) == 0 {
			return
		}
		runtime.LockOSThread()
		if d.api.Bind() == 0 {
			for _, ev := range owned {
				call(d.api.EventDestroy.Fn, ev)
			}
		}
		runtime.UnlockOSThread()
	}
	for _, s := range streams {
		if before := s.before(); before != nil {
			held = append(held, before)
			evs = append(evs, before.h)
			continue
		}
		ev, err := s.mark(name)
		if err != nil {
			if s.isDestroyed() {
				continue
			}
			destroy()
			return err
		}
		evs = append(evs, ev)
		owned = append(owned, ev)
	}
	err := d.await(ctx, name, func() Status {
		for _, ev := range evs {
			if st := call(d.api.EventSynchronize.Fn, ev); st != 0 {
				return st
			}
		}
		return 0
	}, destroy)
	if err != nil {
		return err
	}
	for _, s := range streams {
		if err := s.sticky(); err != nil {
			return wrap(name, err)
		}
	}
	return nil
}

// Close waits for the device's queued work (a GPU cannot drop it), then
// releases every stream, module, BLAS handle and allocation, and the
// device's context. Closing twice does nothing.
func (d *Device) Close() error {
	if d.closed.Load() {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if st := d.api.Bind(); st == 0 {
		call(d.api.CtxSynchronize.Fn)
	}
	d.closed.Store(true)
	d.waiters.Wait()
	if st := d.api.Bind(); st != 0 {
		return d.err("Close: binding the device", st)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for h := range d.blases {
		h.mu.Lock()
		if !h.destroyed {
			h.destroyed = true
			call(d.api.BLAS.Destroy.Fn, h.h)
		}
		h.mu.Unlock()
	}
	for g := range d.graphs {
		g.release()
	}
	for s := range d.streams {
		s.mu.Lock()
		if !s.destroyed {
			s.destroyed = true
			s.dropCapture()
			call(d.api.StreamDestroy.Fn, s.h)
		}
		s.mu.Unlock()
	}
	for m := range d.modules {
		if m.unloaded.CompareAndSwap(false, true) {
			call(d.api.ModuleUnload.Fn, m.h)
		}
	}
	for _, sp := range d.allocs {
		call(d.api.MemFree.Fn, uintptr(sp.base))
	}
	d.allocs, d.allocated = nil, 0
	for b := range d.buffers {
		b.release()
	}
	d.pinned, d.pinnedBytes = nil, 0
	d.stage.freeAll(d)
	forgetHostFuncs(d)
	if st := d.api.Release(); st != 0 {
		return d.err("Close: releasing the device", st)
	}
	return nil
}

var _ hip.Device = (*Device)(nil)
