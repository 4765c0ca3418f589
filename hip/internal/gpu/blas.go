package gpu

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/forgepipe/forgepipe/hip"
)

// blasHandle is a BLAS handle bound to one stream at a time. The library's
// handle is not safe for concurrent use, so calls take its lock.
type blasHandle struct {
	dev *Device
	h   uintptr

	mu        sync.Mutex
	s         *stream
	destroyed bool
}

// BLASCreate makes a BLAS handle whose work goes on s.
func (d *Device) BLASCreate(s hip.Stream) (hip.BLAS, error) {
	b := d.api.BLAS
	if b == nil {
		return nil, errf("blasCreate", hip.ErrNotSupported, "no BLAS library: %s", d.api.BLASMissing)
	}
	gs, err := d.stream(b.Create.Name, s)
	if err != nil {
		return nil, err
	}
	if err := gs.begin(b.Create.Name); err != nil {
		return nil, err
	}
	defer gs.end()
	var h uintptr
	if st := call(b.Create.Fn, uintptr(unsafe.Pointer(&h))); st != 0 {
		return nil, d.blasErr(b.Create.Name, st)
	}
	if st := call(b.SetStream.Fn, h, gs.h); st != 0 {
		call(b.Destroy.Fn, h)
		return nil, d.blasErr(b.SetStream.Name, st)
	}
	bh := &blasHandle{dev: d, h: h, s: gs}
	d.mu.Lock()
	d.blases[bh] = struct{}{}
	d.mu.Unlock()
	return bh, nil
}

func (d *Device) blasErr(call string, st Status) error {
	b := d.api.BLAS
	return &hip.Error{Call: call, Code: int(st), Err: b.Sentinel(st), Msg: b.ErrorText(st)}
}

func (h *blasHandle) SetStream(s hip.Stream) error {
	b := h.dev.api.BLAS
	gs, err := h.dev.stream(b.SetStream.Name, s)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.destroyed {
		return errf(b.SetStream.Name, hip.ErrInvalidHandle, "invalid handle: BLAS handle destroyed")
	}
	if err := gs.begin(b.SetStream.Name); err != nil {
		return err
	}
	st := call(b.SetStream.Fn, h.h, gs.h)
	gs.end()
	if st != 0 {
		return h.dev.blasErr(b.SetStream.Name, st)
	}
	h.s = gs
	return nil
}

func (h *blasHandle) Destroy() error {
	b := h.dev.api.BLAS
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.destroyed {
		return errf(b.Destroy.Name, hip.ErrInvalidHandle, "invalid handle: BLAS handle already destroyed")
	}
	h.destroyed = true
	h.dev.mu.Lock()
	delete(h.dev.blases, h)
	h.dev.mu.Unlock()
	if err := h.dev.enter(b.Destroy.Name); err != nil {
		return err
	}
	st := call(b.Destroy.Fn, h.h)
	leave()
	if st != 0 {
		return h.dev.blasErr(b.Destroy.Name, st)
	}
	return nil
}

// gemm is one product's arguments.
type gemm struct {
	transA, transB      hip.Operation
	m, n, k             int
	alpha, beta         float32
	a, b, c             hip.DevicePtr
	aType, bType, cType hip.DataType
	lda, ldb, ldc       int
}

func (g *gemm) String() string {
	return fmt.Sprintf("%v%v, m=%d n=%d k=%d, A %v %v lda=%d, B %v %v ldb=%d, C %v %v ldc=%d",
		g.transA, g.transB, g.m, g.n, g.k, g.a, g.aType, g.lda, g.b, g.bType, g.ldb, g.c, g.cType, g.ldc)
}

// check validates the arguments as hipBLAS does, and each operand's extent
// against the allocation table, before the library sees them.
func (g *gemm) check(d *Device, call func() string) error {
	if g.transA > hip.OpT || g.transB > hip.OpT {
		return errf(call(), hip.ErrInvalidValue, "operation must be OpN or OpT")
	}
	const maxDim = 1<<31 - 1
	if g.m < 0 || g.n < 0 || g.k < 0 || g.m > maxDim || g.n > maxDim || g.k > maxDim {
		return errf(call(), hip.ErrInvalidValue, "m, n, k = %d, %d, %d out of range", g.m, g.n, g.k)
	}
	switch {
	case g.aType != g.bType:
		return errf(call(), hip.ErrNotSupported, "A is %v but B is %v", g.aType, g.bType)
	case g.aType == hip.R32F && g.cType == hip.R32F:
	case (g.aType == hip.R16F || g.aType == hip.R16BF) && (g.cType == hip.R32F || g.cType == g.aType):
	default:
		return errf(call(), hip.ErrNotSupported, "unsupported types A/B %v, C %v", g.aType, g.cType)
	}
	aRows, aCols := g.m, g.k
	if g.transA == hip.OpT {
		aRows, aCols = g.k, g.m
	}
	bRows, bCols := g.k, g.n
	if g.transB == hip.OpT {
		bRows, bCols = g.n, g.k
	}
	if g.lda < max(1, aRows) || g.ldb < max(1, bRows) || g.ldc < max(1, g.m) {
		return errf(call(), hip.ErrInvalidValue, "leading dimensions lda=%d ldb=%d ldc=%d below %d, %d, %d",
			g.lda, g.ldb, g.ldc, max(1, aRows), max(1, bRows), max(1, g.m))
	}
	extent := func(rows, cols, ld int, t hip.DataType) int64 {
		if rows == 0 || cols == 0 {
			return 0
		}
		return (int64(ld)*int64(cols-1) + int64(rows)) * int64(t.Size())
	}
	if g.m == 0 || g.n == 0 {
		return nil
	}
	if n := extent(g.m, g.n, g.ldc, g.cType); n > 0 {
		if err := d.checkRange(call, g.c, n); err != nil {
			return err
		}
	}
	if g.k == 0 {
		return nil
	}
	if err := d.checkRange(call, g.a, extent(aRows, aCols, g.lda, g.aType)); err != nil {
		return err
	}
	return d.checkRange(call, g.b, extent(bRows, bCols, g.ldb, g.bType))
}

func (h *blasHandle) Sgemm(transA, transB hip.Operation, m, n, k int, alpha float32, a hip.DevicePtr, lda int,
	b hip.DevicePtr, ldb int, beta float32, c hip.DevicePtr, ldc int) error {
	return h.run(h.dev.api.BLAS.Sgemm, &gemm{transA: transA, transB: transB, m: m, n: n, k: k,
		alpha: alpha, beta: beta, a: a, b: b, c: c, aType: hip.R32F, bType: hip.R32F, cType: hip.R32F,
		lda: lda, ldb: ldb, ldc: ldc})
}

func (h *blasHandle) GemmEx(transA, transB hip.Operation, m, n, k int, alpha float32,
	a hip.DevicePtr, aType hip.DataType, lda int, b hip.DevicePtr, bType hip.DataType, ldb int, beta float32,
	c hip.DevicePtr, cType hip.DataType, ldc int) error {
	return h.run(h.dev.api.BLAS.GemmEx, &gemm{transA: transA, transB: transB, m: m, n: n, k: k,
		alpha: alpha, beta: beta, a: a, b: b, c: c, aType: aType, bType: bType, cType: cType,
		lda: lda, ldb: ldb, ldc: ldc})
}

// run checks g and enqueues it on the handle's stream through sym (Sgemm or
// GemmEx).
func (h *blasHandle) run(sym Sym, g *gemm) error {
	api := h.dev.api.BLAS
	callName := func() string { return fmt.Sprintf("%s(%v)", sym.Name, g) }
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.destroyed {
		return errf(callName(), hip.ErrInvalidHandle, "invalid handle: BLAS handle destroyed")
	}
	if err := g.check(h.dev, callName); err != nil {
		return err
	}
	if g.m == 0 || g.n == 0 {
		return h.s.check(sym.Name)
	}
	op := func(o hip.Operation) uintptr {
		if o == hip.OpT {
			return api.OpT
		}
		return api.OpN
	}
	typ := func(t hip.DataType) uintptr {
		switch t {
		case hip.R16F:
			return api.TypeR16F
		case hip.R16BF:
			return api.TypeR16BF
		}
		return api.TypeR32F
	}
	scal := &[2]float32{g.alpha, g.beta}
	if err := h.s.begin(sym.Name); err != nil {
		return err
	}
	var st Status
	if sym == api.Sgemm {
		st = call(sym.Fn, h.h, op(g.transA), op(g.transB), uintptr(g.m), uintptr(g.n), uintptr(g.k),
			uintptr(unsafe.Pointer(&scal[0])), uintptr(g.a), uintptr(g.lda), uintptr(g.b), uintptr(g.ldb),
			uintptr(unsafe.Pointer(&scal[1])), uintptr(g.c), uintptr(g.ldc))
	} else {
		st = call(sym.Fn, h.h, op(g.transA), op(g.transB), uintptr(g.m), uintptr(g.n), uintptr(g.k),
			uintptr(unsafe.Pointer(&scal[0])), uintptr(g.a), typ(g.aType), uintptr(g.lda),
			uintptr(g.b), typ(g.bType), uintptr(g.ldb),
			uintptr(unsafe.Pointer(&scal[1])), uintptr(g.c), typ(g.cType), uintptr(g.ldc),
			api.Compute32F, api.AlgoDefault)
	}
	h.s.end()
	if st != 0 {
		return h.dev.blasErr(callName(), st)
	}
	return nil
}
