package gpu

import "github.com/forgepipe/forgepipe/hip"

// FunctionHandle is the driver's handle of a kernel of a Device, for
// drivers' own tests and benchmarks (0 for another driver's function).
func FunctionHandle(f hip.Function) uintptr {
	if fn, ok := f.(*function); ok {
		return fn.h
	}
	return 0
}

// StreamHandle is the driver's handle of a stream of a Device (0 for
// another driver's stream).
func StreamHandle(s hip.Stream) uintptr {
	if gs, ok := s.(*stream); ok {
		return gs.h
	}
	return 0
}

// DeviceBind returns d's API.Bind, for timing it.
func DeviceBind(d *Device) func() Status { return d.api.Bind }
