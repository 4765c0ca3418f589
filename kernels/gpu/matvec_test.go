package gpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
)

// Tests and benchmarks of the decode products' launch choices: the staged
// int8 kernels (matvec8s) with their tiles, splits and striding grids, the
// real decode shapes, and the prompt path's dequantise + GEMM.

// TestMatVecQ8Tiles checks the int8 products, in place (the default) and
// staged (matvec8s), where tiling can go wrong: weights that start off a
// 16-byte granule (every row then starts at another offset), rows of
// several tiles with a ragged last one, row counts that are no multiple of
// the rows per block, row groups split over 1, 2 or 4 warps, and grids
// smaller than the matrix (blocks striding). The bound is TestMatVecQ8's.
func TestMatVecQ8Tiles(t *testing.T) {
	e := newEnv(t, 15)
	tunes := []struct {
		name string
		tune mvTune
	}{
		{"inplace", mvTune{}},
		{"staged", mvTune{staged: true}},
		{"staged-split1-grid3", mvTune{staged: true, split: 1, gridCap: 3}},
		{"staged-split2-grid2", mvTune{staged: true, split: 2, gridCap: 2}},
		{"staged-split4", mvTune{staged: true, split: 4}},
		{"staged-split4-grid1", mvTune{staged: true, split: 4, gridCap: 1}},
	}
	defer func() { e.k.mvt = mvTune{} }()
	for _, typ := range Types() {
		if !HasMatVecQ8(typ) {
			continue
		}
		// 133 and 35 blocks: two or more whole tiles and a ragged one
		// for every rows-per-block (tiles of 16..128 blocks).
		nblk := 133
		if typ.BlockSize() == 256 {
			nblk = 35
		}
		offsets := []int64{0, 2, 10}
		if typ == gguf.TypeQ4_K {
			offsets = []int64{0} // Q4_K weights must be 16-byte aligned
		}
		for _, sh := range [][2]int{{29, nblk * typ.BlockSize()}, {6, typ.BlockSize()}} {
			rows, cols := sh[0], sh[1]
			data, deq := e.randWeights(typ, rows, cols)
			x := e.randVec(cols)
			ref, scale := make([]float64, rows), make([]float64, rows)
			for r := range ref {
				for c, w := range deq[r*cols : (r+1)*cols] {
					ref[r] += float64(w) * float64(x[c])
					scale[r] += math.Abs(float64(w) * float64(x[c]))
				}
			}
			xq := e.alloc(ActQ8Bytes(cols))
			e.check(e.k.QuantizeActQ8(e.s, e.uploadF32(x), xq, cols))
			for _, off := range offsets {
				buf := e.alloc(int64(len(data)) + 16)
				w := buf.Add(off)
				e.check(e.s.MemcpyHtoDAsync(w, data))
				e.sync()
				for _, tu := range tunes {
					e.k.mvt = tu.tune
					for _, rpb := range []int{1, 2, 4} {
						y := e.poisoned(rows)
						e.check(e.k.MatVecQ8R(e.s, typ, rpb, w, xq, y, rows, cols))
						got := e.download(y, rows)
						worst := 0.0
						for r := range got {
							d := math.Abs(float64(got[r])-ref[r]) / scale[r]
							if math.IsNaN(d) || math.IsInf(d, 0) {
								d = math.Inf(1)
							}
							worst = max(worst, d)
						}
						what := fmt.Sprintf("matvecQ8/%s/%dx%d/w+%d/%s/r%d", typ, rows, cols, off, tu.name, rpb)
						if tol := tolerances["matvecQ8"]; !(worst <= tol) {
							t.Errorf("%s: error %.3g of Σ|w·x| > %.0e", what, worst, tol)
						} else {
							t.Logf("%s: relative error %.3g of Σ|w·x| (tolerance %.0e)", what, worst, tol)
						}
					}
				}
			}
		}
	}
}

// TestMatVecGridStride checks the float-activation products with grids
// smaller than the matrix, so that blocks stride over the row groups.
func TestMatVecGridStride(t *testing.T) {
	e := newEnv(t, 16)
	defer func() { e.k.mvt = mvTune{} }()
	for _, typ := range []gguf.Type{gguf.TypeF16, gguf.TypeBF16, gguf.TypeQ8_0, gguf.TypeQ4_K} {
		rows, cols := 37, 1024
		data, deq := e.randWeights(typ, rows, cols)
		x := e.randVec(cols)
		ref := mvRef(deq, x, rows, cols)
		w, xd := e.upload(data), e.uploadF32(x)
		for _, grid := range []int{1, 3} {
			e.k.mvt = mvTune{gridCap: grid}
			for _, rpb := range []int{1, 2, 4} {
				y := e.poisoned(rows)
				e.check(e.k.MatVecR(e.s, typ, rpb, w, xd, y, rows, cols))
				e.expect(fmt.Sprintf("matvec/%s/%dx%d/grid%d/r%d", typ, rows, cols, grid, rpb), e.download(y, rows), ref)
			}
		}
	}
}

func TestMatVecQ8Split(t *testing.T) {
	cases := []struct{ groups, tiles, want int }{
		{2048, 4, 1},  // 4096 rows of Q8_0 by 2: enough warps alone
		{1024, 8, 2},  // 2048 rows: two warps a row group
		{256, 2, 2},   // few rows: a tile per warp
		{256, 3, 2},   // a fourth warp would have none
		{256, 64, 4},  // few, long rows
		{16384, 1, 1}, // one tile: nothing to split
	}
	for _, c := range cases {
		if got := mv8Split(c.groups, c.tiles); got != c.want {
			t.Errorf("mv8Split(%d groups, %d tiles) = %d, want %d", c.groups, c.tiles, got, c.want)
		}
	}
	// Tile widths as quant.cu's Mv8 computes them for 32-lane warps.
	widths := []struct {
		t    gguf.Type
		r    int
		want int
	}{
		{gguf.TypeQ8_0, 1, 64}, {gguf.TypeQ8_0, 2, 32}, {gguf.TypeQ8_0, 4, 32},
		{gguf.TypeQ4_0, 1, 128}, {gguf.TypeQ4_0, 4, 32},
		{gguf.TypeQ4_K, 1, 16}, {gguf.TypeQ4_K, 2, 8}, {gguf.TypeQ4_K, 4, 4},
		{gguf.TypeQ6_K, 1, 8}, {gguf.TypeQ6_K, 2, 4}, {gguf.TypeQ6_K, 4, 4},
	}
	for _, c := range widths {
		if got := mv8TileBlocks(c.t, c.r); got != c.want {
			t.Errorf("mv8TileBlocks(%s, %d) = %d, want %d", c.t, c.r, got, c.want)
		}
	}
}

func TestMatVecQ8BadArguments(t *testing.T) {
	k := &Kernels{fns: map[string]hip.Function{}}
	var s hip.Stream
	if err := k.MatVecQ8(s, gguf.TypeQ8_0, 0, 2, 0, 4, 32); !errors.Is(err, hip.ErrInvalidValue) {
		t.Errorf("MatVecQ8 with activations off 4 bytes: %v", err)
	}
	k.mvt.staged = true
	if err := k.MatVecQ8(s, gguf.TypeQ8_0, 0, 4, 0, 4, 32); !errors.Is(err, hip.ErrInvalidValue) {
		t.Errorf("staged MatVecQ8 with activations off 16 bytes: %v", err)
	}
	if err := k.MatVecQ8(s, gguf.TypeF16, 0, 0, 0, 4, 32); !errors.Is(err, hip.ErrNotSupported) {
		t.Errorf("MatVecQ8 with F16 weights: %v", err)
	}
}

// TestDequantizeTiles checks Dequantize where its tiles can go wrong:
// weights that start off a 16-byte granule (each tile's bytes are staged
// from the aligned granules around them), several tiles and a ragged last
// one, and F32, F16 and BF16 matrices whose last 16-value unit is partial.
// The float32 output must match the host's dequantisation (TestDequantize's
// bound), and the half output must be exactly the float32 output rounded
// to half, with nothing written past the matrix.
func TestDequantizeTiles(t *testing.T) {
	e := newEnv(t, 16)
	if err := e.k.Dequantize(e.s, gguf.TypeQ8_0, 0, 8, 1, 32, true); !errors.Is(err, hip.ErrInvalidValue) {
		t.Errorf("Dequantize to an output off 16 bytes: %v", err)
	}
	for _, typ := range Types() {
		bs := max(typ.BlockSize(), 8)
		// 135 blocks of 32 or 256 values: one or more whole tiles of
		// 128 or 16..32 blocks and a ragged one.
		for _, sh := range [][2]int{{3, 45 * bs}, {5, 12}, {1, bs}} {
			rows, cols := sh[0], sh[1]
			g, err := geom("test", typ, cols)
			if err != nil {
				continue // 12 columns: F32, F16 and BF16 only
			}
			data, deq := e.randWeights(typ, rows, cols)
			n := rows * cols
			for _, off := range []int64{0, int64(g.align), 5 * int64(g.align)} {
				if off%16 == 0 && off != 0 {
					continue
				}
				buf := e.alloc(int64(len(data)) + 96)
				w := buf.Add(off)
				e.check(e.s.MemcpyHtoDAsync(w, data))
				what := fmt.Sprintf("dequant/%s/%dx%d/off%d", typ, rows, cols, off)
				out := e.poisoned(n + 8)
				e.check(e.k.Dequantize(e.s, typ, w, out, rows, cols, false))
				got := e.download(out, n+8)
				e.expect(what, got[:n], deq)
				words := (n + 17) / 2 // n halves and at least 16 more
				h := e.alloc(int64(words) * 4)
				e.check(e.s.MemsetD32Async(h, 0x7e007e00, int64(words)))
				e.check(e.k.Dequantize(e.s, typ, w, h, rows, cols, true))
				b := make([]byte, words*4)
				e.check(e.s.MemcpyDtoHAsync(b, h))
				e.sync()
				for i := 0; i < 2*words; i++ {
					want := uint16(0x7e00) // past the matrix: untouched
					if i < n {
						want = gguf.FP32ToFP16(got[i])
					}
					if v := binary.LittleEndian.Uint16(b[2*i:]); v != want {
						t.Errorf("%s: half [%d] = %#04x, want %#04x", what, i, v, want)
						break
					}
				}
				for i := n; i < n+8; i++ {
					if !math.IsNaN(float64(got[i])) {
						t.Errorf("%s: float32 [%d] written past the matrix", what, i)
						break
					}
				}
			}
		}
	}
}

// benchMatrix holds copies of one rows×cols matrix of type t, more than
// 512 MiB together, so that launches rotating over them find none of
// their weights in the L2 cache.
type benchMatrix struct {
	ws   []hip.DevicePtr
	size int64 // bytes of one copy
}

func (e *env) benchMatrix(typ gguf.Type, rows, cols int) benchMatrix {
	e.t.Helper()
	rb, _ := typ.RowSize(cols)
	size := int64(rb) * int64(rows)
	// Quantise 64 random rows and tile them: the bytes differ per row
	// group only, which does not matter for timing.
	tile, _ := e.randWeights(typ, 64, cols)
	w0, err := e.dev.Malloc(size)
	e.check(err)
	for off := int64(0); off < size; off += int64(len(tile)) {
		e.check(e.s.MemcpyHtoDAsync(w0.Add(off), tile[:min(int64(len(tile)), size-off)]))
	}
	m := benchMatrix{ws: []hip.DevicePtr{w0}, size: size}
	for i := 1; i < int((512<<20)/size+1); i++ {
		p, err := e.dev.Malloc(size)
		e.check(err)
		e.check(e.s.MemcpyDtoDAsync(p, w0, size))
		m.ws = append(m.ws, p)
	}
	e.sync()
	return m
}

func (e *env) freeBenchMatrix(m benchMatrix) {
	e.t.Helper()
	e.sync()
	for _, p := range m.ws {
		e.check(e.dev.Free(p))
	}
}

// timeMatVec reports the weight bytes per second of launch, run b.N times
// over the copies of m after a warm-up (see BenchmarkMatVec).
func (e *env) timeMatVec(b *testing.B, m benchMatrix, launch func(w hip.DevicePtr)) {
	b.Helper()
	for i := 0; i < 2*len(m.ws); i++ {
		launch(m.ws[i%len(m.ws)])
	}
	e.sync()
	// 100 µs of sleep per launch at up to 2 GHz covers the host's enqueueing.
	ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, func(i int) { launch(m.ws[i%len(m.ws)]) })
	per := ms / 1e3 / float64(b.N)
	if hostUS > 100 {
		b.Logf("host-bound: %.1f us per launch to enqueue", hostUS)
	}
	b.ReportMetric(float64(m.size)/per/1e9, "GB/s")
	b.ReportMetric(per*1e6, "us/op")
	b.ReportMetric(hostUS, "host-us/op")
}

// decodeShapes are the matrix-vector products of one decode step of a
// 1B- and an 8B-shaped llama (rows × cols; gate and up as one matrix).
var decodeShapes = []struct {
	name       string
	rows, cols int
}{
	{"1B-qo", 2048, 2048}, {"1B-kv", 512, 2048}, {"1B-gateup", 16384, 2048}, {"1B-down", 2048, 8192},
	{"1B-logits", 4096, 2048},
	{"8B-qo", 4096, 4096}, {"8B-kv", 1024, 4096}, {"8B-gateup", 28672, 4096}, {"8B-down", 4096, 14336},
}

// BenchmarkMatVecDecode times the default product of each fast weight type
// (MatVec for F16 and BF16, MatVecQ8 for the quantised types, as the
// model runs them) on the real decode shapes; for the quantised types also
// the staged kernels (variant staged).
//
// Q8_0 and Q4_0 are timed in both device layouts (layout.go): regrouped
// (the default, variant grouped) and as in the file (variant gguf, with
// its staged kernel too).
func BenchmarkMatVecDecode(b *testing.B) {
	e := newEnv(b, 17)
	defer func(q8, q4 bool) { q8Regroup.on, q4Regroup.on = q8, q4 }(q8Regroup.on, q4Regroup.on)
	for _, typ := range []gguf.Type{gguf.TypeF16, gguf.TypeBF16, gguf.TypeQ8_0, gguf.TypeQ6_K, gguf.TypeQ4_0, gguf.TypeQ4_K} {
		for _, sh := range decodeShapes {
			rows, cols := sh.rows, sh.cols
			layouts := []bool{false}
			r := regroups[typ]
			if r != nil {
				layouts = []bool{true, false}
			}
			for _, group := range layouts {
				if r != nil {
					r.on = group
				}
				m := e.benchMatrix(typ, rows, cols)
				x := e.uploadF32(e.randVec(cols))
				y := e.alloc(int64(rows) * 4)
				xq := e.alloc(ActQ8Bytes(cols))
				e.check(e.k.QuantizeActQ8(e.s, x, xq, cols))
				for _, staged := range []bool{false, true} {
					name := fmt.Sprintf("%s/%s/%dx%d", typ, sh.name, rows, cols)
					switch {
					case r == nil:
					case group:
						name += "/grouped"
					default:
						name += "/gguf"
					}
					if staged {
						if !HasMatVecQ8(typ) || Grouped(typ, cols) {
							continue
						}
						name += "/staged"
					}
					b.Run(name, func(b *testing.B) {
						e.k.mvt.staged = staged
						defer func() { e.k.mvt = mvTune{} }()
						e.timeMatVec(b, m, func(w hip.DevicePtr) {
							if HasMatVecQ8(typ) {
								e.check(e.k.MatVecQ8(e.s, typ, w, xq, y, rows, cols))
							} else {
								e.check(e.k.MatVec(e.s, typ, w, x, y, rows, cols))
							}
						})
					})
				}
				e.freeBenchMatrix(m)
			}
		}
	}
}

// BenchmarkMatMul times the prompt path, MatMul of n = 512 activation rows
// by a quantised matrix: in total, and its two parts, the dequantisation
// of the weights to half (GB/s of bytes read and written) and the GEMM on
// the half weights (with x's conversion to half). TFLOP/s counts 2·rows·
// cols·n. The weights are one copy (they fit in L2; the GEMM dominates).
func BenchmarkMatMul(b *testing.B) {
	e := newEnv(b, 18)
	bl, err := e.dev.BLASCreate(e.s)
	if errors.Is(err, hip.ErrNotSupported) {
		b.Skipf("no BLAS on %s: %v", e.dev.Name(), err)
	}
	e.check(err)
	defer bl.Destroy()
	const n = 512
	for _, typ := range []gguf.Type{gguf.TypeQ8_0, gguf.TypeQ4_K} {
		for _, sh := range [][2]int{{8192, 2048}, {2048, 8192}} {
			rows, cols := sh[0], sh[1]
			m := e.benchMatrix(typ, rows, cols)
			w := m.ws[0]
			x := e.uploadF32(e.randVec(n * cols))
			y := e.alloc(int64(n) * int64(rows) * 4)
			scratch := e.alloc(MatMulScratchBytes(typ, rows, cols, n))
			w16, x16 := scratch, scratch.Add(int64(rows)*int64(cols)*2)
			flop := 2 * float64(rows) * float64(cols) * n
			for _, part := range []string{"total", "dequant", "gemm"} {
				b.Run(fmt.Sprintf("%s/%dx%d/n%d/%s", typ, rows, cols, n, part), func(b *testing.B) {
					launch := func(int) {
						switch part {
						case "total":
							e.check(e.k.MatMul(e.s, bl, typ, w, x, y, scratch, rows, cols, n))
						case "dequant":
							e.check(e.k.Dequantize(e.s, typ, w, w16, rows, cols, true))
						case "gemm":
							e.check(e.k.MatMul(e.s, bl, gguf.TypeF16, w16, x, y, x16, rows, cols, n))
						}
					}
					for i := 0; i < 3; i++ {
						launch(i)
					}
					e.sync()
					ms, hostUS := e.timeLaunches(b.N, int64(b.N)*400_000, launch)
					per := ms / 1e3 / float64(b.N)
					b.ReportMetric(per*1e6, "us/op")
					if part == "dequant" {
						b.ReportMetric(float64(m.size+int64(rows)*int64(cols)*2)/per/1e9, "GB/s")
					} else {
						b.ReportMetric(flop/per/1e12, "TFLOP/s")
					}
					b.ReportMetric(hostUS, "host-us/op")
				})
			}
			e.freeBenchMatrix(m)
		}
	}
}

// BenchmarkDequantize times Dequantize to half alone, the first part of
// the prompt path's MatMul, on a 1B model's down projection (2048x8192)
// and an 8B model's gate or up (14336x4096). GB/s counts the weight bytes
// read plus the half bytes written; the weights rotate over copies and the
// output over buffers, each more than 512 MiB together, so neither stays
// in the L2 cache (BenchmarkMatMul's dequant part keeps both there).
// FORGEPIPE_BENCH_ALL adds the other quantised types.
func BenchmarkDequantize(b *testing.B) {
	e := newEnv(b, 19)
	types := []gguf.Type{gguf.TypeQ8_0, gguf.TypeQ4_0, gguf.TypeQ4_K, gguf.TypeQ6_K,
		gguf.TypeQ5_K, gguf.TypeQ5_0, gguf.TypeQ4_1, gguf.TypeQ5_1, gguf.TypeQ2_K, gguf.TypeQ3_K}
	if os.Getenv("FORGEPIPE_BENCH_ALL") == "" {
		types = types[:4]
	}
	for _, sh := range [][2]int{{2048, 8192}, {14336, 4096}} {
		rows, cols := sh[0], sh[1]
		half := int64(rows) * int64(cols) * 2
		outs := make([]hip.DevicePtr, (512<<20)/half+1)
		for i := range outs {
			p, err := e.dev.Malloc(half)
			e.check(err)
			outs[i] = p
		}
		for _, typ := range types {
			m := e.benchMatrix(typ, rows, cols)
			b.Run(fmt.Sprintf("%s/%dx%d", typ, rows, cols), func(b *testing.B) {
				launch := func(i int) {
					e.check(e.k.Dequantize(e.s, typ, m.ws[i%len(m.ws)], outs[i%len(outs)], rows, cols, true))
				}
				for i := 0; i < 2*max(len(m.ws), len(outs)); i++ {
					launch(i)
				}
				e.sync()
				ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, launch)
				per := ms / 1e3 / float64(b.N)
				b.ReportMetric(per*1e6, "us/op")
				b.ReportMetric(float64(m.size+half)/per/1e9, "GB/s")
				b.ReportMetric(hostUS, "host-us/op")
			})
			e.freeBenchMatrix(m)
		}
		e.sync()
		for _, p := range outs {
			e.check(e.dev.Free(p))
		}
	}
}

// benchTune reports whether the benchmarks also time the launch choices
// (splits, grid caps) that the defaults were picked from.
func benchTune() bool { return os.Getenv("FORGEPIPE_BENCH_TUNE") != "" }
