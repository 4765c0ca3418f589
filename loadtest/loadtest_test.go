package loadtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSummarise(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	p := Summarise(ds)
	if p.N != 100 || p.P50 != 50*time.Millisecond || p.P90 != 90*time.Millisecond || p.P99 != 99*time.Millisecond ||
		p.Max != 100*time.Millisecond || p.Mean != 50500*time.Microsecond {
		t.Errorf("%+v", p)
	}
	if p := Summarise(nil); p.N != 0 {
		t.Errorf("empty: %+v", p)
	}
	if p := Summarise([]time.Duration{7}); p.P50 != 7 || p.P99 != 7 {
		t.Errorf("one: %+v", p)
	}
}

// fakeTarget fails the prompt "fail" and counts concurrency.
type fakeTarget struct {
	inflight, peak atomic.Int32
	calls          atomic.Int32
}

func (f *fakeTarget) Do(ctx context.Context, prompt string) Sample {
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	f.calls.Add(1)
	time.Sleep(time.Millisecond)
	if prompt == "fail" {
		return Sample{Err: errors.New("HTTP 429"), ErrKind: "http_429"}
	}
	return Sample{TTFT: time.Millisecond, ITL: []time.Duration{2 * time.Millisecond}, Latency: 3 * time.Millisecond, Tokens: len(prompt)}
}

func TestRun(t *testing.T) {
	f := &fakeTarget{}
	var progressed atomic.Int32
	r, err := Run(context.Background(), Config{Concurrency: 4, Requests: 50, Prompts: []string{"a", "bb", "ccc", "dddd", "fail"},
		Progress: func(int) { progressed.Add(1) }}, f)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 50 || r.Succeeded != 40 || r.Errors["http_429"] != 10 || r.FirstError != "HTTP 429" || progressed.Load() != 50 {
		t.Errorf("report %+v", r)
	}
	if f.peak.Load() > 4 {
		t.Errorf("peak concurrency %d > 4", f.peak.Load())
	}
	if r.OutputTokens != 10*(1+2+3+4) || r.TTFT.N != 40 || r.ITL.P50 != 2*time.Millisecond || r.TokensPerSecond <= 0 {
		t.Errorf("report %+v", r)
	}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil || !strings.Contains(b.String(), "http_429=10") || !strings.Contains(b.String(), "ttft") {
		t.Errorf("text %q", b.String())
	}
	for _, bad := range []Config{{Concurrency: 0, Requests: 1, Prompts: []string{"a"}}, {Concurrency: 1, Requests: 0, Prompts: []string{"a"}}, {Concurrency: 1, Requests: 1}} {
		if _, err := Run(context.Background(), bad, f); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeTarget{}
	r, err := Run(ctx, Config{Concurrency: 2, Requests: 1000000, Prompts: []string{"a"},
		Progress: func(done int) {
			if done == 10 {
				cancel()
			}
		}}, f)
	if !errors.Is(err, context.Canceled) || r.Requests >= 1000 {
		t.Errorf("err %v, requests %d", err, r.Requests)
	}
}

func TestReadPrompts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.txt")
	os.WriteFile(path, []byte("one\n\n  \ntwo  \r\nthree\n"), 0o644)
	got, err := ReadPrompts(path, 0)
	if err != nil || strings.Join(got, "|") != "one|two|three" {
		t.Errorf("%q %v", got, err)
	}
	if got, _ := ReadPrompts(path, 2); len(got) != 2 {
		t.Errorf("max 2: %q", got)
	}
	os.WriteFile(path, []byte("\n\n"), 0o644)
	if _, err := ReadPrompts(path, 0); err == nil {
		t.Error("blank file: no error")
	}
}

func TestReadStream(t *testing.T) {
	ok := "data: {\"choices\":[{\"text\":\"a\",\"finish_reason\":null}]}\n\n" +
		"data: {\"choices\":[{\"text\":\"b\",\"finish_reason\":null}]}\n\n" +
		"data: {\"choices\":[{\"text\":\"\",\"finish_reason\":\"length\"}]}\n\n" +
		"data: {\"choices\":[],\"usage\":{\"completion_tokens\":2}}\n\n" +
		"data: [DONE]\n\n"
	s := readStream(strings.NewReader(ok), time.Now())
	if s.Err != nil || s.Tokens != 2 || s.TTFT <= 0 || len(s.ITL) != 1 {
		t.Errorf("%+v", s)
	}
	for name, bad := range map[string]string{
		"no done":      "data: {\"choices\":[{\"text\":\"a\",\"finish_reason\":\"stop\"}]}\n\n",
		"no finish":    "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: [DONE]\n\n",
		"bad json":     "data: {nope\n\n",
		"stream error": "data: {\"error\":{\"message\":\"boom\"}}\n\n",
	} {
		if s := readStream(strings.NewReader(bad), time.Now()); s.Err == nil || s.ErrKind == "" {
			t.Errorf("%s: %+v", name, s)
		}
	}
}
