package tests

// The actor pipeline on a GPU: layers, uploader and sampler computing
// through model/gpustep. Each test runs twice: on a real GPU (skipped where
// no driver finds one; scripts/device/gpu-pipeline.sh runs them on the
// H100) and on the host driver's emulation of the GPU kernels
// (forgepipe.WithEmulatedGPU), which runs everywhere, CI included: the same
// Go code path — device rows and metadata, the uploader's GPU binding,
// batching, graphs, the sampler's device argmax — with smaller workloads,
// since the emulated kernels are slow.

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	_ "github.com/forgepipe/forgepipe/hip/cuda" // the GPU drivers register themselves
	_ "github.com/forgepipe/forgepipe/hip/rocm"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/gpufwd"
	"github.com/forgepipe/forgepipe/model/synth"
	"github.com/forgepipe/forgepipe/sample"
)

var gpuProbe struct {
	once    sync.Once
	backend string
	why     string
}

// probeGPU finds a GPU driver with a device.
func probeGPU() {
	quiet := zerolog.Nop()
	dev, err := hip.OpenGPU(hip.Options{Logger: &quiet})
	if err != nil {
		gpuProbe.why = err.Error()
		return
	}
	gpuProbe.backend = dev.Driver()
	dev.Close()
}

// gpuMode is where a test runs the GPU path.
type gpuMode struct {
	name    string
	opts    []forgepipe.Option // for forgepipe.Open
	backend string             // for hip.Open: the eager reference's device
	scale   int                // divides the test's workload (emulation is slow)
}

// gpuModes lists the emulated mode and, where a GPU driver finds a device,
// the real one (a skipped subtest otherwise, saying why).
func gpuModes(t *testing.T) []gpuMode {
	modes := []gpuMode{{name: "emulated", opts: []forgepipe.Option{forgepipe.WithEmulatedGPU()}, backend: "host", scale: 4}}
	gpuProbe.once.Do(probeGPU)
	if gpuProbe.backend != "" {
		modes = append(modes, gpuMode{name: gpuProbe.backend, opts: []forgepipe.Option{forgepipe.WithBackend(gpuProbe.backend)}, backend: gpuProbe.backend, scale: 1})
	} else {
		t.Run("gpu", func(t *testing.T) { t.Skipf("no GPU: %s", gpuProbe.why) })
	}
	return modes
}

// gpuEager is the GPU's sequential forward (model/gpufwd) over a model.
type gpuEager struct {
	m   *model.Model
	g   *gpufwd.Model
	dev hip.Device
}

func openGPUEager(t *testing.T, backend, path string, int8Act bool) *gpuEager {
	t.Helper()
	quiet := zerolog.Nop()
	dev, err := hip.Open(backend, hip.Options{Logger: &quiet})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Open(path, model.Options{NoPrefault: true})
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	g, err := gpufwd.Load(dev, m)
	if err != nil {
		m.Close()
		dev.Close()
		t.Fatal(err)
	}
	g.SetInt8Activations(int8Act)
	e := &gpuEager{m: m, g: g, dev: dev}
	t.Cleanup(func() { g.Close(); m.Close(); dev.Close() })
	return e
}

// run generates greedily, keeping every step's logits.
func (e *gpuEager) run(t *testing.T, ids []int32, maxTokens int) (tokens []int32, logits [][]float32) {
	t.Helper()
	st, err := e.g.NewState()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l, err := e.g.Forward(st, ids, false)
	for {
		if err != nil {
			t.Fatal(err)
		}
		logits = append(logits, append([]float32(nil), l...))
		id := sample.Greedy(l)
		if e.m.Tokenizer.IsEOG(id) {
			return tokens, logits
		}
		tokens = append(tokens, id)
		if len(tokens) >= maxTokens {
			return tokens, logits
		}
		l, err = e.g.Forward(st, []int32{id}, false)
	}
}

// relErr is max |a-b| over max |b|.
func relErr(a, b []float32) float64 {
	var num, den float64
	for i := range b {
		num = math.Max(num, math.Abs(float64(a[i])-float64(b[i])))
		den = math.Max(den, math.Abs(float64(b[i])))
	}
	return num / den
}

// TestGPUPipelineGolden: the bundled model's greedy tokens through the
// actor pipeline on the GPU are llama.cpp's (models/golden.json), and the
// first step's top logits match.
func TestGPUPipelineGolden(t *testing.T) {
	for _, mode := range gpuModes(t) {
		t.Run(mode.name, func(t *testing.T) { gpuGolden(t, mode) })
	}
}

func gpuGolden(t *testing.T, mode gpuMode) {
	for _, tc := range []struct {
		name string
		opts []forgepipe.Option
	}{
		{"default", nil},
		{"chunked", []forgepipe.Option{forgepipe.WithMaxBatch(3)}},
		{"budget", []forgepipe.Option{forgepipe.WithWeightBudget(3 << 20), forgepipe.WithPrefetch(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := forgepipe.Open(testutil.BundledModel(t), append(tc.opts, mode.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			golden := testutil.Golden(t)
			for i, g := range golden {
				if i%mode.scale != 0 {
					continue
				}
				want := g.GeneratedIDs[:len(g.GeneratedIDs)/mode.scale]
				tokens, logits := plLazyRun(t, p, g.PromptIDs, len(want))
				if !plSlicesEqual(tokens, want) {
					t.Fatalf("%q:\n got %v\nwant %v", g.Prompt, tokens, want)
				}
				first := logits[0]
				for _, top := range g.Top5First {
					id, want := int(top[0]), top[1]
					if d := math.Abs(float64(first[id]) - want); d > 1e-3*math.Max(1, math.Abs(want)) {
						t.Errorf("%q: logit of %d = %v, llama.cpp %v", g.Prompt, id, first[id], want)
					}
				}
			}
			st := p.Stats()
			t.Logf("%s: uploads %d, evictions %d", tc.name, st.Uploader.Uploads, st.Uploader.Evictions)
			if tc.name == "budget" && st.Uploader.Evictions == 0 {
				t.Errorf("a 3 MiB budget evicted nothing")
			}
		})
	}
}

// gpuSynth writes a small synthetic model of one weight type.
func gpuSynth(t *testing.T, arch string, typ gguf.Type) string {
	t.Helper()
	spec, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	spec.Arch, spec.Layers, spec.Type = arch, 3, typ
	if spec.Tokenizer, err = synth.TokenizerFrom(testutil.BundledModel(t)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%s.gguf", arch, typ))
	if err := synth.Write(path, spec, nil); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestGPUPipelineLazyMatchesEager: the lazily loaded pipeline on the GPU
// gives the GPU's eager forward's tokens, with logits within tolerance
// (the two use different attention kernels; with 8-bit activations both
// quantise the same way).
func TestGPUPipelineLazyMatchesEager(t *testing.T) {
	for _, mode := range gpuModes(t) {
		t.Run(mode.name, func(t *testing.T) { gpuLazyMatchesEager(t, mode) })
	}
}

func gpuLazyMatchesEager(t *testing.T, mode gpuMode) {
	for _, tc := range []struct {
		name, path string
		int8       bool
		tol        float64
	}{
		// The prompt's logits come from half-precision GEMMs in both, the
		// decode steps' from matrix-vector products; the pipeline's
		// attention is another kernel (per-row caches), and with 8-bit
		// activations a small change can move a value across a rounding
		// step. The tolerances are kernels/gpu's (TOLERANCES.md).
		{"bundled-f16", testutil.BundledModel(t), false, 1e-3},
		{"llama-q8_0", gpuSynth(t, "llama", gguf.TypeQ8_0), true, 2e-2},
		{"qwen2-q4_k", gpuSynth(t, "qwen2", gguf.TypeQ4_K), true, 2e-2},
		{"llama-q6_k", gpuSynth(t, "llama", gguf.TypeQ6_K), true, 2e-2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := openGPUEager(t, mode.backend, tc.path, tc.int8)
			p, err := forgepipe.Open(tc.path, mode.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			worst := 0.0
			for _, prompt := range []string{"Once upon a time", "The little dog ran to the park and saw", "Hi"} {
				ids := e.m.Tokenizer.Encode(prompt, true, true)
				wantTok, wantLog := e.run(t, ids, 24/mode.scale)
				gotTok, gotLog := plLazyRun(t, p, ids, 24/mode.scale)
				worst = math.Max(worst, sameWithinTol(t, prompt, gotTok, wantTok, gotLog, wantLog, tc.tol))
			}
			t.Logf("%s: worst relative logit error vs eager %.3g (tolerance %.0e)", tc.name, worst, tc.tol)
		})
	}
}

// TestGPUPipelineConcurrentMatchesSolo: prompts run together (batched
// steps over many sequences' KV caches) give what each gives alone, within
// the tolerance of the batched products (a batch of rows goes through
// half-precision GEMMs, one row through matrix-vector products): every
// step's logits agree until the tokens part, and greedy tokens may only
// part where the two best logits were closer than that tolerance. Half the
// sequences sample on the host from logits copied back.
func TestGPUPipelineConcurrentMatchesSolo(t *testing.T) {
	for _, mode := range gpuModes(t) {
		t.Run(mode.name, func(t *testing.T) { gpuConcurrent(t, mode) })
	}
}

func gpuConcurrent(t *testing.T, mode gpuMode) {
	for _, tc := range []struct{ name, path string }{
		{"bundled-f16", testutil.BundledModel(t)},           // batches through GEMMs
		{"llama-q8_0", gpuSynth(t, "llama", gguf.TypeQ8_0)}, // 16 rows: MatVecQ8Rows in chunks of 8
		{"qwen2-q4_k", gpuSynth(t, "qwen2", gguf.TypeQ4_K)}, // with biases
	} {
		t.Run(tc.name, func(t *testing.T) { concurrentMatchesSolo(t, mode, tc.path) })
	}
}

func concurrentMatchesSolo(t *testing.T, mode gpuMode, path string) {
	p, err := forgepipe.Open(path, append(mode.opts, forgepipe.WithMaxSequences(16))...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	prompts := []string{"Once upon a time", "The little dog", "Lily and Ben went to the", "Hi", "One day, a big red ball",
		"The sun was", "Tom had a toy car that he loved very much. One day", "Mom said"}
	req := func(i int) forgepipe.Request {
		r := forgepipe.Request{Prompt: prompts[i%len(prompts)], MaxTokens: 20 / mode.scale, Logits: true}
		if i%2 == 1 {
			r.Sampling = sample.Params{Temperature: 0.8, TopK: 40, TopP: 0.95, Seed: uint64(i)}
		}
		return r
	}
	type run struct {
		tokens []int32
		logits [][]float32
	}
	gen := func(r forgepipe.Request) run {
		s, err := p.Generate(context.Background(), r)
		if err != nil {
			t.Error(err)
			return run{}
		}
		var out run
		for {
			tok, err := s.Next()
			if err != nil {
				break
			}
			out.tokens = append(out.tokens, tok.ID)
			out.logits = append(out.logits, tok.Logits)
		}
		if _, err := s.Result(); err != nil {
			t.Error(err)
		}
		return out
	}
	const n = 16
	solo := make([]run, n)
	for i := range solo {
		solo[i] = gen(req(i))
	}
	together := make([]run, n)
	var wg sync.WaitGroup
	for i := range together {
		wg.Go(func() { together[i] = gen(req(i)) })
	}
	wg.Wait()
	const tol = 2e-2
	parted := 0
	for i := range solo {
		a, b := together[i], solo[i]
		if len(b.tokens) == 0 || len(a.tokens) == 0 {
			t.Fatalf("prompt %d: no tokens (together %d, alone %d)", i, len(a.tokens), len(b.tokens))
		}
		for k := 0; k < min(len(a.tokens), len(b.tokens)); k++ {
			if r := relErr(a.logits[k], b.logits[k]); r > tol {
				t.Fatalf("prompt %d step %d: relative logit error %.3g together vs alone", i, k, r)
			}
			if a.tokens[k] == b.tokens[k] {
				continue
			}
			parted++
			if i%2 == 0 { // greedy: only a near tie may part them
				if gap := topGap(b.logits[k]); gap > 2*tol*maxAbs(b.logits[k]) {
					t.Fatalf("prompt %d step %d: together %d, alone %d, though the best logit led by %.3g", i, k, a.tokens[k], b.tokens[k], gap)
				}
			}
			break
		}
	}
	t.Logf("%d of %d sequences parted from their solo run within the tolerance", parted, n)
	multi := int64(0)
	for _, l := range p.Stats().Layers {
		multi += l.MultiSeqBatches
	}
	if multi == 0 {
		t.Errorf("16 concurrent sequences never shared a step")
	}
	st := p.Stats().GPU
	if st == nil || st.GraphLaunches == 0 || st.GraphCaptures == 0 {
		t.Errorf("GPU stats %+v: decode steps were never captured and relaunched as graphs", st)
	} else {
		t.Logf("%d steps, %d through graphs (%d captured)", st.Steps, st.GraphLaunches, st.GraphCaptures)
	}
}

// sameWithinTol compares two greedy runs: every step's logits agree
// within tol (relative to the row's largest), and the tokens may part only
// at a near tie (the reference's two best logits closer than 2·tol of the
// row's largest), after which nothing more is compared. It returns the
// worst relative error seen.
func sameWithinTol(t *testing.T, what string, got, want []int32, gotLog, wantLog [][]float32, tol float64) float64 {
	t.Helper()
	worst := 0.0
	for k := 0; k < min(len(got), len(want)); k++ {
		r := relErr(gotLog[k], wantLog[k])
		worst = math.Max(worst, r)
		if r > tol {
			t.Fatalf("%s: step %d: relative logit error %.3g > %.0e", what, k, r, tol)
		}
		if got[k] != want[k] {
			if gap := topGap(wantLog[k]); gap > 2*tol*maxAbs(wantLog[k]) {
				t.Fatalf("%s: step %d: token %d, want %d (the best logit led by %.3g)", what, k, got[k], want[k], gap)
			}
			t.Logf("%s: parted at step %d on a near tie", what, k)
			return worst
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d tokens, want %d", what, len(got), len(want))
	}
	return worst
}

// topGap is the best logit minus the second best.
func topGap(l []float32) float64 {
	b1, b2 := math.Inf(-1), math.Inf(-1)
	for _, v := range l {
		switch f := float64(v); {
		case f > b1:
			b1, b2 = f, b1
		case f > b2:
			b2 = f
		}
	}
	return b1 - b2
}

func maxAbs(l []float32) float64 {
	m := 0.0
	for _, v := range l {
		m = math.Max(m, math.Abs(float64(v)))
	}
	return m
}

// TestGPUPipelineChaining: greedy sequences whose next step the device
// embeds before the host has read their token (the sampler's chaining,
// on by default) give the tokens and text of the pipeline that waits for
// each token (WithoutChaining) and llama.cpp's greedy tokens; a token that
// ends a sequence while its next step is in flight (a stop string here;
// the end of generation takes the same path, but the bundled model does
// not end its stories in a test's length) changes nothing that the caller
// sees, and the sequence is still freed once the wasted step is back;
// many sequences still share steps.
func TestGPUPipelineChaining(t *testing.T) {
	for _, mode := range gpuModes(t) {
		t.Run(mode.name, func(t *testing.T) { gpuChaining(t, mode) })
	}
}

func gpuChaining(t *testing.T, mode gpuMode) {
	open := func(extra ...forgepipe.Option) *forgepipe.Pipeline {
		p, err := forgepipe.Open(testutil.BundledModel(t), append(append([]forgepipe.Option{forgepipe.WithMaxSequences(8)}, mode.opts...), extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	chained, waiting := open(), open(forgepipe.WithoutChaining())
	type out struct {
		tokens []int32
		text   string
		stop   string
	}
	gen := func(p *forgepipe.Pipeline, r forgepipe.Request) out {
		s, err := p.Generate(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		var o out
		for {
			tok, err := s.Next()
			if err != nil {
				break
			}
			o.tokens = append(o.tokens, tok.ID)
		}
		res, err := s.Result()
		if err != nil {
			t.Fatal(err)
		}
		o.text, o.stop = res.Text, res.StopReason
		return o
	}
	same := func(what string, a, b out) {
		t.Helper()
		if !plSlicesEqual(a.tokens, b.tokens) || a.text != b.text || a.stop != b.stop {
			t.Errorf("%s: chained %v %q (%s), waiting %v %q (%s)", what, a.tokens, a.text, a.stop, b.tokens, b.text, b.stop)
		}
	}
	golden := testutil.Golden(t)
	stops := 0
	for i, g := range golden {
		if i%mode.scale != 0 {
			continue
		}
		want := g.GeneratedIDs[:len(g.GeneratedIDs)/mode.scale]
		r := forgepipe.Request{Tokens: g.PromptIDs, MaxTokens: len(want)}
		a, b := gen(chained, r), gen(waiting, r)
		same(fmt.Sprintf("golden %d", i), a, b)
		if !plSlicesEqual(a.tokens, want) {
			t.Errorf("golden %d: chained %v, llama.cpp %v", i, a.tokens, want)
		}
		// A stop string half way: the chained step after it is wasted.
		if len(a.text) > 12 {
			stop := a.text[len(a.text)/2 : len(a.text)/2+3]
			r.Stop = []string{stop}
			c := gen(chained, r)
			same(fmt.Sprintf("golden %d, stop %q", i, stop), c, gen(waiting, r))
			if c.stop != model.StopString {
				t.Errorf("golden %d: stop %q ended it by %s", i, stop, c.stop)
			}
			stops++
		}
	}
	if stops == 0 {
		t.Error("no sequence was ended by a stop string")
	}
	// Under a weight budget that evicts layers every token, the next step
	// still waits on the device for its layer's upload.
	tight := open(forgepipe.WithWeightBudget(3<<20), forgepipe.WithPrefetch(1))
	g0 := golden[0]
	want0 := g0.GeneratedIDs[:len(g0.GeneratedIDs)/mode.scale]
	if got := gen(tight, forgepipe.Request{Tokens: g0.PromptIDs, MaxTokens: len(want0)}); !plSlicesEqual(got.tokens, want0) {
		t.Errorf("under a 3 MiB weight budget: chained %v, llama.cpp %v", got.tokens, want0)
	}
	if st := tight.Stats(); st.Uploader.Evictions == 0 || st.Sampler.Chained == 0 {
		t.Errorf("under a 3 MiB weight budget: %d evictions, %d rows chained", st.Uploader.Evictions, st.Sampler.Chained)
	}

	// The limits known beforehand: a token limit of one and two (nothing or
	// one step chained) and a context that fills up.
	for _, n := range []int{1, 2} {
		r := forgepipe.Request{Prompt: "Once upon a time", MaxTokens: n}
		a, b := gen(chained, r), gen(waiting, r)
		same(fmt.Sprintf("%d tokens", n), a, b)
		if len(a.tokens) != n || a.stop != model.StopMaxTokens {
			t.Errorf("%d tokens: got %d, stopped by %s", n, len(a.tokens), a.stop)
		}
	}
	small, smallWaiting := open(forgepipe.WithContextSize(24)), open(forgepipe.WithContextSize(24), forgepipe.WithoutChaining())
	r := forgepipe.Request{Prompt: "Once upon a time there was a little girl", MaxTokens: 100}
	a := gen(small, r)
	same("a full context", a, gen(smallWaiting, r))
	if a.stop != model.StopContext {
		t.Errorf("a context of 24: stopped by %s after %d tokens", a.stop, len(a.tokens))
	}
	// Chained steps keep their graphs: a sequence's rows keep their buffers
	// through the layers, and two chained batches alternate, so once two
	// sequences have run, a third captures nothing and every decode step
	// but the first few relaunches a graph.
	layers := int64(chained.Config().Layers)
	for i := range 3 {
		before := chained.Stats().GPU
		gen(chained, forgepipe.Request{Prompt: "Once upon a time", MaxTokens: 16})
		after := chained.Stats().GPU
		steps, graphs, captures := after.Steps-before.Steps, after.GraphLaunches-before.GraphLaunches, after.GraphCaptures-before.GraphCaptures
		t.Logf("sequence %d: %d steps, %d through graphs, %d captured", i, steps, graphs, captures)
		if graphs < steps-4*layers || (i == 2 && captures != 0) {
			t.Errorf("sequence %d of 16 tokens: %d of %d steps through graphs, %d captured", i, graphs, steps, captures)
		}
	}
	// A cancel while the next step is in flight: the sequence is freed once
	// that step is back.
	ctx, cancel := context.WithCancel(context.Background())
	st, err := chained.Generate(ctx, forgepipe.Request{Prompt: "Once upon a time", MaxTokens: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := st.Next(); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	for {
		if _, err := st.Next(); err != nil {
			break
		}
	}
	if _, err := st.Result(); err == nil {
		t.Error("a cancelled sequence ended without an error")
	}

	// Together: the chained steps of many sequences still share steps.
	before := chained.Stats().Layers[0].Batches
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			o := gen(chained, forgepipe.Request{Prompt: fmt.Sprintf("Tom and Sue had %d", i), MaxTokens: 32})
			if len(o.tokens) == 0 {
				t.Errorf("sequence %d: no tokens", i)
			}
		})
	}
	wg.Wait()
	t.Logf("8 sequences of %d tokens together: %d steps of the first layer", 32, chained.Stats().Layers[0].Batches-before)
	for name, p := range map[string]*forgepipe.Pipeline{"chained": chained, "waiting": waiting, "chained, small context": small} {
		st := p.Stats()
		multi := int64(0)
		for _, l := range st.Layers {
			multi += l.MultiSeqBatches
		}
		t.Logf("%s: %d tokens, %d rows chained, %d shared steps", name, st.Sampler.Tokens, st.Sampler.Chained, multi)
		switch {
		case name != "waiting" && st.Sampler.Chained == 0:
			t.Errorf("no row was chained")
		case name == "chained" && multi == 0:
			t.Errorf("8 chained sequences never shared a step")
		case name == "waiting" && st.Sampler.Chained != 0:
			t.Errorf("WithoutChaining chained %d rows", st.Sampler.Chained)
		}
		// Every sequence is freed once its last (maybe wasted) step is back.
		testutil.WaitFor(t, name+": no sequence live", func() bool { return p.Stats().Sampler.Live == 0 })
	}
}
