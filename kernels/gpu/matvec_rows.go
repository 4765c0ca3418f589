package gpu

import (
	"fmt"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
)

// Batched decode: the products of several sequences' rows with one matrix
// (src/matvec_rows.cu), each weight block read once for all of them.

// MaxMatVecRows is the most activation rows MatVecQ8Rows takes at once.
const MaxMatVecRows = 8

// mvRowsTypes are the weight types with mvrows kernels, by kernel suffix
// (the regrouped layouts too).
var mvRowsTypes = map[string]gguf.Type{
	"q8_0": gguf.TypeQ8_0, "q4_0": gguf.TypeQ4_0, "q4_k": gguf.TypeQ4_K, "q6_k": gguf.TypeQ6_K,
	q8Regroup.suffix: gguf.TypeQ8_0, q4Regroup.suffix: gguf.TypeQ4_0,
}

// mvRowsChoices are the weight rows per block the mvrows kernels come in.
var mvRowsChoices = []int{1, 2, 4}

type mvRowsKey struct {
	suffix string
	r, n   int
}

// mvRowsNames maps (type, rows per block, activation rows) to the kernel
// name, so that a launch formats no name.
var mvRowsNames = func() map[mvRowsKey]string {
	m := map[mvRowsKey]string{}
	for s := range mvRowsTypes {
		for _, r := range mvRowsChoices {
			for n := 2; n <= MaxMatVecRows; n++ {
				m[mvRowsKey{s, r, n}] = fmt.Sprintf("mvrows_%s_r%d_n%d", s, r, n)
			}
		}
	}
	return m
}()

// matVecRowsKernelNames lists the kernels of MatVecQ8Rows.
func matVecRowsKernelNames() []string {
	names := make([]string, 0, len(mvRowsNames))
	for _, name := range mvRowsNames {
		names = append(names, name)
	}
	return names
}

// mvRowsThreads is the block size of an mvrows launch for rows of cols
// values: one thread per 32-value chunk of a row, in whole pairs of
// 32-lane warps (so whole 64-lane waves too), at most 128.
func mvRowsThreads(cols int) int {
	return min(128, max(64, (cols/32+63)/64*64))
}

// mvRowsPerBlock is MatVecQ8Rows's weight rows per block for n activation
// rows, the fastest on an H100 (NOTES.md): 2 for two rows, 4 from three
// on (four weight rows share each load of the activations).
func mvRowsPerBlock(n int) int {
	if n <= 2 {
		return 2
	}
	return 4
}

// MatVecQ8Rows computes y[j] = W·x[j] for n rows (1 ≤ n ≤ MaxMatVecRows) of
// int8 activations quantised by QuantizeActQ8 over all n rows at once (xq
// from QuantizeActQ8(s, x, xq, n*cols): row j's int8 values at xq + j*cols,
// its scales at the scale area + j*cols/32), into y (n rows of `rows`
// float32). Weight types: those of HasMatVecQ8. Each row's result is within
// float32 rounding of MatVecQ8 on that row alone.
//
// Every weight block is read once and multiplied with all n rows, so the
// call moves the weight bytes of one MatVecQ8. For n ≥ 2, xq must be
// 16-byte aligned (every Malloc'd address is); n = 1 is MatVecQ8.
func (k *Kernels) MatVecQ8Rows(s hip.Stream, t gguf.Type, w, xq, y hip.DevicePtr, rows, cols, n int) error {
	return k.matVecQ8Rows(s, t, mvRowsPerBlock(n), w, xq, y, rows, cols, n)
}

// matVecQ8Rows is MatVecQ8Rows with the weight rows per block (1, 2 or 4)
// chosen by the caller (tests, benchmarks).
func (k *Kernels) matVecQ8Rows(s hip.Stream, t gguf.Type, rowsPerBlock int, w, xq, y hip.DevicePtr, rows, cols, n int) error {
	const call = "MatVecQ8Rows"
	if n < 1 || n > MaxMatVecRows {
		return badArg(call, "%d activation rows (1..%d)", n, MaxMatVecRows)
	}
	g, rb, err := checkWeights(call, t, w, rows, cols)
	if err != nil {
		return err
	}
	if !HasMatVecQ8(t) {
		return fmt.Errorf("kernels/gpu: %s: %w: %s weights (use MatMul)", call, hip.ErrNotSupported, t)
	}
	if int64(n)*int64(cols) > 1<<31-1 {
		return badArg(call, "%d rows of %d activations", n, cols)
	}
	if n == 1 {
		return k.MatVecQ8(s, t, w, xq, y, rows, cols)
	}
	if xq%16 != 0 {
		return badArg(call, "activations at %v are not 16-byte aligned", xq)
	}
	if _, ok := mvRowsTypes[g.suffix]; !ok {
		return fmt.Errorf("kernels/gpu: %s: %w: no batched kernel for %s weights", call, hip.ErrNotSupported, t)
	}
	name, ok := mvRowsNames[mvRowsKey{g.suffix, rowsPerBlock, n}]
	if !ok {
		return badArg(call, "%d weight rows per block (want 1, 2 or 4)", rowsPerBlock)
	}
	return k.launch(s, k.fn(name), hip.Dim1(blocks(rows, rowsPerBlock)), hip.Dim1(uint32(mvRowsThreads(cols))), 0,
		hip.Ptr(w), hip.Ptr(xq), hip.Ptr(y), hip.Int32(int32(rows)), hip.Int32(int32(cols)), hip.Int64(rb))
}
