package gpustep

import (
	"context"
	"fmt"
	"time"

	"github.com/forgepipe/forgepipe/hip"
)

// StepSpan is when one block step ran on the device, in the time base of
// the clock given to TimeSteps.
type StepSpan struct {
	Layer, Rows int
	Start, End  time.Duration
}

// stepTiming times block steps with events for a timeline: two events
// around each step, read back (EventElapsedTime from a base event recorded
// at a known clock time) once a later wait says they are complete, so no
// thread waits for them.
type stepTiming struct {
	base     hip.Event
	baseTime time.Duration
	emit     func(StepSpan)
	pending  []timedStep
	spare    []hip.Event
}

type timedStep struct {
	layer, rows int
	start, end  hip.Event
}

// TimeSteps turns on device timing of block steps: emit gets each step's
// span once known, clock is the timeline's (its Now). It waits for the
// stream once, to pin the device clock to clock's.
func (r *Runtime) TimeSteps(clock func() time.Duration, emit func(StepSpan)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	base, err := r.dev.EventCreate()
	if err != nil {
		return fmt.Errorf("gpustep: timing: %w", err)
	}
	if err := r.stream.Synchronize(context.Background()); err != nil {
		return err
	}
	if err := base.Record(r.stream); err != nil {
		return err
	}
	if err := base.Synchronize(context.Background()); err != nil {
		return err
	}
	r.timing = &stepTiming{base: base, baseTime: clock(), emit: emit}
	return nil
}

func (t *stepTiming) event(dev hip.Device) (hip.Event, error) {
	if k := len(t.spare); k > 0 {
		e := t.spare[k-1]
		t.spare = t.spare[:k-1]
		return e, nil
	}
	return dev.EventCreate()
}

// around records events around launch when timing is on. Called under mu.
func (r *Runtime) around(layer, rows int, launch func() error) error {
	t := r.timing
	if t == nil {
		return launch()
	}
	start, err1 := t.event(r.dev)
	end, err2 := t.event(r.dev)
	if err1 != nil || err2 != nil || start.Record(r.stream) != nil {
		return launch() // untimed
	}
	if err := launch(); err != nil {
		t.spare = append(t.spare, start, end)
		return err
	}
	if end.Record(r.stream) != nil {
		t.spare = append(t.spare, start, end)
		return nil
	}
	t.pending = append(t.pending, timedStep{layer, rows, start, end})
	return nil
}

// resolve emits the spans of the steps that have run (all of them when
// the stream is known to be idle). Called under mu.
func (r *Runtime) resolve() {
	t := r.timing
	if t == nil {
		return
	}
	done := 0
	for _, p := range t.pending {
		if p.end.Query() != nil {
			break // later steps ran later: stop at the first still pending
		}
		s, err1 := r.dev.EventElapsedTime(t.base, p.start)
		e, err2 := r.dev.EventElapsedTime(t.base, p.end)
		if err1 == nil && err2 == nil {
			ms := func(v float32) time.Duration { return t.baseTime + time.Duration(float64(v)*1e6) }
			t.emit(StepSpan{Layer: p.layer, Rows: p.rows, Start: ms(s), End: ms(e)})
		}
		t.spare = append(t.spare, p.start, p.end)
		done++
	}
	t.pending = append(t.pending[:0], t.pending[done:]...)
}

func (t *stepTiming) close() {
	for _, p := range t.pending {
		t.spare = append(t.spare, p.start, p.end)
	}
	for _, e := range t.spare {
		_ = e.Destroy()
	}
	_ = t.base.Destroy()
}
