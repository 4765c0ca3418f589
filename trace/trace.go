// Package trace records a timeline of the pipeline (uploads, per-layer
// compute, the sampler's steps and waits) and writes it as a Chrome trace:
// the Trace Event Format JSON, {"traceEvents": [...]}, with one "X"
// (complete) event per span and "M" (metadata) events naming the tracks.
//
// Open the file at https://ui.perfetto.dev (Open trace file, or drag and
// drop it) or in chrome://tracing. Each track is one stream or actor (the
// uploader's staging fill and its copy stream, one per layer actor, the
// sampler), grouped by process, so the overlap of uploads with compute shows
// as bars stacked at the same time on different tracks. Click a span for its
// arguments (layer, bytes, rows, sequences).
//
// A Recorder is safe for concurrent use, bounded (beyond MaxEvents spans
// are dropped and counted) and cheap: recording a span takes a clock read
// and an append under a mutex, with no formatting and no allocation beyond
// the slice's growth. The JSON is written at the end (WriteJSON).
//
// Tracing off is a nil *Track: every method of a nil Track does nothing
// and records nothing, so a hook in a hot path costs one nil check.
package trace

import (
	"bufio"
	"encoding/json"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxEvents is the bound of a Recorder made with MaxEvents 0.
const DefaultMaxEvents = 1 << 18

// Options configure a Recorder.
type Options struct {
	// MaxEvents bounds the spans kept (0: DefaultMaxEvents); later ones
	// are dropped and counted (Recorder.Dropped).
	MaxEvents int
}

// Recorder collects spans. Its methods are safe for concurrent use.
type Recorder struct {
	epoch time.Time // time zero of the trace
	max   int

	mu     sync.Mutex
	events []Event
	tracks []*Track
	procs  []string // process names; a process's pid is its index + 1

	dropped atomic.Int64
}

// New returns an empty recorder whose time zero is now.
func New(o Options) *Recorder {
	if o.MaxEvents <= 0 {
		o.MaxEvents = DefaultMaxEvents
	}
	return &Recorder{epoch: time.Now(), max: o.MaxEvents, events: make([]Event, 0, min(o.MaxEvents, 4096))}
}

// Track is one row of the timeline: a thread of a process, in trace terms.
// A nil *Track records nothing.
type Track struct {
	r       *Recorder
	id      int32 // index in r.tracks
	pid     int32
	process string
	thread  string
}

// Track returns the track named thread in the group named process,
// creating it (and the process) on first use. Tracks are listed in the
// order they were first asked for. Call it at setup, not per span.
func (r *Recorder) Track(process, thread string) *Track {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.tracks {
		if t.process == process && t.thread == thread {
			return t
		}
	}
	pid := -1
	for i, p := range r.procs {
		if p == process {
			pid = i
		}
	}
	if pid < 0 {
		pid = len(r.procs)
		r.procs = append(r.procs, process)
	}
	t := &Track{r: r, id: int32(len(r.tracks)), pid: int32(pid + 1), process: process, thread: thread}
	r.tracks = append(r.tracks, t)
	return t
}

// Arg is one integer argument of a span. Keys are constant strings.
type Arg struct {
	Key string
	Val int64
}

// Int is the argument key = v.
func Int[T ~int | ~int32 | ~int64](key string, v T) Arg { return Arg{Key: key, Val: int64(v)} }

// Args are a span's arguments; entries with an empty Key are left out.
type Args [4]Arg

// Event is one recorded span. Start and Dur are nanoseconds; Start counts
// from the recorder's time zero.
type Event struct {
	Name, Cat  string
	Track      int32
	Start, Dur time.Duration
	Args       Args
}

// Now is the time on the trace's clock (0 on a nil Track): pass it to Span
// as the start of a span that ends later.
func (t *Track) Now() time.Duration {
	if t == nil {
		return 0
	}
	return time.Since(t.r.epoch)
}

// Span records a span on t from start (a Now) until now.
func (t *Track) Span(name, cat string, start time.Duration, args Args) {
	if t == nil {
		return
	}
	t.r.add(Event{Name: name, Cat: cat, Track: t.id, Start: start, Dur: time.Since(t.r.epoch) - start, Args: args})
}

// Add records a span on t with a known start and duration (e.g. a device
// copy timed with events, resolved after it completed).
func (t *Track) Add(name, cat string, start, dur time.Duration, args Args) {
	if t == nil {
		return
	}
	t.r.add(Event{Name: name, Cat: cat, Track: t.id, Start: start, Dur: dur, Args: args})
}

func (r *Recorder) add(e Event) {
	if e.Dur < 0 {
		e.Dur = 0
	}
	r.mu.Lock()
	if len(r.events) >= r.max {
		r.mu.Unlock()
		r.dropped.Add(1)
		return
	}
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// Dropped is the number of spans dropped beyond MaxEvents.
func (r *Recorder) Dropped() int64 {
	if r == nil {
		return 0
	}
	return r.dropped.Load()
}

// Events returns a copy of the spans recorded so far, in recording order.
func (r *Recorder) Events() []Event {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// TrackSummary counts one track's spans.
type TrackSummary struct {
	Process string        `json:"process"`
	Thread  string        `json:"thread"`
	Events  int           `json:"events"`
	Busy    time.Duration `json:"busy_ns"` // the sum of the spans' durations
}

// Summary counts the spans of every track, in track order.
func (r *Recorder) Summary() []TrackSummary {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]TrackSummary, len(r.tracks))
	for i, t := range r.tracks {
		out[i] = TrackSummary{Process: t.process, Thread: t.thread}
	}
	for _, e := range r.events {
		out[e.Track].Events++
		out[e.Track].Busy += e.Dur
	}
	return out
}

// TrackName returns the process and thread names of the track with id,
// as stored in Event.Track.
func (r *Recorder) TrackName(id int32) (process, thread string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tracks[id]
	return t.process, t.thread
}

// WriteJSON writes the trace in the Trace Event Format: metadata events
// naming every process and track (in creation order), then one "X" event
// per span with ts and dur in microseconds. The number of dropped spans is
// in otherData.dropped_events.
func (r *Recorder) WriteJSON(w io.Writer) error {
	r.mu.Lock()
	events := append([]Event(nil), r.events...)
	tracks := append([]*Track(nil), r.tracks...)
	procs := append([]string(nil), r.procs...)
	r.mu.Unlock()

	bw := bufio.NewWriter(w)
	b := make([]byte, 0, 256)
	b = append(b, `{"displayTimeUnit":"ms","otherData":{"dropped_events":`...)
	b = strconv.AppendInt(b, r.dropped.Load(), 10)
	b = append(b, `},"traceEvents":[`...)
	first := true
	sep := func() {
		if !first {
			b = append(b, ",\n"...)
		} else {
			b = append(b, '\n')
		}
		first = false
	}
	meta := func(name string, pid, tid int32, key string, str string, num int) {
		sep()
		b = append(b, `{"name":`...)
		b = appendString(b, name)
		b = append(b, `,"ph":"M","pid":`...)
		b = strconv.AppendInt(b, int64(pid), 10)
		b = append(b, `,"tid":`...)
		b = strconv.AppendInt(b, int64(tid), 10)
		b = append(b, `,"args":{"`...)
		b = append(b, key...)
		b = append(b, `":`...)
		if key == "name" {
			b = appendString(b, str)
		} else {
			b = strconv.AppendInt(b, int64(num), 10)
		}
		b = append(b, "}}"...)
	}
	for i, p := range procs {
		meta("process_name", int32(i+1), 0, "name", p, 0)
		meta("process_sort_index", int32(i+1), 0, "sort_index", "", i)
	}
	for _, t := range tracks {
		meta("thread_name", t.pid, t.id+1, "name", t.thread, 0)
		meta("thread_sort_index", t.pid, t.id+1, "sort_index", "", int(t.id))
	}
	if _, err := bw.Write(b); err != nil {
		return err
	}
	for _, e := range events {
		b = b[:0]
		sep()
		t := tracks[e.Track]
		b = append(b, `{"name":`...)
		b = appendString(b, e.Name)
		b = append(b, `,"cat":`...)
		b = appendString(b, e.Cat)
		b = append(b, `,"ph":"X","ts":`...)
		b = appendMicros(b, e.Start)
		b = append(b, `,"dur":`...)
		b = appendMicros(b, e.Dur)
		b = append(b, `,"pid":`...)
		b = strconv.AppendInt(b, int64(t.pid), 10)
		b = append(b, `,"tid":`...)
		b = strconv.AppendInt(b, int64(t.id+1), 10)
		b = append(b, `,"args":{`...)
		n := 0
		for _, a := range e.Args {
			if a.Key == "" {
				continue
			}
			if n > 0 {
				b = append(b, ',')
			}
			n++
			b = appendString(b, a.Key)
			b = append(b, ':')
			b = strconv.AppendInt(b, a.Val, 10)
		}
		b = append(b, "}}"...)
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	if _, err := bw.WriteString("\n]}\n"); err != nil {
		return err
	}
	return bw.Flush()
}

// appendMicros writes d in microseconds with three decimals (ns precision).
func appendMicros(b []byte, d time.Duration) []byte {
	if d < 0 {
		b = append(b, '-')
		d = -d
	}
	b = strconv.AppendInt(b, int64(d/1000), 10)
	ns := int64(d % 1000)
	if ns == 0 {
		return b
	}
	b = append(b, '.', byte('0'+ns/100), byte('0'+ns/10%10), byte('0'+ns%10))
	return b
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}
