package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model/synth"
)

// TestPipelinePlanIsLazy checks that Open reads headers only: no tensor is
// requested from the loader and nothing is uploaded before the first
// prompt; the first prompt then loads the weights.
func TestPipelinePlanIsLazy(t *testing.T) {
	defer goleak.VerifyNone(t)
	p, err := forgepipe.Open(testutil.BundledModel(t), forgepipe.WithBackend("host"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	st := p.Stats()
	if st.Loader.Requests != 0 || st.Loader.Bytes != 0 || st.Uploader.Uploads != 0 || st.Uploader.BytesUploaded != 0 {
		t.Fatalf("weights touched by Open: loader %+v, uploader %+v", st.Loader, st.Uploader)
	}
	s, err := p.Generate(context.Background(), forgepipe.Request{Prompt: "Hi", MaxTokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Collect(); err != nil {
		t.Fatal(err)
	}
	st = p.Stats()
	if st.Loader.Requests == 0 || st.Uploader.Uploads != int64(p.Config().Layers)+1 {
		t.Errorf("after the first prompt: loader %+v, uploader %+v; want every layer and the globals uploaded once", st.Loader, st.Uploader)
	}
}

// plWriteSynth writes a synthetic llama model with the bundled tokenizer.
func plWriteSynth(tb testing.TB, dir string, dim, layers, ffn int, typ gguf.Type) string {
	tb.Helper()
	spec, err := synth.Preset("tiny")
	if err != nil {
		tb.Fatal(err)
	}
	spec.Dim, spec.Layers, spec.FFN, spec.Type = dim, layers, ffn, typ
	if spec.Tokenizer, err = synth.TokenizerFrom(testutil.BundledModel(tb)); err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, fmt.Sprintf("synth-%d-%d.gguf", dim, layers))
	if err := synth.Write(path, spec, nil); err != nil {
		tb.Fatal(err)
	}
	return path
}

// BenchmarkOpen measures the plan (Open: headers, tokenizer, actors) for a
// small and a larger model: its cost must not grow with the weights' size.
// FORGEPIPE_BENCH_MODELS (comma-separated paths, e.g. 1B- and 8B-shaped
// models from pipeline gen-model) replaces the two synthetic models.
func BenchmarkOpen(b *testing.B) {
	var paths []string
	if env := os.Getenv("FORGEPIPE_BENCH_MODELS"); env != "" {
		paths = strings.Split(env, ",")
	} else {
		dir := b.TempDir()
		paths = []string{
			plWriteSynth(b, dir, 256, 2, 512, gguf.TypeF16),
			plWriteSynth(b, dir, 1024, 16, 2816, gguf.TypeQ8_0),
		}
	}
	for _, path := range paths {
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(filepath.Base(path), func(b *testing.B) {
			for b.Loop() {
				p, err := forgepipe.Open(path, forgepipe.WithBackend("host"))
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if st := p.Stats(); st.Loader.Requests != 0 || st.Uploader.Uploads != 0 {
					b.Fatalf("Open touched weights: %+v %+v", st.Loader, st.Uploader)
				}
				p.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(fi.Size())/(1<<20), "model-MiB")
		})
	}
}
