package hiptest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
)

// The GEMM tests use values n/64 with |n| ≤ 64, which every input type
// holds exactly; their products and sums (|sum| < 4096) are exact in float32
// whatever the summation order, so results are compared bit for bit with a
// float64 reference, on any device.

func niceValues(r *rand.Rand, n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(r.IntN(129)-64) / 64
	}
	return x
}

// encode stores x as elements of type t.
func encode(x []float64, t hip.DataType) []byte {
	switch t {
	case hip.R32F:
		f := make([]float32, len(x))
		for i, v := range x {
			f[i] = float32(v)
		}
		return f32bytes(f)
	case hip.R16F, hip.R16BF:
		h := make([]uint16, len(x))
		for i, v := range x {
			if t == hip.R16F {
				h[i] = gguf.FP32ToFP16(float32(v))
			} else {
				h[i] = gguf.FP32ToBF16(float32(v))
			}
		}
		return u16bytes(h)
	}
	panic("hiptest: no encoding for " + t.String())
}

// decode reads elements of type t as float64.
func decode(b []byte, t hip.DataType) []float64 {
	x := make([]float64, len(b)/t.Size())
	for i := range x {
		switch t {
		case hip.R32F:
			x[i] = float64(math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24))
		case hip.R16F:
			x[i] = float64(gguf.FP16ToFP32(uint16(b[2*i]) | uint16(b[2*i+1])<<8))
		case hip.R16BF:
			x[i] = float64(gguf.BF16ToFP32(uint16(b[2*i]) | uint16(b[2*i+1])<<8))
		}
	}
	return x
}

// rounded is what storing v as type t gives, read back.
func rounded(v float64, t hip.DataType) float64 {
	return decode(encode([]float64{v}, t), t)[0]
}

// refGemm is C = alpha·op(A)·op(B) + beta·C in float64, column-major.
func refGemm(ta, tb hip.Operation, m, n, k int, alpha float64, a []float64, lda int,
	b []float64, ldb int, beta float64, c []float64, ldc int) {
	for j := range n {
		for i := range m {
			var sum float64
			for p := range k {
				ai, bi := i+p*lda, p+j*ldb
				if ta == hip.OpT {
					ai = p + i*lda
				}
				if tb == hip.OpT {
					bi = j + p*ldb
				}
				av, bv := a[ai], b[bi]
				sum += av * bv
			}
			v := alpha * sum
			if beta != 0 {
				v += beta * c[i+j*ldc]
			}
			c[i+j*ldc] = v
		}
	}
}

type gemmCase struct {
	ta, tb      hip.Operation
	m, n, k     int
	pad         int // added to every leading dimension
	alpha, beta float64
}

var gemmCases = []gemmCase{
	{hip.OpN, hip.OpN, 5, 7, 9, 0, 1, 0},
	{hip.OpT, hip.OpN, 5, 7, 9, 3, 0.5, -2},
	{hip.OpN, hip.OpT, 6, 4, 11, 1, -1, 1},
	{hip.OpT, hip.OpT, 3, 8, 5, 2, 2, 0.25},
	{hip.OpN, hip.OpN, 3, 4, 0, 0, 1, 0.5},      // k = 0: C = beta·C
	{hip.OpT, hip.OpN, 64, 65, 66, 1, 1, 0.5},   // big enough for the parallel path
	{hip.OpN, hip.OpT, 1, 130, 1, 0, 1, 0},      // outer product
	{hip.OpN, hip.OpN, 100, 1, 70, 0, 0.5, 0.5}, // matrix-vector
}

// runGemm runs one case with the given types through sgemm (sgemm true) or
// gemm-ex and checks C exactly.
func runGemm(t *testing.T, e *env, h hip.BLAS, s hip.Stream, tc gemmCase, ab, ct hip.DataType, sgemm bool, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	aRows, aCols := tc.m, tc.k
	if tc.ta == hip.OpT {
		aRows, aCols = tc.k, tc.m
	}
	bRows, bCols := tc.k, tc.n
	if tc.tb == hip.OpT {
		bRows, bCols = tc.n, tc.k
	}
	lda, ldb, ldc := max(1, aRows)+tc.pad, max(1, bRows)+tc.pad, tc.m+tc.pad
	a := niceValues(r, lda*max(1, aCols))
	b := niceValues(r, ldb*max(1, bCols))
	c := niceValues(r, ldc*tc.n)
	if tc.beta == 0 {
		for i := range c {
			c[i] = math.NaN() // must not be read
		}
	}
	aBytes, bBytes, cBytes := encode(a, ab), encode(b, ab), encode(c, ct)
	c = decode(cBytes, ct)
	pa, pb, pc := e.malloc(t, int64(len(aBytes))), e.malloc(t, int64(len(bBytes))), e.malloc(t, int64(len(cBytes)))
	must(t, s.MemcpyHtoDAsync(pa, aBytes))
	must(t, s.MemcpyHtoDAsync(pb, bBytes))
	must(t, s.MemcpyHtoDAsync(pc, cBytes))
	if sgemm {
		must(t, h.Sgemm(tc.ta, tc.tb, tc.m, tc.n, tc.k, float32(tc.alpha), pa, lda, pb, ldb, float32(tc.beta), pc, ldc))
	} else {
		must(t, h.GemmEx(tc.ta, tc.tb, tc.m, tc.n, tc.k, float32(tc.alpha), pa, ab, lda, pb, ab, ldb,
			float32(tc.beta), pc, ct, ldc))
	}
	out := make([]byte, len(cBytes))
	must(t, s.MemcpyDtoHAsync(out, pc))
	syncStream(t, s)
	got := decode(out, ct)
	refGemm(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, a, lda, b, ldb, tc.beta, c, ldc)
	for j := range tc.n {
		for i := range tc.m {
			idx := i + j*ldc
			if want := rounded(c[idx], ct); got[idx] != want {
				t.Fatalf("%+v %v→%v: C(%d,%d) = %v, want %v", tc, ab, ct, i, j, got[idx], want)
			}
		}
	}
	for i := tc.m; i < ldc; i++ { // padding rows are left alone
		for j := range tc.n {
			if idx := i + j*ldc; got[idx] != c[idx] && !(math.IsNaN(got[idx]) && math.IsNaN(c[idx])) {
				t.Fatalf("%+v: padding C(%d,%d) changed from %v to %v", tc, i, j, c[idx], got[idx])
			}
		}
	}
}

func (e *env) blas(t *testing.T) (hip.BLAS, hip.Stream) {
	s := e.stream(t)
	h, err := e.dev.BLASCreate(s)
	must(t, err)
	t.Cleanup(func() { h.Destroy() })
	return h, s
}

func testSgemm(t *testing.T, e *env) {
	h, s := e.blas(t)
	for i, tc := range gemmCases {
		runGemm(t, e, h, s, tc, hip.R32F, hip.R32F, true, uint64(i))
	}

	// The row-major recipe from the BLAS documentation: Y = X·Wᵀ.
	const M, N, K = 3, 5, 4
	r := rand.New(rand.NewPCG(1, 2))
	x, w := niceValues(r, M*K), niceValues(r, N*K)
	px, pw, py := e.malloc(t, 4*M*K), e.malloc(t, 4*N*K), e.malloc(t, 4*M*N)
	must(t, s.MemcpyHtoDAsync(px, encode(x, hip.R32F)))
	must(t, s.MemcpyHtoDAsync(pw, encode(w, hip.R32F)))
	must(t, h.Sgemm(hip.OpT, hip.OpN, N, M, K, 1, pw, K, px, K, 0, py, N))
	out := make([]byte, 4*M*N)
	must(t, s.MemcpyDtoHAsync(out, py))
	syncStream(t, s)
	y := decode(out, hip.R32F)
	for i := range M {
		for j := range N {
			var want float64
			for p := range K {
				want += x[i*K+p] * w[j*K+p]
			}
			if y[i*N+j] != want {
				t.Fatalf("row-major Y = X·Wᵀ: Y[%d][%d] = %v, want %v", i, j, y[i*N+j], want)
			}
		}
	}
}

func testGemmEx(t *testing.T, e *env) {
	h, s := e.blas(t)
	for _, types := range [][2]hip.DataType{
		{hip.R32F, hip.R32F}, {hip.R16F, hip.R32F}, {hip.R16F, hip.R16F}, {hip.R16BF, hip.R32F}, {hip.R16BF, hip.R16BF},
	} {
		t.Run(fmt.Sprintf("%v-%v", types[0], types[1]), func(t *testing.T) {
			for i, tc := range gemmCases {
				runGemm(t, e, h, s, tc, types[0], types[1], false, uint64(100+i))
			}
		})
	}
}

func testGemmErrors(t *testing.T, e *env) {
	h, s := e.blas(t)
	p := e.malloc(t, 64)
	f32, f16 := hip.R32F, hip.R16F
	wantCallErr(t, h.GemmEx(hip.OpN, hip.OpN, 2, 2, 2, 1, p, f16, 2, p, f32, 2, 0, p, f32, 2), hip.ErrNotSupported)
	wantCallErr(t, h.GemmEx(hip.OpN, hip.OpN, 2, 2, 2, 1, p, f32, 2, p, f32, 2, 0, p, f16, 2), hip.ErrNotSupported)
	wantCallErr(t, h.Sgemm(hip.OpN, hip.OpN, 4, 2, 2, 1, p, 3, p, 2, 0, p, 4), hip.ErrInvalidValue)  // lda < m
	wantCallErr(t, h.Sgemm(hip.OpN, hip.OpN, -1, 2, 2, 1, p, 1, p, 2, 0, p, 1), hip.ErrInvalidValue) // negative m
	// C is 8×4 floats, 128 bytes, in a 64-byte allocation.
	wantCallErr(t, h.Sgemm(hip.OpN, hip.OpN, 8, 4, 1, 1, p, 8, p, 1, 0, p, 8), hip.ErrInvalidValue)
	other := e.stream(t)
	must(t, h.SetStream(other))
	must(t, h.Sgemm(hip.OpN, hip.OpN, 2, 2, 2, 1, p, 2, p.Add(16), 2, 0, p.Add(32), 2))
	syncStream(t, other)
	must(t, s.Query())
}
