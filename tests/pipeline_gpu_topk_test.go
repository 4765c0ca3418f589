package tests

import (
	"context"
	"slices"
	"testing"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/sample"
)

// TestGPUPipelineSamplesFromTop: a sampling sequence on the GPU draws from
// its row's top candidates, picked on the device (kernels/gpu TopK), and
// gets the tokens it gets from the whole row's logits (asked for with
// Request.Logits, which takes the host path of sample.Sample): the same
// seed, the same logits, so the same draws.
func TestGPUPipelineSamplesFromTop(t *testing.T) {
	for _, mode := range gpuModes(t) {
		t.Run(mode.name, func(t *testing.T) { gpuSamplesFromTop(t, mode) })
	}
}

func gpuSamplesFromTop(t *testing.T, mode gpuMode) {
	p, err := forgepipe.Open(testutil.BundledModel(t), mode.opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	gen := func(r forgepipe.Request) []int32 {
		t.Helper()
		s, err := p.Generate(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int32
		for {
			tok, err := s.Next()
			if err != nil {
				break
			}
			ids = append(ids, tok.ID)
		}
		if _, err := s.Result(); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	params := []sample.Params{
		{Temperature: 0.8},
		{Temperature: 1, TopK: 40},
		{Temperature: 0.7, TopP: 0.9},
		{Temperature: 1.3, MinP: 0.05},
		{Temperature: 1, TopK: 1000, TopP: 0.95}, // wider than the candidates: the whole row
	}
	before := p.Stats().Sampler
	for i, sp := range params {
		sp.Seed = uint64(7 + i)
		r := forgepipe.Request{Prompt: "Once upon a time, there was a", MaxTokens: 32 / mode.scale, Sampling: sp}
		top := gen(r)
		r.Logits = true
		whole := gen(r)
		if !slices.Equal(top, whole) {
			t.Errorf("%+v: from the candidates %v, from the whole row %v", sp, top, whole)
		}
	}
	after := p.Stats().Sampler
	rows, falls := after.TopRows-before.TopRows, after.TopFallbacks-before.TopFallbacks
	if rows == 0 {
		t.Fatal("no token was sampled from device candidates")
	}
	if falls == 0 {
		t.Error("no row fell back to its whole logits, though top-k 1000 needs them")
	}
	t.Logf("%d tokens from the device's candidates, %d of them needed the whole row", rows, falls)
}
