// Package tests holds end-to-end tests across packages: real models,
// golden outputs computed by independent implementations.
package tests

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/sample"
)

// golden is models/golden.json: greedy continuations of the bundled model
// computed in PyTorch (float32) from the file's F16 weights, confirmed by
// two further implementations and by llama.cpp (see shared/models/README.md).
type golden struct {
	Prompts []struct {
		Prompt       string       `json:"prompt"`
		PromptIDs    []int32      `json:"prompt_ids"`
		GeneratedIDs []int32      `json:"generated_ids"`
		Text         string       `json:"text"`
		Top5First    [][2]float64 `json:"top5_first"`
	} `json:"prompts"`
}

func loadGolden(t *testing.T) golden {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "models", "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Prompts) == 0 {
		t.Fatal("golden.json has no prompts")
	}
	return g
}

// TestGoldenGreedy: the bundled model reproduces every golden continuation
// token for token, its prompt ids, its decoded text, and the top-5 logits of
// the first generated position.
func TestGoldenGreedy(t *testing.T) {
	g := loadGolden(t)
	m, err := model.Open(testutil.BundledModel(t), model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, p := range g.Prompts {
		t.Run(p.Prompt, func(t *testing.T) {
			res, err := m.Generate(context.Background(), p.Prompt, model.GenerateOptions{
				MaxTokens: len(p.GeneratedIDs), Sampling: sample.Params{Temperature: 0},
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !equalIDs(res.PromptTokens, p.PromptIDs) {
				t.Errorf("prompt ids = %v, want %v", res.PromptTokens, p.PromptIDs)
			}
			if !equalIDs(res.Tokens, p.GeneratedIDs) {
				t.Errorf("generated = %v\nwant        %v", res.Tokens, p.GeneratedIDs)
			}
			if res.Text != p.Text {
				t.Errorf("text = %q, want %q", res.Text, p.Text)
			}

			st := m.NewState()
			logits, err := m.Forward(st, p.PromptIDs, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range p.Top5First {
				id, want := int(e[0]), e[1]
				if d := math.Abs(float64(logits[id]) - want); d > 1e-3 {
					t.Errorf("first-position logit[%d] = %.6f, want %.6f (diff %.2g)", id, logits[id], want, d)
				}
			}
		})
	}
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
