package gpustep

import (
	"bytes"
	"context"
	"testing"

	"github.com/forgepipe/forgepipe/hip"
)

// The runtime itself needs GPU kernels (tests/pipeline_gpu_test.go runs it
// on a GPU); its buffer pool and staging ring run on the host driver here.

func hostDevice(t *testing.T) *hip.HostDevice {
	t.Helper()
	dev, err := hip.Open("host", hip.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev.(*hip.HostDevice)
}

func TestClass(t *testing.T) {
	for _, c := range []struct{ n, want int64 }{
		{1, 256}, {256, 256}, {257, 512}, {4096, 4096}, {4097, 8192}, {1 << 20, 1 << 20},
		{1<<20 + 1, 2 << 20}, {5<<20 + 3, 6 << 20},
	} {
		if got := class(c.n); got != c.want {
			t.Errorf("class(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}

func TestPool(t *testing.T) {
	dev := hostDevice(t)
	p := newPool(dev)
	a, err := p.get(1000)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.get(1000)
	if a == b {
		t.Fatal("two live buffers share an address")
	}
	p.put(a)
	c, _ := p.get(700) // the same class: a comes back
	if c != a {
		t.Errorf("got %#x after putting %#x back, want it reused", uintptr(c), uintptr(a))
	}
	big, _ := p.get(3 << 20)
	if n := dev.Stats().Allocated; n != 1024+1024+3<<20 {
		t.Errorf("device holds %d bytes, want %d", n, 1024+1024+3<<20)
	}
	p.put(big)
	p.put(b)
	p.trim() // frees the idle ones (big, b); c stays
	if st := dev.Stats(); st.Allocations != 1 || st.Allocated != 1024 {
		t.Errorf("after trim: %d allocations, %d bytes; want 1, 1024", st.Allocations, st.Allocated)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("putting a buffer the pool did not make did not panic")
			}
		}()
		p.put(hip.DevicePtr(12345))
	}()
	p.close()
	if st := dev.Stats(); st.Allocations != 0 {
		t.Errorf("after close: %d allocations", st.Allocations)
	}
}

// TestStagingRing uploads many pieces through the ring, more than it
// holds, each to its own buffer, and checks every byte landed.
func TestStagingRing(t *testing.T) {
	dev := hostDevice(t)
	s, err := dev.StreamCreate()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destroy()
	st, err := newStaging(dev)
	if err != nil {
		t.Fatal(err)
	}
	const pieces = 40
	size := stagingBytes / 7 // wraps several times, with an odd tail
	var dst []hip.DevicePtr
	for i := range pieces {
		p, err := dev.Malloc(int64(size))
		if err != nil {
			t.Fatal(err)
		}
		dst = append(dst, p)
		data := bytes.Repeat([]byte{byte(i + 1)}, size)
		if err := st.upload(s, p, data); err != nil {
			t.Fatal(err)
		}
		for j := range data {
			data[j] = 0 // the ring copied it: the caller may reuse data at once
		}
	}
	if err := s.Synchronize(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, p := range dst {
		got, err := dev.HostView(p, int64(size))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, bytes.Repeat([]byte{byte(i + 1)}, size)) {
			t.Fatalf("piece %d: wrong bytes", i)
		}
		_ = dev.Free(p)
	}
	if len(st.spans)+len(st.spare) == 0 {
		t.Error("the ring recorded no copies")
	}
	if err := st.upload(s, dst[0], make([]byte, stagingBytes)); err == nil {
		t.Error("an upload larger than half the ring was accepted")
	}
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
}
