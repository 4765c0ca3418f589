package hip

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// hostBLAS is the host driver's BLAS: a plain float32 loop, parallel over
// columns of C. Each element of C is one sequential float32 sum in k order,
// so results do not depend on the number of workers.
type hostBLAS struct {
	dev *HostDevice

	mu        sync.Mutex
	stream    *hostStream
	destroyed bool
}

// BLASCreate makes a BLAS handle whose work goes on s.
func (d *HostDevice) BLASCreate(s Stream) (BLAS, error) {
	const call = "hipblasCreate"
	if d.closed.Load() {
		return nil, errf(call, ErrClosed, "device closed")
	}
	hs, err := d.stream(call, s)
	if err != nil {
		return nil, err
	}
	return &hostBLAS{dev: d, stream: hs}, nil
}

func (h *hostBLAS) SetStream(s Stream) error {
	const call = "hipblasSetStream"
	hs, err := h.dev.stream(call, s)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.destroyed {
		return errf(call, ErrInvalidHandle, "invalid handle: BLAS handle destroyed")
	}
	h.stream = hs
	return nil
}

func (h *hostBLAS) Destroy() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.destroyed {
		return errf("hipblasDestroy", ErrInvalidHandle, "invalid handle: BLAS handle already destroyed")
	}
	h.destroyed = true
	return nil
}

func (h *hostBLAS) Sgemm(transA, transB Operation, m, n, k int, alpha float32, a DevicePtr, lda int,
	b DevicePtr, ldb int, beta float32, c DevicePtr, ldc int) error {
	return h.gemm("hipblasSgemm", &gemmShape{transA: transA, transB: transB, m: m, n: n, k: k,
		alpha: alpha, beta: beta, a: a, b: b, c: c, aType: R32F, bType: R32F, cType: R32F,
		lda: lda, ldb: ldb, ldc: ldc})
}

func (h *hostBLAS) GemmEx(transA, transB Operation, m, n, k int, alpha float32,
	a DevicePtr, aType DataType, lda int, b DevicePtr, bType DataType, ldb int, beta float32,
	c DevicePtr, cType DataType, ldc int) error {
	return h.gemm("hipblasGemmEx", &gemmShape{transA: transA, transB: transB, m: m, n: n, k: k,
		alpha: alpha, beta: beta, a: a, b: b, c: c, aType: aType, bType: bType, cType: cType,
		lda: lda, ldb: ldb, ldc: ldc})
}

// gemm checks the call now and enqueues the product on the handle's stream.
func (h *hostBLAS) gemm(name string, g *gemmShape) error {
	call := fmt.Sprintf("%s(%v)", name, g)
	h.mu.Lock()
	s, destroyed := h.stream, h.destroyed
	h.mu.Unlock()
	if destroyed {
		return errf(call, ErrInvalidHandle, "invalid handle: BLAS handle destroyed")
	}
	aBytes, bBytes, cBytes, bad, msg := g.check()
	if bad != nil {
		return errf(call, bad, "%s", msg)
	}
	if g.m == 0 || g.n == 0 {
		return s.checkUsable(name)
	}
	views := func() (a, b, c []byte, err error) {
		for _, v := range []struct {
			p     DevicePtr
			n     int64
			t     DataType
			out   *[]byte
			label string
		}{{g.a, aBytes, g.aType, &a, "A"}, {g.b, bBytes, g.bType, &b, "B"}, {g.c, cBytes, g.cType, &c, "C"}} {
			if v.n == 0 {
				continue
			}
			if _, off := splitPtr(v.p); off%int64(v.t.Size()) != 0 {
				return nil, nil, nil, errf(call, ErrInvalidValue, "%s not aligned to its %d-byte elements", v.label, v.t.Size())
			}
			if *v.out, err = h.dev.view(call, v.p, v.n); err != nil {
				return nil, nil, nil, err
			}
		}
		return a, b, c, nil
	}
	if _, _, _, err := views(); err != nil {
		return err
	}
	return s.enqueue(name, hostOp{kind: opRun, run: func() error {
		a, b, c, err := views()
		if err != nil {
			return err
		}
		return hostGemm(call, g, a, b, c)
	}}, false)
}

// loader returns a reader of element i of a matrix of type t stored in b.
func loader(b []byte, t DataType) func(i int) float32 {
	switch t {
	case R32F:
		f := unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
		return func(i int) float32 { return f[i] }
	case R16F:
		h := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/2)
		return func(i int) float32 { return halfToFloat(h[i]) }
	default: // R16BF
		h := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/2)
		return func(i int) float32 { return bfloatToFloat(h[i]) }
	}
}

// hostGemm computes C = alpha·op(A)·op(B) + beta·C, column-major. op(A) is
// unpacked to float32 rows and op(B) to float32 columns, so each element of
// C is a dot product of two contiguous vectors, summed in k order.
func hostGemm(call string, g *gemmShape, a, b, c []byte) error {
	m, n, k := g.m, g.n, g.k
	rows := make([]float32, m*k) // rows[i*k+p] = op(A)(i, p)
	if k > 0 {
		getA := loader(a, g.aType)
		for i := range m {
			for p := range k {
				idx := i + p*g.lda
				if g.transA == OpT {
					idx = p + i*g.lda
				}
				rows[i*k+p] = getA(idx)
			}
		}
	}
	cols := make([]float32, n*k) // cols[j*k+p] = op(B)(p, j)
	if k > 0 {
		getB := loader(b, g.bType)
		for j := range n {
			for p := range k {
				idx := p + j*g.ldb
				if g.transB == OpT {
					idx = j + p*g.ldb
				}
				cols[j*k+p] = getB(idx)
			}
		}
	}
	getC := loader(c, g.cType)
	var c32 []float32
	var c16 []uint16
	if g.cType == R32F {
		c32 = unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(c))), len(c)/4)
	} else {
		c16 = unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(c))), len(c)/2)
	}
	columns := func(lo, hi int) {
		for j := lo; j < hi; j++ {
			col := cols[j*k : j*k+k]
			for i := range m {
				row := rows[i*k : i*k+k]
				var sum float32
				for p, x := range row {
					sum += float32(x * col[p]) // the conversion forbids fusing into an FMA
				}
				idx := i + j*g.ldc
				v := float32(g.alpha * sum)
				if g.beta != 0 {
					v += float32(g.beta * getC(idx))
				}
				switch g.cType {
				case R32F:
					c32[idx] = v
				case R16F:
					c16[idx] = floatToHalf(v)
				default:
					c16[idx] = floatToBfloat(v)
				}
			}
		}
	}
	return parallelColumns(call, n, m*n*k, columns)
}

// parallelColumns calls body on sub-ranges covering [0, n), on up to
// GOMAXPROCS goroutines when work (multiply-adds) is large enough to pay
// for them. A panic in body becomes an error instead of killing the process.
func parallelColumns(call string, n, work int, body func(lo, hi int)) error {
	workers := min(runtime.GOMAXPROCS(0), n)
	if work < 1<<16 || workers <= 1 {
		body(0, n)
		return nil
	}
	chunk := max(1, n/(workers*4))
	var next atomic.Int64
	var failed atomic.Pointer[string]
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			defer func() {
				if r := recover(); r != nil {
					msg := fmt.Sprint(r)
					failed.CompareAndSwap(nil, &msg)
				}
			}()
			for {
				lo := int(next.Add(int64(chunk))) - chunk
				if lo >= n {
					return
				}
				body(lo, min(lo+chunk, n))
			}
		})
	}
	wg.Wait()
	if r := failed.Load(); r != nil {
		return errf(call, ErrLaunchFailure, "launch failure: host GEMM panicked: %s", *r)
	}
	return nil
}
