package gpu

import (
	"runtime/debug"
	"sync"

	"github.com/ebitengine/purego"
	"github.com/forgepipe/forgepipe/hip"
)

// Host functions go through one C callback for the whole process (purego
// callbacks are few and never freed): the callback's user data is an id in
// this table, and the callback runs the function stored under it.
var hostFuncs = struct {
	sync.Mutex
	next uintptr
	m    map[uintptr]hostFunc
}{m: map[uintptr]hostFunc{}}

type hostFunc struct {
	s  *stream
	fn func()
}

var (
	callbackOnce, streamCallbackOnce sync.Once
	callbackPtr, streamCallbackPtr   uintptr
)

// hostFuncCallback is the C function pointer of runHostFunc.
func hostFuncCallback() uintptr {
	callbackOnce.Do(func() { callbackPtr = purego.NewCallback(runHostFunc) })
	return callbackPtr
}

// streamCallback is the C function pointer of a stream callback
// (hipStreamAddCallback's shape) that runs the host function in userData.
func streamCallback() uintptr {
	streamCallbackOnce.Do(func() {
		streamCallbackPtr = purego.NewCallback(func(stream, status, userData uintptr) { runHostFunc(userData) })
	})
	return streamCallbackPtr
}

func addHostFunc(s *stream, fn func()) uintptr {
	hostFuncs.Lock()
	defer hostFuncs.Unlock()
	hostFuncs.next++
	id := hostFuncs.next
	hostFuncs.m[id] = hostFunc{s: s, fn: fn}
	return id
}

func takeHostFunc(id uintptr) (hostFunc, bool) {
	hostFuncs.Lock()
	defer hostFuncs.Unlock()
	h, ok := hostFuncs.m[id]
	delete(hostFuncs.m, id)
	return h, ok
}

// forgetHostFuncs drops the entries of a closed device, whose context took
// its queued work with it.
func forgetHostFuncs(d *Device) {
	hostFuncs.Lock()
	defer hostFuncs.Unlock()
	for id, h := range hostFuncs.m {
		if h.s.dev == d {
			delete(hostFuncs.m, id)
		}
	}
}

// runHostFunc is called by the driver on its own thread, in stream order.
// A panic becomes the stream's sticky ErrLaunchFailure.
func runHostFunc(id uintptr) {
	h, ok := takeHostFunc(id)
	if !ok {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			d := h.s.dev
			d.log.Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("hip host function panicked")
			h.s.fail(errf("host function", hip.ErrLaunchFailure, "host function panicked: %v", r))
		}
	}()
	h.fn()
}
