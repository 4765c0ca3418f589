package hiptest

import (
	"errors"
	"slices"
	"testing"

	"github.com/forgepipe/forgepipe/hip"
)

// wantCallErr fails unless err wraps target and is a *hip.Error naming its
// call (drivers name calls their own way: hipMalloc, cuMemAlloc).
func wantCallErr(t testing.TB, err, target error) {
	t.Helper()
	var he *hip.Error
	switch {
	case err == nil:
		t.Fatalf("got no error, want %v", target)
	case !errors.Is(err, target):
		t.Fatalf("got %v, want an error wrapping %v", err, target)
	case !errors.As(err, &he) || he.Call == "":
		t.Fatalf("error %q is not a *hip.Error naming its call", err)
	}
}

func testMemory(t *testing.T, e *env) {
	free0, total, err := e.dev.MemGetInfo()
	must(t, err)
	if total <= 0 || free0 < 0 || free0 > total {
		t.Fatalf("MemGetInfo = free %d, total %d", free0, total)
	}
	st0 := e.dev.Stats()
	const n = 1 << 20
	p, err := e.dev.Malloc(n)
	must(t, err)
	q, err := e.dev.Malloc(n)
	must(t, err)
	if p == 0 || q == 0 {
		t.Fatalf("Malloc returned the null pointer: %v, %v", p, q)
	}
	if lo, hi := min(p, q), max(p, q); hi-lo < n {
		t.Fatalf("allocations %v and %v overlap", p, q)
	}
	st1 := e.dev.Stats()
	if st1.Allocated-st0.Allocated != 2*n || st1.Allocations-st0.Allocations != 2 || st1.PeakAllocated < st1.Allocated {
		t.Fatalf("after two %d-byte allocations: stats %+v, before %+v", n, st1, st0)
	}
	free1, total1, err := e.dev.MemGetInfo()
	must(t, err)
	if total1 != total || free1 > free0-2*n {
		t.Fatalf("MemGetInfo after allocating %d bytes: free %d (was %d), total %d (was %d)", 2*n, free1, free0, total1, total)
	}
	must(t, e.dev.Free(p))
	must(t, e.dev.Free(q))
	if st := e.dev.Stats(); st.Allocated != st0.Allocated || st.Allocations != st0.Allocations {
		t.Fatalf("after freeing: stats %+v, before %+v", st, st0)
	}

	if z, err := e.dev.Malloc(0); z != 0 || err != nil {
		t.Fatalf("Malloc(0) = %v, %v; want the null pointer", z, err)
	}
	must(t, e.dev.Free(0))
	_, err = e.dev.Malloc(-1)
	wantCallErr(t, err, hip.ErrInvalidValue)
}

func testOutOfMemory(t *testing.T, e *env) {
	_, total, err := e.dev.MemGetInfo()
	must(t, err)
	st0 := e.dev.Stats()
	p, err := e.dev.Malloc(total + 1<<20)
	if err == nil {
		e.dev.Free(p)
	}
	wantCallErr(t, err, hip.ErrOutOfMemory)
	if st := e.dev.Stats(); st.Allocated != st0.Allocated {
		t.Fatalf("a failed Malloc changed Allocated from %d to %d", st0.Allocated, st.Allocated)
	}
	e.malloc(t, 1<<10) // the device still allocates
}

func testDoubleFree(t *testing.T, e *env) {
	p, err := e.dev.Malloc(64)
	must(t, err)
	wantCallErr(t, e.dev.Free(p.Add(8)), hip.ErrInvalidDevicePointer) // not the allocation's start
	must(t, e.dev.Free(p))
	wantCallErr(t, e.dev.Free(p), hip.ErrInvalidDevicePointer)
}

func testCopiesCopy(t *testing.T, e *env) {
	s := e.stream(t)
	const n = 1024
	src := iota32(n, 3, 1)
	orig := slices.Clone(src)
	st0 := e.dev.Stats()

	p := e.upload(t, s, src)
	for i := range src {
		src[i] = 0xdeadbeef // the device holds a copy, not the caller's memory
	}
	got := download(t, s, p, n)
	equalU32(t, "device data after the source changed", got, orig)
	got[0] = 99
	equalU32(t, "device data after the download changed", download(t, s, p, n), orig)

	q := e.malloc(t, 4*n)
	must(t, s.MemcpyDtoDAsync(q, p, 4*n))
	launch1D(t, s, e.fn(t, "hiptest_fill"), n, hip.Ptr(p), hip.Uint32(n), hip.Uint32(7))
	equalU32(t, "DtoD copy after its source changed", download(t, s, q, n), orig)
	equalU32(t, "filled source", download(t, s, p, n), slices.Repeat([]uint32{7}, n))

	st := e.dev.Stats()
	if d := st.CopiedHtoD - st0.CopiedHtoD; d != 4*n {
		t.Errorf("CopiedHtoD grew by %d, want %d", d, 4*n)
	}
	if d := st.CopiedDtoH - st0.CopiedDtoH; d != 4*4*n {
		t.Errorf("CopiedDtoH grew by %d, want %d", d, 4*4*n)
	}
	if d := st.CopiedDtoD - st0.CopiedDtoD; d != 4*n {
		t.Errorf("CopiedDtoD grew by %d, want %d", d, 4*n)
	}
}

func testCopyBounds(t *testing.T, e *env) {
	s := e.stream(t)
	p := e.malloc(t, 256)
	q := e.malloc(t, 512)
	st0 := e.dev.Stats()
	buf := make([]byte, 300)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"HtoD past the end", s.MemcpyHtoDAsync(p, buf[:257])},
		{"HtoD straddling the end", s.MemcpyHtoDAsync(p.Add(250), buf[:8])},
		{"DtoH past the end", s.MemcpyDtoHAsync(buf[:8], p.Add(252))},
		{"DtoD past the source's end", s.MemcpyDtoDAsync(q, p, 300)},
		{"DtoD past the destination's end", s.MemcpyDtoDAsync(p, q, 300)},
		{"memset past the end", s.MemsetD8Async(p.Add(200), 0, 100)},
		{"negative memset", s.MemsetD8Async(p, 0, -1)},
	} {
		if !errors.Is(tc.err, hip.ErrInvalidValue) {
			t.Errorf("%s: got %v, want ErrInvalidValue", tc.name, tc.err)
		}
	}
	wantCallErr(t, s.MemcpyHtoDAsync(0, buf[:8]), hip.ErrInvalidDevicePointer)
	gone, err := e.dev.Malloc(64)
	must(t, err)
	must(t, e.dev.Free(gone))
	wantCallErr(t, s.MemcpyHtoDAsync(gone, buf[:8]), hip.ErrInvalidDevicePointer)
	wantCallErr(t, s.MemcpyDtoHAsync(buf[:8], gone), hip.ErrInvalidDevicePointer)

	// Failed calls are not sticky and count nothing; a copy that ends
	// exactly at the end of the allocation is fine.
	x := iota32(2, 1, 40)
	must(t, s.MemcpyHtoDAsync(p.Add(248), u32bytes(x)))
	equalU32(t, "last 8 bytes", download(t, s, p.Add(248), 2), x)
	must(t, s.Query())
	if st := e.dev.Stats(); st.CopiedHtoD-st0.CopiedHtoD != 8 {
		t.Fatalf("CopiedHtoD grew by %d, want 8 (failed copies must not count)", st.CopiedHtoD-st0.CopiedHtoD)
	}
}

func testMemset(t *testing.T, e *env) {
	s := e.stream(t)
	const n = 64
	x := iota32(n, 0x01010101, 0)
	p := e.upload(t, s, x)
	must(t, s.MemsetD8Async(p.Add(4), 0xab, 10))
	must(t, s.MemsetD32Async(p.Add(32), 0x01020304, 5))
	b := u32bytes(x)
	for i := 4; i < 14; i++ {
		b[i] = 0xab
	}
	for i := 8; i < 13; i++ {
		x[i] = 0x01020304
	}
	equalU32(t, "after memsets", download(t, s, p, n), x)
	wantCallErr(t, s.MemsetD32Async(p.Add(2), 0, 1), hip.ErrInvalidValue)
}

func testPinned(t *testing.T, e *env) {
	s := e.stream(t)
	st0 := e.dev.Stats()
	hb, err := e.dev.HostAlloc(4096)
	must(t, err)
	b := hb.Bytes()
	if len(b) != 4096 {
		t.Fatalf("HostAlloc(4096).Bytes() has %d bytes", len(b))
	}
	if d := e.dev.Stats().Pinned - st0.Pinned; d != 4096 {
		t.Errorf("Pinned grew by %d, want 4096", d)
	}
	for i := range b {
		b[i] = byte(i * 7)
	}
	p := e.malloc(t, 4096)
	must(t, s.MemcpyHtoDAsync(p, b))
	out := make([]byte, 4096)
	must(t, s.MemcpyDtoHAsync(out, p))
	syncStream(t, s)
	if !slices.Equal(out, b) {
		t.Fatal("round trip through pinned memory changed the data")
	}
	must(t, hb.Free())
	if hb.Bytes() != nil {
		t.Error("Bytes() of a freed pinned buffer is not nil")
	}
	wantCallErr(t, hb.Free(), hip.ErrInvalidValue)
	if st := e.dev.Stats(); st.Pinned != st0.Pinned {
		t.Errorf("Pinned is %d after free, want %d", st.Pinned, st0.Pinned)
	}
	_, err = e.dev.HostAlloc(-1)
	wantCallErr(t, err, hip.ErrInvalidValue)
}
