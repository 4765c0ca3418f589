package hiptest

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/forgepipe/forgepipe/hip"
)

// testStreamOrdering enqueues a few hundred order-dependent operations on
// one stream, with snapshots along the way, and replays them on the CPU:
// every operation must see the effects of those before it, and none of
// those after it.
func testStreamOrdering(t *testing.T, e *env) {
	s := e.stream(t)
	const n = 1000
	stepFn, fill := e.fn(t, "hiptest_step"), e.fn(t, "hiptest_fill")
	model := iota32(n, 7, 1)
	x := e.malloc(t, 4*n)
	y := e.malloc(t, 4*n)
	must(t, s.MemcpyHtoDAsync(x, u32bytes(slices.Clone(model))))
	var snaps, wants [][]uint32
	for i := range uint32(100) {
		launch1D(t, s, stepFn, n, hip.Ptr(x), hip.Uint32(n), hip.Uint32(i))
		step(model, i)
		switch i % 10 {
		case 3: // overwrite a window
			must(t, s.MemsetD32Async(x.Add(4*int64(i)), 0x5a5a5a5a+i, 17))
			for j := range 17 {
				model[int(i)+j] = 0x5a5a5a5a + i
			}
		case 7: // round trip through y
			must(t, s.MemcpyDtoDAsync(y, x, 4*n))
			launch1D(t, s, stepFn, n, hip.Ptr(y), hip.Uint32(n), hip.Uint32(1000+i))
			must(t, s.MemcpyDtoDAsync(x, y, 4*n))
			step(model, 1000+i)
		case 9: // a kernel over part of x
			launch1D(t, s, fill, 10, hip.Ptr(x.Add(40)), hip.Uint32(10), hip.Uint32(i))
			for j := 10; j < 20; j++ {
				model[j] = i
			}
		}
		if i%20 == 0 {
			snap := make([]uint32, n)
			must(t, s.MemcpyDtoHAsync(u32bytes(snap), x))
			snaps, wants = append(snaps, snap), append(wants, slices.Clone(model))
		}
	}
	final := make([]uint32, n)
	must(t, s.MemcpyDtoHAsync(u32bytes(final), x))
	syncStream(t, s)
	for k := range snaps {
		equalU32(t, "snapshot", snaps[k], wants[k])
	}
	equalU32(t, "final", final, model)
}

func testKernelArgs(t *testing.T, e *env) {
	s := e.stream(t)
	out := e.malloc(t, 48)
	must(t, s.Launch(e.fn(t, "hiptest_args"), hip.Dim1(1), hip.Dim1(1), 0,
		hip.Ptr(out), hip.Int32(-5), hip.Uint32(0xfffffff0), hip.Float32(1.5),
		hip.Int64(-1<<40), hip.Uint64(0x0123456789abcdef)))
	got := make([]uint64, 6)
	must(t, s.MemcpyDtoHAsync(u64bytes(got), out))
	syncStream(t, s)
	neg := int64(-1 << 40)
	want := []uint64{uint64(out), uint64(uint32(0xfffffffb)), 0xfffffff0,
		uint64(math.Float32bits(1.5)), uint64(neg), 0x0123456789abcdef}
	if !slices.Equal(got, want) {
		t.Fatalf("kernel saw arguments %#x, want %#x", got, want)
	}
}

func testUnknownKernel(t *testing.T, e *env) {
	_, err := e.mod.Function("hiptest_no_such_kernel")
	wantCallErr(t, err, hip.ErrNotFound)
	if !strings.Contains(err.Error(), "hiptest_no_such_kernel") {
		t.Errorf("error %q does not name the kernel", err)
	}
}

func testLaunchConfig(t *testing.T, e *env) {
	s := e.stream(t)
	fill := e.fn(t, "hiptest_fill")
	p := e.malloc(t, 4)
	args := []hip.Arg{hip.Ptr(p), hip.Uint32(1), hip.Uint32(1)}
	wantCallErr(t, s.Launch(fill, hip.Dim3{X: 0, Y: 1, Z: 1}, hip.Dim1(1), 0, args...), hip.ErrInvalidValue)
	wantCallErr(t, s.Launch(fill, hip.Dim1(1), hip.Dim3{X: 1, Y: 0, Z: 1}, 0, args...), hip.ErrInvalidValue)
	wantCallErr(t, s.Launch(fill, hip.Dim1(1), hip.Dim1(1), 0, hip.Ptr(p), hip.Arg{}, hip.Uint32(1)), hip.ErrInvalidValue)
	must(t, s.Launch(fill, hip.Dim1(1), hip.Dim1(1), 0, args...))
	syncStream(t, s) // rejected launches are not sticky
}

// testStreamsConcurrent blocks one stream and finishes work on another.
func testStreamsConcurrent(t *testing.T, e *env) {
	a, b := e.stream(t), e.stream(t)
	g := e.newGate(t)
	must(t, g.block(a))
	x := iota32(256, 5, 3)
	p := e.upload(t, b, x) // would hang if b waited for a
	equalU32(t, "stream b's round trip", download(t, b, p, 256), x)
	wantCallErr(t, a.Query(), hip.ErrNotReady)
	g.release()
	syncStream(t, a)
	must(t, a.Query())
}

// testWaitEvent: stream b waits on an event recorded on stream a after a
// blocked kernel; b's copy must see what a wrote, and nobody blocks.
func testWaitEvent(t *testing.T, e *env) {
	a, b, c := e.stream(t), e.stream(t), e.stream(t)
	const n = 512
	buf := e.upload(t, a, make([]uint32, n))
	done, bDone := e.event(t), e.event(t)
	g := e.newGate(t)

	must(t, g.block(a))
	launch1D(t, a, e.fn(t, "hiptest_fill"), n, hip.Ptr(buf), hip.Uint32(n), hip.Uint32(42))
	must(t, done.Record(a))
	must(t, b.WaitEvent(done))
	out := make([]uint32, n)
	must(t, b.MemcpyDtoHAsync(u32bytes(out), buf))
	must(t, bDone.Record(b))

	// An unrelated stream is not held up.
	x := iota32(64, 1, 1)
	equalU32(t, "stream c", download(t, c, e.upload(t, c, x), 64), x)

	for name, err := range map[string]error{
		"a.Query": a.Query(), "b.Query": b.Query(), "done.Query": done.Query(), "bDone.Query": bDone.Query(),
	} {
		if !errors.Is(err, hip.ErrNotReady) {
			t.Errorf("%s with a blocked: %v, want ErrNotReady", name, err)
		}
	}
	g.release()
	must(t, bDone.Synchronize(guard(t)))
	equalU32(t, "b's copy of a's result", out, slices.Repeat([]uint32{42}, n))
	must(t, done.Query())
	must(t, b.Query())
}

// testEventReRecord checks HIP's rule: a wait uses the event's most recent
// record at the time of the wait call, not a later one.
func testEventReRecord(t *testing.T, e *env) {
	a, b := e.stream(t), e.stream(t)
	ev, bDone := e.event(t), e.event(t)
	g1, g2 := e.newGate(t), e.newGate(t)
	p := e.malloc(t, 4)

	must(t, g1.block(a))
	must(t, ev.Record(a)) // record 1: after g1
	must(t, b.WaitEvent(ev))
	launch1D(t, b, e.fn(t, "hiptest_fill"), 1, hip.Ptr(p), hip.Uint32(1), hip.Uint32(9))
	must(t, bDone.Record(b))
	must(t, g2.block(a))
	must(t, ev.Record(a)) // record 2: after g2; b's wait keeps record 1

	g1.release()
	must(t, bDone.Synchronize(guard(t))) // hangs if b waited for record 2
	wantCallErr(t, ev.Query(), hip.ErrNotReady)
	g2.release()
	must(t, ev.Synchronize(guard(t)))
	must(t, ev.Query())
	equalU32(t, "b's fill", download(t, b, p, 1), []uint32{9})
}

func testEventQueryElapsed(t *testing.T, e *env) {
	a := e.stream(t)
	fresh := e.event(t)
	must(t, fresh.Query()) // never recorded: complete, as in HIP
	must(t, fresh.Synchronize(guard(t)))
	_, err := e.dev.EventElapsedTime(fresh, fresh)
	wantCallErr(t, err, hip.ErrInvalidHandle)

	g := e.newGate(t)
	pending := e.event(t)
	must(t, g.block(a))
	must(t, pending.Record(a))
	wantCallErr(t, pending.Query(), hip.ErrNotReady)
	_, err = e.dev.EventElapsedTime(pending, pending)
	wantCallErr(t, err, hip.ErrNotReady)
	g.release()
	must(t, pending.Synchronize(guard(t)))
	must(t, pending.Query())

	start, stop := e.event(t), e.event(t)
	const n = 1 << 14
	x := e.malloc(t, 4*n)
	must(t, start.Record(a))
	for i := range uint32(10) {
		launch1D(t, a, e.fn(t, "hiptest_step"), n, hip.Ptr(x), hip.Uint32(n), hip.Uint32(i))
	}
	must(t, stop.Record(a))
	must(t, stop.Synchronize(guard(t)))
	ms, err := e.dev.EventElapsedTime(start, stop)
	must(t, err)
	if !(ms >= 0) || math.IsInf(float64(ms), 0) {
		t.Fatalf("elapsed time %v ms, want a finite value ≥ 0", ms)
	}
	if zero, err := e.dev.EventElapsedTime(start, start); err != nil || zero != 0 {
		t.Fatalf("elapsed time from an event to itself = %v, %v", zero, err)
	}
}

func testStreamQuerySync(t *testing.T, e *env) {
	a := e.stream(t)
	must(t, a.Query()) // empty stream: idle
	g := e.newGate(t)
	must(t, g.block(a))
	wantCallErr(t, a.Query(), hip.ErrNotReady)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Synchronize(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Synchronize with a cancelled context while blocked: %v, want context.Canceled", err)
	}
	g.release()
	syncStream(t, a)
	must(t, a.Query())
}

func testHostFunc(t *testing.T, e *env) {
	a := e.stream(t)
	const n = 128
	src := iota32(n, 11, 2)
	p := e.malloc(t, 4*n)
	h1, h2 := make([]uint32, n), make([]uint32, n)
	var seen1, seen2 []uint32
	var order []int
	g := e.newGate(t)
	var ran atomic.Bool

	must(t, g.block(a))
	must(t, a.MemcpyHtoDAsync(p, u32bytes(src)))
	must(t, a.MemcpyDtoHAsync(u32bytes(h1), p))
	must(t, a.LaunchHostFunc(func() {
		ran.Store(true)
		seen1 = slices.Clone(h1)
		order = append(order, 1)
	}))
	launch1D(t, a, e.fn(t, "hiptest_fill"), n, hip.Ptr(p), hip.Uint32(n), hip.Uint32(0))
	must(t, a.MemcpyDtoHAsync(u32bytes(h2), p))
	must(t, a.LaunchHostFunc(func() {
		seen2 = slices.Clone(h2)
		order = append(order, 2)
	}))
	if ran.Load() {
		t.Fatal("host function ran before the blocked kernel ahead of it returned")
	}
	g.release()
	syncStream(t, a)
	equalU32(t, "data seen by the first host function", seen1, src)
	equalU32(t, "data seen by the second host function", seen2, make([]uint32, n))
	if !slices.Equal(order, []int{1, 2}) {
		t.Fatalf("host functions ran in order %v", order)
	}
	wantCallErr(t, a.LaunchHostFunc(nil), hip.ErrInvalidValue)
}

func testDeviceSynchronize(t *testing.T, e *env) {
	a, b := e.stream(t), e.stream(t)
	g := e.newGate(t)
	must(t, g.block(a))
	p := e.malloc(t, 4)
	launch1D(t, b, e.fn(t, "hiptest_fill"), 1, hip.Ptr(p), hip.Uint32(1), hip.Uint32(5))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.dev.Synchronize(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("device Synchronize with a cancelled context while a stream is blocked: %v", err)
	}
	g.release()
	must(t, e.dev.Synchronize(guard(t)))
	must(t, a.Query())
	must(t, b.Query())
}

func testDestroy(t *testing.T, e *env) {
	// A destroyed stream still finishes its queued work.
	s, err := e.dev.StreamCreate()
	must(t, err)
	g := e.newGate(t)
	const n = 64
	p := e.malloc(t, 4*n)
	ev := e.event(t)
	must(t, g.block(s))
	launch1D(t, s, e.fn(t, "hiptest_fill"), n, hip.Ptr(p), hip.Uint32(n), hip.Uint32(3))
	must(t, ev.Record(s))
	must(t, s.Destroy())
	g.release()
	must(t, ev.Synchronize(guard(t)))
	other := e.stream(t)
	equalU32(t, "work queued before Destroy", download(t, other, p, n), slices.Repeat([]uint32{3}, n))

	wantCallErr(t, s.Destroy(), hip.ErrInvalidHandle)
	wantCallErr(t, s.MemcpyHtoDAsync(p, make([]byte, 4)), hip.ErrInvalidHandle)
	wantCallErr(t, s.Query(), hip.ErrInvalidHandle)
	wantCallErr(t, s.Synchronize(guard(t)), hip.ErrInvalidHandle)
	wantCallErr(t, ev.Record(s), hip.ErrInvalidHandle)

	ev2, err := e.dev.EventCreate()
	must(t, err)
	must(t, ev2.Destroy())
	wantCallErr(t, ev2.Destroy(), hip.ErrInvalidHandle)
	wantCallErr(t, ev2.Record(other), hip.ErrInvalidHandle)
	wantCallErr(t, other.WaitEvent(ev2), hip.ErrInvalidHandle)

	mod, err := e.dev.LoadModule(hip.ModuleSpec{Name: "hiptest-unload", Source: Source})
	must(t, err)
	f, err := mod.Function("hiptest_fill")
	must(t, err)
	must(t, mod.Unload())
	wantCallErr(t, mod.Unload(), hip.ErrInvalidHandle)
	_, err = mod.Function("hiptest_fill")
	wantCallErr(t, err, hip.ErrInvalidHandle)
	wantCallErr(t, other.Launch(f, hip.Dim1(1), hip.Dim1(1), 0, hip.Ptr(p), hip.Uint32(1), hip.Uint32(1)), hip.ErrInvalidHandle)

	h, err := e.dev.BLASCreate(other)
	must(t, err)
	must(t, h.Destroy())
	wantCallErr(t, h.Destroy(), hip.ErrInvalidHandle)
	wantCallErr(t, h.Sgemm(hip.OpN, hip.OpN, 1, 1, 1, 1, p, 1, p, 1, 0, p, 1), hip.ErrInvalidHandle)
}

// testKernelPanic: a host kernel that panics fails its stream, stickily, as
// a GPU fault would; streams that wait on it inherit the failure; other
// streams carry on.
func testKernelPanic(t *testing.T, e *env) {
	a, b, c := e.stream(t), e.stream(t), e.stream(t)
	g := e.newGate(t)
	ev := e.event(t)
	must(t, g.block(a))
	must(t, a.Launch(e.fn(t, "hiptest_panic"), hip.Dim1(1), hip.Dim1(1), 0))
	must(t, ev.Record(a))
	must(t, b.WaitEvent(ev))
	g.release()

	err := a.Synchronize(guard(t))
	wantCallErr(t, err, hip.ErrLaunchFailure)
	if !strings.Contains(err.Error(), PanicMessage) || !strings.Contains(err.Error(), "hiptest_panic") {
		t.Errorf("error %q does not carry the kernel's name and panic", err)
	}
	wantCallErr(t, a.Query(), hip.ErrLaunchFailure)
	wantCallErr(t, a.Synchronize(guard(t)), hip.ErrLaunchFailure)
	p := e.malloc(t, 64)
	wantCallErr(t, a.MemcpyHtoDAsync(p, make([]byte, 8)), hip.ErrLaunchFailure)
	wantCallErr(t, ev.Synchronize(guard(t)), hip.ErrLaunchFailure)
	wantCallErr(t, b.Synchronize(guard(t)), hip.ErrLaunchFailure)

	x := iota32(16, 3, 3)
	equalU32(t, "an unrelated stream after the fault", download(t, c, e.upload(t, c, x), 16), x)
	d := e.stream(t)
	equalU32(t, "a new stream after the fault", download(t, d, e.upload(t, d, x), 16), x)
}

// testKernelError: a kernel's error, or a panic from a mistyped argument,
// becomes the stream's ErrLaunchFailure with the cause kept.
func testKernelError(t *testing.T, e *env) {
	a := e.stream(t)
	gone, err := e.dev.Malloc(16)
	must(t, err)
	must(t, e.dev.Free(gone))
	must(t, a.Launch(e.fn(t, "hiptest_touch"), hip.Dim1(1), hip.Dim1(1), 0, hip.Ptr(gone)))
	err = a.Synchronize(guard(t))
	wantCallErr(t, err, hip.ErrLaunchFailure)
	if !errors.Is(err, hip.ErrInvalidDevicePointer) {
		t.Errorf("error %q lost its cause, ErrInvalidDevicePointer", err)
	}

	b := e.stream(t)
	must(t, b.Launch(e.fn(t, "hiptest_fill"), hip.Dim1(1), hip.Dim1(1), 0, hip.Float32(1), hip.Uint32(1), hip.Uint32(1)))
	err = b.Synchronize(guard(t))
	wantCallErr(t, err, hip.ErrLaunchFailure)
	if !strings.Contains(err.Error(), "float32, not ptr") {
		t.Errorf("error %q does not say which argument kind was wrong", err)
	}
}

// testFreeBeforeQueuedUse: Free does not wait for queued work; a copy that
// runs after the memory was freed fails its stream instead of writing to
// freed memory.
func testFreeBeforeQueuedUse(t *testing.T, e *env) {
	a := e.stream(t)
	g := e.newGate(t)
	p, err := e.dev.Malloc(64)
	must(t, err)
	must(t, g.block(a))
	must(t, a.MemcpyHtoDAsync(p, make([]byte, 64)))
	must(t, e.dev.Free(p))
	g.release()
	wantCallErr(t, a.Synchronize(guard(t)), hip.ErrInvalidDevicePointer)
}
