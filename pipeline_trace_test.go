package forgepipe

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/forgepipe/forgepipe/trace"
)

// generateAll runs n greedy sequences at once through p.
func generateAll(t *testing.T, p *Pipeline, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prompt := []string{"Prince Andrew", "The carriage", "Natasha"}[i%3]
			s, err := p.Generate(context.Background(), Request{Prompt: prompt, MaxTokens: 6})
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := s.Collect(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

// TestTraceTimeline runs the bundled model with a recorder: every layer's
// weights are filled and copied on the uploader's tracks, every layer
// computes on its own track, the sampler projects and samples. It checks
// presence and structure, not timings, except for what causality
// guarantees: a layer's first copy ends before its first step starts.
func TestTraceTimeline(t *testing.T) {
	rec := trace.New(trace.Options{})
	p, err := Open(bundledModel(t), WithBackend("host"), WithTrace(rec))
	if err != nil {
		t.Fatal(err)
	}
	generateAll(t, p, 3)
	if err := p.Close(); err != nil { // the copies still pending are timed at Close
		t.Fatal(err)
	}
	layers := p.Config().Layers

	type key struct {
		track string
		name  string
		layer int64
	}
	count := map[key]int{}
	firstCopyEnd := map[int64]time.Duration{}
	firstForward := map[int64]time.Duration{}
	for _, e := range rec.Events() {
		_, thread := rec.TrackName(e.Track)
		l := int64(-2)
		for _, a := range e.Args {
			if a.Key == "layer" {
				l = a.Val
			}
		}
		if e.Dur < 0 {
			t.Errorf("%s %s: duration %v", thread, e.Name, e.Dur)
		}
		count[key{thread, e.Name, l}]++
		switch e.Name {
		case "copy HtoD":
			if _, ok := firstCopyEnd[l]; !ok {
				firstCopyEnd[l] = e.Start + e.Dur
			}
		case "forward":
			if _, ok := firstForward[l]; !ok {
				firstForward[l] = e.Start
			}
		}
	}
	for l := int64(-1); l < int64(layers); l++ {
		if count[key{"staging fill (host)", "staging fill", l}] == 0 || count[key{"copy stream (HtoD)", "copy HtoD", l}] == 0 {
			t.Errorf("layer %d: no upload spans (%v)", l, count)
		}
	}
	for l := int64(0); l < int64(layers); l++ {
		track := fmt.Sprintf("layer %d", l)
		if count[key{track, "forward", l}] == 0 || count[key{track, "wait weights", l}] == 0 {
			t.Errorf("%s: no forward or wait spans (%v)", track, count)
		}
		// The step waited for the copy (Synchronize on its ready event).
		if end, start := firstCopyEnd[l], firstForward[l]; end > start+time.Microsecond {
			t.Errorf("layer %d: first copy ends at %v, after its first step starts at %v", l, end, start)
		}
	}
	if count[key{"sampler", "logits", -2}] == 0 || count[key{"sampler", "sample", -2}] == 0 {
		t.Errorf("no sampler spans (%v)", count)
	}
	if rec.Dropped() != 0 {
		t.Errorf("%d spans dropped", rec.Dropped())
	}
}

// TestTraceOff: without WithTrace no recorder exists and nothing is
// recorded; WithTrace(nil) is the same.
func TestTraceOff(t *testing.T) {
	for _, opts := range [][]Option{nil, {WithTrace(nil)}} {
		p, err := Open(bundledModel(t), append(opts, WithBackend("host"))...)
		if err != nil {
			t.Fatal(err)
		}
		if p.opts.trace != nil {
			t.Error("a recorder exists without WithTrace")
		}
		generateAll(t, p, 1)
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
