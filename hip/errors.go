package hip

import (
	"errors"
	"fmt"
)

// Sentinel errors that callers branch on, one per class of HIP error. Every
// error returned by this package wraps one of them (or a context error).
var (
	// ErrOutOfMemory: a device allocation does not fit (hipErrorOutOfMemory).
	ErrOutOfMemory = errors.New("out of memory")
	// ErrNoDevice: the driver loaded but found no usable device (hipErrorNoDevice).
	ErrNoDevice = errors.New("no device")
	// ErrNotSupported: the driver or the call is not available here (hipErrorNotSupported).
	ErrNotSupported = errors.New("not supported")
	// ErrInvalidValue: an argument is out of range, such as a copy past the
	// end of an allocation (hipErrorInvalidValue).
	ErrInvalidValue = errors.New("invalid value")
	// ErrInvalidDevicePointer: the pointer is not in a live allocation: never
	// allocated, already freed, freed twice (hipErrorInvalidDevicePointer).
	ErrInvalidDevicePointer = errors.New("invalid device pointer")
	// ErrInvalidHandle: a stream, event, module, function or BLAS handle that
	// was destroyed or belongs to another device (hipErrorInvalidHandle).
	ErrInvalidHandle = errors.New("invalid handle")
	// ErrNotFound: no kernel of that name in the module (hipErrorNotFound).
	ErrNotFound = errors.New("not found")
	// ErrNotReady: the work queried is still pending (hipErrorNotReady).
	// Query returns it; it is not a failure.
	ErrNotReady = errors.New("not ready")
	// ErrLaunchFailure: a kernel failed while running (hipErrorLaunchFailure).
	// It is sticky: the stream's later calls return it too.
	ErrLaunchFailure = errors.New("launch failure")
	// ErrClosed: the device was closed (hipErrorDeinitialized).
	ErrClosed = errors.New("device closed")
)

// Error is the error of one runtime call: the call with its arguments, the
// driver's message and, for GPU drivers, the driver's status code.
type Error struct {
	// Call names the runtime call and its arguments, e.g. "hipMalloc(4096)".
	Call string
	// Msg is the driver's message; empty when Err says it all.
	Msg string
	// Code is the driver's status (hipError_t, CUresult); 0 for the host driver.
	Code int
	// Err is the sentinel (or the earlier error, for a sticky stream error).
	Err error
}

func (e *Error) Error() string {
	switch {
	case e.Msg != "":
		return e.Call + ": " + e.Msg
	case e.Err != nil:
		return e.Call + ": " + e.Err.Error()
	default:
		return e.Call + ": unknown error"
	}
}

// Unwrap returns the sentinel or wrapped error.
func (e *Error) Unwrap() error { return e.Err }

// errf builds the error of call with sentinel err and a formatted message.
func errf(call string, err error, format string, args ...any) *Error {
	return &Error{Call: call, Err: err, Msg: fmt.Sprintf(format, args...)}
}

// wrap returns err as the error of call, keeping err's chain.
func wrap(call string, err error) *Error { return &Error{Call: call, Err: err} }

// sizeString prints a byte count the way people read budgets.
func sizeString(n int64) string {
	const mib = 1 << 20
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= mib && n%mib == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= mib:
		return fmt.Sprintf("%.1f MiB", float64(n)/mib)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}
