package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/internal/testutil"
)

// TestRunPipelineMatchesEager checks that run through the actor pipeline and
// run --eager produce the same greedy tokens.
func TestRunPipelineMatchesEager(t *testing.T) {
	t.Parallel()
	model := testutil.BundledModel(t)
	var lazy, eager runOut
	decodeJSON(t, mustPipeline(t, "run", "--model", model, "--prompt", "Prince Andrew", "--temperature", "0",
		"--max-tokens", "16", "--json", "--weight-budget", "3MiB", "--prefetch", "1").stdout, &lazy)
	decodeJSON(t, mustPipeline(t, "run", "--model", model, "--prompt", "Prince Andrew", "--temperature", "0",
		"--max-tokens", "16", "--json", "--eager").stdout, &eager)
	if !slices.Equal(lazy.Tokens, eager.Tokens) || lazy.Text != eager.Text || len(lazy.Tokens) == 0 {
		t.Errorf("pipeline %v %q, eager %v %q", lazy.Tokens, lazy.Text, eager.Tokens, eager.Text)
	}
}

func TestBenchJSON(t *testing.T) {
	t.Parallel()
	model := testutil.BundledModel(t)
	for _, mode := range [][]string{nil, {"--eager"}} {
		var rep benchReport
		args := append([]string{"bench", "--model", model, "--prompt-tokens", "8", "--gen-tokens", "4",
			"--concurrency", "3", "--reps", "2", "--json"}, mode...)
		decodeJSON(t, mustPipeline(t, args...).stdout, &rep)
		if rep.PlanMs <= 0 || len(rep.Reps) != 2 || rep.Reps[1].AggregateTokS <= 0 || rep.Reps[1].Tokens == 0 {
			t.Errorf("bench %v: %+v", mode, rep)
		}
		if mode == nil && (rep.Uploader == nil || rep.Uploader.Uploads == 0) {
			t.Errorf("bench: no uploader counters: %+v", rep.Uploader)
		}
		// 3 sequences × 2 reps × 4 tokens, on the host: nothing chained.
		if mode == nil && (rep.Sampler == nil || rep.Sampler.Tokens != 24 || rep.Sampler.Chained != 0) {
			t.Errorf("bench: sampler counters %+v, want 24 tokens, none chained", rep.Sampler)
		}
	}
	if res := pipeline(t, "bench", "--model", model, "--concurrency", "0"); res.code != 1 {
		t.Errorf("--concurrency 0: exit %d", res.code)
	}
}

// TestBenchTrace: bench --trace writes a Chrome trace that parses, with
// complete X events, an upload (staging fill and copy) for every layer and
// the globals, compute on every layer's track, the sampler's steps; the
// report's summary agrees with the file.
func TestBenchTrace(t *testing.T) {
	t.Parallel()
	model := testutil.BundledModel(t)
	path := filepath.Join(t.TempDir(), "trace.json")
	var rep benchReport
	decodeJSON(t, mustPipeline(t, "bench", "--model", model, "--prompt-tokens", "8", "--gen-tokens", "4",
		"--concurrency", "2", "--reps", "1", "--json", "--trace", path).stdout, &rep)
	events, threads := readTrace(t, path)
	seen := map[string]bool{} // "thread/name/layer"
	xs := 0
	for _, e := range events {
		if e.Ph != "X" {
			continue
		}
		xs++
		if e.Name == "" || e.Ts == nil || e.Dur == nil || e.Pid == nil || e.Tid == nil || *e.Dur < 0 {
			t.Fatalf("bad X event %+v", e)
		}
		thread, ok := threads[[2]int{*e.Pid, *e.Tid}]
		if !ok {
			t.Fatalf("X event %q on an unnamed track", e.Name)
		}
		seen[fmt.Sprintf("%s/%s/%v", thread, e.Name, e.Args["layer"])] = true
	}
	layers := 0
	for _, name := range threads {
		if strings.HasPrefix(name, "layer ") {
			layers++
		}
	}
	if layers == 0 {
		t.Fatal("no layer tracks")
	}
	for l := -1; l < layers; l++ {
		for _, k := range []string{"staging fill (host)/staging fill", "copy stream (HtoD)/copy HtoD"} {
			if !seen[fmt.Sprintf("%s/%d", k, l)] {
				t.Errorf("no %s for layer %d", k, l)
			}
		}
		if l >= 0 && !seen[fmt.Sprintf("layer %d/forward/%d", l, l)] {
			t.Errorf("no compute on layer %d's track", l)
		}
	}
	if !seen["sampler/logits/<nil>"] || !seen["sampler/sample/<nil>"] {
		t.Errorf("no sampler spans: %v", seen)
	}
	if rep.Trace == nil || rep.Trace.File != path || rep.Trace.Events != xs || rep.Trace.Dropped != 0 {
		t.Errorf("report's trace %+v, file has %d X events", rep.Trace, xs)
	}
	if res := pipeline(t, "bench", "--model", model, "--eager", "--trace", path); res.code != 1 {
		t.Errorf("--eager --trace: exit %d", res.code)
	}
}

// traceEvent is one event of a Chrome trace the binary wrote.
type traceEvent struct {
	Name string         `json:"name"`
	Ph   string         `json:"ph"`
	Ts   *float64       `json:"ts"`
	Dur  *float64       `json:"dur"`
	Pid  *int           `json:"pid"`
	Tid  *int           `json:"tid"`
	Args map[string]any `json:"args"`
}

// readTrace parses the Chrome trace at path: its events, and its tracks'
// names by (pid, tid) from the thread_name metadata.
func readTrace(t *testing.T, path string) ([]traceEvent, map[[2]int]string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		TraceEvents []traceEvent `json:"traceEvents"`
	}
	if err := json.Unmarshal(data, &tr); err != nil {
		t.Fatalf("trace does not parse: %v", err)
	}
	threads := map[[2]int]string{}
	for _, e := range tr.TraceEvents {
		if e.Ph == "M" && e.Name == "thread_name" {
			threads[[2]int{*e.Pid, *e.Tid}] = e.Args["name"].(string)
		}
	}
	return tr.TraceEvents, threads
}
