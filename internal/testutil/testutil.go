// Package testutil finds the fixtures tests share: the repository root, the
// bundled model, and the project's shared/ folder (real models, llama.cpp's
// tokenizer vectors) that sits beside the checkout.
package testutil

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// RepoRoot returns the directory holding go.mod, walking up from the test's
// working directory.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("testutil: no go.mod above the test directory")
		}
		dir = parent
	}
}

// BundledModel is the path of the small trained model shipped in models/.
func BundledModel(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(RepoRoot(tb), "models", "forgepipe-tiny.f16.gguf")
}

// Testdata returns the path of a file under the repository's testdata/.
func Testdata(tb testing.TB, name string) string {
	tb.Helper()
	return filepath.Join(RepoRoot(tb), "testdata", name)
}

// SharedDir returns the shared/ folder beside the checkout (or named by
// $FORGEPIPE_SHARED). Where it is missing the test is skipped, except under
// CI (CI=true), where shared/ is always present and its absence is a failure.
func SharedDir(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("FORGEPIPE_SHARED")
	if dir == "" {
		dir = filepath.Join(filepath.Dir(RepoRoot(tb)), "shared")
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		if os.Getenv("CI") != "" {
			tb.Fatalf("testutil: shared folder %s not found under CI", dir)
		}
		tb.Skipf("testutil: shared folder %s not found (set FORGEPIPE_SHARED)", dir)
	}
	return dir
}

// GoldenPrompt is one prompt of models/golden.json.
type GoldenPrompt struct {
	Prompt       string       `json:"prompt"`
	PromptIDs    []int32      `json:"prompt_ids"`    // BOS first
	GeneratedIDs []int32      `json:"generated_ids"` // 64 greedy tokens
	Text         string       `json:"text"`          // their decoding
	Top5First    [][2]float64 `json:"top5_first"`    // [id, logit] at the first generated position
}

// Golden returns the prompts of models/golden.json: greedy continuations of
// the bundled model computed in PyTorch (float32) from the file's F16
// weights, confirmed by two further implementations and by llama.cpp (see
// shared/models/README.md).
func Golden(tb testing.TB) []GoldenPrompt {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(RepoRoot(tb), "models", "golden.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var g struct {
		Prompts []GoldenPrompt `json:"prompts"`
	}
	if err := json.Unmarshal(data, &g); err != nil {
		tb.Fatalf("golden.json: %v", err)
	}
	if len(g.Prompts) == 0 {
		tb.Fatal("golden.json has no prompts")
	}
	return g.Prompts
}

// WaitFor polls cond until it holds, failing the test with what after 10 s.
// It is for state that settles asynchronously (messages still in flight
// between actors), never for timing.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not reached within 10 s: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
