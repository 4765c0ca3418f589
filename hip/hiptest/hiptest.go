// Package hiptest is the conformance suite of the hip runtime: tests written
// against the generic interfaces, so that every driver (host now, cuda and
// rocm later) is held to the same behaviour.
package hiptest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/forgepipe/forgepipe/hip"
)

// Config adjusts the suite to a driver.
type Config struct {
	// SpinGate blocks streams with a kernel spinning on a device flag that
	// another stream sets, the form that works on GPUs, instead of a host
	// kernel waiting on a channel. Drivers other than host always use it.
	SpinGate bool
}

// Conformance runs the whole suite against dev, which must have at least
// 64 MiB of free memory. The caller keeps ownership of dev.
func Conformance(t *testing.T, dev hip.Device) { Run(t, dev, Config{}) }

// Run runs the suite against dev with cfg.
func Run(t *testing.T, dev hip.Device, cfg Config) {
	if dev.Driver() != "host" {
		cfg.SpinGate = true
	}
	mod, err := dev.LoadModule(hip.ModuleSpec{Name: "hiptest", Source: Source})
	if err != nil {
		t.Fatalf("loading the suite's kernels: %v", err)
	}
	t.Cleanup(func() {
		if err := mod.Unload(); err != nil {
			t.Errorf("unloading the suite's kernels: %v", err)
		}
	})
	e := &env{dev: dev, mod: mod, cfg: cfg}
	tests := []struct {
		name string
		run  func(*testing.T, *env)
		host bool // host driver only
	}{
		{"Memory", testMemory, false},
		{"OutOfMemory", testOutOfMemory, false},
		{"DoubleFree", testDoubleFree, false},
		{"CopiesCopy", testCopiesCopy, false},
		{"CopyBounds", testCopyBounds, false},
		{"Memset", testMemset, false},
		{"PinnedMemory", testPinned, false},
		{"StreamOrdering", testStreamOrdering, false},
		{"KernelArgs", testKernelArgs, false},
		{"UnknownKernel", testUnknownKernel, false},
		{"LaunchConfig", testLaunchConfig, false},
		{"StreamsRunConcurrently", testStreamsConcurrent, false},
		{"WaitEventOrdersStreams", testWaitEvent, false},
		{"EventReRecord", testEventReRecord, false},
		{"EventQueryAndElapsed", testEventQueryElapsed, false},
		{"StreamQuerySynchronize", testStreamQuerySync, false},
		{"HostFunc", testHostFunc, false},
		{"DeviceSynchronize", testDeviceSynchronize, false},
		{"Destroy", testDestroy, false},
		{"Sgemm", testSgemm, false},
		{"GemmEx", testGemmEx, false},
		{"GemmErrors", testGemmErrors, false},
		{"GraphCapture", testGraphCapture, false},
		{"GraphOutlivesStream", testGraphOutlivesStream, false},
		{"GraphEmpty", testGraphEmpty, false},
		{"CaptureWaits", testCaptureWaits, false},
		{"CaptureErrors", testCaptureErrors, false},
		{"DependentLaunch", testDependentLaunch, false},
		{"KernelPanicIsSticky", testKernelPanic, true},
		{"KernelErrorIsSticky", testKernelError, true},
		{"FreeBeforeQueuedUse", testFreeBeforeQueuedUse, true},
		{"GraphFault", testGraphFault, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.host && dev.Driver() != "host" {
				t.Skip("host driver only: GPU faults poison the whole context, and GPU kernels cannot wait on Go channels")
			}
			tc.run(t, e)
		})
	}
}

// env is what each test gets: the device and the suite's module.
type env struct {
	dev hip.Device
	mod hip.Module
	cfg Config
}

// guard is the context of a blocking call: it only keeps a bug from hanging
// the test binary, it asserts nothing about time.
func guard(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) fn(t testing.TB, name string) hip.Function {
	t.Helper()
	f, err := e.mod.Function(name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (e *env) stream(t testing.TB) hip.Stream {
	t.Helper()
	s, err := e.dev.StreamCreate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Destroy(); err != nil && !errors.Is(err, hip.ErrClosed) {
			t.Errorf("destroying stream: %v", err)
		}
	})
	return s
}

func (e *env) event(t testing.TB) hip.Event {
	t.Helper()
	ev, err := e.dev.EventCreate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ev.Destroy() })
	return ev
}

func (e *env) malloc(t testing.TB, n int64) hip.DevicePtr {
	t.Helper()
	p, err := e.dev.Malloc(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.dev.Free(p); err != nil && !errors.Is(err, hip.ErrClosed) {
			t.Errorf("freeing %v: %v", p, err)
		}
	})
	return p
}

// launch1D launches f over n elements.
func launch1D(t testing.TB, s hip.Stream, f hip.Function, n uint32, args ...hip.Arg) {
	t.Helper()
	if err := s.Launch(f, hip.Dim1(max(1, (n+255)/256)), hip.Dim1(256), 0, args...); err != nil {
		t.Fatal(err)
	}
}

func syncStream(t testing.TB, s hip.Stream) {
	t.Helper()
	if err := s.Synchronize(guard(t)); err != nil {
		t.Fatal(err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantErr fails unless err wraps target and names call.
func wantErr(t testing.TB, err, target error, call string) {
	t.Helper()
	switch {
	case err == nil:
		t.Fatalf("got no error, want %v from %s", target, call)
	case !errors.Is(err, target):
		t.Fatalf("got %v, want an error wrapping %v", err, target)
	case !strings.Contains(err.Error(), call):
		t.Fatalf("error %q does not name the call %s", err, call)
	}
}

// upload copies x to new device memory and waits.
func (e *env) upload(t testing.TB, s hip.Stream, x []uint32) hip.DevicePtr {
	t.Helper()
	p := e.malloc(t, int64(4*len(x)))
	must(t, s.MemcpyHtoDAsync(p, u32bytes(x)))
	syncStream(t, s)
	return p
}

// download copies n words at p to the host and waits.
func download(t testing.TB, s hip.Stream, p hip.DevicePtr, n int) []uint32 {
	t.Helper()
	out := make([]uint32, n)
	must(t, s.MemcpyDtoHAsync(u32bytes(out), p))
	syncStream(t, s)
	return out
}

func equalU32(t testing.TB, what string, got, want []uint32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d words, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: word %d is %d, want %d (got %s, want %s)", what, i, got[i], want[i],
				describe(got[i:]), describe(want[i:]))
		}
	}
}

func iota32(n int, mul, add uint32) []uint32 {
	x := make([]uint32, n)
	for i := range x {
		x[i] = uint32(i)*mul + add
	}
	return x
}
