package gpu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/kernels"
)

// Tests of the matrix kernels' emulations (emulate_matvec.go) on the host
// driver, through the same wrappers and tolerances as the GPU tests, plus
// direct launches for what the wrappers never do (small grids, padded rows).

// mvFamily reports whether kernel name is one emulate_matvec.go emulates.
func mvFamily(name string) bool {
	for _, p := range []string{"matvec", "mvrows_", "dequant_", "embed_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	switch name {
	case "quantize_act_q8", "f32_to_f16", "f32_to_bf16":
		return true
	}
	return false
}

func TestEmulateMatVecNames(t *testing.T) {
	var want []string
	for _, name := range kernelNames() {
		if mvFamily(name) {
			want = append(want, name)
		}
	}
	got := make([]string, 0, len(want))
	for name := range matVecEmulations() {
		got = append(got, name)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("emulated kernels differ from the module's:\n got %v\nwant %v", got, want)
	}
	for _, name := range []string{"matvec_f16s_r1", "matvec_decoded_q6_k_r4", "matvec8s_q4_k_r2", "mvrows_q4_0_r4_n8",
		"dequant_q2_k_f16", "embed_bf16", "quantize_act_q8", "f32_to_bf16"} {
		if _, ok := slices.BinarySearch(want, name); !ok {
			t.Errorf("%s is not among the module's kernels", name)
		}
	}
	registered := hip.HostKernels()
	for _, name := range want {
		if _, ok := slices.BinarySearch(registered, name); !ok {
			t.Errorf("%s: no host kernel registered", name)
		}
	}
}

// mvShapes are (rows, cols) cases for t: row counts that are not multiples
// of 2 or 4, and for the float types columns that pick the one-value
// kernels (not a multiple of 8, or of 4).
func mvShapes(t gguf.Type) [][2]int {
	bs := max(t.BlockSize(), 8)
	s := [][2]int{{1, bs}, {7, bs}, {13, 3 * bs}}
	if t.BlockSize() == 1 {
		s = append(s, [2]int{5, 100}, [2]int{3, 7})
	}
	return s
}

// mvRef is the float64 product of the rows×cols matrix deq with x.
// guarded downloads n float32 at p followed by guard values that must
// still be NaN, and returns the n.
func (e *env) guarded(what string, p hip.DevicePtr, n, guard int) []float32 {
	e.t.Helper()
	got := e.download(p, n+guard)
	for i, v := range got[n:] {
		if !math.IsNaN(float64(v)) {
			e.t.Errorf("%s: value %d past the output overwritten with %v", what, i, v)
			break
		}
	}
	return got[:n]
}

func TestEmulateMatVec(t *testing.T) {
	e := emulatedEnv(t, 31)
	for _, typ := range Types() {
		for _, sh := range mvShapes(typ) {
			rows, cols := sh[0], sh[1]
			data, deq := e.randWeights(typ, rows, cols)
			x := e.randVec(cols)
			ref := mvRef(deq, x, rows, cols)
			w, xd := e.upload(data), e.uploadF32(x)
			for _, rpb := range []int{1, 2, 4} {
				for _, decoded := range []bool{false, true} {
					if decoded && !hasDecoded(typ) {
						continue
					}
					for _, gridCap := range []int{0, 1} { // blocks stride: one block writes every row
						e.k.mvt.gridCap = gridCap
						what := fmt.Sprintf("matvec/%s/%dx%d/r%d/decoded=%v/cap%d", typ, rows, cols, rpb, decoded, gridCap)
						y := e.poisoned(rows + 3)
						e.check(e.k.matVec(e.s, typ, rpb, decoded, w, xd, y, rows, cols))
						e.expect(what, e.guarded(what, y, rows, 3), ref)
					}
				}
			}
			e.k.mvt.gridCap = 0
		}
	}
}

// TestEmulateMatVecPadded launches matvec directly on rows further apart
// than their blocks: the emulation must step by rowBytes.
func TestEmulateMatVecPadded(t *testing.T) {
	e := emulatedEnv(t, 32)
	for _, typ := range []gguf.Type{gguf.TypeF16, gguf.TypeQ4_0, gguf.TypeQ6_K} {
		rows, cols, pad := 5, 256, 48
		data, deq := e.randWeights(typ, rows, cols)
		rs := len(data) / rows
		padded := make([]byte, rows*(rs+pad))
		for r := range rows {
			copy(padded[r*(rs+pad):], data[r*rs:(r+1)*rs])
		}
		x := e.randVec(cols)
		y := e.poisoned(rows)
		g, err := geom("test", typ, cols) // the kernel of the layout randWeights wrote
		e.check(err)
		name := "matvec_" + g.suffix + "_r2"
		e.check(e.s.Launch(e.k.fn(name), hip.Dim1(blocks(rows, 2)), hip.Dim1(128), 0,
			hip.Ptr(e.upload(padded)), hip.Ptr(e.uploadF32(x)), hip.Ptr(y), hip.Int32(int32(rows)), hip.Int32(int32(cols)),
			hip.Int64(int64(rs+pad))))
		e.expect("matvec/padded/"+typ.String(), e.download(y, rows), mvRef(deq, x, rows, cols))
	}
}

// mvActs dequantises n·cols int8 activations as QuantizeActQ8 lays them
// out (values, then a scale per 32).
func mvActs(b []byte, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		d := math.Float32frombits(binary.LittleEndian.Uint32(b[n+4*(i/32):]))
		out[i] = float32(int8(b[i])) * d
	}
	return out
}

// checkQuantized checks xq (ActQ8Bytes(len(x))) against the rule of
// quantize_act_q8: per 32, d = amax/127 exactly and every q the nearest
// integer to x/d.
func (e *env) checkQuantized(what string, x []float32, xq []byte) {
	e.t.Helper()
	n := len(x)
	for b := range n / 32 {
		var amax float32
		for _, v := range x[32*b : 32*b+32] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := math.Float32frombits(binary.LittleEndian.Uint32(xq[n+4*b:]))
		if d != amax/127 {
			e.t.Errorf("%s: block %d: scale %v, want %v", what, b, d, amax/127)
			return
		}
		for i := 32 * b; i < 32*b+32; i++ {
			q := float64(int8(xq[i]))
			if r := float64(x[i]) / float64(d); math.Abs(r-q) > 0.5+1e-5 || math.Abs(q) > 127 {
				e.t.Errorf("%s: [%d] = %v quantised to %v × %v", what, i, x[i], q, d)
				return
			}
		}
	}
}

// TestEmulateQuantizeActQ8Rule checks quantize_act_q8's exact rounding on
// chosen blocks: halves away from zero, NaN to 0, an all-zero block.
func TestEmulateQuantizeActQ8Rule(t *testing.T) {
	e := emulatedEnv(t, 33)
	nan := float32(math.NaN())
	tests := []struct {
		name  string
		x     []float32 // the rest of the block is 0
		wantQ []int8
		wantD float32
	}{
		{"halves", []float32{127, 2.5, -2.5, 0.5, -0.49, 126.5}, []int8{127, 3, -3, 1, 0, 127}, 1},
		{"negative max", []float32{-63.5, 1}, []int8{-127, 2}, 0.5},
		{"zeros", nil, nil, 0},
		{"NaN ignored by amax", []float32{nan, 31.75, -6.375}, []int8{0, 127, -26}, 0.25},
		{"all NaN", slices.Repeat([]float32{nan}, 32), nil, nan},
	}
	for _, tc := range tests {
		x := make([]float32, 64) // a second block of zeros
		copy(x, tc.x)
		xq := e.alloc(ActQ8Bytes(len(x)))
		e.check(e.k.QuantizeActQ8(e.s, e.uploadF32(x), xq, len(x)))
		b := e.downloadBytes(xq, int(ActQ8Bytes(len(x))))
		wantQ := make([]int8, 64)
		copy(wantQ, tc.wantQ)
		for i, w := range wantQ {
			if got := int8(b[i]); got != w {
				t.Errorf("%s: q[%d] = %d, want %d", tc.name, i, got, w)
			}
		}
		d0 := math.Float32frombits(binary.LittleEndian.Uint32(b[64:]))
		d1 := math.Float32frombits(binary.LittleEndian.Uint32(b[68:]))
		bothNaN := math.IsNaN(float64(d0)) && math.IsNaN(float64(tc.wantD))
		if d0 != tc.wantD && !bothNaN || d1 != 0 {
			t.Errorf("%s: scales %v, %v; want %v, 0", tc.name, d0, d1, tc.wantD)
		}
	}
}

// TestEmulateMatVecQ8 checks matvec8 and matvec8s against the float64
// product of the weights with the dequantised int8 activations (float32
// rounding only) and with the float32 activations (TOLERANCES.md's
// matvecQ8, per row relative to Σ|w·x|).
func TestEmulateMatVecQ8(t *testing.T) {
	e := emulatedEnv(t, 34)
	for _, typ := range Types() {
		if !HasMatVecQ8(typ) {
			continue
		}
		for _, sh := range [][2]int{{1, 256}, {7, 512}, {13, 768}} {
			rows, cols := sh[0], sh[1]
			data, deq := e.randWeights(typ, rows, cols)
			x := e.randVec(cols)
			w := e.upload(data)
			xq := e.alloc(ActQ8Bytes(cols))
			e.check(e.k.QuantizeActQ8(e.s, e.uploadF32(x), xq, cols))
			xqb := e.downloadBytes(xq, int(ActQ8Bytes(cols)))
			e.checkQuantized(fmt.Sprintf("quantize/%d", cols), x, xqb)
			refQ := mvRef(deq, mvActs(xqb, cols), rows, cols)
			ref, scale := make([]float64, rows), make([]float64, rows)
			for r := range ref {
				for c, v := range deq[r*cols : (r+1)*cols] {
					ref[r] += float64(v) * float64(x[c])
					scale[r] += math.Abs(float64(v) * float64(x[c]))
				}
			}
			for _, rpb := range []int{1, 2, 4} {
				for _, staged := range []bool{false, true} {
					for _, split := range []int{0, 1, 4} {
						if !staged && split != 0 {
							continue
						}
						e.k.mvt.staged, e.k.mvt.split, e.k.mvt.gridCap = staged, split, split // cap 1 or 4 blocks: they stride
						what := fmt.Sprintf("matvecQ8/%s/%dx%d/r%d/staged=%v/split%d", typ, rows, cols, rpb, staged, split)
						y := e.poisoned(rows + 3)
						e.check(e.k.MatVecQ8R(e.s, typ, rpb, w, xq, y, rows, cols))
						got := e.guarded(what, y, rows, 3)
						if err := relErr(got, refQ); !(err <= 1e-6) {
							t.Errorf("%s: relative error %.3g against the int8 product", what, err)
						}
						for r := range got {
							if d := math.Abs(float64(got[r])-ref[r]) / scale[r]; !(d <= tolerances["matvecQ8"]) {
								t.Errorf("%s: row %d: error %.3g of Σ|w·x|", what, r, d)
								break
							}
						}
					}
				}
			}
			e.k.mvt = mvTune{}
		}
	}
}

// TestEmulateMatVecQ8Add checks the residual of matvec8 and matvec8s:
// the emulation's y = W·x + res bit for bit as its MatVecQ8 then Add.
func TestEmulateMatVecQ8Add(t *testing.T) {
	emulatedEnv(t, 42).checkMatVecQ8Add(t)
}

// TestEmulateMatVecRows checks mvrows against MatVecQ8 on each activation
// row quantised alone (the same int8 values and scales, so float32
// rounding only), and the NaN guard after y.
func TestEmulateMatVecRows(t *testing.T) {
	e := emulatedEnv(t, 35)
	for _, typ := range Types() {
		if !HasMatVecQ8(typ) {
			continue
		}
		rows, cols := 7, 512
		data, deq := e.randWeights(typ, rows, cols)
		w := e.upload(data)
		for _, n := range []int{2, 3, 5, 8} {
			x := e.randVec(n * cols)
			xq := e.alloc(ActQ8Bytes(n * cols))
			e.check(e.k.QuantizeActQ8(e.s, e.uploadF32(x), xq, n*cols))
			var ref []float32
			for j := range n {
				xj := e.alloc(ActQ8Bytes(cols))
				e.check(e.k.QuantizeActQ8(e.s, e.uploadF32(x[j*cols:(j+1)*cols]), xj, cols))
				yj := e.poisoned(rows)
				e.check(e.k.MatVecQ8(e.s, typ, w, xj, yj, rows, cols))
				single := e.download(yj, rows)
				acts := mvActs(e.downloadBytes(xj, int(ActQ8Bytes(cols))), cols)
				if err := relErr(single, mvRef(deq, acts, rows, cols)); !(err <= 1e-6) {
					t.Errorf("matvecQ8/%s row %d: relative error %.3g against the int8 product", typ, j, err)
				}
				ref = append(ref, single...)
			}
			for _, rpb := range []int{1, 2, 4} {
				what := fmt.Sprintf("mvrows/%s/%dx%d/n%d/r%d", typ, rows, cols, n, rpb)
				y := e.poisoned(n*rows + 5)
				e.check(e.k.matVecQ8Rows(e.s, typ, rpb, w, xq, y, rows, cols, n))
				if err := relErr(e.guarded(what, y, n*rows, 5), ref); !(err <= rowsTolerance) {
					t.Errorf("%s: relative error %.3g against MatVecQ8 per row > %.0e", what, err, rowsTolerance)
				}
			}
		}
	}
}

// TestEmulateSmallGrids launches the kernels that take their rows (or
// blocks) from the grid with too small a grid: the rows past it must stay
// unwritten, as on a GPU.
func TestEmulateSmallGrids(t *testing.T) {
	e := emulatedEnv(t, 36)
	rows, cols, n := 7, 64, 2
	data, _ := e.randWeights(gguf.TypeQ8_0, rows, cols)
	w := e.upload(data)
	x := e.randVec(n * cols)
	xq := e.alloc(ActQ8Bytes(n * cols))
	e.check(e.k.QuantizeActQ8(e.s, e.uploadF32(x), xq, n*cols))
	rb := int64(len(data) / rows)
	args := func(name string, y hip.DevicePtr) []hip.Arg {
		a := []hip.Arg{hip.Ptr(w), hip.Ptr(xq), hip.Ptr(y), hip.Int32(int32(rows)), hip.Int32(int32(cols)), hip.Int64(rb)}
		if strings.HasPrefix(name, "matvec8_") {
			a = append(a, hip.Ptr(0)) // no residual
		}
		return a
	}
	tests := []struct {
		name    string
		grid    uint32
		outs    int // float32 outputs
		written func(i int) bool
	}{
		{"matvec8_q8_0_r2", 2, rows, func(i int) bool { return i < 4 }},
		{"matvec8_q8_0_r4", 1, rows, func(i int) bool { return i < 4 }},
		{"mvrows_q8_0_r4_n2", 1, n * rows, func(i int) bool { return i%rows < 4 }},
		{"mvrows_q8_0_r1_n2", 3, n * rows, func(i int) bool { return i%rows < 3 }},
	}
	for _, tc := range tests {
		y := e.poisoned(tc.outs)
		e.check(e.s.Launch(e.k.fn(tc.name), hip.Dim1(tc.grid), hip.Dim1(128), 0, args(tc.name, y)...))
		for i, v := range e.download(y, tc.outs) {
			if nan := math.IsNaN(float64(v)); nan == tc.written(i) {
				t.Errorf("%s on %d blocks: output %d = %v", tc.name, tc.grid, i, v)
			}
		}
	}

	// quantize_act_q8 on one block of 32 threads: the first 32 values only.
	xp := e.alloc(ActQ8Bytes(96))
	e.check(e.s.MemsetD8Async(xp, 0x55, ActQ8Bytes(96)))
	e.check(e.s.Launch(e.k.fn("quantize_act_q8"), hip.Dim1(1), hip.Dim1(32), 0,
		hip.Ptr(xp), hip.Ptr(e.uploadF32(x[:96])), hip.Int32(96)))
	b := e.downloadBytes(xp, int(ActQ8Bytes(96)))
	e.checkQuantized("quantize/one block", x[:32], append(slices.Clone(b[:32]), b[96:100]...))
	for i, v := range b {
		if (i >= 32 && i < 96 || i >= 100) && v != 0x55 {
			t.Errorf("quantize_act_q8 on 32 threads: byte %d of %d written", i, len(b))
			break
		}
	}
}

func TestEmulateDequantize(t *testing.T) {
	e := emulatedEnv(t, 37)
	for _, typ := range Types() {
		for _, sh := range mvShapes(typ)[1:] {
			rows, cols := sh[0], sh[1]
			what := fmt.Sprintf("dequant/%s/%dx%d", typ, rows, cols)
			data, deq := e.randWeights(typ, rows, cols)
			w := e.upload(data)
			out := e.poisoned(rows*cols + 4)
			e.check(e.k.Dequantize(e.s, typ, w, out, rows, cols, false))
			if got := e.guarded(what, out, rows*cols, 4); !sameBits(got, deq) {
				t.Errorf("%s: not gguf.Dequantize's values (relative error %.3g)", what, relErr(got, deq))
			}

			h := e.poisoned((rows*cols+1)/2 + 4)
			e.check(e.k.Dequantize(e.s, typ, w, h, rows, cols, true))
			b := e.downloadBytes(h, 2*rows*cols+16)
			for i, v := range deq {
				if got, want := binary.LittleEndian.Uint16(b[2*i:]), gguf.FP32ToFP16(v); got != want {
					t.Errorf("%s f16 [%d]: got %#04x, want %#04x", what, i, got, want)
					break
				}
			}
			nan := []byte{0x00, 0x00, 0xc0, 0x7f} // 0x7fc00000, little-endian
			for i := 2 * rows * cols; i < len(b); i++ {
				if b[i] != nan[i%4] {
					t.Errorf("%s f16: byte %d past the output overwritten", what, i)
					break
				}
			}
		}
	}
}

func TestEmulatedEmbeddingArgmax(t *testing.T) { checkEmbeddingArgmax(t, emulatedEnv(t, 12)) }

func TestEmulateEmbedding(t *testing.T) {
	e := emulatedEnv(t, 38)
	for _, typ := range Types() {
		for _, cols := range []int{max(typ.BlockSize(), 8) * 3, 7} {
			if cols%typ.BlockSize() != 0 {
				continue
			}
			rows := 50
			data, _ := e.randWeights(typ, rows, cols)
			toks := []int32{3, 0, 49, -1, 50, 17, 3}
			tb := make([]byte, 4*len(toks))
			for i, v := range toks {
				binary.LittleEndian.PutUint32(tb[4*i:], uint32(v))
			}
			what := fmt.Sprintf("embedding/%s/%d", typ, cols)
			out := e.poisoned(len(toks)*cols + 4)
			e.check(e.k.Embedding(e.s, typ, e.upload(data), e.upload(tb), out, len(toks), rows, cols))
			got := e.guarded(what, out, len(toks)*cols, 4)
			for i, tok := range toks {
				row := got[i*cols : (i+1)*cols]
				want := make([]float32, cols)
				if err := kernels.Embedding(want, kernels.Mat{Type: typ, Rows: rows, Cols: cols, Data: data}, int(tok)); err != nil {
					for c := range want {
						want[c] = math.Float32frombits(0x7fc00000) // out of range: a row of NaN
					}
				}
				if !sameBits(row, want) {
					t.Errorf("%s: token %d: got %v, want %v", what, tok, row[:min(4, cols)], want[:min(4, cols)])
				}
			}
		}
	}
}

// nearest16 reports whether h is x rounded to nearest even in the 16-bit
// format whose values decode gives: no finite neighbour of h is nearer,
// and on a tie h's last bit is 0. x must be finite and below the format's
// overflow threshold.
func nearest16(x float32, h uint16, decode func(uint16) float32) bool {
	sign := uint16(0)
	if math.Signbit(float64(x)) {
		sign = 0x8000
	}
	m := h &^ 0x8000
	if h&0x8000 != sign && m != 0 {
		return false
	}
	ax := math.Abs(float64(x))
	dist := func(m uint16) float64 { return math.Abs(ax - float64(decode(m))) }
	d := dist(m)
	for _, nb := range []uint16{m - 1, m + 1} {
		if m == 0 && nb == 0xffff || math.IsInf(float64(decode(nb)), 0) || math.IsNaN(float64(decode(nb))) {
			continue
		}
		if dn := dist(nb); dn < d || dn == d && m&1 == 1 {
			return false
		}
	}
	return !math.IsInf(float64(decode(m)), 0)
}

func TestEmulateConvert(t *testing.T) {
	e := emulatedEnv(t, 39)
	f := func(bits uint32) float32 { return math.Float32frombits(bits) }
	type special struct {
		x    float32
		want uint16 // 0xffff: any NaN
	}
	tests := []struct {
		name     string
		decode   func(uint16) float32
		limit    float64 // random values stay below it in magnitude
		specials []special
	}{
		{"f32_to_f16", gguf.FP16ToFP32, 65504, []special{
			{1 + 1.0/2048, 0x3c00}, {1 + 3.0/2048, 0x3c02}, {65519, 0x7bff}, {65520, 0x7c00}, {-65520, 0xfc00},
			{f(0x33000000), 0x0000} /* 2^-25: tie, to 0 */, {f(0x33400000), 0x0001}, {f(0x33800000), 0x0001},
			{f(0x387fe000), 0x0400} /* 2^-14 - 2^-25: tie */, {f(0x80000000), 0x8000},
			{float32(math.Inf(1)), 0x7c00}, {float32(math.NaN()), 0xffff},
		}},
		{"f32_to_bf16", gguf.BF16ToFP32, 1e38, []special{
			{1 + 1.0/256, 0x3f80}, {1 + 3.0/256, 0x3f82}, {f(0x7f7fffff), 0x7f80}, {f(0x80000000), 0x8000},
			{float32(math.Inf(-1)), 0xff80}, {f(0x7f800001), 0xffff}, {f(0x00000001), 0x0000},
		}},
	}
	for _, tc := range tests {
		var x []float32
		for _, s := range tc.specials {
			x = append(x, s.x)
		}
		for len(x) < 1000 {
			v := float32(math.Ldexp(1+e.rng.Float64(), e.rng.IntN(44)-28))
			if float64(v) < tc.limit {
				if e.rng.IntN(2) == 0 {
					v = -v
				}
				x = append(x, v)
			}
		}
		xp := e.uploadF32(x)
		for _, grid := range []uint32{0, 1} { // 0: the wrapper's grid; 1: one block striding
			out := e.poisoned(len(x)/2 + 2)
			if grid == 0 {
				e.check(e.k.convert(e.s, tc.name, out, xp, int64(len(x))))
			} else {
				e.check(e.s.Launch(e.k.fn(tc.name), hip.Dim1(grid), hip.Dim1(256), 0, hip.Ptr(out), hip.Ptr(xp), hip.Int64(int64(len(x)))))
			}
			b := e.downloadBytes(out, 2*len(x)+8)
			for i, v := range x {
				got := binary.LittleEndian.Uint16(b[2*i:])
				var ok bool
				switch {
				case i >= len(tc.specials):
					ok = nearest16(v, got, tc.decode)
				case tc.specials[i].want == 0xffff:
					ok = math.IsNaN(float64(tc.decode(got)))
				default:
					ok = got == tc.specials[i].want
				}
				if !ok {
					t.Errorf("%s/grid %d: %v (%#08x) gave %#04x", tc.name, grid, v, math.Float32bits(v), got)
				}
			}
			if binary.LittleEndian.Uint64(b[2*len(x):]) != 0x7fc000007fc00000 {
				t.Errorf("%s/grid %d: guard overwritten", tc.name, grid)
			}
		}
	}
}

// TestEmulateConcurrent runs the same products on two streams at once
// (with -race, a check that the emulations share no state).
func TestEmulateConcurrent(t *testing.T) {
	e := emulatedEnv(t, 40)
	rows, cols := 33, 512
	data, _ := e.randWeights(gguf.TypeQ4_K, rows, cols)
	w, x := e.upload(data), e.uploadF32(e.randVec(cols))
	run := func(s hip.Stream) ([]float32, error) {
		xq, err := e.dev.Malloc(ActQ8Bytes(cols))
		if err != nil {
			return nil, err
		}
		defer e.dev.Free(xq)
		y, err := e.dev.Malloc(int64(4 * rows))
		if err != nil {
			return nil, err
		}
		defer e.dev.Free(y)
		for range 20 {
			if err := e.k.QuantizeActQ8(s, x, xq, cols); err != nil {
				return nil, err
			}
			if err := e.k.MatVecQ8(s, gguf.TypeQ4_K, w, xq, y, rows, cols); err != nil {
				return nil, err
			}
		}
		b := make([]byte, 4*rows)
		if err := s.MemcpyDtoHAsync(b, y); err != nil {
			return nil, err
		}
		if err := s.Synchronize(context.Background()); err != nil {
			return nil, err
		}
		out := make([]float32, rows)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return out, nil
	}
	var wg sync.WaitGroup
	res := make([][]float32, 2)
	errs := make([]error, 2)
	for i := range res {
		s, err := e.dev.StreamCreate()
		e.check(err)
		defer s.Destroy()
		wg.Go(func() { res[i], errs[i] = run(s) })
	}
	wg.Wait()
	e.check(errors.Join(errs...))
	if !sameBits(res[0], res[1]) {
		t.Errorf("two streams gave different products: %v, %v", res[0][:4], res[1][:4])
	}
}

// TestEmulateBadLaunches checks that launches the emulations cannot carry
// out fail as a GPU fault would: the stream's sticky ErrLaunchFailure.
func TestEmulateBadLaunches(t *testing.T) {
	e := emulatedEnv(t, 41)
	data, _ := e.randWeights(gguf.TypeQ4_0, 4, 64)
	w := e.upload(data)
	buf := e.poisoned(1024)
	tests := []struct {
		name string
		grid uint32
		args []hip.Arg
	}{
		{"matvec_q4_0_r2", 2, []hip.Arg{hip.Ptr(w), hip.Ptr(buf), hip.Ptr(buf.Add(2048)), hip.Int32(4), hip.Int32(48), hip.Int64(18 * 2)}},
		{"matvec_q4_0_r2", 2, []hip.Arg{hip.Ptr(w), hip.Ptr(buf), hip.Ptr(buf.Add(2048)), hip.Int32(400), hip.Int32(64), hip.Int64(36)}},
		{"matvec8s_q4_0_r2", 1, []hip.Arg{hip.Ptr(w), hip.Ptr(buf), hip.Ptr(buf.Add(2048)), hip.Int32(4), hip.Int32(64), hip.Int64(36), hip.Int32(0), hip.Ptr(0)}},
		{"dequant_q4_0_f32", 1, []hip.Arg{hip.Ptr(w), hip.Ptr(buf), hip.Int32(4), hip.Int32(64), hip.Int64(36)}},
		{"quantize_act_q8", 1, []hip.Arg{hip.Ptr(buf), hip.Ptr(buf.Add(2048)), hip.Int32(40)}},
	}
	for i, tc := range tests {
		s, err := e.dev.StreamCreate()
		e.check(err)
		block := uint32(128)
		if strings.HasPrefix(tc.name, "dequant") {
			block = 4 // 4 threads for 8 units, and not dequantBlock
		}
		e.check(s.Launch(e.k.fn(tc.name), hip.Dim1(tc.grid), hip.Dim1(block), 0, tc.args...))
		if err := s.Synchronize(context.Background()); !errors.Is(err, hip.ErrLaunchFailure) {
			t.Errorf("case %d, %s: %v, want a launch failure", i, tc.name, err)
		} else {
			t.Logf("case %d: %v", i, err)
		}
		_ = s.Destroy()
	}
}
