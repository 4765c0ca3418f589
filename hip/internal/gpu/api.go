// Package gpu is the driver core that the cuda and rocm drivers share: the
// HIP-shaped runtime (device memory with an allocation table, pinned host
// memory, streams, events, modules compiled at run time and cached on disk,
// kernel launch, host functions, BLAS) written once against a table of C
// entry points. The CUDA driver API and HIP have the same call shapes
// (cuMemAlloc/hipMalloc, cuLaunchKernel/hipModuleLaunchKernel, ...), so a
// driver package only opens its libraries, fills an API with their
// symbols, enum values and error names, and says how to make its device
// current on an OS thread.
//
// Every C call goes through purego.SyscallN with a function pointer from
// Dlsym (about 0.2 µs per call), and every status is checked: a failure is
// a *hip.Error naming the call and carrying the driver's message, wrapping
// the hip sentinel its status maps to.
package gpu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Sym is one C entry point: its name, for errors, and its address.
type Sym struct {
	Name string
	Fn   uintptr
}

// Status is a driver status code (CUresult, hipError_t, nvrtcResult,
// cublasStatus_t); 0 is success.
type Status int32

// API is what a driver package hands to Open: the device's description,
// how to bind it to a thread, its error names and its entry points. The
// comment on each entry gives its C signature in CUDA's names.
type API struct {
	// Driver is the name registered with hip: "cuda" or "rocm".
	Driver string
	// Name describes the device, e.g. "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)".
	Name string
	// Arch is the device's architecture as the run-time compiler names it
	// ("sm_90", "gfx90a"); it is part of the kernel cache key.
	Arch string
	// Bind makes the device current on the calling OS thread, which the
	// caller has locked; it must be cheap when it already is.
	Bind func() Status
	// Release undoes what opening the device did (primary context release);
	// Close calls it last.
	Release func() Status
	// ErrorText returns the driver's name and message for a status.
	ErrorText func(Status) string
	// Sentinel maps a status to the hip sentinel error it wraps.
	Sentinel func(Status) error
	// NotReady is the status of a query whose work is pending.
	NotReady Status

	MemAlloc          Sym // (CUdeviceptr *p, size_t n)
	MemFree           Sym // (CUdeviceptr p)
	MemGetInfo        Sym // (size_t *free, size_t *total)
	MemHostAlloc      Sym // (void **p, size_t n, unsigned flags)
	MemFreeHost       Sym // (void *p)
	MemHostRegister   Sym // (void *p, size_t n, unsigned flags)
	MemHostUnregister Sym // (void *p)
	HostAllocFlags    uintptr
	HostRegisterFlags uintptr

	StreamCreate      Sym // (CUstream *s, unsigned flags)
	StreamFlags       uintptr
	StreamDestroy     Sym // (CUstream s)
	StreamQuery       Sym // (CUstream s)
	StreamSynchronize Sym // (CUstream s)
	StreamWaitEvent   Sym // (CUstream s, CUevent e, unsigned flags)

	EventCreate        Sym // (CUevent *e, unsigned flags)
	EventDisableTiming uintptr
	EventDestroy       Sym // (CUevent e)
	EventRecord        Sym // (CUevent e, CUstream s)
	EventQuery         Sym // (CUevent e)
	EventSynchronize   Sym // (CUevent e)
	EventElapsedTime   Sym // (float *ms, CUevent start, CUevent stop)

	MemcpyHtoDAsync Sym // (CUdeviceptr dst, const void *src, size_t n, CUstream s)
	MemcpyDtoHAsync Sym // (void *dst, CUdeviceptr src, size_t n, CUstream s)
	MemcpyDtoDAsync Sym // (CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
	MemsetD8Async   Sym // (CUdeviceptr dst, unsigned char v, size_t n, CUstream s)
	MemsetD32Async  Sym // (CUdeviceptr dst, unsigned v, size_t n, CUstream s)

	ModuleLoadData    Sym // (CUmodule *m, const void *image)
	ModuleUnload      Sym // (CUmodule m)
	ModuleGetFunction Sym // (CUfunction *f, CUmodule m, const char *name)
	LaunchKernel      Sym // (CUfunction f, gx, gy, gz, bx, by, bz, unsigned shared, CUstream s, void **params, void **extra)
	LaunchHostFunc    Sym // (CUstream s, void (*fn)(void *), void *userData)
	// StreamAddCallback stands in for LaunchHostFunc where the runtime has
	// none (HIP before 5.3): (hipStream_t s, void (*fn)(hipStream_t, hipError_t, void *), void *userData, unsigned flags).
	StreamAddCallback Sym
	CtxSynchronize    Sym // ()
	// LaunchKernelEx runs dependent launches (hip.LaunchConfig.Dependent):
	// (const CUlaunchConfig *c, CUfunction f, void **params, void **extra),
	// with one CUlaunchAttribute, id LaunchAttrProgrammatic and value int 1.
	// Its Fn is 0 where the device cannot overlap kernels that way; a
	// dependent launch is then an ordinary LaunchKernel.
	LaunchKernelEx         Sym
	LaunchAttrProgrammatic uint32 // CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION

	// RTC is the run-time compiler; nil when none was found (LoadModule
	// then fails with ErrNotSupported and says why in RTCMissing).
	RTC        *RTC
	RTCMissing string
	// BLAS is the BLAS library; nil when none was found (BLASCreate then
	// fails with ErrNotSupported and says why in BLASMissing).
	BLAS        *BLASAPI
	BLASMissing string
	// Graphs are the stream capture and graph entry points; nil when the
	// runtime lacks them (BeginCapture then fails with ErrNotSupported and
	// says why in GraphsMissing).
	Graphs        *GraphAPI
	GraphsMissing string
}

// GraphAPI is stream capture and graph launch, in the CUDA driver API's
// shapes (HIP's hipStreamBeginCapture, hipGraph* have the same).
type GraphAPI struct {
	BeginCapture       Sym // (CUstream s, CUstreamCaptureMode mode)
	EndCapture         Sym // (CUstream s, CUgraph *g)
	Instantiate        Sym // (CUgraphExec *exec, CUgraph g, unsigned long long flags)
	Launch             Sym // (CUgraphExec exec, CUstream s)
	ExecDestroy        Sym // (CUgraphExec exec)
	Destroy            Sym // (CUgraph g)
	GetNodes           Sym // (CUgraph g, CUgraphNode *nodes, size_t *count)
	CaptureModeRelaxed uintptr
}

// RTC is a run-time compiler with nvrtc's shape (hiprtc has the same).
type RTC struct {
	// Name and Version identify the compiler; both are in the cache key.
	Name, Version string
	// Options come before the module's own, e.g. "-arch=sm_90".
	Options []string
	// ErrorText names a compiler status.
	ErrorText func(Status) string

	CreateProgram  Sym // (nvrtcProgram *p, const char *src, const char *name, int nh, const char **h, const char **names)
	CompileProgram Sym // (nvrtcProgram p, int nopts, const char **opts)
	GetCodeSize    Sym // (nvrtcProgram p, size_t *n)
	GetCode        Sym // (nvrtcProgram p, char *code)
	GetLogSize     Sym // (nvrtcProgram p, size_t *n)
	GetLog         Sym // (nvrtcProgram p, char *log)
	DestroyProgram Sym // (nvrtcProgram *p)
}

// BLASAPI is a BLAS library with cuBLAS's call shapes (hipBLAS has the same).
type BLASAPI struct {
	// Name identifies the library in logs, e.g. "cuBLAS 13.0.0".
	Name string
	// ErrorText names a BLAS status.
	ErrorText func(Status) string
	// Sentinel maps a BLAS status to a hip sentinel.
	Sentinel func(Status) error

	Create    Sym // (cublasHandle_t *h)
	Destroy   Sym // (cublasHandle_t h)
	SetStream Sym // (cublasHandle_t h, cudaStream_t s)
	Sgemm     Sym // (h, transa, transb, m, n, k, const float *alpha, A, lda, B, ldb, const float *beta, C, ldc)
	GemmEx    Sym // (h, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc, computeType, algo)

	OpN, OpT                uintptr
	TypeR32F, TypeR16F      uintptr
	TypeR16BF               uintptr
	Compute32F, AlgoDefault uintptr
}

// C calls.

// call calls fn with args and returns its status, the low 32 bits of the
// result. Like syscall.Syscall, the pointers that args are converted from
// are kept alive and in place for the call.
//
//go:uintptrescapes
func call(fn uintptr, args ...uintptr) Status {
	r, _, _ := purego.SyscallN(fn, args...)
	return Status(int32(r))
}

// Call calls a C function and returns its status. Driver packages use it
// for the calls they make before there is a device.
//
//go:uintptrescapes
func Call(s Sym, args ...uintptr) Status {
	r, _, _ := purego.SyscallN(s.Fn, args...)
	return Status(int32(r))
}

// CallPtr calls a C function that returns a pointer (const char *).
//
//go:uintptrescapes
func CallPtr(s Sym, args ...uintptr) uintptr {
	r, _, _ := purego.SyscallN(s.Fn, args...)
	return r
}

// GoString copies the NUL-terminated C string at p (empty for NULL).
func GoString(p uintptr) string {
	if p == 0 {
		return ""
	}
	var b []byte
	for i := uintptr(0); i < 1<<16; i++ {
		c := *(*byte)(ptrAt(p + i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

// ptrAt turns a C address into a pointer. The memory is not Go's: the
// garbage collector ignores it.
func ptrAt(p uintptr) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&p))
}

// CBytes is s as a NUL-terminated C string in Go memory.
func CBytes(s string) *byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return &b[0]
}

// Library loading.

// Lib is an opened shared library.
type Lib struct {
	Path   string
	handle uintptr
}

// Dlopen opens the first of names that loads (a bare name is searched as
// the dynamic linker does, a path is opened as is) and returns it, or an
// error listing what each attempt said.
func Dlopen(names ...string) (*Lib, error) {
	var why []string
	for _, name := range names {
		h, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			return &Lib{Path: name, handle: h}, nil
		}
		why = append(why, err.Error())
	}
	if len(names) == 0 {
		return nil, errors.New("no candidate paths")
	}
	return nil, errors.New(strings.Join(why, "; "))
}

// Sym looks up name; a missing symbol is an error naming it.
func (l *Lib) Sym(name string) (Sym, error) {
	fn, err := purego.Dlsym(l.handle, name)
	if err != nil || fn == 0 {
		return Sym{}, fmt.Errorf("%s: symbol %s not found", l.Path, name)
	}
	return Sym{Name: name, Fn: fn}, nil
}

// Syms fills the Sym fields named in m, stopping at the first missing one.
func (l *Lib) Syms(m map[*Sym]string) error {
	for dst, name := range m {
		s, err := l.Sym(name)
		if err != nil {
			return err
		}
		*dst = s
	}
	return nil
}

// LibCandidates lists where a library may be: the path in the environment
// variable env (if set), lib's versioned and plain names in each of dirs
// (newest first), and lib's bare name for the dynamic loader's own search.
func LibCandidates(env, lib string, dirs []string) []string {
	var out []string
	if v := os.Getenv(env); v != "" {
		out = append(out, v)
	}
	var pats []string
	for _, d := range dirs {
		pats = append(pats, filepath.Join(d, lib+".[0-9]*"), filepath.Join(d, lib))
	}
	return append(append(out, Candidates(pats...)...), lib)
}

// SoMajor is the first number after ".so." in a library path (0 if none).
func SoMajor(path string) int {
	_, after, ok := strings.Cut(filepath.Base(path), ".so.")
	if !ok {
		return 0
	}
	n := 0
	for _, c := range after {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// SymMap looks up every symbol in names; it fails on the first missing.
func (l *Lib) SymMap(names []string) (map[string]Sym, error) {
	m := make(map[string]Sym, len(names))
	for _, name := range names {
		s, err := l.Sym(name)
		if err != nil {
			return nil, err
		}
		m[name] = s
	}
	return m, nil
}

// Candidates returns the files matching patterns (globs), deduplicated in
// pattern order, newest version first within a pattern.
func Candidates(patterns ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, pat := range patterns {
		m, _ := filepath.Glob(pat)
		slices.SortFunc(m, func(a, b string) int { return compareVersions(b, a) })
		for _, p := range m {
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				continue
			}
			if st, err := os.Stat(real); err != nil || !st.Mode().IsRegular() || seen[real] {
				continue
			}
			seen[real] = true
			out = append(out, p)
		}
	}
	return out
}

// compareVersions orders file names by the numbers in them.
func compareVersions(a, b string) int {
	na, nb := numbers(a), numbers(b)
	for i := range min(len(na), len(nb)) {
		if na[i] != nb[i] {
			return na[i] - nb[i]
		}
	}
	if c := len(na) - len(nb); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func numbers(s string) []int {
	var out []int
	n, in := 0, false
	for _, c := range s {
		if c >= '0' && c <= '9' {
			n, in = n*10+int(c-'0'), true
			continue
		}
		if in {
			out = append(out, n)
		}
		n, in = 0, false
	}
	if in {
		out = append(out, n)
	}
	return out
}
