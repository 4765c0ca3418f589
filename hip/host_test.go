package hip_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/hip/hiptest"
)

// TestMain fails the package if any test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openHost opens a host device with the given budget that logs into logs
// (if not nil) and is closed when the test ends.
func openHost(t *testing.T, budget int64, logs *bytes.Buffer) *hip.HostDevice {
	t.Helper()
	logger := zerolog.Nop()
	if logs != nil {
		logger = zerolog.New(&syncWriter{w: logs})
	}
	dev, err := hip.OpenHost(hip.Options{HostMemory: budget, Logger: &logger})
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

// syncWriter serialises writes from stream goroutines into a buffer.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

func TestHostConformance(t *testing.T) {
	hiptest.Conformance(t, openHost(t, 256<<20, nil))
}

// TestHostConformanceSpinGate runs the suite with the GPU form of the gate,
// so that the path GPU drivers will take is itself exercised in CI.
func TestHostConformanceSpinGate(t *testing.T) {
	if testing.Short() {
		t.Skip("the channel-gated run covers the driver; this one covers the suite's GPU path")
	}
	hiptest.Run(t, openHost(t, 256<<20, nil), hiptest.Config{SpinGate: true})
}

func TestHostOutOfMemoryMessage(t *testing.T) {
	dev := openHost(t, 512<<20, nil)
	_, err := dev.Malloc(1 << 30)
	const want = "hipMalloc(1073741824): out of memory (host driver budget 512 MiB, 0 bytes in use)"
	if err == nil || err.Error() != want || !errors.Is(err, hip.ErrOutOfMemory) {
		t.Fatalf("got %v, want %q wrapping ErrOutOfMemory", err, want)
	}
}

// TestHostBudget fills the budget exactly, fails one byte past it, and
// succeeds again after a Free.
func TestHostBudget(t *testing.T) {
	const budget = 1 << 20
	dev := openHost(t, budget, nil)
	p, err := dev.Malloc(budget - 100)
	if err != nil {
		t.Fatal(err)
	}
	q, err := dev.Malloc(100)
	if err != nil {
		t.Fatalf("allocating the budget's last 100 bytes: %v", err)
	}
	if free, total, err := dev.MemGetInfo(); free != 0 || total != budget || err != nil {
		t.Fatalf("MemGetInfo = %d, %d, %v; want 0, %d", free, total, err, budget)
	}
	if _, err := dev.Malloc(1); !errors.Is(err, hip.ErrOutOfMemory) {
		t.Fatalf("Malloc past the budget: %v, want ErrOutOfMemory", err)
	}
	if err := dev.Free(q); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Malloc(100); err != nil {
		t.Fatalf("Malloc after Free: %v", err)
	}
	st := dev.Stats()
	if st.Allocated != budget || st.PeakAllocated != budget || st.Allocations != 2 {
		t.Fatalf("stats %+v", st)
	}
	_ = p
}

// TestHostErrorMessages pins the exact messages of the errors people read.
func TestHostErrorMessages(t *testing.T) {
	dev := openHost(t, 1<<20, nil)
	s, err := dev.StreamCreate()
	if err != nil {
		t.Fatal(err)
	}
	p, _ := dev.Malloc(256)
	q, _ := dev.Malloc(8)
	if err := dev.Free(q); err != nil {
		t.Fatal(err)
	}
	mod, _ := dev.LoadModule(hip.ModuleSpec{Name: "m"})
	_, errKernel := mod.Function("nope")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{dev.Free(q), "hipFree(" + q.String() + "): invalid device pointer: already freed (double free)"},
		{s.MemcpyHtoDAsync(p.Add(250), make([]byte, 8)),
			"hipMemcpyHtoDAsync(" + p.Add(250).String() + ", 8 bytes): out of bounds: 8 bytes at offset 250 of a 256-byte allocation"},
		{s.MemcpyDtoHAsync(make([]byte, 4), q),
			"hipMemcpyDtoHAsync(" + q.String() + ", 4 bytes): invalid device pointer " + q.String() + ": not in a live allocation (freed, or never allocated)"},
		{errKernel, `hipModuleGetFunction("nope"): no host kernel registered under that name (module "m")`},
	} {
		if tc.err == nil || tc.err.Error() != tc.want {
			t.Errorf("got %v\nwant %s", tc.err, tc.want)
		}
	}
}

func TestOpenUnknownDriverMessage(t *testing.T) {
	_, err := hip.Open("bogus", hip.Options{})
	// Other tests register drivers of their own, so the list may be longer.
	if err == nil || !strings.HasPrefix(err.Error(), `hip.Open("bogus"): unknown driver (have auto, cuda, `) ||
		!strings.Contains(err.Error(), "host") || !strings.HasSuffix(err.Error(), "rocm)") {
		t.Fatalf("got %v", err)
	}
}

func TestHostView(t *testing.T) {
	dev := openHost(t, 1<<20, nil)
	s, err := dev.StreamCreate()
	if err != nil {
		t.Fatal(err)
	}
	p, err := dev.Malloc(16)
	if err != nil {
		t.Fatal(err)
	}
	src := []byte("sixteen bytes!!!")
	if err := s.MemcpyHtoDAsync(p, src); err != nil {
		t.Fatal(err)
	}
	if err := s.Synchronize(context.Background()); err != nil {
		t.Fatal(err)
	}
	v, err := dev.HostView(p.Add(8), 8)
	if err != nil || string(v) != "bytes!!!" {
		t.Fatalf("HostView = %q, %v", v, err)
	}
	v[0] = 'B' // a view aliases device memory
	out := make([]byte, 16)
	if err := s.MemcpyDtoHAsync(out, p); err != nil {
		t.Fatal(err)
	}
	if err := s.Synchronize(context.Background()); err != nil {
		t.Fatal(err)
	}
	if string(out) != "sixteen Bytes!!!" {
		t.Fatalf("device memory after writing through the view: %q", out)
	}
	if _, err := dev.HostView(p.Add(8), 9); !errors.Is(err, hip.ErrInvalidValue) {
		t.Fatalf("HostView past the end: %v", err)
	}
}

// TestHostKernelPanicLogged: the panic's stack goes to the device's log.
func TestHostKernelPanicLogged(t *testing.T) {
	var logs bytes.Buffer
	dev := openHost(t, 1<<20, &logs)
	s, _ := dev.StreamCreate()
	mod, _ := dev.LoadModule(hip.ModuleSpec{Name: "hiptest"})
	f, err := mod.Function("hiptest_panic")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Launch(f, hip.Dim1(1), hip.Dim1(1), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Synchronize(context.Background()); !errors.Is(err, hip.ErrLaunchFailure) {
		t.Fatalf("Synchronize after a panicking kernel: %v", err)
	}
	dev.Close() // waits for the stream goroutine, so the log is complete
	var line struct {
		Level, Kernel, Panic, Stack, Message string
	}
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log %q: %v", logs.String(), err)
	}
	if line.Level != "error" || line.Kernel != "hiptest_panic" || line.Panic != hiptest.PanicMessage ||
		!strings.Contains(line.Stack, "hiptest") {
		t.Fatalf("log line %+v", line)
	}
}

// TestHostCloseReleases closes a device with work queued behind a blocked
// kernel, a stream waiting on an event that will never be reached and a
// goroutine blocked in Synchronize: Close releases them all with ErrClosed
// and leaves no goroutine behind.
func TestHostCloseReleases(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dev, err := hip.OpenHost(hip.Options{HostMemory: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	started := make(chan struct{})
	a, _ := dev.StreamCreate()
	b, _ := dev.StreamCreate()
	ev, _ := dev.EventCreate()
	p, _ := dev.Malloc(64)
	var finished atomic.Bool
	if err := a.LaunchHostFunc(func() {
		close(started)
		<-release
		finished.Store(true)
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.MemcpyHtoDAsync(p, make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	if err := ev.Record(a); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitEvent(ev); err != nil {
		t.Fatal(err)
	}
	<-started
	syncErr := make(chan error, 2)
	go func() { syncErr <- b.Synchronize(context.Background()) }()
	go func() { syncErr <- ev.Synchronize(context.Background()) }()

	closed := make(chan error)
	go func() { closed <- dev.Close() }()
	// b's wait is interrupted and the waiters released while a's host
	// function still runs: Close must not need a to make progress first.
	for range 2 {
		if err := <-syncErr; !errors.Is(err, hip.ErrClosed) {
			t.Errorf("Synchronize during Close: %v, want ErrClosed", err)
		}
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a host function was still running", err)
	default:
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !finished.Load() {
		t.Fatal("Close returned before the running host function did")
	}
	if err := dev.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, err := range map[string]error{
		"Malloc":       func() error { _, err := dev.Malloc(8); return err }(),
		"StreamCreate": func() error { _, err := dev.StreamCreate(); return err }(),
		"HtoD":         a.MemcpyHtoDAsync(p, make([]byte, 8)),
		"Query":        b.Query(),
		"Record":       ev.Record(b),
	} {
		if !errors.Is(err, hip.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if st := dev.Stats(); st.Allocated != 0 {
		t.Errorf("%d bytes still allocated after Close", st.Allocated)
	}
}

func TestOpenAutoFallsBackToHost(t *testing.T) {
	var logs bytes.Buffer
	logger := zerolog.New(&logs)
	dev, err := hip.Open("auto", hip.Options{HostMemory: 1 << 20, Logger: &logger})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if dev.Driver() != "host" {
		t.Fatalf("auto opened %q, want host (no GPU drivers are built yet)", dev.Driver())
	}
	var line struct {
		Level, Backend, Requested, Why, Message string
		MemTotal                                int64 `json:"mem_total"`
	}
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log %q: %v", logs.String(), err)
	}
	if line.Level != "info" || line.Backend != "host" || line.Requested != "auto" || line.MemTotal != 1<<20 ||
		!strings.Contains(line.Why, "no CUDA driver") || !strings.Contains(line.Why, "no ROCm driver") {
		t.Fatalf("log line %+v", line)
	}
}

func TestOpenByName(t *testing.T) {
	for _, name := range []string{"cuda", "rocm"} {
		_, err := hip.Open(name, hip.Options{})
		if !errors.Is(err, hip.ErrNotSupported) || !strings.Contains(err.Error(), `hip.Open("`+name+`")`) {
			t.Errorf("Open(%q) = %v, want ErrNotSupported naming the call", name, err)
		}
	}
	if _, err := hip.Open("bogus", hip.Options{}); !errors.Is(err, hip.ErrInvalidValue) {
		t.Errorf("Open(bogus) = %v, want ErrInvalidValue", err)
	}
	if _, err := hip.Open("host", hip.Options{HostMemory: -1}); !errors.Is(err, hip.ErrInvalidValue) {
		t.Errorf("Open(host, HostMemory -1) = %v, want ErrInvalidValue", err)
	}
	logger := zerolog.Nop()
	dev, err := hip.Open("host", hip.Options{Logger: &logger})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, total, _ := dev.MemGetInfo(); total <= 0 {
		t.Fatalf("default host budget %d", total)
	}
}

// fakeDrivers numbers the drivers TestRegister registers, so that it can
// run more than once (-count) in one binary.
var fakeDrivers atomic.Int64

func TestRegister(t *testing.T) {
	opened := 0
	name := fmt.Sprintf("hiptest-fake-%d", fakeDrivers.Add(1))
	hip.Register(name, func(opts hip.Options) (hip.Device, error) {
		opened++
		return hip.OpenHost(opts)
	})
	logger := zerolog.Nop()
	dev, err := hip.Open(name, hip.Options{HostMemory: 1 << 20, Logger: &logger})
	if err != nil || opened != 1 {
		t.Fatalf("Open of a registered driver: %v (opened %d times)", err, opened)
	}
	dev.Close()
	for _, name := range []string{name, "host", "auto", ""} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", name)
				}
			}()
			hip.Register(name, func(hip.Options) (hip.Device, error) { return nil, nil })
		}()
	}
}

// TestHostForeignHandles: handles of one device are refused by another.
func TestHostForeignHandles(t *testing.T) {
	d1, d2 := openHost(t, 1<<20, nil), openHost(t, 1<<20, nil)
	s1, _ := d1.StreamCreate()
	s2, _ := d2.StreamCreate()
	e1, _ := d1.EventCreate()
	m1, _ := d1.LoadModule(hip.ModuleSpec{})
	f1, err := m1.Function("hiptest_empty")
	if err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Record on another device's stream":   e1.Record(s2),
		"WaitEvent on another device's event": s2.WaitEvent(e1),
		"Launch of another device's kernel":   s2.Launch(f1, hip.Dim1(1), hip.Dim1(1), 0),
		"BLASCreate on another device's stream": func() error {
			_, err := d2.BLASCreate(s1)
			return err
		}(),
	} {
		if !errors.Is(err, hip.ErrInvalidHandle) {
			t.Errorf("%s: %v, want ErrInvalidHandle", name, err)
		}
	}
}

func BenchmarkHostLaunchEmpty(b *testing.B) {
	dev, err := hip.OpenHost(hip.Options{HostMemory: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	s, _ := dev.StreamCreate()
	mod, _ := dev.LoadModule(hip.ModuleSpec{Name: "bench"})
	f, err := mod.Function("hiptest_empty")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := s.Launch(f, hip.Dim1(1), hip.Dim1(1), 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Synchronize(context.Background()); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkHostMemcpyHtoD(b *testing.B) {
	const size = 16 << 20
	dev, err := hip.OpenHost(hip.Options{HostMemory: 2 * size})
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	s, _ := dev.StreamCreate()
	p, _ := dev.Malloc(size)
	src, _ := dev.HostAlloc(size)
	// One copy first, so that page faults on first touch are not timed.
	if err := s.MemcpyHtoDAsync(p, src.Bytes()); err != nil {
		b.Fatal(err)
	}
	if err := s.Synchronize(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for b.Loop() {
		if err := s.MemcpyHtoDAsync(p, src.Bytes()); err != nil {
			b.Fatal(err)
		}
		if err := s.Synchronize(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(size)*float64(b.N)/b.Elapsed().Seconds()/(1<<30), "GiB/s")
}
