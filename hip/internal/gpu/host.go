package gpu

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/forgepipe/forgepipe/hip"
)

// hostBuffer is pinned host memory: allocated by the driver (HostAlloc) or
// Go memory registered with it (HostRegister).
type hostBuffer struct {
	dev        *Device
	registered []byte // HostRegister: the caller's memory, kept alive
	p          uintptr
	n          int

	mu    sync.Mutex
	freed bool
}

// HostAlloc allocates pinned host memory (cuMemHostAlloc, hipHostMalloc).
func (d *Device) HostAlloc(size int64) (hip.HostBuffer, error) {
	name := d.api.MemHostAlloc.Name
	if size < 0 {
		return nil, errf(fmt.Sprintf("%s(%d)", name, size), hip.ErrInvalidValue, "negative size")
	}
	if size == 0 {
		return &hostBuffer{dev: d}, nil
	}
	if err := d.enter(name); err != nil {
		return nil, err
	}
	var p uintptr
	st := call(d.api.MemHostAlloc.Fn, uintptr(unsafe.Pointer(&p)), uintptr(size), d.api.HostAllocFlags)
	leave()
	if st != 0 {
		return nil, d.err(fmt.Sprintf("%s(%d)", name, size), st)
	}
	return d.addBuffer(&hostBuffer{dev: d, p: p, n: int(size)}), nil
}

// HostRegister pins b, Go memory, for the device (cuMemHostRegister,
// hipHostRegister), so that copies from and to it run at full speed and
// asynchronously. The buffer's Free unpins it; b must stay untouched by
// copies after that.
func (d *Device) HostRegister(b []byte) (hip.HostBuffer, error) {
	name := d.api.MemHostRegister.Name
	if len(b) == 0 {
		return nil, errf(name, hip.ErrInvalidValue, "empty buffer")
	}
	if err := d.enter(name); err != nil {
		return nil, err
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	st := call(d.api.MemHostRegister.Fn, p, uintptr(len(b)), d.api.HostRegisterFlags)
	leave()
	if st != 0 {
		return nil, d.err(fmt.Sprintf("%s(%d bytes)", name, len(b)), st)
	}
	return d.addBuffer(&hostBuffer{dev: d, registered: b, p: p, n: len(b)}), nil
}

func (d *Device) addBuffer(b *hostBuffer) *hostBuffer {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buffers[b] = struct{}{}
	d.pinned.insert(span{uint64(b.p), uint64(b.n)})
	d.pinnedBytes += int64(b.n)
	return b
}

func (b *hostBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.freed:
		return nil
	case b.registered != nil:
		return b.registered
	case b.n == 0:
		return []byte{}
	}
	return unsafe.Slice((*byte)(ptrAt(b.p)), b.n)
}

func (b *hostBuffer) Free() error {
	d := b.dev
	name := d.api.MemFreeHost.Name
	if b.registered != nil {
		name = d.api.MemHostUnregister.Name
	}
	d.mu.Lock() // lock order: device, then buffer
	defer d.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.freed {
		return errf(name, hip.ErrInvalidValue, "pinned buffer already freed (or its device closed)")
	}
	if d.closed.Load() {
		return errf(name, hip.ErrClosed, "device closed")
	}
	if b.n == 0 {
		b.freed = true
		return nil
	}
	if err := d.enter(name); err != nil {
		return err
	}
	st := b.releaseLocked()
	leave()
	if st != 0 {
		return d.err(name, st)
	}
	return nil
}

// release frees the buffer at Close; the device is locked and bound.
func (b *hostBuffer) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.freed {
		b.releaseLocked()
	}
}

// releaseLocked returns the memory to the driver; the device and the
// buffer are locked and the device bound.
func (b *hostBuffer) releaseLocked() Status {
	d := b.dev
	b.freed = true
	if b.n == 0 {
		return 0
	}
	delete(d.buffers, b)
	if i, ok := d.pinned.find(uint64(b.p)); ok {
		d.pinned = append(d.pinned[:i], d.pinned[i+1:]...)
	}
	d.pinnedBytes -= int64(b.n)
	if b.registered != nil {
		st := call(d.api.MemHostUnregister.Fn, b.p)
		b.registered = nil
		return st
	}
	return call(d.api.MemFreeHost.Fn, b.p)
}

// stagePool holds pinned buffers for copies to pageable memory: the device
// copies into one, and a host function copies it out in stream order, so
// the copy stays asynchronous (a copy straight to pageable memory makes
// the driver block the caller until it is done).
type stagePool struct {
	mu   sync.Mutex
	free map[int][]*stageBuf // by size class
	all  []*stageBuf
}

type stageBuf struct {
	p     uintptr
	class int
}

func (b *stageBuf) bytes(n int) []byte { return unsafe.Slice((*byte)(ptrAt(b.p)), n) }

const minStageClass = 16 // 64 KiB

// get returns a pinned buffer of at least n bytes; the device is bound.
func (sp *stagePool) get(d *Device, n int) (*stageBuf, Status) {
	class := minStageClass
	for 1<<class < n {
		class++
	}
	sp.mu.Lock()
	if l := sp.free[class]; len(l) > 0 {
		b := l[len(l)-1]
		sp.free[class] = l[:len(l)-1]
		sp.mu.Unlock()
		return b, 0
	}
	sp.mu.Unlock()
	var p uintptr
	if st := call(d.api.MemHostAlloc.Fn, uintptr(unsafe.Pointer(&p)), uintptr(1)<<class, d.api.HostAllocFlags); st != 0 {
		return nil, st
	}
	b := &stageBuf{p: p, class: class}
	sp.mu.Lock()
	sp.all = append(sp.all, b)
	sp.mu.Unlock()
	return b, 0
}

func (sp *stagePool) put(b *stageBuf) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.free == nil {
		sp.free = map[int][]*stageBuf{}
	}
	sp.free[b.class] = append(sp.free[b.class], b)
}

// freeAll releases every staging buffer at Close; the device is bound.
func (sp *stagePool) freeAll(d *Device) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for _, b := range sp.all {
		call(d.api.MemFreeHost.Fn, b.p)
	}
	sp.all, sp.free = nil, nil
}
