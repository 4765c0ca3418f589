package hip

import (
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// HostKernel is a kernel for the host driver: a Go function that carries
// out a whole launch (every block of the grid) when the stream reaches it.
// An error it returns, or a panic, becomes the stream's sticky
// ErrLaunchFailure, as a fault would on a GPU. It must not keep the slices
// it views after returning.
type HostKernel func(l *HostLaunch) error

var hostKernels = struct {
	sync.RWMutex
	m map[string]HostKernel
}{m: map[string]HostKernel{}}

// RegisterHostKernel makes fn the host driver's kernel called name, the
// name of the extern "C" GPU kernel it stands for. Names are global, like
// the symbols of a GPU module, so prefix them. Kernel packages call it from
// init; registering a name twice panics.
func RegisterHostKernel(name string, fn HostKernel) {
	if name == "" || fn == nil {
		panic(fmt.Sprintf("hip: RegisterHostKernel(%q): empty name or nil kernel", name))
	}
	hostKernels.Lock()
	defer hostKernels.Unlock()
	if _, dup := hostKernels.m[name]; dup {
		panic(fmt.Sprintf("hip: RegisterHostKernel(%q): registered twice", name))
	}
	hostKernels.m[name] = fn
}

// HostKernels lists the registered host kernel names, sorted.
func HostKernels() []string {
	hostKernels.RLock()
	defer hostKernels.RUnlock()
	names := make([]string, 0, len(hostKernels.m))
	for name := range hostKernels.m {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// HostLaunch is what a host kernel is called with: the launch's dimensions
// and arguments, and access to the device memory its pointers address.
type HostLaunch struct {
	Kernel      string
	Grid, Block Dim3
	SharedMem   uint32
	Args        []Arg

	dev *HostDevice
}

// Arg returns argument i; it panics (a launch failure) if there is none.
func (l *HostLaunch) Arg(i int) Arg {
	if i < 0 || i >= len(l.Args) {
		panic(fmt.Sprintf("hip: kernel %q launched with %d arguments, argument %d requested", l.Kernel, len(l.Args), i))
	}
	return l.Args[i]
}

// Bytes returns the n bytes of device memory at p as a slice aliasing it.
// It fails if they are not all inside one live allocation.
func (l *HostLaunch) Bytes(p DevicePtr, n int64) ([]byte, error) {
	return l.dev.view(fmt.Sprintf("kernel %q: view(%v, %d bytes)", l.Kernel, p, n), p, n)
}

// Float32s returns n float32 elements of device memory at p.
func (l *HostLaunch) Float32s(p DevicePtr, n int) ([]float32, error) {
	return HostSlice[float32](l, p, n)
}

// HostElement is an element type host kernels can view device memory as.
type HostElement interface {
	~int8 | ~uint8 | ~int16 | ~uint16 | ~int32 | ~uint32 | ~int64 | ~uint64 | ~float32 | ~float64
}

// HostSlice returns n elements of type T of device memory at p, aliasing it.
// p must be aligned to T's size.
func HostSlice[T HostElement](l *HostLaunch, p DevicePtr, n int) ([]T, error) {
	var zero T
	size := int64(unsafe.Sizeof(zero))
	call := fmt.Sprintf("kernel %q: view(%v, %d × %T)", l.Kernel, p, n, zero)
	if n < 0 || int64(n) > hostMaxAlloc/size {
		return nil, errf(call, ErrInvalidValue, "element count out of range")
	}
	if _, off := splitPtr(p); off%size != 0 {
		return nil, errf(call, ErrInvalidValue, "pointer not aligned to %d bytes", size)
	}
	b, err := l.dev.view(call, p, int64(n)*size)
	if err != nil || n == 0 {
		return nil, err
	}
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), n), nil
}

// hostModule is a loaded module on the host driver: a view of the
// registered host kernels.
type hostModule struct {
	dev      *HostDevice
	name     string
	unloaded atomic.Bool
}

// LoadModule returns a module whose functions are the registered host
// kernels; the spec's GPU source is not used.
func (d *HostDevice) LoadModule(spec ModuleSpec) (Module, error) {
	if d.closed.Load() {
		return nil, errf(fmt.Sprintf("hipModuleLoadData(%q)", spec.Name), ErrClosed, "device closed")
	}
	return &hostModule{dev: d, name: spec.Name}, nil
}

func (m *hostModule) Function(name string) (Function, error) {
	call := fmt.Sprintf("hipModuleGetFunction(%q)", name)
	switch {
	case m.dev.closed.Load():
		return nil, errf(call, ErrClosed, "device closed")
	case m.unloaded.Load():
		return nil, errf(call, ErrInvalidHandle, "invalid handle: module %q unloaded", m.name)
	}
	hostKernels.RLock()
	fn := hostKernels.m[name]
	hostKernels.RUnlock()
	if fn == nil {
		return nil, errf(call, ErrNotFound, "no host kernel registered under that name (module %q)", m.name)
	}
	return &hostFunction{mod: m, name: name, fn: fn,
		launchCall: fmt.Sprintf("hipModuleLaunchKernel(%q)", name)}, nil
}

func (m *hostModule) Unload() error {
	if !m.unloaded.CompareAndSwap(false, true) {
		return errf(fmt.Sprintf("hipModuleUnload(%q)", m.name), ErrInvalidHandle, "invalid handle: module already unloaded")
	}
	return nil
}

// hostFunction is a kernel of a host module.
type hostFunction struct {
	mod        *hostModule
	name       string
	fn         HostKernel
	launchCall string // the call named in launch errors
}

func (f *hostFunction) Name() string { return f.name }

// call runs the kernel on the stream's goroutine, turning its error or
// panic into the launch's error.
func (f *hostFunction) call(l *HostLaunch) (err error) {
	call := f.launchCall
	defer func() {
		if r := recover(); r != nil {
			f.mod.dev.log.Error().Str("kernel", f.name).Interface("panic", r).
				Bytes("stack", debug.Stack()).Msg("hip host kernel panicked")
			err = errf(call, ErrLaunchFailure, "launch failure: host kernel panicked: %v", r)
		}
	}()
	if err := f.fn(l); err != nil {
		return &Error{Call: call, Err: fmt.Errorf("%w: %w", ErrLaunchFailure, err)}
	}
	return nil
}
