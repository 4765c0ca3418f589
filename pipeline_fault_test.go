package forgepipe

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/forgepipe/forgepipe/actors/layer"
)

// withFaultHook sets a hook called by every layer actor before each step,
// for each sequence in it; it may panic (tests of the supervision path).
func withFaultHook(f func(layer int, seq SeqID)) Option { return func(o *options) { o.fault = f } }

func bundledModel(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "models", "forgepipe-tiny.f16.gguf")
}

// TestLayerPanicFailsOnlyItsSequence injects a panic in layer 2 for one
// sequence: it fails with an error while sequences batched with it finish
// exactly as they do alone.
func TestLayerPanicFailsOnlyItsSequence(t *testing.T) {
	t.Run("goroutines", func(t *testing.T) { layerPanic(t, nil) })
	t.Run("inline", func(t *testing.T) { layerPanic(t, []Option{WithInlineLayers()}) })
}

func layerPanic(t *testing.T, opts []Option) {
	defer goleak.VerifyNone(t)
	path := bundledModel(t)
	prompts := []string{"Once upon a time", "The little dog", "Mom said"}
	solo := map[string][]int32{}
	p, err := Open(path, WithBackend("host"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range prompts {
		s, err := p.Generate(context.Background(), Request{Prompt: pr, MaxTokens: 12})
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Collect()
		if err != nil {
			t.Fatal(err)
		}
		solo[pr] = r.Tokens
	}
	p.Close()

	var mu sync.Mutex
	var poisoned SeqID
	steps := 0
	hook := func(l int, seq SeqID) {
		mu.Lock()
		defer mu.Unlock()
		if l == 2 && seq == poisoned {
			if steps++; steps >= 3 { // fail mid-generation, in a batch with the others
				panic("injected fault")
			}
		}
	}
	p, err = Open(path, append(opts, WithBackend("host"), withFaultHook(hook))...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	streams := make([]*Stream, len(prompts))
	bad, err := p.Generate(context.Background(), Request{Prompt: "Tom had a red ball", MaxTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	poisoned = bad.Seq()
	mu.Unlock()
	for i, pr := range prompts {
		if streams[i], err = p.Generate(context.Background(), Request{Prompt: pr, MaxTokens: 12}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bad.Collect(); !errors.Is(err, layer.ErrPanic) {
		t.Errorf("poisoned sequence: err %v, want layer.ErrPanic", err)
	} else {
		t.Log(err)
	}
	for i, s := range streams {
		r, err := s.Collect()
		if err != nil {
			t.Errorf("%q: %v", prompts[i], err)
			continue
		}
		if got, want := r.Tokens, solo[prompts[i]]; !equalIDs(got, want) {
			t.Errorf("%q after a neighbour's panic: %v, alone %v", prompts[i], got, want)
		}
	}
	st := p.Stats()
	if st.Layers[2].Restarts == 0 || st.Layers[2].Failed == 0 {
		t.Errorf("layer 2: %+v, want a restart and a failed sequence", st.Layers[2])
	}
	t.Logf("layer 2: %d restarts, %d failed; multi-sequence batches %d", st.Layers[2].Restarts, st.Layers[2].Failed, st.Layers[2].MultiSeqBatches)
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
