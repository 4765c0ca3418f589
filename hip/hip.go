package hip

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"
)

// DevicePtr is an address in a device's memory, as hipDeviceptr_t. Pointer
// arithmetic works as on the device: p.Add(off) addresses off bytes further
// into the same allocation. The zero DevicePtr is the null pointer.
type DevicePtr uint64

// Add returns the pointer off bytes after p.
func (p DevicePtr) Add(off int64) DevicePtr { return p + DevicePtr(off) }

func (p DevicePtr) String() string { return fmt.Sprintf("0x%x", uint64(p)) }

// Dim3 is a grid or block size. Every component must be at least 1.
type Dim3 struct{ X, Y, Z uint32 }

// Dim1 is the one-dimensional size x.
func Dim1(x uint32) Dim3 { return Dim3{x, 1, 1} }

// Dim2 is the two-dimensional size x by y.
func Dim2(x, y uint32) Dim3 { return Dim3{x, y, 1} }

func (d Dim3) String() string { return fmt.Sprintf("(%d,%d,%d)", d.X, d.Y, d.Z) }

// LaunchConfig is how LaunchEx runs a kernel.
type LaunchConfig struct {
	// Grid and Block are the grid of blocks and the threads of a block.
	Grid, Block Dim3
	// SharedMem is the dynamic shared memory of a block, in bytes.
	SharedMem uint32
	// Dependent lets the kernel's blocks be scheduled before the kernel
	// enqueued before it on the stream has finished (programmatic dependent
	// launch, CUDA compute capability 9.0 and later, captured into graphs
	// as programmatic edges), hiding the launch gap between the two. It is
	// a promise about the kernel: every thread executes griddepcontrol.wait
	// (kernels/gpu's FP_GRID_WAIT) before it reads or writes global memory
	// that earlier work on the stream reads or writes, and before it exits;
	// that wait returns once the work before it is complete and visible.
	// Work after a dependent kernel waits for all of it, as ever. Drivers and
	// devices without programmatic launch (rocm, host, CUDA before sm_90 or
	// driver 12.3) run the kernel as an ordinary launch, so stream order
	// holds everywhere.
	Dependent bool
}

// Options configure Open.
type Options struct {
	// Device is the ordinal of the GPU to open (GPU drivers only).
	Device int
	// HostMemory is the host driver's device memory size in bytes: Malloc
	// fails with ErrOutOfMemory beyond it. 0 means the machine's physical memory.
	HostMemory int64
	// Logger receives the line saying which backend Open chose; nil means
	// zerolog's global logger.
	Logger *zerolog.Logger
}

// Device is one opened device and the context for everything made on it.
// Its methods, and those of everything it makes, are safe for concurrent use.
type Device interface {
	// Driver is the name the device was opened with: "host", "cuda", "rocm".
	Driver() string
	// Name describes the device, e.g. "NVIDIA H100 80GB HBM3" or "host (16 CPUs)".
	Name() string
	// MemGetInfo returns the free and total device memory in bytes (hipMemGetInfo).
	MemGetInfo() (free, total int64, err error)

	// Malloc allocates size bytes of device memory (hipMalloc). Size 0
	// returns the null pointer. The contents are unspecified.
	Malloc(size int64) (DevicePtr, error)
	// Free releases an allocation made by Malloc (hipFree). It does not wait
	// for queued work that still uses p: order that with an event first.
	// Freeing the null pointer does nothing.
	Free(p DevicePtr) error
	// HostAlloc allocates size bytes of pinned host memory (hipHostMalloc),
	// the source for asynchronous uploads.
	HostAlloc(size int64) (HostBuffer, error)

	// StreamCreate makes a stream (hipStreamCreate).
	StreamCreate() (Stream, error)
	// EventCreate makes an event (hipEventCreate).
	EventCreate() (Event, error)
	// EventElapsedTime returns the milliseconds between two completed
	// records (hipEventElapsedTime).
	EventElapsedTime(start, stop Event) (float32, error)

	// LoadModule loads the kernels described by spec (hiprtc compile and
	// hipModuleLoadData on GPUs; the registered host kernels on host).
	LoadModule(spec ModuleSpec) (Module, error)
	// BLASCreate makes a BLAS handle whose work goes on stream s
	// (hipblasCreate and hipblasSetStream).
	BLASCreate(s Stream) (BLAS, error)

	// Synchronize waits until every stream of the device is idle
	// (hipDeviceSynchronize), or ctx is done. It returns a stream's sticky error.
	Synchronize(ctx context.Context) error
	// Stats returns the device's counters.
	Stats() Stats
	// Close stops the device: queued work is dropped, waiters are released
	// with ErrClosed, memory is released and no goroutine is left behind.
	// It waits for a running kernel to return. Closing twice does nothing.
	Close() error
}

// HostBuffer is pinned (page-locked) host memory. On the host driver it is
// ordinary Go memory.
type HostBuffer interface {
	// Bytes is the memory; nil once freed.
	Bytes() []byte
	// Free releases the memory (hipHostFree).
	Free() error
}

// Stream is an ordered queue of device work (hipStream_t). Each call enqueues
// and returns at once; the work runs in call order, concurrently with other
// streams. When work on a stream fails, the stream's error is sticky: later
// work on it is skipped and its later calls return the error.
//
// Memory handed to an asynchronous copy belongs to the stream until the copy
// has run: the caller must not touch it before an event or a Synchronize
// says so.
type Stream interface {
	// MemcpyHtoDAsync copies src to device memory at dst (hipMemcpyHtoDAsync).
	MemcpyHtoDAsync(dst DevicePtr, src []byte) error
	// MemcpyDtoHAsync copies len(dst) bytes at src into dst (hipMemcpyDtoHAsync).
	MemcpyDtoHAsync(dst []byte, src DevicePtr) error
	// MemcpyDtoDAsync copies n bytes between device addresses (hipMemcpyDtoDAsync).
	// The ranges must not overlap.
	MemcpyDtoDAsync(dst, src DevicePtr, n int64) error
	// MemsetD8Async sets n bytes at dst to v (hipMemsetD8Async).
	MemsetD8Async(dst DevicePtr, v byte, n int64) error
	// MemsetD32Async sets count 32-bit words at dst to v (hipMemsetD32Async);
	// dst must be 4-byte aligned.
	MemsetD32Async(dst DevicePtr, v uint32, count int64) error

	// Launch runs kernel f on a grid of blocks (hipModuleLaunchKernel). It
	// is LaunchEx with Dependent false.
	Launch(f Function, grid, block Dim3, sharedMem uint32, args ...Arg) error
	// LaunchEx runs kernel f as c says: an ordinary launch, or
	// cuLaunchKernelEx with programmatic stream serialization for a
	// dependent one where the device has it. Errors name the call made.
	LaunchEx(f Function, c LaunchConfig, args ...Arg) error
	// LaunchHostFunc calls fn on a host thread once the work before it is done
	// (hipLaunchHostFunc); later work waits for fn to return. fn must not
	// call blocking runtime functions (Synchronize).
	LaunchHostFunc(fn func()) error

	// WaitEvent makes later work on the stream wait until the event's most
	// recent record, as of this call, is reached (hipStreamWaitEvent). The
	// caller does not block. Waiting on an event never recorded does nothing.
	// If the recording stream failed, this stream takes its error.
	WaitEvent(e Event) error
	// Synchronize waits until all work enqueued so far is done
	// (hipStreamSynchronize), or ctx is done; it returns the sticky error.
	Synchronize(ctx context.Context) error
	// Query returns nil if all work is done, ErrNotReady if some is pending,
	// or the sticky error (hipStreamQuery). It does not block.
	Query() error
	// Destroy releases the stream once its queued work is done
	// (hipStreamDestroy); it does not wait. A capture in progress is dropped.
	Destroy() error

	// BeginCapture starts recording the stream (hipStreamBeginCapture, relaxed
	// mode): work enqueued on it afterwards is recorded, not run, until
	// EndCapture. Launch, LaunchEx, MemcpyDtoDAsync, MemsetD8Async and
	// MemsetD32Async may be captured on every driver; other calls while
	// capturing fail with ErrNotSupported on drivers that cannot capture them.
	//
	// While the stream is capturing, Query, Synchronize and the device's
	// Synchronize see only the work enqueued on it before BeginCapture.
	// Beginning a capture on a stream already capturing fails with
	// ErrInvalidValue.
	BeginCapture() error
	// EndCapture stops recording and returns the recorded work as a graph
	// ready to launch (hipStreamEndCapture + hipGraphInstantiate). A capture
	// in which a call failed returns that error and no graph. EndCapture
	// without BeginCapture fails with ErrInvalidValue.
	EndCapture() (Graph, error)
}

// Graph is recorded stream work, launched as one unit (hipGraphExec_t).
type Graph interface {
	// Launch enqueues the whole recorded work on s (hipGraphLaunch); it runs
	// in stream order like any other work on s. The arguments of captured
	// launches are the values they had at capture time. s may be any
	// stream of the device that is not capturing.
	Launch(s Stream) error
	// Nodes is the number of operations recorded.
	Nodes() int
	// Destroy releases the graph (hipGraphExecDestroy + hipGraphDestroy);
	// launches already enqueued still complete. Destroying twice fails with
	// ErrInvalidHandle.
	Destroy() error
}

// Event marks a point in a stream (hipEvent_t).
type Event interface {
	// Record marks the point in s after all work enqueued so far
	// (hipEventRecord). Recording again moves the mark; waits already
	// enqueued keep the record they saw.
	Record(s Stream) error
	// Synchronize waits until the most recent record is reached
	// (hipEventSynchronize), or ctx is done. An event never recorded is
	// reached. It returns the recording stream's error, if it failed.
	Synchronize(ctx context.Context) error
	// Query returns nil once the most recent record is reached, ErrNotReady
	// before (hipEventQuery). It does not block.
	Query() error
	// Destroy releases the event (hipEventDestroy); waits already enqueued
	// on it still complete.
	Destroy() error
}

// ModuleSpec says which kernels LoadModule loads.
type ModuleSpec struct {
	// Name names the module in errors and logs.
	Name string
	// Source is the GPU source in the HIP/CUDA dialect, with extern "C"
	// kernels; GPU drivers compile it. The host driver ignores it and
	// serves the kernels registered with RegisterHostKernel.
	Source string
	// Options are compiler options for the GPU drivers (e.g. "-O3").
	Options []string
}

// Module is a set of kernels loaded on a device (hipModule_t).
type Module interface {
	// Function looks up a kernel by name (hipModuleGetFunction); an unknown
	// name fails with ErrNotFound.
	Function(name string) (Function, error)
	// Unload releases the module (hipModuleUnload); its functions become invalid.
	Unload() error
}

// Function is a kernel in a loaded module (hipFunction_t).
type Function interface {
	// Name is the kernel's name.
	Name() string
}

// Stats are a device's counters since Open.
type Stats struct {
	// Allocated is the device memory currently allocated, in bytes.
	Allocated int64
	// PeakAllocated is the most device memory allocated at once.
	PeakAllocated int64
	// Allocations is the number of live device allocations.
	Allocations int64
	// Pinned is the pinned host memory currently allocated, in bytes.
	Pinned int64
	// CopiedHtoD, CopiedDtoH and CopiedDtoD count the bytes of copies
	// enqueued successfully, whether or not they have run yet; copies
	// recorded in a graph count at each launch of the graph.
	CopiedHtoD, CopiedDtoH, CopiedDtoD int64
	// Launches counts kernels enqueued, those of launched graphs included
	// (one per captured kernel at each graph launch); kernels recorded by a
	// capture are counted when the graph is launched.
	Launches int64
	// GraphLaunches counts graphs enqueued.
	GraphLaunches int64
}
