package main

import (
	"slices"
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
	}
	if res := pipeline(t, "bench", "--model", model, "--concurrency", "0"); res.code != 1 {
		t.Errorf("--concurrency 0: exit %d", res.code)
	}
}
