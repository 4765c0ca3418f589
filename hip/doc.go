// Package hip is forgepipe's device runtime, shaped like the HIP API: devices,
// device and pinned host memory, streams, events, modules and kernel launch,
// stream capture into graphs launched as one unit, and a BLAS handle.
//
// A Device comes from Open, which picks a driver by name: "cuda" (libcuda,
// nvrtc, cuBLAS), "rocm" (libamdhip64, hiprtc, hipBLAS) or "host" (the CPU).
// "auto" tries the GPU drivers first and falls back to host, logging which
// backend it chose and why. GPU drivers live in their own packages and
// register themselves with Register; until they do, their names are stubs
// that fail with ErrNotSupported. The host driver is built in, so "auto"
// always finds a device.
//
// The API is deliberately thin: each method is one runtime call, named in the
// error it returns (for example "hipMalloc(1073741824): out of memory (host
// driver budget 512 MiB, 0 bytes in use)"), and work on a stream is
// asynchronous exactly as on a GPU. The host driver keeps that contract: every stream is an ordered queue
// run by its own goroutine, device memory is Go memory separate from the
// caller's, and events, waits and faults behave as HIP documents, so code
// that orders its work with events is exercised in CI as it would be on a
// GPU. A missing event wait shows up there as a data race under -race.
//
// Host kernels are Go functions registered by name with RegisterHostKernel;
// they see device memory through HostLaunch. Only the host driver can show
// device memory as Go slices, so that view is on HostDevice and HostLaunch,
// never on the generic interfaces.
package hip
