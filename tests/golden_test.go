// Package tests holds end-to-end tests across packages: real models,
// golden outputs computed by independent implementations.
package tests

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/sample"
)

// TestGoldenGreedy: the bundled model reproduces every golden continuation
// token for token, its prompt ids, its decoded text, and the top-5 logits of
// the first generated position.
func TestGoldenGreedy(t *testing.T) {
	m, err := model.Open(testutil.BundledModel(t), model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, p := range testutil.Golden(t) {
		t.Run(p.Prompt, func(t *testing.T) {
			res, err := m.Generate(context.Background(), p.Prompt, model.GenerateOptions{
				MaxTokens: len(p.GeneratedIDs), Sampling: sample.Params{Temperature: 0},
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.PromptTokens, p.PromptIDs) {
				t.Errorf("prompt ids = %v, want %v", res.PromptTokens, p.PromptIDs)
			}
			if !slices.Equal(res.Tokens, p.GeneratedIDs) {
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
