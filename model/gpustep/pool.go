package gpustep

import (
	"errors"
	"fmt"
	"sync"

	"github.com/forgepipe/forgepipe/hip"
)

// pool recycles device buffers. Everything that touches a pooled buffer is
// enqueued on the runtime's one compute stream, so a buffer may go back to
// the pool as soon as its last use is enqueued: whoever gets it next
// enqueues its own work after that use. (Free, by contrast, would not wait
// for the queued work, and on CUDA may stall the whole device.)
type pool struct {
	mu    sync.Mutex
	dev   hip.Device
	free  map[int64][]hip.DevicePtr
	size  map[hip.DevicePtr]int64 // every buffer the pool made, by its class
	bytes int64                   // held in total, free or not
	// idle waits until the compute stream has run everything enqueued, so
	// that idle buffers are really unused before they are freed.
	idle func() error
}

func newPool(dev hip.Device) *pool {
	return &pool{dev: dev, free: make(map[int64][]hip.DevicePtr), size: make(map[hip.DevicePtr]int64)}
}

// class rounds a request up: powers of two to 1 MiB, then whole MiB.
func class(n int64) int64 {
	const mib = 1 << 20
	if n <= 256 {
		return 256
	}
	if n > mib {
		return (n + mib - 1) / mib * mib
	}
	c := int64(512)
	for c < n {
		c <<= 1
	}
	return c
}

// get returns a buffer of at least n bytes.
func (p *pool) get(n int64) (hip.DevicePtr, error) {
	c := class(n)
	p.mu.Lock()
	if l := p.free[c]; len(l) > 0 {
		b := l[len(l)-1]
		p.free[c] = l[:len(l)-1]
		p.mu.Unlock()
		return b, nil
	}
	p.mu.Unlock()
	b, err := p.dev.Malloc(c)
	if errors.Is(err, hip.ErrOutOfMemory) {
		// Give the device back what the pool holds idle, then try once more.
		if p.idle == nil || p.idle() == nil {
			p.trim()
		}
		b, err = p.dev.Malloc(c)
	}
	if err != nil {
		return 0, fmt.Errorf("gpustep: %d bytes: %w", n, err)
	}
	p.mu.Lock()
	p.size[b] = c
	p.bytes += c
	p.mu.Unlock()
	return b, nil
}

// put returns b once its last use is enqueued on the compute stream.
func (p *pool) put(b hip.DevicePtr) {
	if b == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.size[b]
	if !ok {
		panic(fmt.Sprintf("gpustep: buffer %#x is not the pool's", uintptr(b)))
	}
	p.free[c] = append(p.free[c], b)
}

// trim frees the idle buffers. The caller must know that no queued work
// uses them (the stream was synchronised).
func (p *pool) trim() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c, l := range p.free {
		for _, b := range l {
			_ = p.dev.Free(b)
			delete(p.size, b)
			p.bytes -= c
		}
		delete(p.free, c)
	}
}

// close frees every buffer, idle or not.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for b := range p.size {
		_ = p.dev.Free(b)
	}
	p.free, p.size, p.bytes = map[int64][]hip.DevicePtr{}, map[hip.DevicePtr]int64{}, 0
}
