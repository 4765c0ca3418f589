package gpu

import (
	"fmt"

	"github.com/forgepipe/forgepipe/hip"
)

// StatusSentinel maps the status codes that CUresult and hipError_t share
// (HIP kept CUDA's numbering) to hip's sentinels.
func StatusSentinel(s Status) error {
	switch s {
	case 1, 701: // invalid value; launch out of resources (block too large)
		return hip.ErrInvalidValue
	case 2:
		return hip.ErrOutOfMemory
	case 4: // deinitialized
		return hip.ErrClosed
	case 100, 101, 46: // no device, invalid device, device unavailable
		return hip.ErrNoDevice
	case 17: // hipErrorInvalidDevicePointer
		return hip.ErrInvalidDevicePointer
	case 201, 400, 98: // invalid context, invalid handle, hipErrorInvalidDeviceFunction
		return hip.ErrInvalidHandle
	case 500, 301: // not found, file not found
		return hip.ErrNotFound
	case 600:
		return hip.ErrNotReady
	case 700, 702, 714, 715, 716, 717, 718, 719, 720: // illegal address, timeout, exceptions, launch failure
		return hip.ErrLaunchFailure
	}
	return hip.ErrNotSupported
}

// err is the error of call for status st.
func (d *Device) err(call string, st Status) error {
	return &hip.Error{Call: call, Code: int(st), Err: d.api.Sentinel(st), Msg: d.api.ErrorText(st)}
}

// errf is call's error with sentinel and a formatted message.
func errf(call string, sentinel error, format string, args ...any) error {
	return &hip.Error{Call: call, Err: sentinel, Msg: fmt.Sprintf(format, args...)}
}

// wrap returns err as call's error, keeping err's chain.
func wrap(call string, err error) error { return &hip.Error{Call: call, Err: err} }
