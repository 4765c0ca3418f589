package kernels

import (
	"fmt"
	"sync"

	"github.com/forgepipe/forgepipe/gguf"
)

// Mat is a weight matrix as stored in GGUF: Rows rows of Cols elements of
// Type, each row Type.RowSize(Cols) bytes of raw blocks, row-major.
type Mat struct {
	Type       gguf.Type
	Rows, Cols int
	Data       []byte
}

// NewMat wraps a 2-D tensor's bytes (Cols = Shape[0], Rows = Shape[1];
// further dimensions must be 1). It fails, naming the tensor, on an
// unsupported type, a bad shape or data of the wrong size.
func NewMat(t *gguf.TensorInfo, data []byte) (Mat, error) {
	if err := gguf.CheckSupported(t); err != nil {
		return Mat{}, err
	}
	if len(t.Shape) < 1 || len(t.Shape) > 4 {
		return Mat{}, fmt.Errorf("tensor %q: %d dimensions, want a matrix", t.Name, len(t.Shape))
	}
	for i := 2; i < len(t.Shape); i++ {
		if t.Shape[i] != 1 {
			return Mat{}, fmt.Errorf("tensor %q: shape %v is not a matrix", t.Name, t.Shape)
		}
	}
	cols, rows := t.Dim(0), t.Dim(1)
	if cols <= 0 || rows <= 0 || uint64(cols) != t.Shape[0] || (len(t.Shape) > 1 && uint64(rows) != t.Shape[1]) {
		return Mat{}, fmt.Errorf("tensor %q: bad shape %v", t.Name, t.Shape)
	}
	rb, err := t.Type.RowSize(cols)
	if err != nil {
		return Mat{}, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	need := rb * rows
	if need/rows != rb || len(data) < need {
		return Mat{}, fmt.Errorf("tensor %q: %d data bytes, %d rows of %d bytes need %d", t.Name, len(data), rows, rb, need)
	}
	return Mat{Type: t.Type, Rows: rows, Cols: cols, Data: data[:need:need]}, nil
}

// RowBytes is the number of bytes of one row.
func (m Mat) RowBytes() int {
	rb, _ := m.Type.RowSize(m.Cols)
	return rb
}

// Row returns the raw bytes of row r.
func (m Mat) Row(r int) []byte {
	rb := m.RowBytes()
	return m.Data[r*rb : (r+1)*rb : (r+1)*rb]
}

// vecPool recycles prepared activation vectors between calls.
var vecPool = sync.Pool{New: func() any { return new(Vec) }}

// MatVec computes out[r] = (row r of w) · x for every row: len(out) >=
// w.Rows, len(x) >= w.Cols. x is first brought into the form w's rows are
// dotted with (VecDotType), once; rows are split across goroutines when the
// matrix is large enough.
func MatVec(out []float32, w Mat, x []float32) {
	v := vecPool.Get().(*Vec)
	PrepareVec(w.Type, x[:w.Cols], v)
	matVecPrepared(out[:w.Rows], w, v)
	vecPool.Put(v)
}

// matVecPrepared is MatVec after x has been prepared.
func matVecPrepared(out []float32, w Mat, v *Vec) {
	rb := w.RowBytes()
	parallelFor(w.Rows, w.Rows*rb, 8, func(lo, hi int) {
		DotRows(out[lo:hi], w.Type, w.Data, rb, v, lo, hi)
	})
}

// MatMul multiplies n activation rows by w: x is n x w.Cols row-major, out is
// n x w.Rows row-major, out[i][r] = (row r of w) · (row i of x). Each row of
// out is bit-identical to MatVec on the same row of x. The work is tiled over
// blocks of weight rows times all activation rows, so a block of weights is
// read from memory once and reused from cache for every activation row.
func MatMul(out []float32, w Mat, x []float32, n int) {
	if n == 1 {
		MatVec(out, w, x)
		return
	}
	vecs := make([]*Vec, n)
	for i := range vecs {
		vecs[i] = vecPool.Get().(*Vec)
	}
	parallelFor(n, n*w.Cols*4, 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			PrepareVec(w.Type, x[i*w.Cols:(i+1)*w.Cols], vecs[i])
		}
	})
	rb := w.RowBytes()
	block := matMulRowBlock(rb)
	parallelFor(w.Rows, w.Rows*rb*n, block, func(lo, hi int) {
		for r0 := lo; r0 < hi; r0 += block {
			r1 := min(r0+block, hi)
			for i, v := range vecs {
				o := out[i*w.Rows : (i+1)*w.Rows]
				DotRows(o[r0:r1], w.Type, w.Data, rb, v, r0, r1)
			}
		}
	})
	for _, v := range vecs {
		vecPool.Put(v)
	}
}

// matMulRowBlock is the number of weight rows MatMul keeps hot in cache while
// it runs every activation row over them: about 64 KiB of weights.
func matMulRowBlock(rowBytes int) int {
	return max(1, min(64, (64<<10)/max(rowBytes, 1)))
}
