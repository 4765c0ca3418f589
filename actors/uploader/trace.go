package uploader

import (
	"sync/atomic"
	"time"

	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/trace"
)

// copyTiming times one upload for the trace (Config.FillTrace and
// Config.CopyTrace set). The staging fill times itself on the copy stream's
// host thread; the HtoD copy is timed on the device by two events recorded
// around it, read back (EventElapsedTime) on the uploader's goroutine once a
// host function queued after them says they are complete: no thread waits
// for it. The copy is placed on the timeline at the fill's end, the moment
// the stream could start it.
type copyTiming struct {
	layer       int
	bytes       int64
	start, stop hip.Event
	fillTr      *trace.Track // may be nil: the fill is then only timed, not shown
	copyTr      *trace.Track
	fillEnd     atomic.Int64 // trace time, set on the stream's host thread
	done        bool
}

// copyDone comes back from the copy stream once ct's events are complete.
type copyDone struct{ ct *copyTiming }

// newCopyTiming returns the timing of e's upload, or nil when tracing is
// off (or events cannot be made: the upload goes on untimed).
func (a *uploaderActor) newCopyTiming(e *entry) *copyTiming {
	if a.cfg.CopyTrace == nil {
		return nil
	}
	dev := a.cfg.Device
	start, err := dev.EventCreate()
	if err != nil {
		return nil
	}
	stop, err := dev.EventCreate()
	if err != nil {
		_ = start.Destroy()
		return nil
	}
	ct := &copyTiming{layer: e.layer, bytes: e.bytes, start: start, stop: stop, fillTr: a.cfg.FillTrace, copyTr: a.cfg.CopyTrace}
	a.st.copies = append(a.st.copies, ct)
	return ct
}

// fill runs the staging fill, as a span of the fill track when timed.
func (ct *copyTiming) fill(fill func()) {
	if ct == nil {
		fill()
		return
	}
	t0 := ct.copyTr.Now()
	fill()
	end := ct.copyTr.Now()
	ct.fillTr.Add("staging fill", "upload", t0, end-t0, trace.Args{trace.Int("layer", ct.layer), trace.Int("bytes", ct.bytes)})
	ct.fillEnd.Store(int64(end))
}

// before records the start event on s (nothing when ct is nil).
func (ct *copyTiming) before(s hip.Stream) error {
	if ct == nil {
		return nil
	}
	return ct.start.Record(s)
}

// after records the stop event on s (nothing when ct is nil).
func (ct *copyTiming) after(s hip.Stream) error {
	if ct == nil {
		return nil
	}
	return ct.stop.Record(s)
}

// notify queues the host function that hands ct back to the uploader once
// its events are complete (queued after the weights' ready event, so that
// compute never waits for it).
func (ct *copyTiming) notify(s hip.Stream, send func(*copyDone)) error {
	if ct == nil {
		return nil
	}
	return s.LaunchHostFunc(func() { send(&copyDone{ct: ct}) })
}

// resolveCopy emits ct's copy span (if its events completed) and releases
// its events. It runs on the uploader's goroutine; a second call does
// nothing.
func (a *uploaderActor) resolveCopy(ct *copyTiming) {
	if ct == nil || ct.done {
		return
	}
	ct.done = true
	for i, o := range a.st.copies {
		if o == ct {
			a.st.copies = append(a.st.copies[:i], a.st.copies[i+1:]...)
			break
		}
	}
	if ct.stop.Query() == nil {
		if ms, err := a.cfg.Device.EventElapsedTime(ct.start, ct.stop); err == nil {
			ct.copyTr.Add("copy HtoD", "upload", time.Duration(ct.fillEnd.Load()),
				time.Duration(float64(ms)*1e6), trace.Args{trace.Int("layer", ct.layer), trace.Int("bytes", ct.bytes)})
		}
	}
	_ = ct.start.Destroy()
	_ = ct.stop.Destroy()
}

// resolveCopies resolves every timing still pending (at shutdown, once
// the copy stream is idle).
func (a *uploaderActor) resolveCopies() {
	for len(a.st.copies) > 0 {
		a.resolveCopy(a.st.copies[0])
	}
}
