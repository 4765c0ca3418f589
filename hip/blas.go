package hip

import "fmt"

// Operation selects op(X) in a GEMM: X itself or its transpose
// (hipblasOperation_t).
type Operation uint8

// GEMM operations.
const (
	OpN Operation = iota // op(X) = X
	OpT                  // op(X) = Xᵀ
)

func (o Operation) String() string {
	switch o {
	case OpN:
		return "N"
	case OpT:
		return "T"
	}
	return fmt.Sprintf("Operation(%d)", uint8(o))
}

// DataType is the element type of a GEMM operand (hipDataType).
type DataType uint8

// GEMM element types.
const (
	R32F  DataType = iota + 1 // float32
	R16F                      // IEEE half precision
	R16BF                     // bfloat16
)

func (t DataType) String() string {
	switch t {
	case R32F:
		return "R32F"
	case R16F:
		return "R16F"
	case R16BF:
		return "R16BF"
	}
	return fmt.Sprintf("DataType(%d)", uint8(t))
}

// Size is the element size in bytes.
func (t DataType) Size() int {
	switch t {
	case R32F:
		return 4
	case R16F, R16BF:
		return 2
	}
	return 0
}

// BLAS is a handle for dense matrix products on the device (hipblasHandle_t,
// cublasHandle_t). Calls enqueue on the handle's stream and return at once.
//
// Conventions are BLAS's: every matrix is column-major, element (i, j) of a
// matrix X with leading dimension ldx is X[i + j*ldx], and a call computes
//
//	C = alpha * op(A) * op(B) + beta * C
//
// with op(A) m×k, op(B) k×n and C m×n. A is stored m×k (lda ≥ m) for OpN and
// k×m (lda ≥ k) for OpT; B is stored k×n (ldb ≥ k) for OpN and n×k (ldb ≥ n)
// for OpT; ldc ≥ m. When beta is 0, C is not read (NaNs in it do not matter).
//
// Row-major data is column-major data transposed, so row-major products are
// written by swapping operands. For a linear layer Y = X·Wᵀ with row-major
// X (M×K, M tokens), W (N×K, one row per output feature, as GGUF stores
// weights) and Y (M×N):
//
//	Sgemm(OpT, OpN, N, M, K, 1, W, K, X, K, 0, Y, N)
//
// and for a row-major C (M×N) = A (M×K) · B (K×N):
//
//	Sgemm(OpN, OpN, N, M, K, 1, B, N, A, K, 0, C, N)
type BLAS interface {
	// SetStream moves the handle's later work to s (hipblasSetStream).
	SetStream(s Stream) error
	// Sgemm is the float32 product (hipblasSgemm).
	Sgemm(transA, transB Operation, m, n, k int, alpha float32, a DevicePtr, lda int,
		b DevicePtr, ldb int, beta float32, c DevicePtr, ldc int) error
	// GemmEx is the mixed-precision product (hipblasGemmEx) with float32
	// compute and float32 alpha and beta. A and B have the same type;
	// supported (A/B, C) pairs are (R32F, R32F), (R16F, R16F), (R16F, R32F),
	// (R16BF, R16BF) and (R16BF, R32F), as in cuBLAS and hipBLAS.
	GemmEx(transA, transB Operation, m, n, k int, alpha float32,
		a DevicePtr, aType DataType, lda int,
		b DevicePtr, bType DataType, ldb int, beta float32,
		c DevicePtr, cType DataType, ldc int) error
	// Destroy releases the handle (hipblasDestroy).
	Destroy() error
}

// gemmShape is one GEMM's arguments, checked by check.
type gemmShape struct {
	transA, transB      Operation
	m, n, k             int
	alpha, beta         float32
	a, b, c             DevicePtr
	aType, bType, cType DataType
	lda, ldb, ldc       int
}

// check validates the arguments as hipBLAS does and returns the byte extent
// of each operand, or a sentinel and a message saying what is wrong.
func (g *gemmShape) check() (aBytes, bBytes, cBytes int64, bad error, msg string) {
	if g.transA > OpT || g.transB > OpT {
		return 0, 0, 0, ErrInvalidValue, "operation must be OpN or OpT"
	}
	const maxDim = 1<<31 - 1
	if g.m < 0 || g.n < 0 || g.k < 0 || g.m > maxDim || g.n > maxDim || g.k > maxDim {
		return 0, 0, 0, ErrInvalidValue, fmt.Sprintf("m, n, k = %d, %d, %d out of range", g.m, g.n, g.k)
	}
	switch {
	case g.aType != g.bType:
		return 0, 0, 0, ErrNotSupported, fmt.Sprintf("A is %v but B is %v", g.aType, g.bType)
	case g.aType == R32F && g.cType == R32F:
	case (g.aType == R16F || g.aType == R16BF) && (g.cType == R32F || g.cType == g.aType):
	default:
		return 0, 0, 0, ErrNotSupported, fmt.Sprintf("unsupported types A/B %v, C %v", g.aType, g.cType)
	}
	// Rows and columns of each operand as stored.
	aRows, aCols := g.m, g.k
	if g.transA == OpT {
		aRows, aCols = g.k, g.m
	}
	bRows, bCols := g.k, g.n
	if g.transB == OpT {
		bRows, bCols = g.n, g.k
	}
	if g.lda < max(1, aRows) || g.ldb < max(1, bRows) || g.ldc < max(1, g.m) {
		return 0, 0, 0, ErrInvalidValue, fmt.Sprintf("leading dimensions lda=%d ldb=%d ldc=%d below %d, %d, %d",
			g.lda, g.ldb, g.ldc, max(1, aRows), max(1, bRows), max(1, g.m))
	}
	extent := func(rows, cols, ld int, t DataType) int64 {
		if rows == 0 || cols == 0 {
			return 0
		}
		return (int64(ld)*int64(cols-1) + int64(rows)) * int64(t.Size())
	}
	return extent(aRows, aCols, g.lda, g.aType), extent(bRows, bCols, g.ldb, g.bType),
		extent(g.m, g.n, g.ldc, g.cType), nil, ""
}

func (g *gemmShape) String() string {
	return fmt.Sprintf("%v%v, m=%d n=%d k=%d, A %v %v lda=%d, B %v %v ldb=%d, C %v %v ldc=%d",
		g.transA, g.transB, g.m, g.n, g.k, g.a, g.aType, g.lda, g.b, g.bType, g.ldb, g.c, g.cType, g.ldc)
}
