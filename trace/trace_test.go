package trace

import (
	"bytes"
	"encoding/json"
	"sync"
	"testing"
	"time"
)

// chromeEvent is one entry of traceEvents, as a trace viewer reads it.
type chromeEvent struct {
	Name string         `json:"name"`
	Cat  string         `json:"cat"`
	Ph   string         `json:"ph"`
	Ts   *float64       `json:"ts"`
	Dur  *float64       `json:"dur"`
	Pid  *int           `json:"pid"`
	Tid  *int           `json:"tid"`
	Args map[string]any `json:"args"`
}

type chromeTrace struct {
	TraceEvents []chromeEvent  `json:"traceEvents"`
	OtherData   map[string]any `json:"otherData"`
}

// parse decodes a written trace and checks the format: every X event has
// name, ph, ts, dur >= 0, pid and tid on a named thread of a named process.
func parse(t *testing.T, b []byte) chromeTrace {
	t.Helper()
	var tr chromeTrace
	if err := json.Unmarshal(b, &tr); err != nil {
		t.Fatalf("trace does not parse: %v\n%s", err, b)
	}
	procs, threads := map[int]bool{}, map[[2]int]bool{}
	for _, e := range tr.TraceEvents {
		if e.Ph == "M" && e.Pid != nil && e.Tid != nil {
			switch e.Name {
			case "process_name":
				procs[*e.Pid] = true
			case "thread_name":
				threads[[2]int{*e.Pid, *e.Tid}] = true
			}
		}
	}
	for _, e := range tr.TraceEvents {
		switch e.Ph {
		case "M":
		case "X":
			if e.Name == "" || e.Ts == nil || e.Dur == nil || e.Pid == nil || e.Tid == nil {
				t.Fatalf("incomplete X event %+v", e)
			}
			if *e.Dur < 0 || *e.Ts < 0 {
				t.Errorf("%s: ts %v dur %v", e.Name, *e.Ts, *e.Dur)
			}
			if !procs[*e.Pid] || !threads[[2]int{*e.Pid, *e.Tid}] {
				t.Errorf("%s: pid %d tid %d not named by metadata", e.Name, *e.Pid, *e.Tid)
			}
		default:
			t.Errorf("unexpected phase %q", e.Ph)
		}
	}
	return tr
}

func TestWriteJSON(t *testing.T) {
	r := New(Options{})
	a, b := r.Track("uploader", "copy \"stream\""), r.Track("layers", "layer 0")
	if r.Track("uploader", "copy \"stream\"") != a {
		t.Fatal("Track is not idempotent")
	}
	a.Add("copy HtoD", "upload", 1500*time.Nanosecond, 2*time.Microsecond, Args{Int("layer", 3), Int("bytes", int64(1<<20))})
	t0 := b.Now()
	b.Span("forward", "compute", t0, Args{Int("rows", 4)})
	a.Add("negative", "upload", 0, -time.Second, Args{})

	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	tr := parse(t, buf.Bytes())
	var xs []chromeEvent
	for _, e := range tr.TraceEvents {
		if e.Ph == "X" {
			xs = append(xs, e)
		}
	}
	if len(xs) != 3 {
		t.Fatalf("%d X events, want 3", len(xs))
	}
	c := xs[0]
	if c.Name != "copy HtoD" || c.Cat != "upload" || *c.Ts != 1.5 || *c.Dur != 2 || c.Args["layer"] != 3.0 || c.Args["bytes"] != float64(1<<20) {
		t.Errorf("copy event %+v ts %v dur %v", c, *c.Ts, *c.Dur)
	}
	if *xs[1].Pid == *c.Pid || *xs[1].Tid == *c.Tid {
		t.Errorf("two tracks share pid/tid: %d/%d", *c.Pid, *c.Tid)
	}
	if *xs[2].Dur != 0 {
		t.Errorf("negative duration written as %v", *xs[2].Dur)
	}
	if tr.OtherData["dropped_events"] != 0.0 {
		t.Errorf("otherData %v", tr.OtherData)
	}
	sum := r.Summary()
	if len(sum) != 2 || sum[0].Events != 2 || sum[1].Events != 1 || sum[0].Busy != 2*time.Microsecond {
		t.Errorf("summary %+v", sum)
	}
}

func TestBoundedAndConcurrent(t *testing.T) {
	const max, writers, each = 1000, 8, 300
	r := New(Options{MaxEvents: max})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := r.Track("p", string(rune('a'+w)))
			for i := range each {
				tr.Span("s", "c", tr.Now(), Args{Int("i", i)})
			}
		}()
	}
	wg.Wait()
	if n, d := len(r.Events()), r.Dropped(); n != max || d != writers*each-max {
		t.Errorf("kept %d dropped %d, want %d and %d", n, d, max, writers*each-max)
	}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if tr := parse(t, buf.Bytes()); tr.OtherData["dropped_events"] != float64(writers*each-max) {
		t.Errorf("otherData %v", tr.OtherData)
	}
}

// TestNilTrackCostsNothing: tracing off is a nil Track; its methods record
// nothing and allocate nothing.
func TestNilTrackCostsNothing(t *testing.T) {
	var r *Recorder
	tr := r.Track("p", "t")
	if tr != nil {
		t.Fatal("a nil recorder's track is not nil")
	}
	allocs := testing.AllocsPerRun(100, func() {
		t0 := tr.Now()
		tr.Span("forward", "compute", t0, Args{Int("layer", 1), Int("rows", 2)})
		tr.Add("copy", "upload", t0, time.Millisecond, Args{})
	})
	if allocs != 0 || tr.Now() != 0 || r.Events() != nil || r.Summary() != nil || r.Dropped() != 0 {
		t.Errorf("nil track: %v allocs", allocs)
	}
}

// TestSpanDoesNotAllocate: recording a span allocates nothing beyond the
// event slice's growth (none here: the slice starts with room).
func TestSpanDoesNotAllocate(t *testing.T) {
	tr := New(Options{}).Track("p", "t")
	allocs := testing.AllocsPerRun(1000, func() {
		tr.Span("forward", "compute", tr.Now(), Args{Int("layer", 1), Int("rows", 2), Int("seqs", 3)})
	})
	if allocs != 0 {
		t.Errorf("Span: %v allocs per call", allocs)
	}
}

func TestAppendMicros(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{{0, "0"}, {1, "0.001"}, {999, "0.999"}, {1000, "1"}, {1234567, "1234.567"}, {1050, "1.050"}, {-1500, "-1.500"}} {
		if got := string(appendMicros(nil, c.d)); got != c.want {
			t.Errorf("%d ns: %q, want %q", c.d, got, c.want)
		}
	}
}
