package gpu

// The GPU drivers register themselves with hip when imported; the tests
// open whichever finds a device and skip when none does.
import (
	_ "github.com/forgepipe/forgepipe/hip/cuda"
	_ "github.com/forgepipe/forgepipe/hip/rocm"
)
