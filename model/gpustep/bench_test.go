package gpustep_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/forgepipe/forgepipe/actors/loader"
	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	_ "github.com/forgepipe/forgepipe/hip/cuda" // the GPU drivers register themselves
	_ "github.com/forgepipe/forgepipe/hip/rocm"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/gpustep"
)

// tensors is a model.Tensors over a mapped file.
type tensors struct{ f *gguf.File }

func (t tensors) Tensor(name string) (*gguf.TensorInfo, bool) { return t.f.Tensor(name) }
func (t tensors) TensorData(ti *gguf.TensorInfo) []byte       { return t.f.TensorData(ti) }

// BenchmarkDecodeDirect runs the GPU steps the actors enqueue (Embed, every
// block's Step, Project) from one goroutine, with no actors in between:
// the same kernels and graphs, so its tok/s against `pipeline bench`'s
// decode tok/s on the same model is what the actor pipeline costs.
// FORGEPIPE_BENCH_MODEL picks the model (default: the bundled one).
func BenchmarkDecodeDirect(b *testing.B) {
	quiet := zerolog.Nop()
	dev, err := hip.OpenGPU(hip.Options{Logger: &quiet})
	if err != nil {
		b.Skipf("no GPU: %v", err)
	}
	defer dev.Close()
	path := os.Getenv("FORGEPIPE_BENCH_MODEL")
	if path == "" {
		path = testutil.BundledModel(b)
	}
	f, err := gguf.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cfg, err := model.ConfigFromGGUF(f.Header)
	if err != nil {
		b.Fatal(err)
	}
	// FORGEPIPE_SKIP leaves kernels out of every one-row step (wrong
	// results, real timing of the rest): see gpustep's skip.
	gpustep.SkipKernels(os.Getenv("FORGEPIPE_SKIP"))
	defer gpustep.SkipKernels("")
	const ctxSize = 1024
	const prompt = 512 // decoding from position 512, as the pipeline benchmarks do
	r, err := gpustep.New(dev, cfg, gpustep.Options{ContextSize: ctxSize, MaxBatch: prompt})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	// Upload every tensor synchronously: each layer in one allocation laid
	// out as the uploader does (gpustep.Layout, so Q/K/V and gate/up fuse),
	// the rest one allocation per tensor.
	ptrs := map[string]hip.DevicePtr{}
	var allocs []hip.DevicePtr
	defer func() {
		for _, p := range allocs {
			_ = dev.Free(p)
		}
	}()
	s := r.Stream()
	upload := func(ts []*gguf.TensorInfo) {
		ordered, offsets, size := gpustep.Layout(ts)
		p, err := dev.Malloc(size)
		if err != nil {
			b.Fatal(err)
		}
		allocs = append(allocs, p)
		for i, t := range ordered {
			q := p.Add(offsets[i])
			if err := s.MemcpyHtoDAsync(q, f.TensorData(t)); err != nil {
				b.Fatal(err)
			}
			ptrs[t.Name] = q
		}
		if err := s.Synchronize(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	for l := 0; l < cfg.Layers; l++ {
		upload(loader.LayerTensors(f.Header, l))
	}
	for _, t := range f.Tensors {
		if _, ok := ptrs[t.Name]; !ok {
			upload([]*gguf.TensorInfo{t})
		}
	}
	at := func(name string) (hip.DevicePtr, bool) { p, ok := ptrs[name]; return p, ok }
	g, err := r.BindGlobals(tensors{f}, at)
	if err != nil {
		b.Fatal(err)
	}
	var blocks []*gpustep.Block
	for l := 0; l < cfg.Layers; l++ {
		if len(loader.LayerTensors(f.Header, l)) == 0 {
			b.Fatalf("no block %d", l)
		}
		bl, err := r.BindBlock(l, tensors{f}, at)
		if err != nil {
			b.Fatal(err)
		}
		blocks = append(blocks, bl)
	}
	const seq = 1
	if err := r.AddSeq(seq, ctxSize); err != nil {
		b.Fatal(err)
	}
	embed := func(toks []int32, pos int) gpustep.Rows {
		x, err := r.Embed(g, toks, []gpustep.Segment{{Seq: seq, Pos: pos, N: len(toks)}})
		if err != nil {
			b.Fatal(err)
		}
		return x
	}
	layers := func(x gpustep.Rows) gpustep.Rows {
		for _, bl := range blocks {
			var err error
			if x, err = r.Step(bl, x); err != nil { // in place
				b.Fatal(err)
			}
		}
		return x
	}
	step := func(toks []int32, pos int) int32 {
		x := layers(embed(toks, pos))
		ids, err := r.Project(g, x, []int{len(toks) - 1}, nil)
		if err != nil {
			b.Fatal(err)
		}
		r.Release(x)
		return ids[0]
	}
	ids := make([]int32, prompt)
	for i := range ids {
		ids[i] = int32(1 + i%100)
	}
	tok := step(ids, 0)
	pos := prompt
	for ; pos < prompt+8; pos++ { // warm up: graphs captured
		tok = step([]int32{tok}, pos)
	}
	// By default each token's step is embedded from the device's pick and
	// enqueued before the host reads the token, as the sampler chains
	// greedy rows; FORGEPIPE_CHAIN=0 waits for each token first.
	chain := os.Getenv("FORGEPIPE_CHAIN") != "0"
	var x gpustep.Rows // the chained step's rows, once there is one
	if chain {
		x = embed([]int32{tok}, pos) // outside the timing, as every later one is chained
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if pos >= ctxSize-1 {
			pos = prompt
			if x.X != 0 { // start again at the prompt's end, from the host
				r.Release(x)
				x = gpustep.Rows{}
			}
		}
		if !chain {
			tok = step([]int32{tok}, pos)
			pos++
			continue
		}
		if x.X == 0 {
			x = embed([]int32{tok}, pos)
		}
		x = layers(x)
		pos++
		p, err := r.StartProject(g, x, []int{0}, nil, []gpustep.Segment{{Seq: seq, Pos: pos, N: 1}})
		if err != nil {
			b.Fatal(err)
		}
		r.Release(x)
		if x, err = p.Next(); err != nil {
			b.Fatal(err)
		}
		ids, err := p.Wait()
		if err != nil {
			b.Fatal(err)
		}
		tok = ids[0]
	}
	el := time.Since(start)
	if x.X != 0 {
		r.Release(x)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "tok/s")
	st := r.Stats()
	b.ReportMetric(float64(st.GraphLaunches)/float64(max(1, st.Steps)), "graph-share")
}
