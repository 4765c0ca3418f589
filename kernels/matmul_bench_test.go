package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
)

// benchMat builds a rows x cols matrix of typ for benchmarks: 64 distinct
// random rows quantised once, then repeated (the memory traffic is that of a
// real matrix; only the set-up is cheaper).
func benchMat(b *testing.B, typ gguf.Type, rows, cols int) Mat {
	b.Helper()
	rng := rand.New(rand.NewPCG(uint64(typ), uint64(cols)))
	const distinct = 64
	data, err := gguf.QuantizeParallel(typ, opsRandVec(rng, distinct*cols, 0.01, 1), cols)
	if err != nil {
		b.Fatal(err)
	}
	rb := len(data) / distinct
	full := make([]byte, rows*rb)
	for r := 0; r < rows; r++ {
		copy(full[r*rb:(r+1)*rb], data[(r%distinct)*rb:])
	}
	return Mat{Type: typ, Rows: rows, Cols: cols, Data: full}
}

var benchShapes = [][2]int{{4096, 4096}, {2048, 8192}, {256, 256}}

// BenchmarkMatVec reports, per weight type and shape, the weight bytes read
// per second and the multiply-adds (as 2 FLOP each) per second.
func BenchmarkMatVec(b *testing.B) {
	for _, typ := range opsSupportedTypes() {
		for _, sh := range benchShapes {
			rows, cols := sh[0], sh[1]
			b.Run(fmt.Sprintf("%s/%dx%d", typ, rows, cols), func(b *testing.B) {
				w := benchMat(b, typ, rows, cols)
				x := opsRandVec(rand.New(rand.NewPCG(1, 1)), cols, 0.01, 1)
				out := make([]float32, rows)
				b.ResetTimer()
				for b.Loop() {
					MatVec(out, w, x)
				}
				s := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(float64(len(w.Data))/s/1e9, "GB/s")
				b.ReportMetric(2*float64(rows)*float64(cols)/s/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkMatMul is a batch of 64 activation rows (a prompt chunk) against
// one weight matrix; GB/s counts the weights once per call.
func BenchmarkMatMul(b *testing.B) {
	const n = 64
	for _, typ := range []gguf.Type{gguf.TypeF32, gguf.TypeF16, gguf.TypeQ8_0, gguf.TypeQ4_0, gguf.TypeQ4_K, gguf.TypeQ6_K} {
		for _, sh := range benchShapes[:1] {
			rows, cols := sh[0], sh[1]
			b.Run(fmt.Sprintf("%s/%dx%d/n=%d", typ, rows, cols, n), func(b *testing.B) {
				w := benchMat(b, typ, rows, cols)
				x := opsRandVec(rand.New(rand.NewPCG(1, 1)), n*cols, 0.01, 1)
				out := make([]float32, n*rows)
				b.ResetTimer()
				for b.Loop() {
					MatMul(out, w, x, n)
				}
				s := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(float64(len(w.Data))/s/1e9, "GB/s")
				b.ReportMetric(2*float64(n)*float64(rows)*float64(cols)/s/1e9, "GFLOP/s")
			})
		}
	}
}
