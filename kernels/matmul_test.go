package kernels

import (
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
)

// matTolerance is the allowed |MatVec - exact| relative to sum |w||x|, per
// weight type, where exact is the float64 dot of the dequantised row with the
// unquantised x. Float rows keep x in float32 (error: float32 summation);
// quantised rows meet x quantised to 8 bits (Q8_0 or Q8_K), whose rounding
// error dominates.
var matTolerance = map[gguf.Type]float64{
	gguf.TypeF32:  2e-5,
	gguf.TypeF16:  2e-5,
	gguf.TypeBF16: 2e-5,
	gguf.TypeQ4_0: 4e-3,
	gguf.TypeQ4_1: 4e-3,
	gguf.TypeQ5_0: 4e-3,
	gguf.TypeQ5_1: 4e-3,
	gguf.TypeQ8_0: 4e-3,
	gguf.TypeQ2_K: 4e-3,
	gguf.TypeQ3_K: 4e-3,
	gguf.TypeQ4_K: 4e-3,
	gguf.TypeQ5_K: 4e-3,
	gguf.TypeQ6_K: 4e-3,
	gguf.TypeQ8_K: 4e-3,
}

// matPreparedTolerance is the allowed error relative to sum |w||x| against
// the float64 dot of the dequantised row with x after the same 8-bit
// quantisation (gguf.Quantize of VecDotType): only accumulation rounding and
// the odd rounding tie remain.
const matPreparedTolerance = 1e-4

// opsRandMat returns a random rows x cols matrix quantised to typ, and its
// dequantised values.
func opsRandMat(t testing.TB, rng *rand.Rand, typ gguf.Type, rows, cols int) (Mat, []float32) {
	t.Helper()
	src := opsRandVec(rng, rows*cols, 0.01, 1)
	data, err := gguf.QuantizeParallel(typ, src, cols)
	if err != nil {
		t.Fatal(err)
	}
	deq := make([]float32, rows*cols)
	if err := gguf.Dequantize(typ, data, deq); err != nil {
		t.Fatal(err)
	}
	return Mat{Type: typ, Rows: rows, Cols: cols, Data: data}, deq
}

func TestMatVecTypes(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	const rows, cols = 70, 512
	for _, typ := range opsSupportedTypes() {
		t.Run(typ.String(), func(t *testing.T) {
			tol, ok := matTolerance[typ]
			if !ok {
				t.Fatalf("no tolerance stated for %s", typ)
			}
			w, wf := opsRandMat(t, rng, typ, rows, cols)
			x := opsRandVec(rng, cols, 0.01, 1)
			// x as the dot products see it
			vt := VecDotType(typ)
			xq := x
			if vt != gguf.TypeF32 {
				q, err := gguf.Quantize(vt, nil, x)
				if err != nil {
					t.Fatal(err)
				}
				xq = make([]float32, cols)
				if err := gguf.Dequantize(vt, q, xq); err != nil {
					t.Fatal(err)
				}
			}
			out := make([]float32, rows)
			MatVec(out, w, x)
			for r := 0; r < rows; r++ {
				var exact, prepared, mag float64
				for c := 0; c < cols; c++ {
					wv := float64(wf[r*cols+c])
					exact += wv * float64(x[c])
					prepared += wv * float64(xq[c])
					mag += math.Abs(wv * float64(x[c]))
				}
				if e := math.Abs(float64(out[r])-exact) / mag; e > tol {
					t.Fatalf("row %d = %g, exact %g: error %.3g of sum|w||x| > %g", r, out[r], exact, e, tol)
				}
				if e := math.Abs(float64(out[r])-prepared) / mag; e > matPreparedTolerance {
					t.Fatalf("row %d = %g, with %s-quantised x %g: error %.3g of sum|w||x| > %g", r, out[r], vt, prepared, e, matPreparedTolerance)
				}
			}
		})
	}
}

// TestMatDeterministic checks that MatVec gives the bits of each row's dot
// product taken alone, whatever GOMAXPROCS, and that every row of MatMul has
// the bits of MatVec on that activation row.
func TestMatDeterministic(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	defer func(old int) { parallelThreshold = old }(parallelThreshold)
	parallelThreshold = 1 << 14 // split even these small matrices
	rng := rand.New(rand.NewPCG(33, 34))
	const rows, cols, n = 512, 256, 5
	for _, typ := range opsSupportedTypes() {
		t.Run(typ.String(), func(t *testing.T) {
			w, _ := opsRandMat(t, rng, typ, rows, cols)
			if rows*w.RowBytes() < parallelThreshold {
				t.Fatalf("matrix of %d bytes is too small to exercise the parallel path", rows*w.RowBytes())
			}
			x := opsRandVec(rng, n*cols, 0.01, 1)

			// Each row alone, straight from the dot products.
			var v Vec
			alone := make([]float32, n*rows)
			for i := 0; i < n; i++ {
				PrepareVec(typ, x[i*cols:(i+1)*cols], &v)
				for r := 0; r < rows; r++ {
					DotRows(alone[i*rows+r:][:1], typ, w.Data, w.RowBytes(), &v, r, r+1)
				}
			}
			for _, procs := range []int{1, 2, 3} {
				runtime.GOMAXPROCS(procs)
				for i := 0; i < n; i++ {
					out := make([]float32, rows)
					MatVec(out, w, x[i*cols:(i+1)*cols])
					if j := firstDiff(out, alone[i*rows:(i+1)*rows]); j >= 0 {
						t.Fatalf("GOMAXPROCS %d: MatVec row %d differs from its lone dot product at [%d]", procs, i, j)
					}
				}
				for _, m := range []int{1, 2, n} {
					out := make([]float32, m*rows)
					MatMul(out, w, x, m)
					if j := firstDiff(out, alone[:m*rows]); j >= 0 {
						t.Fatalf("GOMAXPROCS %d: MatMul n=%d differs from MatVec at [%d] (activation row %d)", procs, m, j, j/rows)
					}
				}
			}
		})
	}
}

func TestNewMat(t *testing.T) {
	cases := []struct {
		name    string
		typ     gguf.Type
		shape   []uint64
		bytes   int
		rows    int
		wantErr string
	}{
		{"f32", gguf.TypeF32, []uint64{8, 3}, 96, 3, ""},
		{"q4k-extra-dim", gguf.TypeQ4_K, []uint64{256, 2, 1}, 288, 2, ""},
		{"vector", gguf.TypeF32, []uint64{5}, 20, 1, ""},
		{"longer-data", gguf.TypeF16, []uint64{4, 2}, 40, 2, ""},
		{"unsupported", gguf.TypeIQ2_XXS, []uint64{256, 2}, 1000, 0, "unsupported"},
		{"bad-cols", gguf.TypeQ4_K, []uint64{100, 2}, 1000, 0, "block size"},
		{"short", gguf.TypeQ8_0, []uint64{64, 4}, 4*68 - 1, 0, "need"},
		{"3d", gguf.TypeF32, []uint64{4, 2, 2}, 64, 0, "not a matrix"},
		{"zero", gguf.TypeF32, []uint64{0, 2}, 0, 0, "bad shape"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ti := &gguf.TensorInfo{Name: "blk.0." + c.name, Shape: c.shape, Type: c.typ}
			m, err := NewMat(ti, make([]byte, c.bytes))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), ti.Name) {
					t.Fatalf("err = %v, want one naming %q and saying %q", err, ti.Name, c.wantErr)
				}
				if c.wantErr == "unsupported" && !errors.Is(err, gguf.ErrUnsupportedType) {
					t.Fatalf("err = %v does not wrap ErrUnsupportedType", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rb, _ := c.typ.RowSize(int(c.shape[0]))
			if m.Rows != c.rows || m.Cols != int(c.shape[0]) || len(m.Data) != c.rows*rb || m.RowBytes() != rb {
				t.Fatalf("got %d x %d, %d bytes (row %d)", m.Rows, m.Cols, len(m.Data), m.RowBytes())
			}
		})
	}
}
