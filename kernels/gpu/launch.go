package gpu

import (
	"os"
	"strconv"

	"github.com/forgepipe/forgepipe/hip"
)

// launch enqueues kernel f of the module on s. Every launch of the
// package goes through it, as a dependent launch (hip.LaunchConfig)
// unless FORGEPIPE_PDL=0 was set when the module was loaded: on GPUs that
// have programmatic dependent launch (CUDA sm_90 and later) a kernel's
// blocks are then scheduled as the kernel before it drains. That is safe
// because every kernel of src/*.cu begins with FP_GRID_LAUNCH_DEPENDENTS()
// and FP_GRID_WAIT(), before any global memory access
// (TestKernelsWaitFirst): a kernel touches nothing before the work ahead
// of it on the stream is complete and visible, and so never ends before
// it either. BLAS calls (MatMul) are ordinary launches and keep full
// stream order.
//
// When the next kernel is launched is compat.h's choice: as this one's
// blocks end (the default) or as they begin (FORGEPIPE_PDL_EARLY=1). On
// an H100 (BenchmarkDecodeDirect, 1B Q8_0 and 8B Q4_K, rounds
// interleaved; NOTES.md) the late trigger made a decode step 1-2 %
// faster than ordinary launches, the early one 3.5-6 % slower.
func (k *Kernels) launch(s hip.Stream, f hip.Function, grid, block hip.Dim3, sharedMem uint32, args ...hip.Arg) error {
	return s.LaunchEx(f, hip.LaunchConfig{Grid: grid, Block: block, SharedMem: sharedMem, Dependent: k.dependent}, args...)
}

// dependentFromEnv reports whether launches are dependent: unless
// FORGEPIPE_PDL=0 (for A/B timing).
func dependentFromEnv() bool { return os.Getenv("FORGEPIPE_PDL") != "0" }

// envInt is the integer in environment variable name, or def when it is
// unset or not an integer (A/B switches for timing).
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}
