package gpufwd_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	_ "github.com/forgepipe/forgepipe/hip/cuda" // the GPU drivers register themselves
	_ "github.com/forgepipe/forgepipe/hip/rocm"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/kernels"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/gpufwd"
	"github.com/forgepipe/forgepipe/model/synth"
	"github.com/rs/zerolog"
)

// Tolerances on logits, as max |gpu − ref| over a row divided by the row's
// max |ref|, worst over all positions.
const (
	// Token by token (matrix-vector products, float32 activations) against
	// the host with every matrix dequantised to float32: both compute the
	// same float32 function, differing only in summation order.
	tolExact = 1e-4
	// A batched prefill (weights and activations rounded to half for the
	// GEMM, float32 sums) against the same float32 reference.
	tolPrefill = 2e-2
	// Token by token against the host as it runs the quantised model
	// (activations rounded to 8 bits for Q8_0/Q4_K weights), and int8
	// activations on the GPU against that.
	tolHostQ8 = 5e-2
)

var device struct {
	once sync.Once
	dev  hip.Device
	why  string
}

// gpuDevice opens the GPU the tests run on, once, or skips the test.
func gpuDevice(t testing.TB) hip.Device {
	t.Helper()
	device.once.Do(func() {
		quiet := zerolog.Nop()
		dev, err := hip.OpenGPU(hip.Options{Logger: &quiet})
		if err != nil {
			device.why = err.Error()
			return
		}
		device.dev = dev
	})
	if device.dev == nil {
		t.Skipf("no GPU: %s", device.why)
	}
	return device.dev
}

func openHost(t testing.TB, path string) *model.Model {
	t.Helper()
	m, err := model.Open(path, model.Options{NoPrefault: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func load(t testing.TB, dev hip.Device, m *model.Model) *gpufwd.Model {
	t.Helper()
	start := time.Now()
	g, err := gpufwd.Load(dev, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	t.Logf("device %s: %.1f MB of weights enqueued in %v", dev.Name(), float64(g.WeightBytes())/1e6, time.Since(start).Round(time.Millisecond))
	return g
}

func newState(t testing.TB, g *gpufwd.Model) *gpufwd.State {
	t.Helper()
	st, err := g.NewState()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// TestGolden: the bundled model's greedy continuations on the GPU equal
// models/golden.json, with the prompt prefilled in one batch (BLAS, half
// operands) and token by token (float32 matrix-vector products).
func TestGolden(t *testing.T) {
	dev := gpuDevice(t)
	g := load(t, dev, openHost(t, testutil.BundledModel(t)))
	for _, batched := range []bool{true, false} {
		mode := "token-by-token"
		if batched {
			mode = "batched"
		}
		for _, p := range testutil.Golden(t) {
			t.Run(mode+"/"+p.Prompt, func(t *testing.T) {
				st := newState(t, g)
				var next int32
				var err error
				if batched {
					next, err = g.Greedy(st, p.PromptIDs)
				} else {
					for i := 0; i < len(p.PromptIDs) && err == nil; i++ {
						next, err = g.Greedy(st, p.PromptIDs[i:i+1])
					}
				}
				var got []int32
				for err == nil && len(got) < len(p.GeneratedIDs) {
					got = append(got, next)
					if len(got) < len(p.GeneratedIDs) {
						next, err = g.Greedy(st, []int32{next})
					}
				}
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, p.GeneratedIDs) {
					t.Errorf("generated = %v\nwant        %v", got, p.GeneratedIDs)
				}
			})
		}
	}
}

// f32Reference returns a copy of m whose matrices are dequantised to
// float32, so that the host computes with float32 activations throughout.
func f32Reference(t testing.TB, m *model.Model) *model.Model {
	t.Helper()
	done := map[*model.Linear]*model.Linear{}
	conv := func(l *model.Linear) *model.Linear {
		if l == nil {
			return nil
		}
		if d, ok := done[l]; ok {
			return d
		}
		w := l.Weight
		vals := make([]float32, w.Rows*w.Cols)
		if err := gguf.Dequantize(w.Type, w.Data, vals); err != nil {
			t.Fatal(err)
		}
		data := unsafe.Slice((*byte)(unsafe.Pointer(&vals[0])), 4*len(vals))
		d := &model.Linear{Weight: kernels.Mat{Type: gguf.TypeF32, Rows: w.Rows, Cols: w.Cols, Data: data}, Bias: l.Bias}
		done[l] = d
		return d
	}
	ref := *m
	ref.Globals.TokenEmbd = conv(m.Globals.TokenEmbd)
	ref.Globals.Output = conv(m.Globals.Output)
	ref.Blocks = nil
	for _, b := range m.Blocks {
		c := *b
		c.Query, c.Key, c.Value, c.Output = conv(b.Query), conv(b.Key), conv(b.Value), conv(b.Output)
		c.Gate, c.Up, c.Down = conv(b.Gate), conv(b.Up), conv(b.Down)
		ref.Blocks = append(ref.Blocks, &c)
	}
	return &ref
}

// relErr is the worst over rows of max |got − want| / max |want|.
func relErr(got, want []float32, vocab int) float64 {
	worst := 0.0
	for r := 0; r < len(want)/vocab; r++ {
		var d, m float64
		for i := r * vocab; i < (r+1)*vocab; i++ {
			d = math.Max(d, math.Abs(float64(got[i])-float64(want[i])))
			if math.IsNaN(float64(got[i])) {
				d = math.Inf(1)
			}
			m = math.Max(m, math.Abs(float64(want[i])))
		}
		worst = math.Max(worst, d/m)
	}
	return worst
}

// gpuLogits runs ids through g, the first prefill of them in one batch
// (prefill 0 or 1: token by token), the rest one at a time, and returns
// the logits of every position.
func gpuLogits(t testing.TB, g *gpufwd.Model, ids []int32, prefill int) []float32 {
	t.Helper()
	st := newState(t, g)
	var out []float32
	i := 0
	if prefill > 1 {
		l, err := g.Forward(st, ids[:prefill], true)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l...)
		i = prefill
	}
	for ; i < len(ids); i++ {
		l, err := g.Forward(st, ids[i:i+1], false)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l...)
	}
	return out
}

func hostLogits(t testing.TB, m *model.Model, ids []int32) []float32 {
	t.Helper()
	l, err := m.Forward(m.NewState(), ids, true)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Clone(l)
}

// TestLogits compares the GPU's logits at every position of a prompt and
// its continuation with the host's, for the bundled model and synthetic
// llama and qwen2 models of several weight types.
func TestLogits(t *testing.T) {
	dev := gpuDevice(t)
	type tc struct {
		name string
		path func(t *testing.T) string
	}
	cases := []tc{{"bundled", func(t *testing.T) string { return testutil.BundledModel(t) }}}
	for _, arch := range synth.Architectures {
		for _, typ := range []gguf.Type{gguf.TypeF16, gguf.TypeQ8_0, gguf.TypeQ4_K} {
			cases = append(cases, tc{fmt.Sprintf("%s-%s", arch, typ), func(t *testing.T) string {
				spec, err := synth.Preset("tiny")
				if err != nil {
					t.Fatal(err)
				}
				spec.Arch, spec.Type = arch, typ
				if spec.Tokenizer, err = synth.TokenizerFrom(testutil.Testdata(t, "stories260K.gguf")); err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(t.TempDir(), "m.gguf")
				if err := synth.Write(path, spec, nil); err != nil {
					t.Fatal(err)
				}
				return path
			}})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := openHost(t, c.path(t))
			g := load(t, dev, m)
			vocab := m.Config.Vocab
			ids := []int32{1}
			for i := 0; len(ids) < 24; i++ {
				ids = append(ids, int32((i*7919+13)%(vocab-3)+3))
			}
			const prompt = 12
			ref := hostLogits(t, f32Reference(t, m), ids)
			native := hostLogits(t, m, ids)

			exact := gpuLogits(t, g, ids, 1)
			batched := gpuLogits(t, g, ids, prompt)
			g.SetInt8Activations(true)
			int8 := gpuLogits(t, g, ids, 1)
			g.SetInt8Activations(false)

			check := func(what string, got, want []float32, tol float64) {
				e := relErr(got, want, vocab)
				t.Logf("%-34s relative error %.3g (tolerance %.0e)", what, e, tol)
				if !(e <= tol) {
					t.Errorf("%s: relative error %.3g > %.0e", what, e, tol)
				}
			}
			check("token by token vs host f32", exact, ref, tolExact)
			check("batched prefill vs host f32", batched[:prompt*vocab], ref[:prompt*vocab], tolPrefill)
			check("decode after prefill vs host f32", batched[prompt*vocab:], ref[prompt*vocab:], tolPrefill)
			check("token by token vs host native", exact, native, tolHostQ8)
			check("int8 activations vs host native", int8, native, tolHostQ8)
		})
	}
}

// BenchmarkDecode times greedy decode steps at batch 1 of the model named
// by $FORGEPIPE_BENCH_MODEL (default: the bundled model), with float32 and
// with int8 activations, and reports tokens/s and the weight bytes read
// per second.
func BenchmarkDecode(b *testing.B) {
	dev := gpuDevice(b)
	path := os.Getenv("FORGEPIPE_BENCH_MODEL")
	if path == "" {
		path = testutil.BundledModel(b)
	}
	m := openHost(b, path)
	g := load(b, dev, m)
	for _, int8 := range []bool{false, true} {
		name := "f32act"
		if int8 {
			name = "int8act"
		}
		b.Run(name, func(b *testing.B) {
			g.SetInt8Activations(int8)
			st := newState(b, g)
			tok, err := g.Greedy(st, []int32{1, 400, 401, 402})
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < 5; i++ { // warm up
				if tok, err = g.Greedy(st, []int32{tok}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if st.Pos+1 >= g.ContextSize() {
					st.Pos = 4
				}
				if tok, err = g.Greedy(st, []int32{tok}); err != nil {
					b.Fatal(err)
				}
			}
			el := time.Since(start)
			b.StopTimer()
			tps := float64(b.N) / el.Seconds()
			b.ReportMetric(tps, "tok/s")
			b.ReportMetric(float64(g.WeightBytes())*tps/1e9, "GB/s")

			// Where the time goes: one step with events around each block,
			// enqueued while the compute stream is held back, so the device
			// times exclude the host's launch gaps.
			if err := g.SetProfile(true); err != nil {
				b.Fatal(err)
			}
			defer g.SetProfile(false)
			p, _, err := g.ProfileStep(st, tok)
			if err != nil {
				b.Fatal(err)
			}
			var blocks float32
			for _, ms := range p.Blocks {
				blocks += ms
			}
			b.ReportMetric(float64(p.Total)*1e3, "gpu-µs/tok")
			b.ReportMetric(float64(blocks)/float64(len(p.Blocks))*1e3, "gpu-µs/block")
			b.ReportMetric(float64(p.Logits)*1e3, "logits-µs")
			b.ReportMetric(float64(g.WeightBytes())/float64(p.Total)/1e6, "gpu-GB/s")
			b.ReportMetric(float64(p.Enqueue.Microseconds()), "enqueue-µs/tok")
			var ops []string
			for i, name := range gpufwd.OpNames {
				ops = append(ops, fmt.Sprintf("%s %.1f", name, p.Ops[i]*1e3/float32(len(p.Blocks))))
			}
			b.Logf("device µs per block by op: %s; logits %.1f", strings.Join(ops, ", "), p.Logits*1e3)
		})
	}
}
