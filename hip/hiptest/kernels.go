package hiptest

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/forgepipe/forgepipe/hip"
)

// Source is the GPU source of the suite's kernels, in the HIP/CUDA dialect.
// The host driver runs the Go versions registered below under the same
// names. hiptest_gate, hiptest_panic and hiptest_touch exist only on the
// host: a GPU kernel cannot wait on a Go channel, and a GPU fault poisons
// the whole context rather than one stream. hiptest_empty, hiptest_fill
// and hiptest_step may be launched as dependent (hip.LaunchConfig): they
// wait for the work before them first.
const Source = `
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(__HIP__) && !defined(__HIPCC_RTC__)
#define HIPTEST_DEPENDENT()                                \
	do {                                                   \
		asm volatile("griddepcontrol.launch_dependents;");  \
		asm volatile("griddepcontrol.wait;" ::: "memory");  \
	} while (0)
#else
#define HIPTEST_DEPENDENT() do {} while (0)
#endif

extern "C" __global__ void hiptest_empty() { HIPTEST_DEPENDENT(); }

extern "C" __global__ void hiptest_fill(unsigned int* x, unsigned int n, unsigned int v) {
	HIPTEST_DEPENDENT();
	for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += blockDim.x * gridDim.x)
		x[j] = v;
}

extern "C" __global__ void hiptest_step(unsigned int* x, unsigned int n, unsigned int i) {
	HIPTEST_DEPENDENT();
	for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += blockDim.x * gridDim.x)
		x[j] = x[j] * 3u + i + j;
}

extern "C" __global__ void hiptest_args(unsigned long long* out, int a, unsigned int b, float c,
                                        long long d, unsigned long long e) {
	if (blockIdx.x == 0 && threadIdx.x == 0) {
		out[0] = (unsigned long long)out;
		out[1] = (unsigned long long)(unsigned int)a;
		out[2] = b;
		out[3] = __float_as_uint(c);
		out[4] = (unsigned long long)d;
		out[5] = e;
	}
}

extern "C" __global__ void hiptest_spin(unsigned int* flag) {
	if (blockIdx.x == 0 && threadIdx.x == 0)
		while (atomicAdd(flag, 0u) == 0u) {}
}

extern "C" __global__ void hiptest_release(unsigned int* flag) {
	if (blockIdx.x == 0 && threadIdx.x == 0)
		atomicExch(flag, 1u);
}
`

// PanicMessage is what hiptest_panic panics with.
const PanicMessage = "hiptest: deliberate fault"

func init() {
	hip.RegisterHostKernel("hiptest_empty", func(*hip.HostLaunch) error { return nil })
	hip.RegisterHostKernel("hiptest_fill", func(l *hip.HostLaunch) error {
		x, err := hip.HostSlice[uint32](l, l.Arg(0).Ptr(), int(l.Arg(1).Uint32()))
		if err != nil {
			return err
		}
		v := l.Arg(2).Uint32()
		for j := range x {
			x[j] = v
		}
		return nil
	})
	hip.RegisterHostKernel("hiptest_step", func(l *hip.HostLaunch) error {
		x, err := hip.HostSlice[uint32](l, l.Arg(0).Ptr(), int(l.Arg(1).Uint32()))
		if err != nil {
			return err
		}
		step(x, l.Arg(2).Uint32())
		return nil
	})
	hip.RegisterHostKernel("hiptest_args", func(l *hip.HostLaunch) error {
		out, err := hip.HostSlice[uint64](l, l.Arg(0).Ptr(), 6)
		if err != nil {
			return err
		}
		out[0] = uint64(l.Arg(0).Ptr())
		out[1] = uint64(uint32(l.Arg(1).Int32()))
		out[2] = uint64(l.Arg(2).Uint32())
		out[3] = uint64(l.Args[3].Bits())
		_ = l.Arg(3).Float32() // panics unless the kind is float32
		out[4] = uint64(l.Arg(4).Int64())
		out[5] = l.Arg(5).Uint64()
		return nil
	})
	hip.RegisterHostKernel("hiptest_spin", func(l *hip.HostLaunch) error {
		flag, err := hip.HostSlice[uint32](l, l.Arg(0).Ptr(), 1)
		if err != nil {
			return err
		}
		for atomic.LoadUint32(&flag[0]) == 0 {
			runtime.Gosched()
		}
		return nil
	})
	hip.RegisterHostKernel("hiptest_release", func(l *hip.HostLaunch) error {
		flag, err := hip.HostSlice[uint32](l, l.Arg(0).Ptr(), 1)
		if err != nil {
			return err
		}
		atomic.StoreUint32(&flag[0], 1)
		return nil
	})
	hip.RegisterHostKernel("hiptest_gate", func(l *hip.HostLaunch) error {
		ch, ok := gates.Load(l.Arg(0).Uint64())
		if !ok {
			return errors.New("hiptest_gate: unknown gate")
		}
		<-ch.(chan struct{})
		return nil
	})
	hip.RegisterHostKernel("hiptest_panic", func(*hip.HostLaunch) error { panic(PanicMessage) })
	hip.RegisterHostKernel("hiptest_touch", func(l *hip.HostLaunch) error {
		b, err := l.Bytes(l.Arg(0).Ptr(), 1)
		if err != nil {
			return err
		}
		b[0]++
		return nil
	})
}

// step is hiptest_step on the host: an order-dependent update, so that
// running steps out of order gives different numbers.
func step(x []uint32, i uint32) {
	for j := range x {
		x[j] = x[j]*3 + i + uint32(j)
	}
}

// gates holds the channels of channel gates, by token (a few bytes per
// gate made, kept for the test binary's life).
var (
	gates     sync.Map
	gateToken atomic.Uint64
)

// gate blocks a stream until released: a kernel that does not return until
// the test says so, so tests order streams without relying on time.
type gate interface {
	// block enqueues the blocking kernel on s.
	block(s hip.Stream) error
	// release lets the kernel return; calling it again does nothing.
	release()
}

// chanGate is the host driver's gate: hiptest_gate waits on a Go channel.
type chanGate struct {
	fn    hip.Function
	token uint64
	ch    chan struct{}
	once  sync.Once
}

func (g *chanGate) block(s hip.Stream) error {
	return s.Launch(g.fn, hip.Dim1(1), hip.Dim1(1), 0, hip.Uint64(g.token))
}

// release closes the channel. The gate stays in gates: its kernel may not
// have started yet, and finds the channel closed when it does.
func (g *chanGate) release() { g.once.Do(func() { close(g.ch) }) }

// spinGate is the form that works on GPUs: hiptest_spin spins on a flag in
// device memory that hiptest_release, on a stream of its own, sets.
type spinGate struct {
	t      testing.TB
	spin   hip.Function
	rel    hip.Function
	flag   hip.DevicePtr
	stream hip.Stream
	once   sync.Once
}

func (g *spinGate) block(s hip.Stream) error {
	return s.Launch(g.spin, hip.Dim1(1), hip.Dim1(1), 0, hip.Ptr(g.flag))
}

func (g *spinGate) release() {
	g.once.Do(func() {
		if err := g.stream.Launch(g.rel, hip.Dim1(1), hip.Dim1(1), 0, hip.Ptr(g.flag)); err != nil {
			g.t.Errorf("releasing spin gate: %v", err)
			return
		}
		if err := g.stream.Synchronize(guard(g.t)); err != nil {
			g.t.Errorf("releasing spin gate: %v", err)
		}
	})
}

// newGate makes a gate, released at the latest when the test ends so that a
// failing test does not leave a stream blocked.
func (e *env) newGate(t testing.TB) gate {
	t.Helper()
	if !e.cfg.SpinGate {
		g := &chanGate{fn: e.fn(t, "hiptest_gate"), token: gateToken.Add(1), ch: make(chan struct{})}
		gates.Store(g.token, g.ch)
		t.Cleanup(g.release)
		return g
	}
	g := &spinGate{t: t, spin: e.fn(t, "hiptest_spin"), rel: e.fn(t, "hiptest_release"),
		flag: e.malloc(t, 4), stream: e.stream(t)}
	if err := g.stream.MemsetD32Async(g.flag, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := g.stream.Synchronize(guard(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.release)
	return g
}

// u32bytes views a []uint32 as bytes (little-endian hosts, as every
// supported GPU host is).
func u32bytes(x []uint32) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x))
}

func u64bytes(x []uint64) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 8*len(x))
}

func f32bytes(x []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x))
}

func u16bytes(x []uint16) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 2*len(x))
}

func describe(x []uint32) string {
	if len(x) > 4 {
		return fmt.Sprintf("%v…", x[:4])
	}
	return fmt.Sprint(x)
}
