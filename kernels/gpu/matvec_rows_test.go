package gpu

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
)

// rowsTolerance bounds MatVecQ8Rows against MatVecQ8 on each row alone:
// the same int8 products summed in another order, so float32 rounding
// only, per output relative to Σ|w·x| of its row (TOLERANCES.md, matvecQ8Rows).
const rowsTolerance = 1e-5

// mvRowsCase is a weight matrix of TestMatVecQ8Rows; period > 0 repeats its
// first period random rows (the host's quantisers are slow on large
// matrices), 0 makes every row random; off moves the weights off their
// allocation's alignment by that many bytes (types with 2-byte aligned
// blocks only).
type mvRowsCase struct{ rows, cols, period, off int }

var mvRowsCases = []mvRowsCase{
	{3, 256, 0, 0},      // fewer rows than a block takes; one super-block; threads idle
	{100, 4096, 0, 0},   // 128 chunks, one per thread
	{101, 1024, 0, 2},   // odd row count (the last block has 1 row of 2 or 4); weights at +2
	{37, 1056, 0, 2},    // rows of 33 blocks: Q8_0 as in the file (not regrouped), weights at +2
	{2048, 512, 0, 0},   // short rows: 16 chunks in a block of 64 threads
	{4096, 4096, 61, 0}, // a real square matrix
	{8192, 2048, 61, 0}, // gate/up-like: 64 chunks, a block of 64 threads
	{67, 14336, 0, 10},  // long rows: 448 chunks over 128 threads (3.5 each); weights at +10
	{333, 2304, 0, 0},   // 72 chunks: the last 56 threads of 128 idle
	{37, 2144, 0, 2},    // 67 blocks of 32 (Q4_0, Q8_0 only)
}

// tiledWeights is randWeights with the first period rows repeated (period
// 0: every row random); deq holds only the period distinct rows.
func (e *env) tiledWeights(t gguf.Type, rows, cols, period int) (data []byte, deq []float32) {
	if period == 0 || period >= rows {
		return e.randWeights(t, rows, cols)
	}
	tile, deq := e.randWeights(t, period, cols)
	rb := len(tile) / period
	data = make([]byte, rows*rb)
	for off := 0; off < len(data); off += len(tile) {
		copy(data[off:], tile)
	}
	return data, deq
}

// TestMatVecQ8Rows checks every row of MatVecQ8Rows (with 1, 2 and 4
// weight rows per block) against MatVecQ8 on that row quantised alone, for every weight
// type of HasMatVecQ8, n = 2, 3, 5, 8 and n = 1 (which is MatVecQ8),
// with NaN-poisoned outputs and a poisoned guard after them that must stay
// untouched.
func TestMatVecQ8Rows(t *testing.T) {
	e := newEnv(t, 19)
	const guard = 64
	for _, typ := range Types() {
		if !HasMatVecQ8(typ) {
			continue
		}
		for _, sh := range mvRowsCases {
			rows, cols := sh.rows, sh.cols
			if cols%typ.BlockSize() != 0 {
				continue
			}
			data, deq := e.tiledWeights(typ, rows, cols, sh.period)
			off := int64(sh.off)
			if typ == gguf.TypeQ4_K || Grouped(typ, cols) {
				off = 0 // Q4_K and regrouped Q8_0 weights must be 16-byte aligned
			}
			w := e.alloc(int64(len(data)) + 16).Add(off)
			e.check(e.s.MemcpyHtoDAsync(w, data))
			e.sync()
			x := e.randVec(MaxMatVecRows * cols)
			xd := e.uploadF32(x)

			// Reference: MatVecQ8 on each activation row quantised alone,
			// and the row's Σ|w·x| as the error's scale.
			ref := make([][]float32, MaxMatVecRows)
			scale := make([][]float64, MaxMatVecRows)
			xq1 := e.alloc(ActQ8Bytes(cols))
			y1 := e.alloc(int64(rows) * 4)
			for j := range ref {
				e.check(e.k.QuantizeActQ8(e.s, xd.Add(int64(j*cols*4)), xq1, cols))
				e.check(e.k.MatVecQ8(e.s, typ, w, xq1, y1, rows, cols))
				ref[j] = e.download(y1, rows)
				scale[j] = make([]float64, rows)
				distinct := len(deq) / cols
				for r := range rows {
					if r >= distinct {
						scale[j][r] = scale[j][r%distinct]
						continue
					}
					for c, wv := range deq[r*cols : (r+1)*cols] {
						scale[j][r] += math.Abs(float64(wv) * float64(x[j*cols+c]))
					}
				}
			}

			for _, n := range []int{1, 2, 3, 5, 8} {
				xq := e.alloc(ActQ8Bytes(n * cols))
				e.check(e.k.QuantizeActQ8(e.s, xd, xq, n*cols))
				rpbs := mvRowsChoices
				if n == 1 {
					rpbs = []int{0} // MatVecQ8's own
				}
				for _, rpb := range rpbs {
					y := e.poisoned(n*rows + guard)
					if rpb == 0 {
						e.check(e.k.MatVecQ8Rows(e.s, typ, w, xq, y, rows, cols, n))
					} else {
						e.check(e.k.matVecQ8Rows(e.s, typ, rpb, w, xq, y, rows, cols, n))
					}
					got := e.download(y, n*rows+guard)
					what := fmt.Sprintf("matvecQ8Rows/%s/%dx%d/w+%d/n%d/r%d", typ, rows, cols, off, n, rpb)
					worst, at := 0.0, [2]int{}
					for j := range n {
						for r := range rows {
							d := math.Abs(float64(got[j*rows+r])-float64(ref[j][r])) / scale[j][r]
							if math.IsNaN(d) || math.IsInf(d, 0) {
								d = math.Inf(1)
							}
							if d > worst {
								worst, at = d, [2]int{j, r}
							}
						}
					}
					for i, v := range got[n*rows:] {
						if math.Float32bits(v) != 0x7fc00000 {
							t.Errorf("%s: wrote %v past the output, at y[%d]", what, v, n*rows+i)
							break
						}
					}
					if !(worst <= rowsTolerance) {
						j, r := at[0], at[1]
						t.Errorf("%s: error %.3g of Σ|w·x| > %.0e (row %d, output %d: got %v, MatVecQ8 %v)",
							what, worst, rowsTolerance, j, r, got[j*rows+r], ref[j][r])
					} else {
						t.Logf("%s: relative error %.3g of Σ|w·x| (tolerance %.0e)", what, worst, rowsTolerance)
					}
				}
			}
		}
	}
}

// TestMatVecQ8RowsBadArguments checks the arguments MatVecQ8Rows refuses
// before any launch (no device needed).
func TestMatVecQ8RowsBadArguments(t *testing.T) {
	k := &Kernels{fns: map[string]hip.Function{}}
	var s hip.Stream
	cases := []struct {
		name    string
		t       gguf.Type
		xq      hip.DevicePtr
		cols, n int
		r       int
		want    error
	}{
		{"no rows", gguf.TypeQ8_0, 0, 256, 0, 2, hip.ErrInvalidValue},
		{"negative rows", gguf.TypeQ8_0, 0, 256, -1, 2, hip.ErrInvalidValue},
		{"more than MaxMatVecRows", gguf.TypeQ8_0, 0, 256, MaxMatVecRows + 1, 2, hip.ErrInvalidValue},
		{"F16 weights", gguf.TypeF16, 0, 256, 2, 2, hip.ErrNotSupported},
		{"Q5_K weights", gguf.TypeQ5_K, 0, 256, 2, 2, hip.ErrNotSupported},
		{"IQ2_XS weights", gguf.TypeIQ2_XS, 0, 256, 2, 2, hip.ErrNotSupported},
		{"ragged Q4_K columns", gguf.TypeQ4_K, 0, 288, 2, 2, hip.ErrInvalidValue},
		{"activations off 16 bytes", gguf.TypeQ8_0, 8, 256, 2, 2, hip.ErrInvalidValue},
		{"3 rows per block", gguf.TypeQ8_0, 0, 256, 2, 3, hip.ErrInvalidValue},
	}
	for _, c := range cases {
		err := k.matVecQ8Rows(s, c.t, c.r, 0, c.xq, 0, 4, c.cols, c.n)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	if err := k.MatVecQ8Rows(s, gguf.TypeQ8_0, 0, 0, 0, 4, 256, 0); !errors.Is(err, hip.ErrInvalidValue) {
		t.Errorf("MatVecQ8Rows with n = 0: got %v", err)
	}
}

func TestMatVecRowsThreads(t *testing.T) {
	cases := []struct{ cols, want int }{
		{32, 64}, {512, 64}, {2048, 64}, {2080, 128}, {4096, 128}, {14336, 128},
	}
	for _, c := range cases {
		if got := mvRowsThreads(c.cols); got != c.want {
			t.Errorf("mvRowsThreads(%d) = %d, want %d", c.cols, got, c.want)
		}
	}
	// Every (type, rows per block, n) has a kernel and the module lists it.
	names := map[string]bool{}
	for _, n := range kernelNames() {
		names[n] = true
	}
	for key, name := range mvRowsNames {
		if !names[name] {
			t.Errorf("%+v: kernel %q not in kernelNames", key, name)
		}
	}
	if want := len(mvRowsTypes) * (MaxMatVecRows - 1) * len(mvRowsChoices); len(mvRowsNames) != want {
		t.Errorf("%d mvrows kernels, want %d", len(mvRowsNames), want)
	}
}

// BenchmarkMatVecQ8Rows times the batched decode product for n activation
// rows against the two ways without it: n calls of MatVecQ8 (variant
// loop, each row's own activations) and MatMul (dequantise to half, then
// GEMM; variant matmul). rows is MatVecQ8Rows as it launches by default,
// r<R> with R weight rows per block. GB/s is the weight bytes (one copy) per
// call's time; the weights rotate over copies past the L2 (timeMatVec).
func BenchmarkMatVecQ8Rows(b *testing.B) {
	e := newEnv(b, 20)
	bl, err := e.dev.BLASCreate(e.s)
	if errors.Is(err, hip.ErrNotSupported) {
		b.Skipf("no BLAS on %s: %v", e.dev.Name(), err)
	}
	e.check(err)
	defer bl.Destroy()
	for _, typ := range []gguf.Type{gguf.TypeQ8_0, gguf.TypeQ4_K} {
		for _, sh := range [][2]int{{16384, 2048}, {4096, 4096}} {
			rows, cols := sh[0], sh[1]
			m := e.benchMatrix(typ, rows, cols)
			x := e.uploadF32(e.randVec(MaxMatVecRows * cols))
			y := e.alloc(int64(MaxMatVecRows) * int64(rows) * 4)
			scratch := e.alloc(MatMulScratchBytes(typ, rows, cols, MaxMatVecRows))
			xq1 := make([]hip.DevicePtr, MaxMatVecRows) // each row quantised alone
			for j := range xq1 {
				xq1[j] = e.alloc(ActQ8Bytes(cols))
				e.check(e.k.QuantizeActQ8(e.s, x.Add(int64(j*cols*4)), xq1[j], cols))
			}
			for _, n := range []int{1, 2, 4, 8} {
				xq := e.alloc(ActQ8Bytes(n * cols))
				e.check(e.k.QuantizeActQ8(e.s, x, xq, n*cols))
				variants := []string{"rows", "loop", "matmul"}
				if n > 1 {
					for _, r := range mvRowsChoices {
						variants = append(variants, fmt.Sprintf("r%d", r))
					}
				}
				for _, v := range variants {
					var rpb int // r<R>: R weight rows per block
					fmt.Sscanf(v, "r%d", &rpb)
					b.Run(fmt.Sprintf("%s/%dx%d/n%d/%s", typ, rows, cols, n, v), func(b *testing.B) {
						e.timeMatVec(b, m, func(w hip.DevicePtr) {
							switch v {
							case "rows":
								e.check(e.k.MatVecQ8Rows(e.s, typ, w, xq, y, rows, cols, n))
							case "loop":
								for j := range n {
									e.check(e.k.MatVecQ8(e.s, typ, w, xq1[j], y.Add(int64(j*rows*4)), rows, cols))
								}
							case "matmul":
								e.check(e.k.MatMul(e.s, bl, typ, w, x, y, scratch, rows, cols, n))
							default:
								e.check(e.k.matVecQ8Rows(e.s, typ, rpb, w, xq, y, rows, cols, n))
							}
						})
					})
				}
			}
			e.freeBenchMatrix(m)
		}
	}
}
