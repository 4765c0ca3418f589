package cuda

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/hip/hiptest"
	"github.com/forgepipe/forgepipe/hip/internal/gpu"
	"github.com/rs/zerolog"
)

// open opens GPU 0 with its kernel cache in dir (a fresh one if empty), or
// skips the test where there is no CUDA GPU.
func open(t testing.TB, dir string) *Device {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	dev, err := Open(hip.Options{}, Config{CacheDir: dir})
	if errors.Is(err, hip.ErrNotSupported) || errors.Is(err, hip.ErrNoDevice) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return dev
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestNoDriver checks, where libcuda.so.1 is missing, that Open says so
// with ErrNotSupported and that "auto" falls back to another driver.
func TestNoDriver(t *testing.T) {
	_, err := Open(hip.Options{}, Config{})
	if err == nil || errors.Is(err, hip.ErrNoDevice) {
		t.Skip("libcuda.so.1 is installed here")
	}
	if !errors.Is(err, hip.ErrNotSupported) || !strings.Contains(err.Error(), "no CUDA driver (libcuda.so.1 not found)") {
		t.Fatalf("Open without libcuda: %v", err)
	}
	_, err = hip.Open("cuda", hip.Options{})
	if !errors.Is(err, hip.ErrNotSupported) || !strings.Contains(err.Error(), "libcuda.so.1 not found") {
		t.Fatalf(`hip.Open("cuda") without libcuda: %v`, err)
	}
	var logs bytes.Buffer
	logger := zerolog.New(&logs)
	dev, err := hip.Open("auto", hip.Options{Logger: &logger, HostMemory: 1 << 20})
	must(t, err)
	defer dev.Close()
	if dev.Driver() == "cuda" || !strings.Contains(logs.String(), "libcuda.so.1 not found") {
		t.Fatalf("auto chose %s, logging %s", dev.Driver(), logs.String())
	}
}

// TestAutoPicksCUDA: on a GPU machine "auto" opens cuda and logs it.
func TestAutoPicksCUDA(t *testing.T) {
	open(t, "") // skips without a GPU
	var logs bytes.Buffer
	logger := zerolog.New(&logs)
	dev, err := hip.Open("auto", hip.Options{Logger: &logger})
	must(t, err)
	defer dev.Close()
	if dev.Driver() != "cuda" || !strings.Contains(logs.String(), `"backend":"cuda"`) {
		t.Fatalf("auto chose %s: %s", dev.Driver(), logs.String())
	}
	t.Log(strings.TrimSpace(logs.String()))
	if p, v, err := NVRTC(); err == nil {
		t.Logf("nvrtc %s at %s", v, p)
	} else {
		t.Log(err)
	}
	if p, v, err := CUBLAS(); err == nil {
		t.Logf("%s at %s", v, p)
	} else {
		t.Log(err)
	}
}

// TestConformance runs hip's conformance suite on GPU 0.
func TestConformance(t *testing.T) {
	dev := open(t, "")
	hiptest.Conformance(t, dev)
}

// TestDependentLaunchAvailable: dependent launches use cuLaunchKernelEx on
// sm_90 and later with a CUDA 12.3 driver or later, and only there.
func TestDependentLaunchAvailable(t *testing.T) {
	dev := open(t, "")
	cc, err := strconv.Atoi(strings.TrimPrefix(dev.Arch(), "sm_")) // major and a one-digit minor
	must(t, err)
	major := cc / 10
	want := major >= programmaticMinMajor && driver.version >= programmaticMinDriver
	t.Logf("%s, driver %d: dependent launch %v", dev.Arch(), driver.version, dev.DependentLaunch())
	if dev.DependentLaunch() != want {
		t.Fatalf("DependentLaunch() = %v on %s with driver %d, want %v", dev.DependentLaunch(), dev.Arch(), driver.version, want)
	}
}

// TestKernelCache: the first load compiles, a second load and a second
// start (a new device on the same cache) compile nothing.
func TestKernelCache(t *testing.T) {
	dir := t.TempDir()
	dev := open(t, dir)
	spec := hip.ModuleSpec{Name: "cachetest", Source: hiptest.Source + "\n// " + t.Name() + time.Now().String()}
	t0 := time.Now()
	m, err := dev.LoadModule(spec)
	must(t, err)
	compile := time.Since(t0)
	must(t, m.Unload())
	if dev.Compiles() != 1 || dev.CacheHits() != 0 {
		t.Fatalf("first load: %d compiles, %d cache hits; want 1, 0", dev.Compiles(), dev.CacheHits())
	}
	t0 = time.Now()
	m, err = dev.LoadModule(spec)
	must(t, err)
	hit := time.Since(t0)
	must(t, m.Unload())
	if dev.Compiles() != 1 || dev.CacheHits() != 1 {
		t.Fatalf("second load: %d compiles, %d cache hits; want 1, 1", dev.Compiles(), dev.CacheHits())
	}
	must(t, dev.Close())

	dev2 := open(t, dir) // a second start
	m, err = dev2.LoadModule(spec)
	must(t, err)
	if dev2.Compiles() != 0 || dev2.CacheHits() != 1 {
		t.Fatalf("second start: %d compiles, %d cache hits; want 0, 1", dev2.Compiles(), dev2.CacheHits())
	}
	// The cached code runs.
	f, err := m.Function("hiptest_fill")
	must(t, err)
	s, err := dev2.StreamCreate()
	must(t, err)
	p, err := dev2.Malloc(4 * 100)
	must(t, err)
	must(t, s.Launch(f, hip.Dim1(1), hip.Dim1(128), 0, hip.Ptr(p), hip.Uint32(100), hip.Uint32(77)))
	out := make([]byte, 400)
	must(t, s.MemcpyDtoHAsync(out, p))
	must(t, s.Synchronize(ctx(t)))
	for i := 0; i < 400; i += 4 {
		if out[i] != 77 {
			t.Fatalf("word %d is %d after the cached fill", i/4, out[i])
		}
	}
	t.Logf("nvrtc compile + load %v, cache hit + load %v (arch %s, cache %s)", compile, hit, dev2.Arch(), dev2.CacheDir())

	// A source that does not compile says why.
	_, err = dev2.LoadModule(hip.ModuleSpec{Name: "broken", Source: `extern "C" __global__ void k() { undeclared(); }`})
	if !errors.Is(err, hip.ErrInvalidValue) || !strings.Contains(err.Error(), "undeclared") {
		t.Fatalf("broken source: %v", err)
	}
}

// TestGemmVsHost compares cuBLAS with the host driver's GEMM on random
// data at sizes the suite's exact tests do not reach.
func TestGemmVsHost(t *testing.T) {
	dev := open(t, "")
	host, err := hip.OpenHost(hip.Options{HostMemory: 1 << 30})
	must(t, err)
	defer host.Close()
	const m, n, k = 384, 200, 520
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		ab, c hip.DataType
		tol   float64
	}{
		{hip.R32F, hip.R32F, 1e-5}, {hip.R16F, hip.R32F, 1e-5}, {hip.R16BF, hip.R32F, 1e-5},
		{hip.R16F, hip.R16F, 1e-3}, {hip.R16BF, hip.R16BF, 1e-2},
	} {
		a, b := randomBytes(r, m*k, tc.ab), randomBytes(r, k*n, tc.ab)
		var outs [2][]float64
		for i, d := range []hip.Device{dev, host} {
			s, err := d.StreamCreate()
			must(t, err)
			h, err := d.BLASCreate(s)
			must(t, err)
			pa, pb, pc := mallocCopy(t, d, s, a), mallocCopy(t, d, s, b), mallocCopy(t, d, s, make([]byte, m*n*tc.c.Size()))
			if tc.ab == hip.R32F {
				must(t, h.Sgemm(hip.OpT, hip.OpN, m, n, k, 1, pa, k, pb, k, 0, pc, m))
			} else {
				must(t, h.GemmEx(hip.OpT, hip.OpN, m, n, k, 1, pa, tc.ab, k, pb, tc.ab, k, 0, pc, tc.c, m))
			}
			out := make([]byte, m*n*tc.c.Size())
			must(t, s.MemcpyDtoHAsync(out, pc))
			must(t, s.Synchronize(ctx(t)))
			outs[i] = decode(out, tc.c)
			must(t, h.Destroy())
			must(t, s.Destroy())
		}
		var num, den float64
		for i := range outs[0] {
			num += (outs[0][i] - outs[1][i]) * (outs[0][i] - outs[1][i])
			den += outs[1][i] * outs[1][i]
		}
		rel := math.Sqrt(num / den)
		t.Logf("%v×%v→%v %d×%d×%d: ‖cuBLAS − host‖/‖host‖ = %.2e", tc.ab, tc.ab, tc.c, m, n, k, rel)
		if !(rel <= tc.tol) {
			t.Errorf("%v→%v: relative error %.2e over %.0e", tc.ab, tc.c, rel, tc.tol)
		}
	}
}

func randomBytes(r *rand.Rand, n int, t hip.DataType) []byte {
	out := make([]byte, n*t.Size())
	for i := range n {
		v := float32(r.NormFloat64())
		switch t {
		case hip.R32F:
			*(*float32)(unsafe.Pointer(&out[4*i])) = v
		case hip.R16F:
			*(*uint16)(unsafe.Pointer(&out[2*i])) = gguf.FP32ToFP16(v)
		case hip.R16BF:
			*(*uint16)(unsafe.Pointer(&out[2*i])) = gguf.FP32ToBF16(v)
		}
	}
	return out
}

func decode(b []byte, t hip.DataType) []float64 {
	out := make([]float64, len(b)/t.Size())
	for i := range out {
		switch t {
		case hip.R32F:
			out[i] = float64(*(*float32)(unsafe.Pointer(&b[4*i])))
		case hip.R16F:
			out[i] = float64(gguf.FP16ToFP32(*(*uint16)(unsafe.Pointer(&b[2*i]))))
		case hip.R16BF:
			out[i] = float64(gguf.BF16ToFP32(*(*uint16)(unsafe.Pointer(&b[2*i]))))
		}
	}
	return out
}

func mallocCopy(t testing.TB, d hip.Device, s hip.Stream, b []byte) hip.DevicePtr {
	p, err := d.Malloc(int64(len(b)))
	must(t, err)
	t.Cleanup(func() { d.Free(p) })
	must(t, s.MemcpyHtoDAsync(p, b))
	return p
}

// TestLaunchOverhead measures the host's cost of enqueueing an empty
// kernel: through Launch, through the bare gpu.Call(cuLaunchKernel) it is
// built on and through purego.SyscallN itself, in batches small enough
// that the launch queue never fills, the methods interleaved; and the
// cost of a cheap call (cuStreamQuery on an idle stream) with and without
// the wrapper's checks, locks and context check.
func TestLaunchOverhead(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	dev := open(t, "")
	m, err := dev.LoadModule(hip.ModuleSpec{Name: "empty", Source: hiptest.Source})
	must(t, err)
	f, err := m.Function("hiptest_empty")
	must(t, err)
	s, err := dev.StreamCreate()
	must(t, err)
	p, err := dev.Malloc(64)
	must(t, err)
	args := []hip.Arg{hip.Ptr(p), hip.Uint32(1), hip.Uint32(2)}
	dependent := hip.LaunchConfig{Grid: hip.Dim1(1), Block: hip.Dim1(32), Dependent: true}
	sym := driver.sym["cuLaunchKernel"]
	fh, sh := gpu.FunctionHandle(f), gpu.StreamHandle(s)
	params := new([3]uint64)
	*params = [3]uint64{uint64(p), 1, 2}
	ptrs := new([3]uintptr)
	for i := range ptrs {
		ptrs[i] = uintptr(unsafe.Pointer(&params[i]))
	}
	pp := uintptr(unsafe.Pointer(ptrs))
	methods := []struct {
		name   string
		launch func()
	}{
		{"Launch", func() { must(t, s.Launch(f, hip.Dim1(1), hip.Dim1(32), 0, args...)) }},
		{"LaunchEx dependent", func() { must(t, s.LaunchEx(f, dependent, args...)) }},
		{"gpu.Call(cuLaunchKernel)", func() {
			if st := gpu.Call(sym, fh, 1, 1, 1, 32, 1, 1, 0, sh, pp, 0); st != 0 {
				t.Fatal(cuErr("cuLaunchKernel", st))
			}
		}},
		{"purego.SyscallN(cuLaunchKernel)", func() {
			if r, _, _ := purego.SyscallN(sym.Fn, fh, 1, 1, 1, 32, 1, 1, 0, sh, pp, 0); r != 0 {
				t.Fatal(cuErr("cuLaunchKernel", gpu.Status(r)))
			}
		}},
	}
	for _, batch := range []int{16, 256} {
		per := make([][]time.Duration, len(methods))
		for range 100 {
			for i, m := range methods {
				t0 := time.Now()
				for range batch {
					m.launch()
				}
				per[i] = append(per[i], time.Since(t0)/time.Duration(batch))
				must(t, s.Synchronize(context.Background()))
			}
		}
		var line []string
		for i, m := range methods {
			slices.Sort(per[i])
			line = append(line, fmt.Sprintf("%s %v", m.name, per[i][len(per[i])/2]))
		}
		t.Logf("empty kernel launch, host cost per launch (median of 100 batches of %d): %s", batch, strings.Join(line, ", "))
	}

	// A cheap call, 100000 times each.
	query := driver.sym["cuStreamQuery"]
	bind := gpu.DeviceBind(dev)
	setCtx := driver.sym["cuCtxSetCurrent"]
	var cur uintptr
	gpu.Call(driver.sym["cuCtxGetCurrent"], uintptr(unsafe.Pointer(&cur)))
	cheap := []struct {
		name string
		fn   func()
	}{
		{"Stream.Query", func() { must(t, s.Query()) }},
		{"gpu.Call(cuStreamQuery)", func() { gpu.Call(query, sh) }},
		{"context bind (Device's)", func() { bind() }},
		{"cuCtxGetCurrent", func() { gpu.Call(driver.sym["cuCtxGetCurrent"], uintptr(unsafe.Pointer(&cur))) }},
		{"cuCtxSetCurrent", func() { gpu.Call(setCtx, cur) }},
	}
	var line []string
	for _, c := range cheap {
		const n = 100000
		t0 := time.Now()
		for range n {
			c.fn()
		}
		line = append(line, fmt.Sprintf("%s %v", c.name, time.Since(t0)/n))
	}
	t.Logf("cheap calls: %s", strings.Join(line, ", "))

	// GPU time per empty kernel, launches back to back, ordinary and dependent.
	start, stop := mustEvent(t, dev), mustEvent(t, dev)
	for _, dep := range []bool{false, true} {
		must(t, start.Record(s))
		const n = 2000
		for range n {
			must(t, s.LaunchEx(f, hip.LaunchConfig{Grid: hip.Dim1(1), Block: hip.Dim1(32), Dependent: dep}, args...))
		}
		must(t, stop.Record(s))
		must(t, stop.Synchronize(ctx(t)))
		ms, err := dev.EventElapsedTime(start, stop)
		must(t, err)
		t.Logf("device: %.2f µs per empty kernel, %d launched back to back (dependent %v, programmatic %v)",
			float64(ms)*1000/n, n, dep, dev.DependentLaunch())
	}
}

// TestHostFuncPanic: a host function that panics fails its stream with
// ErrLaunchFailure, stickily; other streams carry on.
func TestHostFuncPanic(t *testing.T) {
	dev := open(t, "")
	a, err := dev.StreamCreate()
	must(t, err)
	b, err := dev.StreamCreate()
	must(t, err)
	must(t, a.LaunchHostFunc(func() { panic("deliberate") }))
	err = a.Synchronize(ctx(t))
	if !errors.Is(err, hip.ErrLaunchFailure) || !strings.Contains(err.Error(), "deliberate") {
		t.Fatalf("Synchronize after a panicking host function: %v", err)
	}
	if err := a.Query(); !errors.Is(err, hip.ErrLaunchFailure) {
		t.Fatalf("Query: %v", err)
	}
	ran := make(chan struct{})
	must(t, b.LaunchHostFunc(func() { close(ran) }))
	must(t, b.Synchronize(ctx(t)))
	<-ran
}

func mustEvent(t testing.TB, dev *Device) hip.Event {
	e, err := dev.EventCreate()
	must(t, err)
	t.Cleanup(func() { e.Destroy() })
	return e
}

// TestCopyBandwidth measures host-to-device copies from pinned, registered
// and pageable memory, and device-to-host into pinned memory.
func TestCopyBandwidth(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	dev := open(t, "")
	const size = 256 << 20
	p, err := dev.Malloc(size)
	must(t, err)
	s, err := dev.StreamCreate()
	must(t, err)
	pinned, err := dev.HostAlloc(size)
	must(t, err)
	defer pinned.Free()
	pageable := make([]byte, size)
	registeredMem := make([]byte, size)
	for i := range pageable {
		pageable[i], registeredMem[i] = byte(i), byte(i)
	}
	copy(pinned.Bytes(), pageable)
	registered, err := dev.HostRegister(registeredMem)
	must(t, err)
	defer registered.Free()
	start, stop := mustEvent(t, dev), mustEvent(t, dev)
	rate := func(what string, copyOnce func() error) float64 {
		must(t, copyOnce()) // warm up
		must(t, s.Synchronize(ctx(t)))
		const reps = 5
		t0 := time.Now()
		must(t, start.Record(s))
		for range reps {
			must(t, copyOnce())
		}
		must(t, stop.Record(s))
		must(t, stop.Synchronize(ctx(t)))
		wall := time.Since(t0)
		ms, err := dev.EventElapsedTime(start, stop)
		must(t, err)
		gbs := float64(reps*size) / (float64(ms) / 1e3) / 1e9
		t.Logf("%-28s %6.1f GB/s (events), %6.1f GB/s (wall clock), %d × %d MiB", what, gbs,
			float64(reps*size)/wall.Seconds()/1e9, reps, size>>20)
		return gbs
	}
	pin := rate("HtoD from pinned (HostAlloc)", func() error { return s.MemcpyHtoDAsync(p, pinned.Bytes()) })
	rate("HtoD from HostRegister", func() error { return s.MemcpyHtoDAsync(p, registered.Bytes()) })
	page := rate("HtoD from pageable Go memory", func() error { return s.MemcpyHtoDAsync(p, pageable) })
	rate("DtoH into pinned", func() error { return s.MemcpyDtoHAsync(pinned.Bytes(), p) })
	rate("DtoH into pageable (staged)", func() error { return s.MemcpyDtoHAsync(pageable, p) })
	if pin < page {
		t.Errorf("pinned copies (%.1f GB/s) slower than pageable (%.1f GB/s)", pin, page)
	}
	// The staged copy delivered the data.
	must(t, s.Synchronize(ctx(t)))
	if !bytes.Equal(pageable[:1<<20], pinned.Bytes()[:1<<20]) {
		t.Fatal("staged DtoH copy differs from the pinned one")
	}
}

// TestGemmThroughput times one large bf16 product, for the report.
func TestGemmThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	dev := open(t, "")
	s, err := dev.StreamCreate()
	must(t, err)
	h, err := dev.BLASCreate(s)
	must(t, err)
	const n = 8192
	r := rand.New(rand.NewPCG(5, 6))
	a := mallocCopy(t, dev, s, randomBytes(r, n*n, hip.R16BF))
	b := mallocCopy(t, dev, s, randomBytes(r, n*n, hip.R16BF))
	c, err := dev.Malloc(n * n * 4)
	must(t, err)
	start, stop := mustEvent(t, dev), mustEvent(t, dev)
	gemm := func() {
		must(t, h.GemmEx(hip.OpT, hip.OpN, n, n, n, 1, a, hip.R16BF, n, b, hip.R16BF, n, 0, c, hip.R32F, n))
	}
	gemm()
	gemm()
	must(t, start.Record(s))
	const reps = 10
	for range reps {
		gemm()
	}
	must(t, stop.Record(s))
	must(t, stop.Synchronize(ctx(t)))
	ms, err := dev.EventElapsedTime(start, stop)
	must(t, err)
	t.Logf("GemmEx bf16×bf16→f32 %d³: %.1f TFLOP/s (%.2f ms each)", n, 2*float64(n)*n*n*reps/(float64(ms)/1e3)/1e12, float64(ms)/reps)
}

// BenchmarkGraphLaunch enqueues 16 small kernels (hiptest_step over 1024
// words, 4 blocks of 256 threads) as 16 Launch calls or as one launch of a
// graph captured from those calls, each ordinary or dependent
// (hip.LaunchConfig; programmatic on sm_90 and later). "queued" enqueues batches of 16 such
// steps behind a kernel that holds the stream, then releases it: host time
// per step is the enqueueing alone, GPU time (events) the kernels back to
// back with no host gaps. "synced" waits for each step before the next, as
// a decode step that needs its result does: wall time per step.
func BenchmarkGraphLaunch(b *testing.B) {
	const kernels, words, batch = 16, 1024, 16
	dev := open(b, "")
	m, err := dev.LoadModule(hip.ModuleSpec{Name: "graphbench", Source: hiptest.Source})
	must(b, err)
	f, err := m.Function("hiptest_step")
	must(b, err)
	spin, err := m.Function("hiptest_spin")
	must(b, err)
	release, err := m.Function("hiptest_release")
	must(b, err)
	s, err := dev.StreamCreate()
	must(b, err)
	r, err := dev.StreamCreate()
	must(b, err)
	x, err := dev.Malloc(4 * words)
	must(b, err)
	flag, err := dev.Malloc(4)
	must(b, err)
	launches := func(dependent bool) func(s hip.Stream) error {
		c := hip.LaunchConfig{Grid: hip.Dim1(words / 256), Block: hip.Dim1(256), Dependent: dependent}
		return func(s hip.Stream) error {
			for i := range kernels {
				if err := s.LaunchEx(f, c, hip.Ptr(x), hip.Uint32(words), hip.Uint32(uint32(i))); err != nil {
					return err
				}
			}
			return nil
		}
	}
	launch16, launch16dep := launches(false), launches(true)
	capture := func(launch func(hip.Stream) error) hip.Graph {
		must(b, s.BeginCapture())
		must(b, launch(s))
		g, err := s.EndCapture()
		must(b, err)
		b.Cleanup(func() { g.Destroy() })
		if g.Nodes() != kernels {
			b.Fatalf("graph of %d nodes, want %d", g.Nodes(), kernels)
		}
		return g
	}
	g, gdep := capture(launch16), capture(launch16dep)
	start, stop := mustEvent(b, dev), mustEvent(b, dev)
	for _, mode := range []struct {
		name string
		step func(hip.Stream) error
	}{
		{"Launch×16", launch16},
		{"Graph", g.Launch},
		{"Launch×16-dependent", launch16dep},
		{"Graph-dependent", gdep.Launch},
	} {
		b.Run(mode.name+"/queued", func(b *testing.B) {
			var host time.Duration
			var gpuMs float64
			for done := 0; done < b.N; done += batch {
				n := min(batch, b.N-done)
				must(b, s.MemsetD32Async(flag, 0, 1))
				must(b, s.Launch(spin, hip.Dim1(1), hip.Dim1(1), 0, hip.Ptr(flag)))
				must(b, start.Record(s))
				t0 := time.Now()
				for range n {
					must(b, mode.step(s))
				}
				host += time.Since(t0)
				must(b, stop.Record(s))
				must(b, r.Launch(release, hip.Dim1(1), hip.Dim1(1), 0, hip.Ptr(flag)))
				must(b, stop.Synchronize(ctx(b)))
				ms, err := dev.EventElapsedTime(start, stop)
				must(b, err)
				gpuMs += float64(ms)
			}
			b.ReportMetric(float64(host.Nanoseconds())/1e3/float64(b.N), "host-µs/step")
			b.ReportMetric(gpuMs*1e3/float64(b.N), "gpu-µs/step")
			b.ReportMetric(float64(host.Nanoseconds())/1e3/float64(b.N*kernels), "host-µs/kernel")
		})
		b.Run(mode.name+"/synced", func(b *testing.B) {
			must(b, s.Synchronize(ctx(b)))
			t0 := time.Now()
			for range b.N {
				must(b, mode.step(s))
				must(b, s.Synchronize(context.Background()))
			}
			b.ReportMetric(float64(time.Since(t0).Nanoseconds())/1e3/float64(b.N), "wall-µs/step")
		})
	}
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}
