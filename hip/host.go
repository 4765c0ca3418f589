package hip

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/rs/zerolog"
	"github.com/rs/zerolog/log"
)

// Host device addresses: the allocation's id in the high bits, the byte
// offset in the low hostOffsetBits. Ids are not reused until they wrap
// around, so a pointer into freed memory stays invalid instead of aliasing
// a later allocation.
const (
	hostOffsetBits = 40
	hostMaxAlloc   = 1 << hostOffsetBits // 1 TiB per allocation
	hostMaxID      = 1<<(64-hostOffsetBits) - 1
)

func splitPtr(p DevicePtr) (id uint64, off int64) {
	return uint64(p) >> hostOffsetBits, int64(uint64(p) & (hostMaxAlloc - 1))
}

// hostDefaultMemory is the budget when /proc/meminfo cannot be read.
const hostDefaultMemory = 8 << 30

// HostDevice is the host driver's device: the CPU, with device memory that
// is Go memory kept apart from the caller's. Open("host", ...) returns one
// as a Device; OpenHost returns it with its host-only methods.
type HostDevice struct {
	name   string
	budget int64
	log    zerolog.Logger

	closed atomic.Bool
	quit   chan struct{} // closed by Close: stream goroutines stop
	wg     sync.WaitGroup

	mu          sync.RWMutex
	allocs      map[uint64]*hostAlloc // by id; nil while Malloc fills it in
	nextID      uint64
	wrapped     bool // ids have wrapped around: freed ids may be reused
	allocated   int64
	peak        int64
	streams     map[*hostStream]struct{}
	pinned      map[*hostPinned]struct{}
	pinnedBytes int64

	htod, dtoh, dtod, launches atomic.Int64
	graphLaunches              atomic.Int64
}

type hostAlloc struct {
	data []byte
}

// OpenHost opens the host driver's device directly. opts.HostMemory is its
// device memory budget (0: the machine's physical memory).
func OpenHost(opts Options) (*HostDevice, error) {
	budget := opts.HostMemory
	if budget < 0 {
		return nil, errf(`hip.Open("host")`, ErrInvalidValue, "negative HostMemory %d", budget)
	}
	if budget == 0 {
		budget = physicalMemory()
	}
	logger := log.Logger
	if opts.Logger != nil {
		logger = *opts.Logger
	}
	return &HostDevice{
		name:    fmt.Sprintf("host (%d CPUs)", runtime.NumCPU()),
		budget:  budget,
		log:     logger,
		quit:    make(chan struct{}),
		allocs:  map[uint64]*hostAlloc{},
		nextID:  1,
		streams: map[*hostStream]struct{}{},
		pinned:  map[*hostPinned]struct{}{},
	}, nil
}

// physicalMemory reads MemTotal from /proc/meminfo.
func physicalMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return hostDefaultMemory
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			if kb, err := strconv.ParseInt(fields[1], 10, 64); err == nil && kb > 0 {
				return kb << 10
			}
		}
	}
	return hostDefaultMemory
}

// Driver returns "host".
func (d *HostDevice) Driver() string { return "host" }

// Name describes the device.
func (d *HostDevice) Name() string { return d.name }

// MemGetInfo returns the unallocated part of the budget and the budget.
func (d *HostDevice) MemGetInfo() (free, total int64, err error) {
	if d.closed.Load() {
		return 0, 0, errf("hipMemGetInfo", ErrClosed, "device closed")
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.budget - d.allocated, d.budget, nil
}

// alignedBytes returns n zeroed bytes starting at an 8-byte boundary, so that
// host kernels can view them as any element type.
func alignedBytes(n int64) []byte {
	w := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(w))), n)
}

// Malloc allocates size bytes of device memory within the budget. Host
// memory comes zeroed, but callers must not rely on that (GPUs do not).
func (d *HostDevice) Malloc(size int64) (DevicePtr, error) {
	call := fmt.Sprintf("hipMalloc(%d)", size)
	if size < 0 {
		return 0, errf(call, ErrInvalidValue, "negative size")
	}
	d.mu.Lock()
	if d.closed.Load() {
		d.mu.Unlock()
		return 0, errf(call, ErrClosed, "device closed")
	}
	if size == 0 {
		d.mu.Unlock()
		return 0, nil
	}
	if size > d.budget-d.allocated {
		inUse := d.allocated
		d.mu.Unlock()
		return 0, errf(call, ErrOutOfMemory, "out of memory (host driver budget %s, %s in use)",
			sizeString(d.budget), sizeString(inUse))
	}
	if size > hostMaxAlloc {
		d.mu.Unlock()
		return 0, errf(call, ErrOutOfMemory, "out of memory (the host driver allocates at most %s at once)",
			sizeString(hostMaxAlloc))
	}
	id, ok := d.newIDLocked()
	if !ok {
		d.mu.Unlock()
		return 0, errf(call, ErrOutOfMemory, "out of memory (host driver address space exhausted)")
	}
	d.allocs[id] = nil // reserved: not yet a valid address
	d.allocated += size
	d.peak = max(d.peak, d.allocated)
	d.mu.Unlock()

	a := &hostAlloc{data: alignedBytes(size)} // zeroing a large block runs unlocked

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Load() {
		return 0, errf(call, ErrClosed, "device closed")
	}
	d.allocs[id] = a
	return DevicePtr(id << hostOffsetBits), nil
}

// newIDLocked picks an unused allocation id; d.mu is held.
func (d *HostDevice) newIDLocked() (uint64, bool) {
	for range len(d.allocs) + 1 {
		id := d.nextID
		if d.nextID == hostMaxID {
			d.nextID, d.wrapped = 1, true
		} else {
			d.nextID++
		}
		if _, used := d.allocs[id]; !used {
			return id, true
		}
	}
	return 0, false
}

// Free releases an allocation. Work still queued that uses it fails with
// ErrInvalidDevicePointer when it runs.
func (d *HostDevice) Free(p DevicePtr) error {
	call := fmt.Sprintf("hipFree(%v)", p)
	if p == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Load() {
		return errf(call, ErrClosed, "device closed")
	}
	id, off := splitPtr(p)
	a := d.allocs[id]
	switch {
	case a == nil && !d.wrapped && id > 0 && id < d.nextID:
		return errf(call, ErrInvalidDevicePointer, "invalid device pointer: already freed (double free)")
	case a == nil:
		return errf(call, ErrInvalidDevicePointer, "invalid device pointer: not a live allocation")
	case off != 0:
		return errf(call, ErrInvalidDevicePointer,
			"invalid device pointer: %d bytes into the allocation at %v; free that instead", off, DevicePtr(id<<hostOffsetBits))
	}
	delete(d.allocs, id)
	d.allocated -= int64(len(a.data))
	return nil
}

// view returns the n bytes of device memory at p, or call's error saying why
// they are not all inside one live allocation.
func (d *HostDevice) view(call string, p DevicePtr, n int64) ([]byte, error) {
	if n < 0 {
		return nil, errf(call, ErrInvalidValue, "negative size %d", n)
	}
	if p == 0 {
		return nil, errf(call, ErrInvalidDevicePointer, "invalid device pointer: null")
	}
	id, off := splitPtr(p)
	d.mu.RLock()
	a := d.allocs[id]
	d.mu.RUnlock()
	if a == nil {
		return nil, errf(call, ErrInvalidDevicePointer,
			"invalid device pointer %v: not in a live allocation (freed, or never allocated)", p)
	}
	if size := int64(len(a.data)); n > size-off {
		return nil, errf(call, ErrInvalidValue,
			"out of bounds: %d bytes at offset %d of a %d-byte allocation", n, off, size)
	}
	return a.data[off : off+n : off+n], nil
}

// HostView returns the n bytes of device memory at p as a Go slice that
// aliases the device memory. Only the host driver can do this. Reading it
// while a stream writes there is a data race: order it with an event or a
// Synchronize first.
func (d *HostDevice) HostView(p DevicePtr, n int64) ([]byte, error) {
	return d.view(fmt.Sprintf("HostView(%v, %d)", p, n), p, n)
}

// hostPinned is pinned host memory on the host driver: a Go byte slice.
type hostPinned struct {
	dev  *HostDevice
	mu   sync.Mutex
	data []byte
}

// HostAlloc allocates size bytes of host memory; on the host driver pinned
// memory is ordinary Go memory, outside the device budget.
func (d *HostDevice) HostAlloc(size int64) (HostBuffer, error) {
	call := fmt.Sprintf("hipHostMalloc(%d)", size)
	if size < 0 {
		return nil, errf(call, ErrInvalidValue, "negative size")
	}
	b := &hostPinned{dev: d, data: alignedBytes(size)}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Load() {
		return nil, errf(call, ErrClosed, "device closed")
	}
	d.pinned[b] = struct{}{}
	d.pinnedBytes += size
	return b, nil
}

func (b *hostPinned) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.data
}

func (b *hostPinned) Free() error {
	b.dev.mu.Lock() // lock order: device, then buffer (as in Close)
	defer b.dev.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.data == nil {
		return errf("hipHostFree", ErrInvalidValue, "pinned buffer already freed (or its device closed)")
	}
	delete(b.dev.pinned, b)
	b.dev.pinnedBytes -= int64(len(b.data))
	b.data = nil
	return nil
}

// Stats returns the device's counters.
func (d *HostDevice) Stats() Stats {
	d.mu.RLock()
	defer d.mu.RUnlock()
	live := int64(0)
	for _, a := range d.allocs {
		if a != nil {
			live++
		}
	}
	return Stats{
		Allocated:     d.allocated,
		PeakAllocated: d.peak,
		Allocations:   live,
		Pinned:        d.pinnedBytes,
		CopiedHtoD:    d.htod.Load(),
		CopiedDtoH:    d.dtoh.Load(),
		CopiedDtoD:    d.dtod.Load(),
		Launches:      d.launches.Load(),
		GraphLaunches: d.graphLaunches.Load(),
	}
}

// Synchronize waits until every stream is idle, or ctx is done, and returns
// the first sticky stream error.
func (d *HostDevice) Synchronize(ctx context.Context) error {
	const call = "hipDeviceSynchronize"
	if d.closed.Load() {
		return errf(call, ErrClosed, "device closed")
	}
	d.mu.RLock()
	streams := make([]*hostStream, 0, len(d.streams))
	for s := range d.streams {
		streams = append(streams, s)
	}
	d.mu.RUnlock()
	var first error
	for _, s := range streams {
		if err := s.sync(ctx, call, true); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Close stops every stream (dropping queued work and releasing waiters with
// ErrClosed), waits for their goroutines to exit and releases all memory.
func (d *HostDevice) Close() error {
	d.mu.Lock()
	if d.closed.Load() {
		d.mu.Unlock()
		return nil
	}
	d.closed.Store(true)
	close(d.quit)
	streams := make([]*hostStream, 0, len(d.streams))
	for s := range d.streams {
		streams = append(streams, s)
	}
	d.mu.Unlock()

	// Release waiters now, even on a stream whose kernel is still running;
	// its goroutine exits when the kernel returns.
	for _, s := range streams {
		s.abort()
	}
	d.wg.Wait()

	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.allocs)
	d.allocated = 0
	for b := range d.pinned {
		b.mu.Lock()
		b.data = nil
		b.mu.Unlock()
	}
	clear(d.pinned)
	d.pinnedBytes = 0
	return nil
}

// StreamCreate starts a stream: an ordered queue run by its own goroutine.
func (d *HostDevice) StreamCreate() (Stream, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Load() {
		return nil, errf("hipStreamCreate", ErrClosed, "device closed")
	}
	s := &hostStream{dev: d, wake: make(chan struct{}, 1)}
	d.streams[s] = struct{}{}
	d.wg.Add(1)
	go s.loop()
	return s, nil
}

// stream returns s as a stream of this device.
func (d *HostDevice) stream(call string, s Stream) (*hostStream, error) {
	hs, ok := s.(*hostStream)
	if !ok || hs == nil || hs.dev != d {
		return nil, errf(call, ErrInvalidHandle, "invalid handle: not a stream of this host device")
	}
	return hs, nil
}

// EventCreate makes an event.
func (d *HostDevice) EventCreate() (Event, error) {
	if d.closed.Load() {
		return nil, errf("hipEventCreate", ErrClosed, "device closed")
	}
	return &hostEvent{dev: d}, nil
}

// event returns e as an event of this device.
func (d *HostDevice) event(call string, e Event) (*hostEvent, error) {
	he, ok := e.(*hostEvent)
	if !ok || he == nil || he.dev != d {
		return nil, errf(call, ErrInvalidHandle, "invalid handle: not an event of this host device")
	}
	return he, nil
}

// EventElapsedTime returns the milliseconds from start's record to stop's.
func (d *HostDevice) EventElapsedTime(start, stop Event) (float32, error) {
	const call = "hipEventElapsedTime"
	if d.closed.Load() {
		return 0, errf(call, ErrClosed, "device closed")
	}
	var marks [2]*hostMark
	for i, e := range []Event{start, stop} {
		he, err := d.event(call, e)
		if err != nil {
			return 0, err
		}
		m, err := he.reached(call)
		if err != nil {
			return 0, err
		}
		if m == nil {
			return 0, errf(call, ErrInvalidHandle, "invalid handle: event never recorded")
		}
		marks[i] = m
	}
	return float32(marks[1].at.Sub(marks[0].at).Nanoseconds()) / 1e6, nil
}

// The host driver implements the generic interfaces.
var (
	_ Device     = (*HostDevice)(nil)
	_ Stream     = (*hostStream)(nil)
	_ Event      = (*hostEvent)(nil)
	_ HostBuffer = (*hostPinned)(nil)
	_ Module     = (*hostModule)(nil)
	_ Function   = (*hostFunction)(nil)
	_ BLAS       = (*hostBLAS)(nil)
)
