package hiptest

import (
	"errors"
	"slices"
	"testing"

	"github.com/forgepipe/forgepipe/hip"
)

// endCapture ends the capture on s and destroys the graph when the test ends.
func endCapture(t testing.TB, s hip.Stream) hip.Graph {
	t.Helper()
	g, err := s.EndCapture()
	if err != nil {
		t.Fatalf("EndCapture: %v", err)
	}
	if g == nil {
		t.Fatal("EndCapture returned no graph and no error")
	}
	t.Cleanup(func() { g.Destroy() })
	return g
}

// testGraphCapture records a kernel, a device-to-device copy, two memsets
// and a second kernel, checks that nothing ran while recording, then
// launches the graph three times on the captured stream and once on
// another, clobbering the buffers before each launch: every launch must
// redo all of the work, with the arguments as they were at capture time.
func testGraphCapture(t *testing.T, e *env) {
	s, other := e.stream(t), e.stream(t)
	const n = 1000
	fill, stepFn := e.fn(t, "hiptest_fill"), e.fn(t, "hiptest_step")
	initial := iota32(n, 3, 1)
	x := e.upload(t, s, initial)
	y, z := e.malloc(t, 4*n), e.malloc(t, 4*n)

	// The same argument slice is reused and changed after each launch, as a
	// caller reusing a buffer would: the graph keeps the values at capture.
	args := []hip.Arg{hip.Ptr(x), hip.Uint32(n), hip.Uint32(7)}
	must(t, s.BeginCapture())
	launch1D(t, s, fill, n, args...)
	args[2] = hip.Uint32(1)
	launch1D(t, s, stepFn, n, args...)
	args[2] = hip.Uint32(2)
	must(t, s.MemcpyDtoDAsync(y, x, 4*n))
	must(t, s.MemsetD32Async(z, 0xabcd1234, n))
	must(t, s.MemsetD8Async(y, 0x11, 16))
	launch1D(t, s, stepFn, n, args...)
	args[0], args[2] = hip.Ptr(y), hip.Uint32(99)

	// Nothing has run: x still holds what was uploaded before the capture.
	syncStream(t, s) // waits for the work enqueued before the capture
	must(t, s.Query())
	equalU32(t, "x while capturing", download(t, other, x, n), initial)
	g := endCapture(t, s)
	equalU32(t, "x after EndCapture, before any launch", download(t, other, x, n), initial)
	if got := g.Nodes(); got != 6 {
		t.Errorf("graph has %d nodes, want 6 (2 kernels, a copy, 2 memsets, a kernel)", got)
	}

	wantX := slices.Repeat([]uint32{7}, n)
	step(wantX, 1)
	wantY := slices.Clone(wantX)
	for i := range 4 {
		wantY[i] = 0x11111111
	}
	step(wantX, 2)
	wantZ := slices.Repeat([]uint32{0xabcd1234}, n)

	st0 := e.dev.Stats()
	launches := []hip.Stream{s, s, s, other}
	for i, on := range launches {
		for _, p := range []hip.DevicePtr{x, y, z} {
			must(t, on.MemsetD32Async(p, 0xdeadbeef, n))
		}
		must(t, g.Launch(on))
		equalU32(t, "x after graph launch", download(t, on, x, n), wantX)
		equalU32(t, "y after graph launch", download(t, on, y, n), wantY)
		equalU32(t, "z after graph launch", download(t, on, z, n), wantZ)
		if t.Failed() {
			t.Fatalf("graph launch %d", i)
		}
	}
	st := e.dev.Stats()
	k := int64(len(launches))
	if got := st.GraphLaunches - st0.GraphLaunches; got != k {
		t.Errorf("Stats.GraphLaunches grew by %d over %d graph launches", got, k)
	}
	if got := st.Launches - st0.Launches; got != 3*k {
		t.Errorf("Stats.Launches grew by %d over %d launches of a graph of 3 kernels", got, k)
	}
	if got := st.CopiedDtoD - st0.CopiedDtoD; got != 4*n*k {
		t.Errorf("Stats.CopiedDtoD grew by %d over %d launches of a graph copying %d bytes", got, k, 4*n)
	}

	must(t, g.Destroy())
	if err := g.Destroy(); err != nil {
		wantCallErr(t, err, hip.ErrInvalidHandle)
	}
	wantCallErr(t, g.Launch(s), hip.ErrInvalidHandle)
}

// testGraphOutlivesStream launches a graph after the stream it was captured
// on is destroyed, and after another graph launch was enqueued behind a
// blocked kernel and the graph destroyed: launches already enqueued complete.
func testGraphOutlivesStream(t *testing.T, e *env) {
	s, err := e.dev.StreamCreate()
	must(t, err)
	const n = 256
	p := e.malloc(t, 4*n)
	must(t, s.BeginCapture())
	launch1D(t, s, e.fn(t, "hiptest_fill"), n, hip.Ptr(p), hip.Uint32(n), hip.Uint32(5))
	g, err := s.EndCapture()
	must(t, err)
	must(t, s.Destroy())

	a := e.stream(t)
	gate := e.newGate(t)
	must(t, a.MemsetD32Async(p, 0, n))
	must(t, gate.block(a))
	must(t, g.Launch(a))
	must(t, g.Destroy())
	wantCallErr(t, a.Query(), hip.ErrNotReady)
	gate.release()
	equalU32(t, "fill by a graph destroyed after its launch", download(t, a, p, n), slices.Repeat([]uint32{5}, n))
}

// testGraphEmpty: a capture that records nothing is a graph of no nodes,
// which launches and orders like any other work.
func testGraphEmpty(t *testing.T, e *env) {
	s := e.stream(t)
	must(t, s.BeginCapture())
	must(t, s.MemsetD32Async(e.malloc(t, 4), 1, 0)) // empty: records nothing
	g := endCapture(t, s)
	if got := g.Nodes(); got != 0 {
		t.Fatalf("empty capture: %d nodes", got)
	}
	for range 3 {
		must(t, g.Launch(s))
	}
	syncStream(t, s)
	x := iota32(8, 1, 1)
	equalU32(t, "round trip after empty graph launches", download(t, s, e.upload(t, s, x), 8), x)
}

// testCaptureWaits: while a stream captures, Query, Synchronize and the
// device's Synchronize see the work enqueued before the capture, and do not
// disturb it.
func testCaptureWaits(t *testing.T, e *env) {
	s := e.stream(t)
	p := e.malloc(t, 4)
	gate := e.newGate(t)
	must(t, gate.block(s))
	must(t, s.BeginCapture())
	wantCallErr(t, s.Query(), hip.ErrNotReady)
	launch1D(t, s, e.fn(t, "hiptest_fill"), 1, hip.Ptr(p), hip.Uint32(1), hip.Uint32(8))
	gate.release()
	syncStream(t, s)
	must(t, s.Query())
	must(t, e.dev.Synchronize(guard(t)))
	g := endCapture(t, s)
	if g.Nodes() != 1 {
		t.Fatalf("capture around waits: %d nodes, want 1", g.Nodes())
	}
	must(t, s.MemsetD32Async(p, 0, 1))
	must(t, g.Launch(s))
	equalU32(t, "the fill recorded around the waits", download(t, s, p, 1), []uint32{8})
}

// testCaptureErrors: capture calls out of place fail cleanly, and a call
// that fails while capturing fails the capture; the stream then works as
// before.
func testCaptureErrors(t *testing.T, e *env) {
	s := e.stream(t)
	_, err := s.EndCapture()
	wantCallErr(t, err, hip.ErrInvalidValue) // no BeginCapture
	must(t, s.BeginCapture())
	wantCallErr(t, s.BeginCapture(), hip.ErrInvalidValue) // already capturing; the capture goes on
	endCapture(t, s)
	_, err = s.EndCapture()
	wantCallErr(t, err, hip.ErrInvalidValue) // ended already

	p := e.malloc(t, 64)
	ev := e.event(t)
	must(t, ev.Record(s))
	must(t, s.BeginCapture())
	empty := endCapture(t, s)
	blas, blasErr := e.dev.BLASCreate(s)
	if blasErr == nil {
		t.Cleanup(func() { blas.Destroy() })
	}
	fill := e.fn(t, "hiptest_fill")
	for _, tc := range []struct {
		name string
		call func(s hip.Stream) error
		want error
	}{
		{"MemcpyHtoDAsync", func(s hip.Stream) error { return s.MemcpyHtoDAsync(p, make([]byte, 8)) }, hip.ErrNotSupported},
		{"MemcpyDtoHAsync", func(s hip.Stream) error { return s.MemcpyDtoHAsync(make([]byte, 8), p) }, hip.ErrNotSupported},
		{"LaunchHostFunc", func(s hip.Stream) error { return s.LaunchHostFunc(func() {}) }, hip.ErrNotSupported},
		{"WaitEvent", func(s hip.Stream) error { return s.WaitEvent(ev) }, hip.ErrNotSupported},
		{"Event.Record", func(s hip.Stream) error { return ev.Record(s) }, hip.ErrNotSupported},
		{"Graph.Launch", func(s hip.Stream) error { return empty.Launch(s) }, hip.ErrNotSupported},
		{"Sgemm", func(s hip.Stream) error {
			return blas.Sgemm(hip.OpN, hip.OpN, 2, 2, 2, 1, p, 2, p.Add(16), 2, 0, p.Add(32), 2)
		}, hip.ErrNotSupported},
		{"Launch with an empty grid", func(s hip.Stream) error {
			return s.Launch(fill, hip.Dim3{X: 0, Y: 1, Z: 1}, hip.Dim1(1), 0, hip.Ptr(p), hip.Uint32(1), hip.Uint32(1))
		}, hip.ErrInvalidValue},
		{"MemcpyDtoDAsync out of bounds", func(s hip.Stream) error { return s.MemcpyDtoDAsync(p, p.Add(32), 64) }, hip.ErrInvalidValue},
		{"MemsetD32Async out of bounds", func(s hip.Stream) error { return s.MemsetD32Async(p, 0, 17) }, hip.ErrInvalidValue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "Sgemm" && blasErr != nil {
				t.Skipf("no BLAS: %v", blasErr)
			}
			must(t, s.BeginCapture())
			launch1D(t, s, fill, 16, hip.Ptr(p), hip.Uint32(16), hip.Uint32(3))
			wantCallErr(t, tc.call(s), tc.want)
			launch1D(t, s, fill, 16, hip.Ptr(p), hip.Uint32(16), hip.Uint32(4)) // still recorded
			g, err := s.EndCapture()
			if g != nil {
				g.Destroy()
				t.Fatalf("EndCapture after a failed call returned a graph of %d nodes", g.Nodes())
			}
			wantCallErr(t, err, tc.want)
			// Nothing ran, and the stream works as before.
			must(t, s.MemsetD32Async(p, 9, 16))
			equalU32(t, "after the failed capture", download(t, s, p, 16), slices.Repeat([]uint32{9}, 16))
		})
	}

	// A stream destroyed while capturing drops the capture.
	d, err := e.dev.StreamCreate()
	must(t, err)
	must(t, d.BeginCapture())
	launch1D(t, d, fill, 16, hip.Ptr(p), hip.Uint32(16), hip.Uint32(3))
	must(t, d.Destroy())
	_, err = d.EndCapture()
	wantCallErr(t, err, hip.ErrInvalidHandle)
	x := iota32(16, 2, 2)
	equalU32(t, "after a dropped capture", download(t, s, e.upload(t, s, x), 16), x)
}

// testGraphFault (host driver): an operation of a graph that fails when it
// runs fails the stream it was launched on, stickily, and the graph's later
// operations do not run; a graph launch on a failed stream returns its error.
func testGraphFault(t *testing.T, e *env) {
	s := e.stream(t)
	p, q := e.malloc(t, 4), e.malloc(t, 4)
	gone, err := e.dev.Malloc(16)
	must(t, err)
	must(t, e.dev.Free(gone))
	fill := e.fn(t, "hiptest_fill")
	must(t, s.BeginCapture())
	launch1D(t, s, fill, 1, hip.Ptr(p), hip.Uint32(1), hip.Uint32(5))
	must(t, s.Launch(e.fn(t, "hiptest_touch"), hip.Dim1(1), hip.Dim1(1), 0, hip.Ptr(gone)))
	launch1D(t, s, fill, 1, hip.Ptr(q), hip.Uint32(1), hip.Uint32(6))
	g := endCapture(t, s)

	a, b := e.stream(t), e.stream(t)
	must(t, b.MemsetD32Async(q, 0, 1))
	syncStream(t, b)
	must(t, g.Launch(a))
	err = a.Synchronize(guard(t))
	wantCallErr(t, err, hip.ErrLaunchFailure)
	if !errors.Is(err, hip.ErrInvalidDevicePointer) {
		t.Errorf("error %q lost its cause, ErrInvalidDevicePointer", err)
	}
	equalU32(t, "the graph's first fill", download(t, b, p, 1), []uint32{5})
	equalU32(t, "the fill after the fault", download(t, b, q, 1), []uint32{0})
	wantCallErr(t, g.Launch(a), hip.ErrLaunchFailure)
	must(t, g.Launch(b)) // another stream is unaffected until the fault runs there
	wantCallErr(t, b.Synchronize(guard(t)), hip.ErrLaunchFailure)
}

// testDependentLaunch: dependent launches (hip.LaunchConfig.Dependent) keep
// stream order on every driver. A chain of order-dependent kernels, most of
// them dependent, with ordinary launches, copies and memsets between them,
// runs behind a blocked kernel, then captured into a graph launched twice:
// each run must give the CPU's result.
func testDependentLaunch(t *testing.T, e *env) {
	s := e.stream(t)
	const n = 1000
	stepFn, fill := e.fn(t, "hiptest_step"), e.fn(t, "hiptest_fill")
	x, y := e.malloc(t, 4*n), e.malloc(t, 4*n)
	dep := hip.LaunchConfig{Grid: hip.Dim1((n + 255) / 256), Block: hip.Dim1(256), Dependent: true}
	initial := iota32(n, 7, 1)
	// chain enqueues the work on s and returns the kernels it launched.
	chain := func(model []uint32) int64 {
		kernels := int64(0)
		for i := range uint32(60) {
			must(t, s.LaunchEx(stepFn, dep, hip.Ptr(x), hip.Uint32(n), hip.Uint32(i)))
			step(model, i)
			kernels++
			switch i % 6 {
			case 1: // an ordinary launch between dependent ones
				launch1D(t, s, stepFn, n, hip.Ptr(x), hip.Uint32(n), hip.Uint32(500+i))
				step(model, 500+i)
				kernels++
			case 2: // a memset, then a dependent kernel over part of what it set
				must(t, s.MemsetD32Async(x.Add(4*int64(i)), 0x5a5a5a5a+i, 17))
				for j := range 17 {
					model[int(i)+j] = 0x5a5a5a5a + i
				}
				must(t, s.LaunchEx(fill, hip.LaunchConfig{Grid: hip.Dim1(1), Block: hip.Dim1(32), Dependent: true},
					hip.Ptr(x.Add(4*int64(i)+8)), hip.Uint32(5), hip.Uint32(i)))
				for j := 2; j < 7; j++ {
					model[int(i)+j] = i
				}
				kernels++
			case 4: // a round trip through y
				must(t, s.MemcpyDtoDAsync(y, x, 4*n))
				must(t, s.LaunchEx(stepFn, dep, hip.Ptr(y), hip.Uint32(n), hip.Uint32(1000+i)))
				must(t, s.MemcpyDtoDAsync(x, y, 4*n))
				step(model, 1000+i)
				kernels++
			}
		}
		return kernels
	}

	// Directly, queued behind a blocked kernel.
	must(t, s.MemcpyHtoDAsync(x, u32bytes(slices.Clone(initial))))
	syncStream(t, s)
	g := e.newGate(t)
	must(t, g.block(s))
	st0 := e.dev.Stats()
	model := slices.Clone(initial)
	kernels := chain(model)
	if got := e.dev.Stats().Launches - st0.Launches; got != kernels {
		t.Errorf("Stats.Launches grew by %d over %d launches", got, kernels)
	}
	wantCallErr(t, s.Query(), hip.ErrNotReady)
	g.release()
	equalU32(t, "x after dependent launches", download(t, s, x, n), model)

	// Captured.
	must(t, s.BeginCapture())
	model = slices.Clone(initial)
	chain(model)
	graph := endCapture(t, s)
	for i := range 2 {
		must(t, s.MemcpyHtoDAsync(x, u32bytes(slices.Clone(initial))))
		must(t, graph.Launch(s))
		equalU32(t, "x after a graph of dependent launches", download(t, s, x, n), model)
		if t.Failed() {
			t.Fatalf("graph launch %d", i)
		}
	}

	// A dependent launch checks its configuration as Launch does.
	bad := dep
	bad.Grid.Y = 0
	wantCallErr(t, s.LaunchEx(stepFn, bad, hip.Ptr(x), hip.Uint32(n), hip.Uint32(0)), hip.ErrInvalidValue)
	syncStream(t, s)
}
