package loadtest

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/server"
)

// prompts are lines of War and Peace when shared/ is there, else the
// defaults.
func prompts(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join(filepath.Dir(testutil.RepoRoot(t)), "shared", "data", "war-and-peace.txt")
	p, err := ReadPrompts(dir, 400)
	if err != nil {
		t.Logf("prompts: %v; using the defaults", err)
		return DefaultPrompts
	}
	// Long lines are fine (the context is 512 tokens), but keep them short
	// so the test stays quick on 2 cores.
	for i, s := range p {
		if len(s) > 120 {
			p[i] = s[:120]
		}
	}
	return p
}

// waitGoroutines waits until the number of goroutines is back to at most
// base.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines, %d before the test:\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHTTPLoad is the CI load test: 200 streaming requests at concurrency
// 32 against the bundled model on the host backend, through the server.
func TestHTTPLoad(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		p, err := forgepipe.Open(testutil.BundledModel(t), forgepipe.WithBackend("host"))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		srv := server.New(server.Config{Log: zerolog.Nop()})
		if err := srv.SetEngine(server.Pipeline(p)); err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv.Handler())
		defer ts.Close()
		client := NewHTTPClient(32, time.Minute)
		defer client.CloseIdleConnections()
		target := &HTTP{URL: ts.URL, Client: client, MaxTokens: 8, Stream: true}
		r, err := Run(context.Background(), Config{Concurrency: 32, Requests: 200, Prompts: prompts(t)}, target)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		r.WriteText(&b)
		t.Logf("\n%s", b.String())
		if r.Requests != 200 || r.Succeeded != 200 || len(r.Errors) != 0 {
			t.Fatalf("%d of %d succeeded, errors %v (%s)", r.Succeeded, r.Requests, r.Errors, r.FirstError)
		}
		if r.OutputTokens == 0 || r.TTFT.N == 0 || r.Latency.N != 200 {
			t.Errorf("report %+v", r)
		}
		// The last FreeSequence messages may still be on their way to the layers.
		testutil.WaitFor(t, "no live sequences and no KV after the load", func() bool {
			st := p.Stats()
			return st.Sampler.Live == 0 && st.KVSequences() == 0
		})
	}()
	waitGoroutines(t, base)
}

// TestInProcessLoad runs the load test through the Go API.
func TestInProcessLoad(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		p, err := forgepipe.Open(testutil.BundledModel(t), forgepipe.WithBackend("host"))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		r, err := Run(context.Background(), Config{Concurrency: 8, Requests: 40, Prompts: DefaultPrompts},
			&InProcess{Engine: p, MaxTokens: 8})
		if err != nil {
			t.Fatal(err)
		}
		if r.Succeeded != 40 || r.OutputTokens == 0 || r.ITL.N == 0 {
			t.Fatalf("report %+v", r)
		}
	}()
	waitGoroutines(t, base)
}
