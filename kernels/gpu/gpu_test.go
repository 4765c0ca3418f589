package gpu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/kernels"
	"github.com/rs/zerolog"
)

// Tolerances: the largest relative error ‖got − ref‖ / ‖ref‖ each GPU path
// may show against its float64 (or exact host) reference. TOLERANCES.md says
// why each is what it is.
var tolerances = map[string]float64{
	"matvec":    1e-5, // float32 activations and sums; weights decoded exactly
	"matvecQ8":  1e-2, // int8 activations (per row, relative to Σ|w·x|; see TestMatVecQ8)
	"dequant":   1e-6, // exact but for a fused multiply-add (1 ulp)
	"embedding": 1e-6, // dequant of one row
	"matmul":    1e-2, // weights and activations rounded to half/bfloat16, float32 sums
	"matmulF32": 1e-5, // Sgemm (plain float32; no TF32)
	"rmsnorm":   1e-5,
	"add":       1e-6,
	"swiglu":    1e-5,
	"rope":      1e-5,
	"attention": 1e-5,
}

// gpuDevice opens the GPU the tests run on, or skips the test.
func gpuDevice(t testing.TB) (hip.Device, *Kernels) {
	t.Helper()
	quiet := zerolog.Nop() // keeps benchmark lines whole; the device name is in the subtests' logs
	dev, err := hip.OpenGPU(hip.Options{Logger: &quiet})
	if err != nil {
		t.Skipf("no GPU: %v", err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	k, err := Load(dev)
	if err != nil {
		t.Fatalf("Load on %s: %v", dev.Name(), err)
	}
	t.Cleanup(func() { _ = k.Close() })
	t.Logf("device: %s (%s)", dev.Name(), dev.Driver())
	return dev, k
}

// env is one test's device, stream and allocations.
type env struct {
	t     testing.TB
	dev   hip.Device
	k     *Kernels
	s     hip.Stream
	rng   *rand.Rand
	ptrs  []hip.DevicePtr
	sleep hip.Function // fp_bench_sleep, loaded by timeLaunches
}

func newEnv(t testing.TB, seed uint64) *env {
	dev, k := gpuDevice(t)
	return envOn(t, dev, k, seed)
}

// emulatedEnv is an env on the host driver running LoadEmulated's Go
// emulations of the kernels (emulate_*.go), where there is no GPU too.
func emulatedEnv(t testing.TB, seed uint64) *env {
	t.Helper()
	quiet := zerolog.Nop()
	dev, err := hip.Open("host", hip.Options{HostMemory: 1 << 30, Logger: &quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	k, err := LoadEmulated(dev)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return envOn(t, dev, k, seed)
}

// envOn is an env on dev with its kernels k and a new stream.
func envOn(t testing.TB, dev hip.Device, k *Kernels, seed uint64) *env {
	s, err := dev.StreamCreate()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dev: dev, k: k, s: s, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	t.Cleanup(func() {
		_ = s.Synchronize(context.Background())
		for _, p := range e.ptrs {
			_ = dev.Free(p)
		}
		_ = s.Destroy()
	})
	return e
}

func (e *env) alloc(n int64) hip.DevicePtr {
	e.t.Helper()
	p, err := e.dev.Malloc(max(n, 16))
	if err != nil {
		e.t.Fatal(err)
	}
	e.ptrs = append(e.ptrs, p)
	return p
}

func (e *env) upload(b []byte) hip.DevicePtr {
	e.t.Helper()
	p := e.alloc(int64(len(b)))
	e.check(e.s.MemcpyHtoDAsync(p, b))
	e.sync() // b may be reused by the caller
	return p
}

func (e *env) uploadF32(x []float32) hip.DevicePtr { return e.upload(f32Bytes(x)) }

// poisoned allocates n float32 filled with NaN.
func (e *env) poisoned(n int) hip.DevicePtr {
	p := e.alloc(int64(n) * 4)
	e.check(e.s.MemsetD32Async(p, 0x7fc00000, int64(n)))
	return p
}

func (e *env) download(p hip.DevicePtr, n int) []float32 {
	e.t.Helper()
	b := make([]byte, 4*n)
	e.check(e.s.MemcpyDtoHAsync(b, p))
	e.sync()
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func (e *env) check(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) sync() { e.t.Helper(); e.check(e.s.Synchronize(context.Background())) }

// randVec returns n random values of magnitude in [0.1, 1), never zero.
func (e *env) randVec(n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		v := float32(0.1 + 0.9*e.rng.Float64())
		if e.rng.IntN(2) == 0 {
			v = -v
		}
		x[i] = v
	}
	return x
}

func f32Bytes(x []float32) []byte {
	b := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// relErr is ‖got − ref‖ / ‖ref‖, +Inf when got has a NaN or Inf.
func relErr(got, ref []float32) float64 {
	var num, den float64
	for i := range ref {
		g := float64(got[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			return math.Inf(1)
		}
		d := g - float64(ref[i])
		num += d * d
		den += float64(ref[i]) * float64(ref[i])
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

func (e *env) expect(what string, got, ref []float32) {
	e.t.Helper()
	tol := tolerances[strings.SplitN(what, "/", 2)[0]]
	if err := relErr(got, ref); !(err <= tol) {
		bad := 0
		for i := range ref {
			if !(math.Abs(float64(got[i]-ref[i])) <= tol*math.Abs(float64(ref[i]))+1e-30) {
				bad = i
				break
			}
		}
		e.t.Errorf("%s: relative error %.3g > %.0e (first bad [%d]: got %v, want %v)", what, err, tol, bad, got[bad], ref[bad])
	} else {
		e.t.Logf("%s: relative error %.3g (tolerance %.0e)", what, err, tol)
	}
}

// randWeights returns a random rows×cols matrix of type t in the device
// layout (ToDevice of its GGUF bytes), and its exact host dequantisation.
func (e *env) randWeights(t gguf.Type, rows, cols int) ([]byte, []float32) {
	e.t.Helper()
	data, err := gguf.QuantizeParallel(t, e.randVec(rows*cols), cols)
	e.check(err)
	deq := make([]float32, rows*cols)
	e.check(gguf.Dequantize(t, data, deq))
	dev := make([]byte, len(data))
	ToDevice(dev, data, t, cols)
	return dev, deq
}

// shapes returns (rows, cols) cases for type t: one block, a few blocks,
// a real row, with row counts that are not multiples of rows-per-block;
// for the plain float types also columns that are not a multiple of 8.
func shapes(t gguf.Type) [][2]int {
	bs := max(t.BlockSize(), 8)
	s := [][2]int{{1, bs}, {7, bs}, {13, 5 * bs}, {67, 4096}}
	if t.BlockSize() == 1 {
		s = append(s, [2]int{5, 100}, [2]int{9, 4099})
	}
	return s
}

// mvRef is the reference matrix-vector product of rows×cols weights deq
// (dequantised) with x, summed in float64.
func mvRef(deq, x []float32, rows, cols int) []float32 {
	ref := make([]float32, rows)
	for r := range ref {
		var s float64
		for c, w := range deq[r*cols : (r+1)*cols] {
			s += float64(w) * float64(x[c])
		}
		ref[r] = float32(s)
	}
	return ref
}

func TestMatVec(t *testing.T) {
	e := newEnv(t, 1)
	for _, typ := range Types() {
		for _, sh := range shapes(typ) {
			rows, cols := sh[0], sh[1]
			data, deq := e.randWeights(typ, rows, cols)
			x := e.randVec(cols)
			ref := mvRef(deq, x, rows, cols)
			w, xd := e.upload(data), e.uploadF32(x)
			for _, rpb := range []int{1, 2, 4} {
				for _, decoded := range []bool{false, true} {
					if decoded && !hasDecoded(typ) {
						continue
					}
					y := e.poisoned(rows)
					e.check(e.k.matVec(e.s, typ, rpb, decoded, w, xd, y, rows, cols))
					got := e.download(y, rows)
					what := fmt.Sprintf("matvec/%s/%dx%d/r%d", typ, rows, cols, rpb)
					if decoded {
						what += "/decoded"
					}
					e.expect(what, got, ref)
				}
			}
			// For information: the host's MatVec quantises x to Q8_0/Q8_K.
			host := make([]float32, rows)
			kernels.MatVec(host, kernels.Mat{Type: typ, Rows: rows, Cols: cols, Data: data}, x)
			t.Logf("matvec/%s/%dx%d: host MatVec (%s activations) differs from the exact product by %.3g",
				typ, rows, cols, kernels.VecDotType(typ), relErr(host, ref))
		}
	}
}

// TestMatVecQ8 checks the int8-activation products. Rounding activations to
// 8 bits moves each output by up to about Σ|w·x|/254, so the error is
// measured per row against that scale (tolerance "matvecQ8"); the host's
// MatVec, which rounds activations too, is held to the same bound.
func TestMatVecQ8(t *testing.T) {
	e := newEnv(t, 13)
	for _, typ := range Types() {
		if !HasMatVecQ8(typ) {
			continue
		}
		for _, sh := range shapes(typ) {
			rows, cols := sh[0], sh[1]
			data, deq := e.randWeights(typ, rows, cols)
			x := e.randVec(cols)
			ref, scale := make([]float64, rows), make([]float64, rows)
			for r := range ref {
				for c, w := range deq[r*cols : (r+1)*cols] {
					ref[r] += float64(w) * float64(x[c])
					scale[r] += math.Abs(float64(w) * float64(x[c]))
				}
			}
			w, xd := e.upload(data), e.uploadF32(x)
			xq := e.alloc(ActQ8Bytes(cols))
			e.check(e.k.QuantizeActQ8(e.s, xd, xq, cols))
			host := make([]float32, rows)
			kernels.MatVec(host, kernels.Mat{Type: typ, Rows: rows, Cols: cols, Data: data}, x)
			for _, rpb := range []int{1, 2, 4} {
				y := e.poisoned(rows)
				e.check(e.k.MatVecQ8R(e.s, typ, rpb, w, xq, y, rows, cols))
				got := e.download(y, rows)
				worst, worstHost := 0.0, 0.0
				for r := range got {
					worst = max(worst, math.Abs(float64(got[r])-ref[r])/scale[r])
					worstHost = max(worstHost, math.Abs(float64(host[r])-ref[r])/scale[r])
					if math.IsNaN(float64(got[r])) {
						worst = math.Inf(1)
					}
				}
				what := fmt.Sprintf("matvecQ8/%s/%dx%d/r%d", typ, rows, cols, rpb)
				if tol := tolerances["matvecQ8"]; !(worst <= tol) {
					t.Errorf("%s: error %.3g of Σ|w·x| > %.0e (host MatVec: %.3g)", what, worst, tol, worstHost)
				} else {
					t.Logf("%s: relative error %.3g of Σ|w·x| (tolerance %.0e; host MatVec %.3g)", what, worst, tol, worstHost)
				}
			}
		}
	}
}

// hasDecoded reports whether t has a matvec_decoded_ variant.
func hasDecoded(t gguf.Type) bool {
	switch t {
	case gguf.TypeQ4_0, gguf.TypeQ8_0, gguf.TypeQ4_K, gguf.TypeQ6_K:
		return true
	}
	return false
}

func TestDequantize(t *testing.T) {
	e := newEnv(t, 2)
	for _, typ := range Types() {
		for _, sh := range shapes(typ)[1:3] {
			rows, cols := sh[0], sh[1]
			data, deq := e.randWeights(typ, rows, cols)
			w := e.upload(data)
			out := e.poisoned(rows * cols)
			e.check(e.k.Dequantize(e.s, typ, w, out, rows, cols, false))
			e.expect(fmt.Sprintf("dequant/%s/%dx%d", typ, rows, cols), e.download(out, rows*cols), deq)

			// Half output: compare with the host values rounded to half.
			h := e.alloc(int64(rows * cols * 2))
			e.check(e.k.Dequantize(e.s, typ, w, h, rows, cols, true))
			b := make([]byte, rows*cols*2)
			e.check(e.s.MemcpyDtoHAsync(b, h))
			e.sync()
			for i, v := range deq {
				want := gguf.FP32ToFP16(v)
				if got := binary.LittleEndian.Uint16(b[2*i:]); got != want && absDiff16(got, want) > 1 {
					t.Errorf("dequant f16 %s [%d]: got %#04x, want %#04x", typ, i, got, want)
					break
				}
			}
		}
	}
}

func absDiff16(a, b uint16) int { return int(math.Abs(float64(int(a) - int(b)))) }

func TestEmbedding(t *testing.T) {
	e := newEnv(t, 3)
	for _, typ := range Types() {
		rows, cols := 50, max(typ.BlockSize(), 8)*3
		data, deq := e.randWeights(typ, rows, cols)
		w := e.upload(data)
		toks := []int32{3, 0, 49, 17, 3}
		tb := make([]byte, 4*len(toks))
		for i, v := range toks {
			binary.LittleEndian.PutUint32(tb[4*i:], uint32(v))
		}
		out := e.poisoned(len(toks) * cols)
		e.check(e.k.Embedding(e.s, typ, w, e.upload(tb), out, len(toks), rows, cols))
		var ref []float32
		for _, tok := range toks {
			row := make([]float32, cols)
			e.check(kernels.Embedding(row, kernels.Mat{Type: typ, Rows: rows, Cols: cols, Data: data}, int(tok)))
			ref = append(ref, row...)
			_ = deq
		}
		e.expect(fmt.Sprintf("embedding/%s", typ), e.download(out, len(toks)*cols), ref)
	}
}

func TestMatMul(t *testing.T) {
	e := newEnv(t, 4)
	bl, err := e.dev.BLASCreate(e.s)
	if errors.Is(err, hip.ErrNotSupported) {
		t.Skipf("no BLAS on %s: %v", e.dev.Name(), err)
	}
	e.check(err)
	defer bl.Destroy()
	for _, typ := range []gguf.Type{gguf.TypeF32, gguf.TypeF16, gguf.TypeBF16, gguf.TypeQ8_0, gguf.TypeQ4_0, gguf.TypeQ4_K, gguf.TypeQ6_K, gguf.TypeQ2_K} {
		for _, sh := range [][3]int{{96, 256, 7}, {130, 512, 33}} {
			rows, cols, n := sh[0], sh[1], sh[2]
			data, deq := e.randWeights(typ, rows, cols)
			x := e.randVec(n * cols)
			ref := make([]float32, n*rows)
			for i := 0; i < n; i++ {
				for r := 0; r < rows; r++ {
					var s float64
					for c := 0; c < cols; c++ {
						s += float64(deq[r*cols+c]) * float64(x[i*cols+c])
					}
					ref[i*rows+r] = float32(s)
				}
			}
			y := e.poisoned(n * rows)
			scratch := e.alloc(MatMulScratchBytes(typ, rows, cols, n))
			e.check(e.k.MatMul(e.s, bl, typ, e.upload(data), e.uploadF32(x), y, scratch, rows, cols, n))
			what := "matmul"
			if typ == gguf.TypeF32 {
				what = "matmulF32"
			}
			e.expect(fmt.Sprintf("%s/%s/%dx%dx%d", what, typ, rows, cols, n), e.download(y, n*rows), ref)
		}
	}
}

func TestRMSNorm(t *testing.T) {
	e := newEnv(t, 5)
	for _, sh := range [][2]int{{1, 64}, {3, 1000}, {5, 4096}} {
		rows, n := sh[0], sh[1]
		x, w := e.randVec(rows*n), e.randVec(n)
		ref := make([]float32, rows*n)
		kernels.RMSNormRows(ref, x, w, rows, 1e-5)
		out := e.poisoned(rows * n)
		e.check(e.k.RMSNorm(e.s, out, e.uploadF32(x), e.uploadF32(w), rows, n, 1e-5))
		e.expect(fmt.Sprintf("rmsnorm/%dx%d", rows, n), e.download(out, rows*n), ref)
		// In place.
		xd := e.uploadF32(x)
		e.check(e.k.RMSNorm(e.s, xd, xd, e.uploadF32(w), rows, n, 1e-5))
		e.expect(fmt.Sprintf("rmsnorm/%dx%d/inplace", rows, n), e.download(xd, rows*n), ref)
	}
}

func TestElementwise(t *testing.T) {
	e := newEnv(t, 6)
	for _, n := range []int{1, 1000, 1 << 20} {
		a, b := e.randVec(n), e.randVec(n)
		ref := make([]float32, n)
		kernels.Add(ref, a, b)
		out := e.poisoned(n)
		e.check(e.k.Add(e.s, out, e.uploadF32(a), e.uploadF32(b), n))
		e.expect(fmt.Sprintf("add/%d", n), e.download(out, n), ref)

		kernels.SwiGLU(ref, a, b)
		out = e.poisoned(n)
		e.check(e.k.SwiGLU(e.s, out, e.uploadF32(a), e.uploadF32(b), n))
		e.expect(fmt.Sprintf("swiglu/%d", n), e.download(out, n), ref)
	}
}

func TestRope(t *testing.T) {
	e := newEnv(t, 7)
	ff := make([]float32, 64)
	for i := range ff {
		ff[i] = 1 + float32(i)/16
	}
	cases := []struct {
		name string
		r    kernels.Rope
	}{
		{"normal", kernels.Rope{Dims: 128, Base: 500000}},
		{"neox", kernels.Rope{Dims: 64, Base: 10000, Mode: kernels.RopeNeoX}},
		{"linear", kernels.Rope{Dims: 128, Base: 10000, FreqScale: 0.25}},
		{"freqfactors", kernels.Rope{Dims: 128, Base: 500000, FreqFactors: ff}},
		{"yarn", kernels.Rope{Dims: 128, Base: 10000, Mode: kernels.RopeNeoX, FreqScale: 0.25, ExtFactor: 1,
			BetaFast: 32, BetaSlow: 1, OrigCtx: 4096}},
		{"partial", kernels.Rope{Dims: 32, Base: 10000}},
	}
	const nHeads, headDim = 6, 128
	for _, c := range cases {
		positions := []int32{0, 1, 17, 511, 4095, 100000}
		nTok := len(positions)
		x := e.randVec(nTok * nHeads * headDim)
		ref := append([]float32(nil), x...)
		for i, p := range positions {
			c.r.Apply(ref[i*nHeads*headDim:(i+1)*nHeads*headDim], nHeads, headDim, int(p))
		}
		pb := make([]byte, 4*nTok)
		for i, p := range positions {
			binary.LittleEndian.PutUint32(pb[4*i:], uint32(p))
		}
		var ffd hip.DevicePtr
		if c.r.FreqFactors != nil {
			ffd = e.uploadF32(c.r.FreqFactors)
		}
		xd := e.uploadF32(x)
		e.check(e.k.Rope(e.s, &c.r, ffd, xd, e.upload(pb), nTok, nHeads, headDim))
		e.expect("rope/"+c.name, e.download(xd, len(x)), ref)
	}
}

func TestAttention(t *testing.T) {
	e := newEnv(t, 8)
	cases := []struct{ nQ, pos0, nHead, nKVHead, headDim int }{
		{1, 0, 4, 4, 64},     // first token
		{1, 999, 32, 8, 64},  // decode, GQA, many splits
		{1, 4100, 8, 2, 128}, // long context
		{1, 37, 6, 3, 80},    // head size not a multiple of the warp
		{17, 0, 8, 2, 64},    // prefill from empty
		{9, 300, 4, 1, 128},  // prefill after a prefix (MQA)
		{64, 64, 32, 8, 64},  // a prompt chunk
		{2, 5, 2, 2, 256},    // largest head size
	}
	for _, c := range cases {
		nCtx := c.pos0 + c.nQ
		q := e.randVec(c.nQ * c.nHead * c.headDim)
		kc := e.randVec(nCtx * c.nKVHead * c.headDim)
		vc := e.randVec(nCtx * c.nKVHead * c.headDim)
		scale := float32(1 / math.Sqrt(float64(c.headDim)))
		ref := make([]float32, len(q))
		kernels.Attention(ref, q, kc, vc, c.nQ, c.pos0, c.nHead, c.nKVHead, c.headDim, scale)
		out := e.poisoned(len(q))
		scratch := e.alloc(AttentionScratchBytes(c.nQ, c.nHead, c.headDim, nCtx))
		e.check(e.k.Attention(e.s, out, e.uploadF32(q), e.uploadF32(kc), e.uploadF32(vc), scratch,
			c.nQ, c.pos0, c.nHead, c.nKVHead, c.headDim, scale))
		e.expect(fmt.Sprintf("attention/q%d_pos%d_h%d_kv%d_d%d_splits%d", c.nQ, c.pos0, c.nHead, c.nKVHead, c.headDim,
			AttentionSplits(c.nQ, c.nHead, nCtx)), e.download(out, len(q)), ref)
	}
}

func TestArgmax(t *testing.T) {
	e := newEnv(t, 9)
	for _, n := range []int{1, 31, 4096, 128256} {
		rows := 3
		x := e.randVec(rows * n)
		want := make([]int32, rows)
		for r := 0; r < rows; r++ {
			best := 0
			for i := 1; i < n; i++ {
				if x[r*n+i] > x[r*n+best] {
					best = i
				}
			}
			if r == 1 && n > 2 { // a tie: the first index must win
				x[r*n+n-1] = x[r*n+best]
			}
			want[r] = int32(best)
		}
		out := e.alloc(int64(rows * 8))
		e.check(e.s.MemsetD32Async(out, 0xffffffff, int64(rows*2)))
		e.check(e.k.Argmax(e.s, out, e.uploadF32(x), rows, n))
		got := e.download(out, rows*2)
		for r := 0; r < rows; r++ {
			idx := int32(math.Float32bits(got[2*r]))
			if idx != want[r] || got[2*r+1] != x[r*n+int(want[r])] {
				t.Errorf("argmax n=%d row %d: got index %d value %v, want %d value %v", n, r, idx, got[2*r+1], want[r], x[r*n+int(want[r])])
			}
		}
	}
}

func TestBadArguments(t *testing.T) {
	// Argument checks need no device: they fail before any launch.
	k := &Kernels{fns: map[string]hip.Function{}}
	var s hip.Stream
	if err := k.MatVec(s, gguf.TypeQ4_0, 0, 0, 0, 4, 33); !errors.Is(err, hip.ErrInvalidValue) {
		t.Errorf("MatVec with ragged Q4_0 columns: %v", err)
	}
	if err := k.MatVec(s, gguf.TypeQ4_K, 8, 0, 0, 4, 256); !errors.Is(err, hip.ErrInvalidValue) {
		t.Errorf("MatVec with misaligned Q4_K weights: %v", err)
	}
	if err := k.MatVec(s, gguf.TypeIQ2_XS, 0, 0, 0, 4, 256); !errors.Is(err, hip.ErrNotSupported) {
		t.Errorf("MatVec with IQ2_XS: %v", err)
	}
	if err := k.Attention(s, 0, 0, 0, 0, 0, 1, 0, 6, 4, 64, 1); !errors.Is(err, hip.ErrInvalidValue) {
		t.Errorf("Attention with 6 heads over 4 KV heads: %v", err)
	}
	if err := k.Attention(s, 0, 0, 0, 0, 0, 1, 0, 4, 4, 512, 1); !errors.Is(err, hip.ErrInvalidValue) {
		t.Errorf("Attention with head size 512: %v", err)
	}
}

func TestSourceIsOneUnit(t *testing.T) {
	src := Source()
	if strings.Contains(src, "\n#include \"compat.h\"") {
		t.Error("Source still includes compat.h")
	}
	for _, name := range kernelNames() {
		if !strings.Contains(src, name) && !strings.Contains(src, strings.SplitN(name, "_", 2)[0]) {
			t.Errorf("kernel %s not in the source", name)
		}
	}
	if len(SourceFiles()) != 1+len(sourceFiles) {
		t.Errorf("SourceFiles: %d files, want %d", len(SourceFiles()), 1+len(sourceFiles))
	}
}

func TestLoadOnHost(t *testing.T) {
	dev, err := hip.Open("host", hip.Options{HostMemory: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := Load(dev); !errors.Is(err, ErrHost) {
		t.Errorf("Load on the host driver: %v, want ErrHost", err)
	}
}

// benchSource is a test-only kernel that keeps the GPU busy for a number of
// clock cycles, so that the launches timed after it are all queued before
// the first one runs: the events then time the kernels back to back, not
// the host's launch rate.
const benchSource = `
extern "C" __global__ void fp_bench_sleep(long long cycles) {
	long long t0 = clock64();
	while (clock64() - t0 < cycles) {}
}
extern "C" __global__ void fp_bench_empty(float* p) {
	if (p && threadIdx.x == 0 && blockIdx.x == 0) p[0] = 1.f;
}
`

// timeLaunches returns the device milliseconds of n launches by launch
// (timed with events, queued behind a sleep of sleepCycles) and the host
// microseconds one launch call took to enqueue.
func (e *env) timeLaunches(n int, sleepCycles int64, launch func(i int)) (ms float64, hostUS float64) {
	e.t.Helper()
	if e.sleep == nil {
		mod, err := e.dev.LoadModule(hip.ModuleSpec{Name: "gpu-bench", Source: benchSource})
		e.check(err)
		e.sleep, err = mod.Function("fp_bench_sleep")
		e.check(err)
	}
	start, err := e.dev.EventCreate()
	e.check(err)
	stop, err := e.dev.EventCreate()
	e.check(err)
	defer start.Destroy()
	defer stop.Destroy()
	e.check(e.s.Launch(e.sleep, hip.Dim1(1), hip.Dim1(1), 0, hip.Int64(sleepCycles)))
	e.check(start.Record(e.s))
	t0 := time.Now()
	for i := 0; i < n; i++ {
		launch(i)
	}
	hostUS = float64(time.Since(t0).Microseconds()) / float64(n)
	e.check(stop.Record(e.s))
	e.check(stop.Synchronize(context.Background()))
	if e.s.Query() != nil {
		e.t.Fatal("stream not idle after its last event")
	}
	f, err := e.dev.EventElapsedTime(start, stop)
	e.check(err)
	return float64(f), hostUS
}

// BenchmarkMatVec measures decode matrix-vector products: weight bytes read
// per second, timed with device events around b.N launches that rotate over
// copies of the matrix (more than the GPU's L2 cache together) and are all
// queued before the first runs. host-us/op is the host's cost to enqueue
// one launch; if it exceeds the sleep's share, the figure is host-bound and
// the benchmark says so. Variants: r1/r2/r4 rows per block; none: MatVec
// (float32 activations); decoded: MatVec through the plain decoder
// (FORGEPIPE_BENCH_ALL); q8act: MatVecQ8 (int8 activations, weights read
// in place); staged: MatVecQ8 with the weights staged in shared memory
// (matvec8s). With FORGEPIPE_BENCH_TUNE also staged/split<n> (warps per
// row group) and grid<n> (MatVec's blocks capped, striding).
func BenchmarkMatVec(b *testing.B) {
	e := newEnv(b, 10)
	types := []gguf.Type{gguf.TypeF16, gguf.TypeQ8_0, gguf.TypeQ4_0, gguf.TypeQ4_K, gguf.TypeQ6_K, gguf.TypeBF16, gguf.TypeQ5_K, gguf.TypeQ2_K}
	if os.Getenv("FORGEPIPE_BENCH_ALL") == "" {
		types = types[:5]
	}
	type variant struct {
		name string
		q8   bool
		tune mvTune
	}
	defer func() { e.k.mvt = mvTune{} }()
	for _, sh := range [][2]int{{4096, 4096}, {2048, 8192}} {
		rows, cols := sh[0], sh[1]
		for _, typ := range types {
			vs := []variant{{name: ""}}
			if hasDecoded(typ) && os.Getenv("FORGEPIPE_BENCH_ALL") != "" {
				vs = append(vs, variant{name: "decoded"})
			}
			if HasMatVecQ8(typ) {
				vs = append(vs, variant{name: "q8act", q8: true}, variant{name: "staged", q8: true, tune: mvTune{staged: true}})
			}
			if benchTune() {
				for _, g := range []int{528, 1056} {
					vs = append(vs, variant{name: fmt.Sprintf("grid%d", g), tune: mvTune{gridCap: g}})
				}
				if HasMatVecQ8(typ) {
					for _, sp := range []int{1, 2, 4} {
						vs = append(vs, variant{name: fmt.Sprintf("staged/split%d", sp), q8: true, tune: mvTune{staged: true, split: sp}})
					}
				}
			}
			m := e.benchMatrix(typ, rows, cols)
			x := e.uploadF32(e.randVec(cols))
			y := e.alloc(int64(rows) * 4)
			xq := e.alloc(ActQ8Bytes(cols))
			e.check(e.k.QuantizeActQ8(e.s, x, xq, cols))
			for _, v := range vs {
				for _, rpb := range []int{1, 2, 4} {
					name := fmt.Sprintf("%s/%dx%d/r%d", typ, rows, cols, rpb)
					if v.name != "" {
						name += "/" + v.name
					}
					b.Run(name, func(b *testing.B) {
						e.k.mvt = v.tune
						defer func() { e.k.mvt = mvTune{} }()
						e.timeMatVec(b, m, func(w hip.DevicePtr) {
							if v.q8 {
								e.check(e.k.MatVecQ8R(e.s, typ, rpb, w, xq, y, rows, cols))
								return
							}
							e.check(e.k.matVec(e.s, typ, rpb, v.name == "decoded", w, x, y, rows, cols))
						})
					})
				}
			}
			e.freeBenchMatrix(m)
		}
	}
}

// BenchmarkCopy measures the device's copy bandwidth, the ceiling for the
// products above: bytes read plus written per second by a 512 MiB
// device-to-device copy.
func BenchmarkCopy(b *testing.B) {
	e := newEnv(b, 11)
	const size = 512 << 20
	src, dst := e.alloc(size), e.alloc(size)
	e.check(e.s.MemsetD32Async(src, 0x3f800000, size/4))
	e.sync()
	ms, _ := e.timeLaunches(b.N, 20_000_000, func(int) { e.check(e.s.MemcpyDtoDAsync(dst, src, size)) })
	per := ms / 1e3 / float64(b.N)
	b.ReportMetric(2*size/per/1e9, "GB/s")
	b.ReportMetric(per*1e6, "us/op")
}

// BenchmarkLaunch measures the device time of an empty kernel queued back
// to back: the floor under every small kernel of a decode step (a graph
// would lower it).
func BenchmarkLaunch(b *testing.B) {
	e := newEnv(b, 12)
	e.timeLaunches(1, 1, func(int) {}) // loads the module
	mod, err := e.dev.LoadModule(hip.ModuleSpec{Name: "gpu-bench", Source: benchSource})
	e.check(err)
	empty, err := mod.Function("fp_bench_empty")
	e.check(err)
	for _, blocks := range []uint32{1, 1024} {
		b.Run(fmt.Sprintf("blocks%d", blocks), func(b *testing.B) {
			ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, func(int) {
				e.check(e.s.Launch(empty, hip.Dim1(blocks), hip.Dim1(128), 0, hip.Ptr(0)))
			})
			b.ReportMetric(ms*1e3/float64(b.N), "us/op")
			b.ReportMetric(hostUS, "host-us/op")
		})
	}
}

// BenchmarkQuantizeAct times QuantizeActQ8, which one layer runs twice per
// token (before QKV and before gate/up).
func BenchmarkQuantizeAct(b *testing.B) {
	e := newEnv(b, 14)
	for _, n := range []int{4096, 8192} {
		x, xq := e.uploadF32(e.randVec(n)), e.alloc(ActQ8Bytes(n))
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, func(int) { e.check(e.k.QuantizeActQ8(e.s, x, xq, n)) })
			b.ReportMetric(ms*1e3/float64(b.N), "us/op")
			b.ReportMetric(hostUS, "host-us/op")
		})
	}
}

func TestEmbeddingArgmax(t *testing.T) { checkEmbeddingArgmax(t, newEnv(t, 12)) }

// checkEmbeddingArgmax picks tokens with Argmax and embeds them from its
// output: each row must be, bit for bit, the host's embedding of the
// argmax the host finds (ties included: the first index).
func checkEmbeddingArgmax(t *testing.T, e *env) {
	for _, typ := range []gguf.Type{gguf.TypeF32, gguf.TypeF16, gguf.TypeQ8_0, gguf.TypeQ4_K} {
		vocab, cols := 300, max(typ.BlockSize(), 8)*2
		data, _ := e.randWeights(typ, vocab, cols)
		w := e.upload(data)
		for _, n := range []int{1, 3} {
			x := e.randVec(n * vocab)
			want := make([]int, n)
			for r := range n {
				row := x[r*vocab : (r+1)*vocab]
				for i := range row {
					if row[i] > row[want[r]] {
						want[r] = i
					}
				}
				if r == 1 { // a tie after the best: the first index must win
					row[vocab-1] = row[want[r]]
				}
			}
			picked := e.alloc(int64(8 * n))
			e.check(e.k.Argmax(e.s, picked, e.uploadF32(x), n, vocab))
			out := e.poisoned(n * cols)
			e.check(e.k.EmbeddingArgmax(e.s, typ, w, picked, out, n, vocab, cols))
			got := e.download(out, n*cols)
			for r := range n {
				ref := make([]float32, cols)
				e.check(kernels.Embedding(ref, kernels.Mat{Type: typ, Rows: vocab, Cols: cols, Data: data}, want[r]))
				if !sameBits(got[r*cols:(r+1)*cols], ref) {
					t.Errorf("%s n=%d row %d: got %v, want token %d: %v", typ, n, r, got[r*cols:r*cols+4], want[r], ref[:4])
				}
			}
		}
	}
}
