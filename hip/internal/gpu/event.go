package gpu

import (
	"context"
	"sync"
	"unsafe"

	"github.com/forgepipe/forgepipe/hip"
)

// event is a driver event with timing enabled (EventElapsedTime needs it).
type event struct {
	dev *Device
	h   uintptr

	mu        sync.RWMutex
	rec       *stream // the stream of the latest record
	destroyed bool    // Destroy was called
	waiters   int     // goroutines waiting on h: the driver's destroy waits for them
}

// EventCreate makes an event.
func (d *Device) EventCreate() (hip.Event, error) {
	name := d.api.EventCreate.Name
	if err := d.enter(name); err != nil {
		return nil, err
	}
	var h uintptr
	st := call(d.api.EventCreate.Fn, uintptr(unsafe.Pointer(&h)), 0)
	leave()
	if st != 0 {
		return nil, d.err(name, st)
	}
	return &event{dev: d, h: h}, nil
}

// event returns e as a live event of this device.
func (d *Device) event(call string, e hip.Event) (*event, error) {
	ev, ok := e.(*event)
	if !ok || ev == nil || ev.dev != d {
		return nil, errf(call, hip.ErrInvalidHandle, "invalid handle: not an event of this %s device", d.api.Driver)
	}
	return ev, nil
}

func (e *event) Record(s hip.Stream) error {
	api := e.dev.api
	name := api.EventRecord.Name
	gs, err := e.dev.stream(name, s)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.destroyed {
		return errf(name, hip.ErrInvalidHandle, "invalid handle: event destroyed")
	}
	if err := gs.begin(name); err != nil {
		return err
	}
	st := call(api.EventRecord.Fn, e.h, gs.h)
	gs.end()
	if st != 0 {
		return e.dev.err(name, st)
	}
	e.rec = gs
	return nil
}

// hold marks a waiter on the event, or says why it cannot wait.
func (e *event) hold(call string) (rec *stream, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dev.closed.Load() {
		return nil, errf(call, hip.ErrClosed, "device closed")
	}
	if e.destroyed {
		return nil, errf(call, hip.ErrInvalidHandle, "invalid handle: event destroyed")
	}
	e.waiters++
	return e.rec, nil
}

// unhold ends a wait; the last waiter of a destroyed event destroys it.
func (e *event) unhold() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.waiters--
	if e.destroyed && e.waiters == 0 {
		e.dev.withBound(func() { call(e.dev.api.EventDestroy.Fn, e.h) })
	}
}

func (e *event) Synchronize(ctx context.Context) error {
	api := e.dev.api
	name := api.EventSynchronize.Name
	rec, err := e.hold(name)
	if err != nil {
		return err
	}
	if err := e.dev.await(ctx, name, func() Status { return call(api.EventSynchronize.Fn, e.h) }, e.unhold); err != nil {
		return err
	}
	if rec != nil {
		return rec.stickyAs(name)
	}
	return nil
}

func (e *event) Query() error {
	api := e.dev.api
	name := api.EventQuery.Name
	rec, err := e.hold(name)
	if err != nil {
		return err
	}
	defer e.unhold()
	if err := e.dev.enter(name); err != nil {
		return err
	}
	st := call(api.EventQuery.Fn, e.h)
	leave()
	switch st {
	case 0:
		if rec != nil {
			return rec.stickyAs(name)
		}
		return nil
	case api.NotReady:
		return wrap(name, hip.ErrNotReady)
	}
	return e.dev.err(name, st)
}

// Destroy releases the event; waits already enqueued on it still complete.
func (e *event) Destroy() error {
	api := e.dev.api
	name := api.EventDestroy.Name
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.destroyed:
		return errf(name, hip.ErrInvalidHandle, "invalid handle: event already destroyed")
	case e.dev.closed.Load():
		e.destroyed = true
		return nil // the context took it
	}
	e.destroyed = true
	if e.waiters > 0 {
		return nil // the last waiter destroys it
	}
	if err := e.dev.enter(name); err != nil {
		return err
	}
	st := call(api.EventDestroy.Fn, e.h)
	leave()
	if st != 0 {
		return e.dev.err(name, st)
	}
	return nil
}

// EventElapsedTime returns the milliseconds between two completed records.
func (d *Device) EventElapsedTime(start, stop hip.Event) (float32, error) {
	name := d.api.EventElapsedTime.Name
	var evs [2]*event
	for i, e := range []hip.Event{start, stop} {
		ev, err := d.event(name, e)
		if err != nil {
			return 0, err
		}
		if _, err := ev.hold(name); err != nil {
			return 0, err
		}
		defer ev.unhold()
		evs[i] = ev
	}
	if err := d.enter(name); err != nil {
		return 0, err
	}
	var ms float32
	st := call(d.api.EventElapsedTime.Fn, uintptr(unsafe.Pointer(&ms)), evs[0].h, evs[1].h)
	leave()
	switch st {
	case 0:
		return ms, nil
	case d.api.NotReady:
		return 0, wrap(name, hip.ErrNotReady)
	}
	return 0, d.err(name, st)
}
