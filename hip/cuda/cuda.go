// Package cuda is the hip driver for NVIDIA GPUs: the CUDA driver API
// (libcuda.so.1), nvrtc to compile kernels at run time for the device's
// architecture (the compiled code is cached on disk, keyed by source,
// options, architecture and nvrtc version, so a second start compiles
// nothing) and cuBLAS for matrix products. The libraries are opened at run
// time through purego, so binaries stay CGO_ENABLED=0; importing the
// package registers the driver as "cuda" with hip.Register.
//
// The mapping of hip calls to the driver API is HIP's own on NVIDIA:
// hipMalloc is cuMemAlloc, hipModuleLaunchKernel is cuLaunchKernel, and so
// on; errors name the CUDA call and carry the driver's message
// (cuGetErrorName, cuGetErrorString). Streams are non-blocking; the device's
// primary context is made current on the calling OS thread at the start of
// every call that touches the GPU (one cuCtxSetCurrent, ~0.17 µs, with the
// goroutine locked to its thread for the call), so callers may use any
// goroutine. Copies to pageable Go memory go through
// pinned staging buffers and a host function, so they stay asynchronous as
// hip.Stream promises; copies from pageable memory are staged by the driver
// itself. Pinned memory (HostAlloc, HostRegister) is the fast path.
// Stream capture is cuStreamBeginCapture_v2 in relaxed mode, ended by
// cuStreamEndCapture and cuGraphInstantiateWithFlags; a graph launch is one
// cuGraphLaunch, however many kernels it holds. A dependent launch
// (hip.LaunchConfig.Dependent) is cuLaunchKernelEx with
// CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION on GPUs of compute
// capability 9.0 and later with a driver of CUDA 12.3 or later (the first
// to capture it into a graph, as a programmatic edge); elsewhere it is an
// ordinary cuLaunchKernel.
//
// Libraries are looked up in this order: $FORGEPIPE_NVRTC / $FORGEPIPE_CUBLAS
// (paths), $CUDA_HOME and $CUDA_PATH, /usr/local/cuda*, the system library
// directories, and the nvidia-* Python wheels (site-packages/nvidia/*/lib);
// a library whose major version is newer than the driver's is skipped.
package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/hip/internal/gpu"
)

// Device is an opened NVIDIA GPU. Beyond hip.Device it has HostRegister
// (pin Go memory), Arch, CacheDir, Compiles and CacheHits.
type Device = gpu.Device

// Config adjusts Open.
type Config struct {
	// CacheDir holds compiled kernels; empty means $FORGEPIPE_KERNEL_CACHE,
	// else os.UserCacheDir()/forgepipe/kernels.
	CacheDir string
}

func init() {
	hip.Register("cuda", func(opts hip.Options) (hip.Device, error) { return Open(opts, Config{}) })
}

// driver is libcuda, opened once per process.
var driver struct {
	once    sync.Once
	err     error
	lib     *gpu.Lib
	version int // cuDriverGetVersion, e.g. 13000
	sym     map[string]gpu.Sym
}

// driverSyms are the libcuda entry points, by the name the core knows them.
var driverSyms = []string{
	"cuInit", "cuDriverGetVersion", "cuDeviceGetCount", "cuDeviceGet", "cuDeviceGetName",
	"cuDeviceGetAttribute", "cuDeviceTotalMem_v2", "cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRelease_v2",
	"cuCtxGetCurrent", "cuCtxSetCurrent", "cuCtxSynchronize", "cuGetErrorName", "cuGetErrorString",
	"cuMemAlloc_v2", "cuMemFree_v2", "cuMemGetInfo_v2", "cuMemHostAlloc", "cuMemFreeHost",
	"cuMemHostRegister_v2", "cuMemHostUnregister",
	"cuStreamCreate", "cuStreamDestroy_v2", "cuStreamQuery", "cuStreamSynchronize", "cuStreamWaitEvent",
	"cuEventCreate", "cuEventDestroy_v2", "cuEventRecord", "cuEventQuery", "cuEventSynchronize", "cuEventElapsedTime",
	"cuMemcpyHtoDAsync_v2", "cuMemcpyDtoHAsync_v2", "cuMemcpyDtoDAsync_v2", "cuMemsetD8Async", "cuMemsetD32Async",
	"cuModuleLoadData", "cuModuleUnload", "cuModuleGetFunction", "cuLaunchKernel", "cuLaunchHostFunc",
}

// loadDriver opens libcuda.so.1 and initialises it.
func loadDriver() error {
	driver.once.Do(func() {
		lib, err := gpu.Dlopen("libcuda.so.1")
		if err != nil {
			driver.err = &hip.Error{Call: `hip.Open("cuda")`, Err: hip.ErrNotSupported,
				Msg: "no CUDA driver (libcuda.so.1 not found): " + err.Error()}
			return
		}
		driver.lib, driver.sym = lib, map[string]gpu.Sym{}
		for _, name := range driverSyms {
			s, err := lib.Sym(name)
			if err != nil {
				driver.err = &hip.Error{Call: `hip.Open("cuda")`, Err: hip.ErrNotSupported,
					Msg: "CUDA driver too old: " + err.Error()}
				return
			}
			driver.sym[name] = s
		}
		if st := gpu.Call(driver.sym["cuInit"], 0); st != 0 {
			driver.err = &hip.Error{Call: "cuInit(0)", Code: int(st), Err: gpu.StatusSentinel(st),
				Msg: "no CUDA device: " + errorText(st)}
			return
		}
		var v int32
		gpu.Call(driver.sym["cuDriverGetVersion"], uintptr(unsafe.Pointer(&v)))
		driver.version = int(v)
	})
	return driver.err
}

// errorText is the driver's name and message for st.
func errorText(st gpu.Status) string {
	var name, msg uintptr
	if s, ok := driver.sym["cuGetErrorName"]; ok {
		gpu.Call(s, uintptr(st), uintptr(unsafe.Pointer(&name)))
	}
	if s, ok := driver.sym["cuGetErrorString"]; ok {
		gpu.Call(s, uintptr(st), uintptr(unsafe.Pointer(&msg)))
	}
	n, m := gpu.GoString(name), gpu.GoString(msg)
	switch {
	case n == "" && m == "":
		return fmt.Sprintf("CUresult %d", int(st))
	case n == "":
		return m
	case m == "":
		return n
	}
	return n + ": " + m
}

// CUDA constants.
const (
	attrComputeMajor = 75 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
	attrComputeMinor = 76
	attrSMCount      = 16 // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT

	memHostAllocPortable    = 0x1 // CU_MEMHOSTALLOC_PORTABLE
	memHostRegisterPortable = 0x1 // CU_MEMHOSTREGISTER_PORTABLE
	streamNonBlocking       = 0x1 // CU_STREAM_NON_BLOCKING
	eventDisableTiming      = 0x2 // CU_EVENT_DISABLE_TIMING
	notReady                = 600 // CUDA_ERROR_NOT_READY
	captureModeRelaxed      = 2   // CU_STREAM_CAPTURE_MODE_RELAXED

	launchAttrProgrammatic = 6 // CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
	// Programmatic dependent launch needs compute capability 9.0; stream
	// capture records it as a programmatic graph edge from CUDA 12.3.
	programmaticMinMajor  = 9
	programmaticMinDriver = 12030
)

// Open opens GPU opts.Device. It fails with hip.ErrNotSupported when
// libcuda.so.1 is missing and hip.ErrNoDevice when it finds no such GPU. A
// missing nvrtc or cuBLAS does not fail Open: LoadModule or BLASCreate then
// fail with ErrNotSupported saying what was looked for.
func Open(opts hip.Options, cfg Config) (*Device, error) {
	if err := loadDriver(); err != nil {
		return nil, err
	}
	sym := driver.sym
	var count int32
	if st := gpu.Call(sym["cuDeviceGetCount"], uintptr(unsafe.Pointer(&count))); st != 0 {
		return nil, cuErr("cuDeviceGetCount", st)
	}
	if count == 0 {
		return nil, &hip.Error{Call: "cuDeviceGetCount", Err: hip.ErrNoDevice, Msg: "no CUDA device"}
	}
	if opts.Device < 0 || opts.Device >= int(count) {
		return nil, &hip.Error{Call: fmt.Sprintf("cuDeviceGet(%d)", opts.Device), Err: hip.ErrNoDevice,
			Msg: fmt.Sprintf("no CUDA device %d (%d found)", opts.Device, count)}
	}
	var dev int32
	if st := gpu.Call(sym["cuDeviceGet"], uintptr(unsafe.Pointer(&dev)), uintptr(opts.Device)); st != 0 {
		return nil, cuErr(fmt.Sprintf("cuDeviceGet(%d)", opts.Device), st)
	}
	nameBuf := make([]byte, 256)
	if st := gpu.Call(sym["cuDeviceGetName"], uintptr(unsafe.Pointer(&nameBuf[0])), uintptr(len(nameBuf)), uintptr(dev)); st != 0 {
		return nil, cuErr("cuDeviceGetName", st)
	}
	attr := func(a int) (int, error) {
		var v int32
		if st := gpu.Call(sym["cuDeviceGetAttribute"], uintptr(unsafe.Pointer(&v)), uintptr(a), uintptr(dev)); st != 0 {
			return 0, cuErr(fmt.Sprintf("cuDeviceGetAttribute(%d)", a), st)
		}
		return int(v), nil
	}
	major, err := attr(attrComputeMajor)
	if err != nil {
		return nil, err
	}
	minor, err := attr(attrComputeMinor)
	if err != nil {
		return nil, err
	}
	sms, err := attr(attrSMCount)
	if err != nil {
		return nil, err
	}
	var ctx uintptr
	if st := gpu.Call(sym["cuDevicePrimaryCtxRetain"], uintptr(unsafe.Pointer(&ctx)), uintptr(dev)); st != 0 {
		return nil, cuErr("cuDevicePrimaryCtxRetain", st)
	}
	arch := fmt.Sprintf("sm_%d%d", major, minor)
	api := &gpu.API{
		Driver:    "cuda",
		Name:      fmt.Sprintf("%s (%s, %d SMs)", strings.TrimRight(string(nameBuf), "\x00"), arch, sms),
		Arch:      arch,
		Bind:      binder(ctx),
		Release:   func() gpu.Status { return gpu.Call(sym["cuDevicePrimaryCtxRelease_v2"], uintptr(dev)) },
		ErrorText: errorText,
		Sentinel:  gpu.StatusSentinel,
		NotReady:  notReady,

		MemAlloc: sym["cuMemAlloc_v2"], MemFree: sym["cuMemFree_v2"], MemGetInfo: sym["cuMemGetInfo_v2"],
		MemHostAlloc: sym["cuMemHostAlloc"], MemFreeHost: sym["cuMemFreeHost"],
		MemHostRegister: sym["cuMemHostRegister_v2"], MemHostUnregister: sym["cuMemHostUnregister"],
		HostAllocFlags: memHostAllocPortable, HostRegisterFlags: memHostRegisterPortable,

		StreamCreate: sym["cuStreamCreate"], StreamFlags: streamNonBlocking,
		StreamDestroy: sym["cuStreamDestroy_v2"], StreamQuery: sym["cuStreamQuery"],
		StreamSynchronize: sym["cuStreamSynchronize"], StreamWaitEvent: sym["cuStreamWaitEvent"],

		EventCreate: sym["cuEventCreate"], EventDisableTiming: eventDisableTiming,
		EventDestroy: sym["cuEventDestroy_v2"], EventRecord: sym["cuEventRecord"], EventQuery: sym["cuEventQuery"],
		EventSynchronize: sym["cuEventSynchronize"], EventElapsedTime: sym["cuEventElapsedTime"],

		MemcpyHtoDAsync: sym["cuMemcpyHtoDAsync_v2"], MemcpyDtoHAsync: sym["cuMemcpyDtoHAsync_v2"],
		MemcpyDtoDAsync: sym["cuMemcpyDtoDAsync_v2"], MemsetD8Async: sym["cuMemsetD8Async"],
		MemsetD32Async: sym["cuMemsetD32Async"],

		ModuleLoadData: sym["cuModuleLoadData"], ModuleUnload: sym["cuModuleUnload"],
		ModuleGetFunction: sym["cuModuleGetFunction"], LaunchKernel: sym["cuLaunchKernel"],
		LaunchHostFunc: sym["cuLaunchHostFunc"], CtxSynchronize: sym["cuCtxSynchronize"],
	}
	if major >= programmaticMinMajor && driver.version >= programmaticMinDriver {
		if ex, err := driver.lib.Sym("cuLaunchKernelEx"); err == nil {
			api.LaunchKernelEx, api.LaunchAttrProgrammatic = ex, launchAttrProgrammatic
		}
	}
	if g, err := graphSyms(); err != nil {
		api.GraphsMissing = err.Error()
	} else {
		api.Graphs = g
	}
	if rtc, err := loadNVRTC(); err != nil {
		api.RTCMissing = err.Error()
	} else {
		api.RTC = &gpu.RTC{Name: "nvrtc", Version: rtc.version, ErrorText: rtc.errorText,
			Options:       append([]string{"-arch=" + arch}, includeOptions()...),
			CreateProgram: rtc.sym["nvrtcCreateProgram"], CompileProgram: rtc.sym["nvrtcCompileProgram"],
			GetCodeSize: rtc.sym["nvrtcGetCUBINSize"], GetCode: rtc.sym["nvrtcGetCUBIN"],
			GetLogSize: rtc.sym["nvrtcGetProgramLogSize"], GetLog: rtc.sym["nvrtcGetProgramLog"],
			DestroyProgram: rtc.sym["nvrtcDestroyProgram"]}
	}
	if b, err := loadCUBLAS(); err != nil {
		api.BLASMissing = err.Error()
	} else {
		api.BLAS = b
	}
	d, err := gpu.Open(api, opts, gpu.Config{CacheDir: cfg.CacheDir})
	if err != nil {
		api.Release()
		return nil, err
	}
	return d, nil
}

// graphSyms looks up stream capture and graph launch (CUDA 11.4 and later).
func graphSyms() (*gpu.GraphAPI, error) {
	g := &gpu.GraphAPI{CaptureModeRelaxed: captureModeRelaxed}
	err := driver.lib.Syms(map[*gpu.Sym]string{
		&g.BeginCapture: "cuStreamBeginCapture_v2", &g.EndCapture: "cuStreamEndCapture",
		&g.Instantiate: "cuGraphInstantiateWithFlags", &g.Launch: "cuGraphLaunch",
		&g.ExecDestroy: "cuGraphExecDestroy", &g.Destroy: "cuGraphDestroy", &g.GetNodes: "cuGraphGetNodes",
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

func cuErr(call string, st gpu.Status) error {
	return &hip.Error{Call: call, Code: int(st), Err: gpu.StatusSentinel(st), Msg: errorText(st)}
}

// binder returns the Bind of a device whose primary context is ctx: one
// cuCtxSetCurrent, which replaces the thread's current context and costs
// less than asking for it (measured on an H100: 166 ns against 517 ns for
// cuCtxGetCurrent through purego).
func binder(ctx uintptr) func() gpu.Status {
	set := driver.sym["cuCtxSetCurrent"]
	return func() gpu.Status { return gpu.Call(set, ctx) }
}

// Library search.

// libDirs are the directories searched for nvrtc and cuBLAS, in order.
func libDirs() []string {
	var pats []string
	for _, env := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if v := os.Getenv(env); v != "" {
			pats = append(pats, filepath.Join(v, "lib64"), filepath.Join(v, "lib"))
		}
	}
	pats = append(pats, "/usr/local/cuda/lib64", "/usr/local/cuda-*/lib64",
		"/usr/local/cuda*/targets/*-linux/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/aarch64-linux-gnu")
	if v := os.Getenv("VIRTUAL_ENV"); v != "" {
		pats = append(pats, filepath.Join(v, "lib/python3*/site-packages/nvidia/*/lib"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		pats = append(pats, filepath.Join(home, ".local/lib/python3*/site-packages/nvidia/*/lib"))
	}
	pats = append(pats,
		"/usr/local/lib/python3*/*-packages/nvidia/*/lib", "/usr/lib/python3*/*-packages/nvidia/*/lib",
		"/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib", "/opt/*/lib/python3*/site-packages/nvidia/*/lib",
		"/opt/conda/lib")
	var dirs []string
	seen := map[string]bool{}
	for _, p := range pats {
		m, _ := filepath.Glob(p)
		for _, d := range m {
			if !seen[d] {
				seen[d] = true
				dirs = append(dirs, d)
			}
		}
	}
	return dirs
}

// openNewest opens the first candidate whose major version the driver
// supports and which has every symbol in syms.
func openNewest(what string, cands []string, syms []string) (*gpu.Lib, map[string]gpu.Sym, error) {
	var why []string
	for _, c := range cands {
		if m := gpu.SoMajor(c); m > driver.version/1000 {
			why = append(why, fmt.Sprintf("%s: version %d is newer than the driver's CUDA %d.%d", c, m, driver.version/1000, driver.version%1000/10))
			continue
		}
		lib, err := gpu.Dlopen(c)
		if err != nil {
			if filepath.IsAbs(c) {
				why = append(why, err.Error())
			}
			continue
		}
		m, err := lib.SymMap(syms)
		if err != nil {
			why = append(why, err.Error())
			continue
		}
		return lib, m, nil
	}
	if len(why) == 0 {
		why = append(why, "not found")
	}
	return nil, nil, errors.New(what + ": " + strings.Join(why, "; "))
}

// nvrtc, opened once per process.
var nvrtc struct {
	once    sync.Once
	err     error
	lib     *gpu.Lib
	sym     map[string]gpu.Sym
	version string
}

type nvrtcLib struct {
	sym     map[string]gpu.Sym
	version string
}

func (n *nvrtcLib) errorText(st gpu.Status) string {
	msg := gpu.GoString(gpu.CallPtr(n.sym["nvrtcGetErrorString"], uintptr(st)))
	if msg == "" {
		return fmt.Sprintf("nvrtcResult %d", int(st))
	}
	return msg
}

func loadNVRTC() (*nvrtcLib, error) {
	nvrtc.once.Do(func() {
		lib, sym, err := openNewest("libnvrtc.so", gpu.LibCandidates("FORGEPIPE_NVRTC", "libnvrtc.so", libDirs()), []string{
			"nvrtcVersion", "nvrtcGetErrorString", "nvrtcCreateProgram", "nvrtcCompileProgram",
			"nvrtcGetCUBINSize", "nvrtcGetCUBIN", "nvrtcGetProgramLogSize", "nvrtcGetProgramLog", "nvrtcDestroyProgram"})
		if err != nil {
			nvrtc.err = err
			return
		}
		var major, minor int32
		gpu.Call(sym["nvrtcVersion"], uintptr(unsafe.Pointer(&major)), uintptr(unsafe.Pointer(&minor)))
		nvrtc.lib, nvrtc.sym, nvrtc.version = lib, sym, fmt.Sprintf("%d.%d", major, minor)
	})
	if nvrtc.err != nil {
		return nil, nvrtc.err
	}
	return &nvrtcLib{sym: nvrtc.sym, version: nvrtc.version}, nil
}

// NVRTC returns the path and version of the nvrtc library in use, or why
// there is none.
func NVRTC() (path, version string, err error) {
	if _, err := loadNVRTC(); err != nil {
		return "", "", err
	}
	return nvrtc.lib.Path, nvrtc.version, nil
}

// includeOptions adds the CUDA headers' directory (cuda_fp16.h, ...) when
// one is installed, for kernels that include them.
func includeOptions() []string {
	var out []string
	pats := []string{"/usr/local/cuda/include"}
	if v := os.Getenv("CUDA_HOME"); v != "" {
		pats = append([]string{filepath.Join(v, "include")}, pats...)
	}
	if nvrtc.lib != nil { // the wheel's include directory next to its lib
		pats = append(pats, filepath.Join(filepath.Dir(filepath.Dir(nvrtc.lib.Path)), "include"))
	}
	for _, p := range pats {
		if _, err := os.Stat(filepath.Join(p, "cuda_fp16.h")); err == nil {
			out = append(out, "-I"+p)
			break
		}
	}
	return out
}

// cuBLAS.

// cuBLAS constants.
const (
	cublasOpN        = 0
	cublasOpT        = 1
	cudaR32F         = 0
	cudaR16F         = 2
	cudaR16BF        = 14
	cublasCompute32F = 68
)

var cublas struct {
	once sync.Once
	err  error
	api  *gpu.BLASAPI
	path string
}

func loadCUBLAS() (*gpu.BLASAPI, error) {
	cublas.once.Do(func() {
		lib, sym, err := openNewest("libcublas.so", gpu.LibCandidates("FORGEPIPE_CUBLAS", "libcublas.so", libDirs()), []string{
			"cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2", "cublasSgemm_v2", "cublasGemmEx",
			"cublasGetStatusString", "cublasGetStatusName", "cublasGetProperty"})
		if err != nil {
			cublas.err = err
			return
		}
		var maj, min, patch int32
		gpu.Call(sym["cublasGetProperty"], 0, uintptr(unsafe.Pointer(&maj)))
		gpu.Call(sym["cublasGetProperty"], 1, uintptr(unsafe.Pointer(&min)))
		gpu.Call(sym["cublasGetProperty"], 2, uintptr(unsafe.Pointer(&patch)))
		cublas.path = lib.Path
		cublas.api = &gpu.BLASAPI{
			Name: fmt.Sprintf("cuBLAS %d.%d.%d", maj, min, patch),
			ErrorText: func(st gpu.Status) string {
				return gpu.GoString(gpu.CallPtr(sym["cublasGetStatusName"], uintptr(st))) + ": " +
					gpu.GoString(gpu.CallPtr(sym["cublasGetStatusString"], uintptr(st)))
			},
			Sentinel: cublasSentinel,
			Create:   sym["cublasCreate_v2"], Destroy: sym["cublasDestroy_v2"], SetStream: sym["cublasSetStream_v2"],
			Sgemm: sym["cublasSgemm_v2"], GemmEx: sym["cublasGemmEx"],
			OpN: cublasOpN, OpT: cublasOpT, TypeR32F: cudaR32F, TypeR16F: cudaR16F, TypeR16BF: cudaR16BF,
			Compute32F: cublasCompute32F, AlgoDefault: uintptr(^uint32(0)), // CUBLAS_GEMM_DEFAULT = -1
		}
	})
	return cublas.api, cublas.err
}

// CUBLAS returns the path and version of the cuBLAS library in use, or why
// there is none.
func CUBLAS() (path, version string, err error) {
	if _, err := loadCUBLAS(); err != nil {
		return "", "", err
	}
	return cublas.path, cublas.api.Name, nil
}

func cublasSentinel(st gpu.Status) error {
	switch st {
	case 3: // CUBLAS_STATUS_ALLOC_FAILED
		return hip.ErrOutOfMemory
	case 7: // CUBLAS_STATUS_INVALID_VALUE
		return hip.ErrInvalidValue
	case 13, 14: // CUBLAS_STATUS_EXECUTION_FAILED, CUBLAS_STATUS_INTERNAL_ERROR
		return hip.ErrLaunchFailure
	}
	return hip.ErrNotSupported // not initialized, arch mismatch, not supported, license
}
