// Package rocm is the hip driver for AMD GPUs: HIP's runtime
// (libamdhip64.so), hiprtc to compile kernels at run time (cached on disk
// like the cuda driver's) and hipBLAS for matrix products, opened at run
// time through purego so binaries stay CGO_ENABLED=0. Importing the package
// registers the driver as "rocm" with hip.Register.
//
// UNTESTED ON HARDWARE: no AMD GPU was available. The driver runs on the
// same core as the cuda driver (hip/internal/gpu), which passes hip's
// conformance suite on an H100; this package only supplies HIP's entry
// points, which have the CUDA driver API's shapes (hipMalloc for
// cuMemAlloc, hipModuleLaunchKernel for cuLaunchKernel, ...), and HIP's
// enum values, taken from the HIP and hipBLAS headers. What is tested is
// that it loads cleanly and reports a missing runtime (ErrNotSupported,
// "no ROCm runtime: libamdhip64.so not found") or a missing GPU
// (ErrNoDevice, "no AMD device").
//
// A HIP device is current per OS thread (hipSetDevice), so each call makes
// the device current first: one hipGetDevice when it already is. Kernels
// are compiled by hiprtc for the current device's architecture (hiprtc's
// default); the cache key holds the device's name and gfx version.
package rocm

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

// Device is an opened AMD GPU.
type Device = gpu.Device

// Config adjusts Open.
type Config struct {
	// CacheDir holds compiled kernels; empty means $FORGEPIPE_KERNEL_CACHE,
	// else os.UserCacheDir()/forgepipe/kernels.
	CacheDir string
}

func init() {
	hip.Register("rocm", func(opts hip.Options) (hip.Device, error) { return Open(opts, Config{}) })
}

// runtimeSyms are the libamdhip64 entry points.
var runtimeSyms = []string{
	"hipInit", "hipRuntimeGetVersion", "hipGetDeviceCount", "hipDeviceGetName", "hipDeviceComputeCapability",
	"hipDeviceTotalMem", "hipGetDevice", "hipSetDevice", "hipDeviceSynchronize", "hipGetErrorName", "hipGetErrorString",
	"hipMalloc", "hipFree", "hipMemGetInfo", "hipHostMalloc", "hipHostFree", "hipHostRegister", "hipHostUnregister",
	"hipStreamCreateWithFlags", "hipStreamDestroy", "hipStreamQuery", "hipStreamSynchronize", "hipStreamWaitEvent",
	"hipEventCreateWithFlags", "hipEventDestroy", "hipEventRecord", "hipEventQuery", "hipEventSynchronize", "hipEventElapsedTime",
	"hipMemcpyHtoDAsync", "hipMemcpyDtoHAsync", "hipMemcpyDtoDAsync", "hipMemsetD8Async", "hipMemsetD32Async",
	"hipModuleLoadData", "hipModuleUnload", "hipModuleGetFunction", "hipModuleLaunchKernel", "hipStreamAddCallback",
}

var runtimeLib struct {
	once    sync.Once
	err     error
	lib     *gpu.Lib
	sym     map[string]gpu.Sym
	version int
}

// libDirs are the directories searched for the ROCm libraries, in order.
func libDirs() []string {
	var pats []string
	for _, env := range []string{"ROCM_PATH", "HIP_PATH"} {
		if v := os.Getenv(env); v != "" {
			pats = append(pats, filepath.Join(v, "lib"))
		}
	}
	pats = append(pats, "/opt/rocm/lib", "/opt/rocm-*/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64")
	var dirs []string
	for _, p := range pats {
		m, _ := filepath.Glob(p)
		dirs = append(dirs, m...)
	}
	return dirs
}

func openFirst(cands, syms []string) (*gpu.Lib, map[string]gpu.Sym, error) {
	var why []string
	for _, c := range cands {
		lib, err := gpu.Dlopen(c)
		if err != nil {
			if !filepath.IsAbs(c) && len(why) == 0 {
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
	return nil, nil, errors.New(strings.Join(why, "; "))
}

// errorText is HIP's name and message for st.
func errorText(st gpu.Status) string {
	s := runtimeLib.sym
	n := gpu.GoString(gpu.CallPtr(s["hipGetErrorName"], uintptr(st)))
	m := gpu.GoString(gpu.CallPtr(s["hipGetErrorString"], uintptr(st)))
	switch {
	case n == "" && m == "":
		return fmt.Sprintf("hipError_t %d", int(st))
	case m == "" || m == n:
		return n
	}
	return n + ": " + m
}

func hipErr(call string, st gpu.Status) error {
	return &hip.Error{Call: call, Code: int(st), Err: gpu.StatusSentinel(st), Msg: errorText(st)}
}

func loadRuntime() error {
	runtimeLib.once.Do(func() {
		lib, sym, err := openFirst(gpu.LibCandidates("FORGEPIPE_AMDHIP", "libamdhip64.so", libDirs()), runtimeSyms)
		if err != nil {
			msg := "no ROCm runtime: libamdhip64.so not found: "
			if strings.Contains(err.Error(), "symbol") {
				msg = "ROCm runtime too old: "
			}
			runtimeLib.err = &hip.Error{Call: `hip.Open("rocm")`, Err: hip.ErrNotSupported, Msg: msg + err.Error()}
			return
		}
		runtimeLib.lib, runtimeLib.sym = lib, sym
		if st := gpu.Call(sym["hipInit"], 0); st != 0 {
			runtimeLib.err = &hip.Error{Call: "hipInit(0)", Code: int(st), Err: hip.ErrNoDevice,
				Msg: "no AMD device: " + errorText(st)}
			return
		}
		var v int32
		gpu.Call(sym["hipRuntimeGetVersion"], uintptr(unsafe.Pointer(&v)))
		runtimeLib.version = int(v)
	})
	return runtimeLib.err
}

// HIP constants, from hip_runtime_api.h.
const (
	hostMallocPortable   = 0x1
	hostRegisterPortable = 0x1
	streamNonBlocking    = 0x1
	eventDisableTiming   = 0x2
	errorNotReady        = 600
	captureModeRelaxed   = 2 // hipStreamCaptureModeRelaxed
)

// Open opens AMD GPU opts.Device. It fails with hip.ErrNotSupported when
// libamdhip64.so is missing and hip.ErrNoDevice when there is no such GPU.
func Open(opts hip.Options, cfg Config) (*Device, error) {
	if err := loadRuntime(); err != nil {
		return nil, err
	}
	sym := runtimeLib.sym
	var count int32
	if st := gpu.Call(sym["hipGetDeviceCount"], uintptr(unsafe.Pointer(&count))); st != 0 || count == 0 {
		msg := "no AMD device"
		if st != 0 {
			msg += ": " + errorText(st)
		}
		return nil, &hip.Error{Call: "hipGetDeviceCount", Code: int(st), Err: hip.ErrNoDevice, Msg: msg}
	}
	if opts.Device < 0 || opts.Device >= int(count) {
		return nil, &hip.Error{Call: fmt.Sprintf("hipSetDevice(%d)", opts.Device), Err: hip.ErrNoDevice,
			Msg: fmt.Sprintf("no AMD device %d (%d found)", opts.Device, count)}
	}
	dev := uintptr(opts.Device)
	nameBuf := make([]byte, 256)
	if st := gpu.Call(sym["hipDeviceGetName"], uintptr(unsafe.Pointer(&nameBuf[0])), uintptr(len(nameBuf)), dev); st != 0 {
		return nil, hipErr("hipDeviceGetName", st)
	}
	var major, minor int32
	if st := gpu.Call(sym["hipDeviceComputeCapability"], uintptr(unsafe.Pointer(&major)), uintptr(unsafe.Pointer(&minor)), dev); st != 0 {
		return nil, hipErr("hipDeviceComputeCapability", st)
	}
	name := strings.TrimRight(string(nameBuf), "\x00")
	arch := fmt.Sprintf("gfx%d.%d-%s", major, minor, strings.ReplaceAll(name, " ", "_"))
	api := &gpu.API{
		Driver:    "rocm",
		Name:      fmt.Sprintf("%s (gfx %d.%d)", name, major, minor),
		Arch:      arch,
		Bind:      binder(dev),
		Release:   func() gpu.Status { return 0 },
		ErrorText: errorText,
		Sentinel:  gpu.StatusSentinel,
		NotReady:  errorNotReady,

		MemAlloc: sym["hipMalloc"], MemFree: sym["hipFree"], MemGetInfo: sym["hipMemGetInfo"],
		MemHostAlloc: sym["hipHostMalloc"], MemFreeHost: sym["hipHostFree"],
		MemHostRegister: sym["hipHostRegister"], MemHostUnregister: sym["hipHostUnregister"],
		HostAllocFlags: hostMallocPortable, HostRegisterFlags: hostRegisterPortable,

		StreamCreate: sym["hipStreamCreateWithFlags"], StreamFlags: streamNonBlocking,
		StreamDestroy: sym["hipStreamDestroy"], StreamQuery: sym["hipStreamQuery"],
		StreamSynchronize: sym["hipStreamSynchronize"], StreamWaitEvent: sym["hipStreamWaitEvent"],

		EventCreate: sym["hipEventCreateWithFlags"], EventDisableTiming: eventDisableTiming,
		EventDestroy: sym["hipEventDestroy"], EventRecord: sym["hipEventRecord"], EventQuery: sym["hipEventQuery"],
		EventSynchronize: sym["hipEventSynchronize"], EventElapsedTime: sym["hipEventElapsedTime"],

		MemcpyHtoDAsync: sym["hipMemcpyHtoDAsync"], MemcpyDtoHAsync: sym["hipMemcpyDtoHAsync"],
		MemcpyDtoDAsync: sym["hipMemcpyDtoDAsync"], MemsetD8Async: sym["hipMemsetD8Async"],
		MemsetD32Async: sym["hipMemsetD32Async"],

		ModuleLoadData: sym["hipModuleLoadData"], ModuleUnload: sym["hipModuleUnload"],
		ModuleGetFunction: sym["hipModuleGetFunction"], LaunchKernel: sym["hipModuleLaunchKernel"],
		StreamAddCallback: sym["hipStreamAddCallback"], CtxSynchronize: sym["hipDeviceSynchronize"],
	}
	if s, err := runtimeLib.lib.Sym("hipLaunchHostFunc"); err == nil { // HIP 5.3 and later
		api.LaunchHostFunc = s
	}
	if g, err := graphSyms(); err != nil {
		api.GraphsMissing = err.Error()
	} else {
		api.Graphs = g
	}
	if rtc, err := loadHIPRTC(); err != nil {
		api.RTCMissing = err.Error()
	} else {
		api.RTC = rtc
	}
	if b, err := loadHIPBLAS(); err != nil {
		api.BLASMissing = err.Error()
	} else {
		api.BLAS = b
	}
	return gpu.Open(api, opts, gpu.Config{CacheDir: cfg.CacheDir})
}

// graphSyms looks up stream capture and graph launch; a runtime without
// them (hipGraphInstantiateWithFlags came with HIP 4.5) still opens, and
// BeginCapture says what is missing.
func graphSyms() (*gpu.GraphAPI, error) {
	g := &gpu.GraphAPI{CaptureModeRelaxed: captureModeRelaxed}
	err := runtimeLib.lib.Syms(map[*gpu.Sym]string{
		&g.BeginCapture: "hipStreamBeginCapture", &g.EndCapture: "hipStreamEndCapture",
		&g.Instantiate: "hipGraphInstantiateWithFlags", &g.Launch: "hipGraphLaunch",
		&g.ExecDestroy: "hipGraphExecDestroy", &g.Destroy: "hipGraphDestroy", &g.GetNodes: "hipGraphGetNodes",
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// binder returns the Bind of device dev: one hipGetDevice, and a
// hipSetDevice only on a thread where another device is current.
func binder(dev uintptr) func() gpu.Status {
	get, set := runtimeLib.sym["hipGetDevice"], runtimeLib.sym["hipSetDevice"]
	return func() gpu.Status {
		p := curPool.Get().(*int32)
		st := gpu.Call(get, uintptr(unsafe.Pointer(p)))
		cur := uintptr(*p)
		curPool.Put(p)
		if st != 0 || cur != dev {
			return gpu.Call(set, dev)
		}
		return 0
	}
}

var curPool = sync.Pool{New: func() any { return new(int32) }}

// hiprtc: its own library since ROCm 6, inside libamdhip64 before.
var hiprtc struct {
	once sync.Once
	rtc  *gpu.RTC
	err  error
}

func loadHIPRTC() (*gpu.RTC, error) {
	hiprtc.once.Do(func() {
		names := []string{"hiprtcVersion", "hiprtcGetErrorString", "hiprtcCreateProgram", "hiprtcCompileProgram",
			"hiprtcGetCodeSize", "hiprtcGetCode", "hiprtcGetProgramLogSize", "hiprtcGetProgramLog", "hiprtcDestroyProgram"}
		cands := append(gpu.LibCandidates("FORGEPIPE_HIPRTC", "libhiprtc.so", libDirs()), runtimeLib.lib.Path)
		_, sym, err := openFirst(cands, names)
		if err != nil {
			hiprtc.err = errors.New("hiprtc: " + err.Error())
			return
		}
		var major, minor int32
		gpu.Call(sym["hiprtcVersion"], uintptr(unsafe.Pointer(&major)), uintptr(unsafe.Pointer(&minor)))
		hiprtc.rtc = &gpu.RTC{Name: "hiprtc", Version: fmt.Sprintf("%d.%d", major, minor),
			ErrorText: func(st gpu.Status) string {
				return gpu.GoString(gpu.CallPtr(sym["hiprtcGetErrorString"], uintptr(st)))
			},
			CreateProgram: sym["hiprtcCreateProgram"], CompileProgram: sym["hiprtcCompileProgram"],
			GetCodeSize: sym["hiprtcGetCodeSize"], GetCode: sym["hiprtcGetCode"],
			GetLogSize: sym["hiprtcGetProgramLogSize"], GetLog: sym["hiprtcGetProgramLog"],
			DestroyProgram: sym["hiprtcDestroyProgram"]}
	})
	return hiprtc.rtc, hiprtc.err
}

// hipBLAS enum values. GemmEx's types changed in hipBLAS 2 (the _v2 entry
// point, hipDataType and hipblasComputeType_t) and became the default in 3.
const (
	hipblasOpN = 111
	hipblasOpT = 112
	// hipblasDatatype_t (hipBLAS < 2's GemmEx)
	hipblasR16F = 150
	hipblasR32F = 151
	hipblasR16B = 168
	hipblasAlgo = 160 // HIPBLAS_GEMM_DEFAULT
	// hipDataType and hipblasComputeType_t (v2)
	hipR32F          = 0
	hipR16F          = 2
	hipR16BF         = 14
	hipblasCompute32 = 2
)

var hipblas struct {
	once sync.Once
	api  *gpu.BLASAPI
	err  error
}

func loadHIPBLAS() (*gpu.BLASAPI, error) {
	hipblas.once.Do(func() {
		lib, sym, err := openFirst(gpu.LibCandidates("FORGEPIPE_HIPBLAS", "libhipblas.so", libDirs()), []string{
			"hipblasCreate", "hipblasDestroy", "hipblasSetStream", "hipblasSgemm", "hipblasGemmEx", "hipblasStatusToString"})
		if err != nil {
			hipblas.err = errors.New("hipBLAS: " + err.Error())
			return
		}
		b := &gpu.BLASAPI{
			Name: "hipBLAS (" + lib.Path + ")",
			ErrorText: func(st gpu.Status) string {
				return gpu.GoString(gpu.CallPtr(sym["hipblasStatusToString"], uintptr(st)))
			},
			Sentinel: hipblasSentinel,
			Create:   sym["hipblasCreate"], Destroy: sym["hipblasDestroy"], SetStream: sym["hipblasSetStream"],
			Sgemm: sym["hipblasSgemm"], GemmEx: sym["hipblasGemmEx"], OpN: hipblasOpN, OpT: hipblasOpT,
			TypeR32F: hipR32F, TypeR16F: hipR16F, TypeR16BF: hipR16BF, Compute32F: hipblasCompute32, AlgoDefault: hipblasAlgo,
		}
		if v2, err := lib.Sym("hipblasGemmEx_v2"); err == nil {
			b.GemmEx = v2
		} else if major := gpu.SoMajor(lib.Path); major > 0 && major < 3 {
			b.TypeR32F, b.TypeR16F, b.TypeR16BF, b.Compute32F = hipblasR32F, hipblasR16F, hipblasR16B, hipblasR32F
		}
		hipblas.api = b
	})
	return hipblas.api, hipblas.err
}

func hipblasSentinel(st gpu.Status) error {
	switch st {
	case 2: // HIPBLAS_STATUS_ALLOC_FAILED
		return hip.ErrOutOfMemory
	case 3, 10: // HIPBLAS_STATUS_INVALID_VALUE, HIPBLAS_STATUS_INVALID_ENUM
		return hip.ErrInvalidValue
	case 4: // HIPBLAS_STATUS_MAPPING_ERROR
		return hip.ErrInvalidDevicePointer
	case 5, 6: // HIPBLAS_STATUS_EXECUTION_FAILED, HIPBLAS_STATUS_INTERNAL_ERROR
		return hip.ErrLaunchFailure
	case 9: // HIPBLAS_STATUS_HANDLE_IS_NULLPTR
		return hip.ErrInvalidHandle
	}
	return hip.ErrNotSupported
}
