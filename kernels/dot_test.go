package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
)

// dotTypes are all row types DotRows supports.
var dotTypes = []gguf.Type{
	gguf.TypeF32, gguf.TypeF16, gguf.TypeBF16,
	gguf.TypeQ4_0, gguf.TypeQ4_1, gguf.TypeQ5_0, gguf.TypeQ5_1, gguf.TypeQ8_0,
	gguf.TypeQ2_K, gguf.TypeQ3_K, gguf.TypeQ4_K, gguf.TypeQ5_K, gguf.TypeQ6_K, gguf.TypeQ8_K,
}

// testLengths are row lengths for t: one to several blocks, and for the
// float types lengths that leave a tail after whole groups of 32.
func testLengths(t gguf.Type) []int {
	bs := t.BlockSize()
	if bs == 1 {
		return []int{1, 7, 31, 32, 33, 64, 100, 255, 256, 1000}
	}
	if bs == gguf.QK_K {
		return []int{bs, 2 * bs, 3 * bs, 5 * bs}
	}
	return []int{bs, 2 * bs, 3 * bs, 7 * bs, 16 * bs, 33 * bs}
}

// randomActivations returns n never-zero values, mostly of magnitude about
// 1, with an outlier about 20x larger every 64 elements on average.
func randomActivations(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		f := rng.NormFloat64()
		for math.Abs(f) < 1e-3 {
			f = rng.NormFloat64()
		}
		if rng.IntN(64) == 0 {
			f *= 20
		}
		x[i] = float32(f)
	}
	return x
}

// randomFP16 returns the fp16 bits of a random value of either sign with
// magnitude in [lo, hi).
func randomFP16(rng *rand.Rand, lo, hi float64) uint16 {
	f := lo + rng.Float64()*(hi-lo)
	if rng.IntN(2) == 0 {
		f = -f
	}
	return gguf.FP32ToFP16(float32(f))
}

// randomRows returns rows of n elements of type t made of random bytes (so
// every bit pattern of the quantised fields appears, -128 in Q8_0 rows
// included), with the scale fields set to finite random values, and for
// float types random values with outliers.
func randomRows(rng *rand.Rand, t gguf.Type, rows, n int) []byte {
	size, err := t.RowSize(n)
	if err != nil {
		panic(err)
	}
	w := make([]byte, rows*size)
	for i := range w {
		w[i] = byte(rng.Uint32())
	}
	put16 := func(off int, lo, hi float64) {
		binary.LittleEndian.PutUint16(w[off:], randomFP16(rng, lo, hi))
	}
	nb := rows * n / t.BlockSize()
	bsz := t.TypeSize()
	switch t {
	case gguf.TypeF32:
		for i, f := range randomActivations(rng, rows*n) {
			binary.LittleEndian.PutUint32(w[4*i:], math.Float32bits(f))
		}
	case gguf.TypeF16:
		for i, f := range randomActivations(rng, rows*n) {
			binary.LittleEndian.PutUint16(w[2*i:], gguf.FP32ToFP16(f))
		}
	case gguf.TypeBF16:
		for i, f := range randomActivations(rng, rows*n) {
			binary.LittleEndian.PutUint16(w[2*i:], gguf.FP32ToBF16(f))
		}
	case gguf.TypeQ4_0, gguf.TypeQ5_0, gguf.TypeQ8_0:
		for b := range nb {
			put16(b*bsz, 0.001, 0.1)
		}
	case gguf.TypeQ4_1, gguf.TypeQ5_1:
		for b := range nb {
			put16(b*bsz, 0.001, 0.1)
			put16(b*bsz+2, 0.01, 1)
		}
	case gguf.TypeQ2_K:
		for b := range nb {
			put16(b*bsz+80, 0.001, 0.1)
			put16(b*bsz+82, 0.001, 0.1)
		}
	case gguf.TypeQ3_K:
		for b := range nb {
			put16(b*bsz+108, 0.0001, 0.01)
		}
	case gguf.TypeQ4_K, gguf.TypeQ5_K:
		for b := range nb {
			put16(b*bsz, 0.0001, 0.01)
			put16(b*bsz+2, 0.0001, 0.01)
		}
	case gguf.TypeQ6_K:
		for b := range nb {
			put16(b*bsz+208, 0.0001, 0.01)
		}
	case gguf.TypeQ8_K:
		for b := range nb {
			d := float32(0.001 + rng.Float64()*0.1)
			binary.LittleEndian.PutUint32(w[b*bsz:], math.Float32bits(d))
		}
	default:
		panic("randomRows: no generator for " + t.String())
	}
	return w
}

// quantizedRows returns rows of n elements of type t made by gguf.Quantize
// from random values: the weights a real model would have.
func quantizedRows(tb testing.TB, rng *rand.Rand, t gguf.Type, rows, n int) []byte {
	tb.Helper()
	src := randomActivations(rng, rows*n)
	w, err := gguf.Quantize(t, nil, src)
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

func dequantize(tb testing.TB, t gguf.Type, src []byte, n int) []float32 {
	tb.Helper()
	dst := make([]float32, n)
	if err := gguf.Dequantize(t, src, dst); err != nil {
		tb.Fatal(err)
	}
	return dst
}

// actError bounds |x̂_i - x_i| for the vec dot type's quantisation of x: half
// a quantisation step (d/2 = amax/254, amax of the element's block) plus,
// for Q8_0, the fp16 rounding of d (2^-11 relative, which moves q*d by up to
// 2^-11 |x_i| plus a sliver of d).
func actError(vt gguf.Type, x []float32) []float64 {
	e := make([]float64, len(x))
	if vt == gguf.TypeF32 {
		return e
	}
	bs := vt.BlockSize()
	for b := 0; b < len(x); b += bs {
		var amax float64
		for _, f := range x[b : b+bs] {
			amax = max(amax, math.Abs(float64(f)))
		}
		for i := b; i < b+bs; i++ {
			e[i] = amax / 254 * 1.001
			if vt == gguf.TypeQ8_0 {
				e[i] = amax/254*1.002 + math.Abs(float64(x[i]))*0x1p-11
			}
		}
	}
	return e
}

// floatTol is the float32 summation error allowed, relative to Σ|w_i||x_i|:
// the summation order adds at most about (n/32 + 40) roundings of 2^-24 for
// the lengths tested here, and quantised rows one rounding per block.
const floatTol = 1e-5

// TestDotRowsMatchesDequantized checks every row type against the
// definition: the dot of the dequantised row (gguf.Dequantize) with the
// activations, in float64. Two comparisons per row:
//   - with x̂, the activations as the prepared vector holds them
//     (dequantised too): only float32 rounding may differ, within
//     floatTol·Σ|w||x̂|; this checks the decoding of every block field;
//   - with x itself: the activation quantisation adds up to Σ|w_i|·err_i
//     (actError), which is how far llama.cpp's CPU results are from exact.
func TestDotRowsMatchesDequantized(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, typ := range dotTypes {
		for _, n := range testLengths(typ) {
			for _, src := range []string{"random", "quantized"} {
				t.Run(fmt.Sprintf("%s/%d/%s", typ, n, src), func(t *testing.T) {
					const rows = 5
					var w []byte
					if src == "random" {
						w = randomRows(rng, typ, rows, n)
					} else {
						w = quantizedRows(t, rng, typ, rows, n)
					}
					size, _ := typ.RowSize(n)
					x := randomActivations(rng, n)
					var v Vec
					PrepareVec(typ, x, &v)
					vt := VecDotType(typ)
					xhat := x
					if vt != gguf.TypeF32 {
						xhat = dequantize(t, vt, v.Q, n)
					}
					aerr := actError(vt, x)
					out := make([]float32, rows)
					DotRows(out, typ, w, size, &v, 0, rows)
					for r := range rows {
						wf := dequantize(t, typ, w[r*size:(r+1)*size], n)
						var exact, exactHat, mag, magHat, qerr float64
						for i := range n {
							exact += float64(wf[i]) * float64(x[i])
							exactHat += float64(wf[i]) * float64(xhat[i])
							mag += math.Abs(float64(wf[i]) * float64(x[i]))
							magHat += math.Abs(float64(wf[i]) * float64(xhat[i]))
							qerr += math.Abs(float64(wf[i])) * aerr[i]
						}
						got := float64(out[r])
						if d := math.Abs(got - exactHat); d > floatTol*magHat {
							t.Errorf("row %d: got %g, dequantised row · x̂ = %g: off by %.3g, allowed %.3g", r, got, exactHat, d, floatTol*magHat)
						}
						if d := math.Abs(got - exact); d > qerr+floatTol*mag {
							t.Errorf("row %d: got %g, dequantised row · x = %g: off by %.3g, allowed %.3g", r, got, exact, d, qerr+floatTol*mag)
						}
					}
				})
			}
		}
	}
}

// TestPrepareVec checks the activation quantisation against ggml's rules:
// Q8_0 d = fp16(amax/127), q = round(x/d) (halves away from zero); Q8_K d =
// max/-127 with max the signed element of largest magnitude, q = round to
// even of x·(-127/max), bsums the sums of 16 q.
func TestPrepareVec(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	x := randomActivations(rng, 1024)
	x[5] = 0 // zeros quantise to 0
	zero := make([]float32, 256)

	t.Run("Q8_0", func(t *testing.T) {
		var v Vec
		PrepareVec(gguf.TypeQ4_0, x, &v)
		if v.N != len(x) || len(v.Q) != len(x)/32*34 || len(v.F32) != 0 {
			t.Fatalf("N=%d len(Q)=%d len(F32)=%d", v.N, len(v.Q), len(v.F32))
		}
		for b := 0; b < len(x)/32; b++ {
			blk := v.Q[34*b:]
			var amax float64
			for _, f := range x[32*b : 32*b+32] {
				amax = max(amax, math.Abs(float64(f)))
			}
			d := amax / 127
			if got, want := binary.LittleEndian.Uint16(blk), gguf.FP32ToFP16(float32(d)); got != want {
				t.Fatalf("block %d: d = %#04x, want %#04x", b, got, want)
			}
			for j, f := range x[32*b : 32*b+32] {
				// Round to nearest: within half a step of x/d (a sliver more,
				// since ggml multiplies by a rounded 1/d).
				if got := float64(int8(blk[2+j])); math.Abs(got-float64(f)/d) > 0.5+1e-4 {
					t.Fatalf("block %d elem %d: q = %v, x/d = %v", b, j, got, float64(f)/d)
				}
			}
		}
	})
	t.Run("Q8_K", func(t *testing.T) {
		var v Vec
		PrepareVec(gguf.TypeQ6_K, x, &v)
		if v.N != len(x) || len(v.Q) != len(x)/256*292 {
			t.Fatalf("N=%d len(Q)=%d", v.N, len(v.Q))
		}
		for b := 0; b < len(x)/256; b++ {
			blk := v.Q[292*b:]
			xb := x[256*b : 256*b+256]
			var mx float32
			for _, f := range xb {
				if abs32(f) > abs32(mx) {
					mx = f
				}
			}
			d := math.Float32frombits(binary.LittleEndian.Uint32(blk))
			if want := mx / -127; math.Abs(float64(d-want)) > 1e-6*math.Abs(float64(want)) {
				t.Fatalf("block %d: d = %v, want %v", b, d, want)
			}
			for j, f := range xb {
				exact := float64(f) * -127 / float64(mx)
				if got := float64(int8(blk[4+j])); math.Abs(got-exact) > 0.5+1e-4 {
					t.Fatalf("block %d elem %d: q = %v, exact %v", b, j, got, exact)
				}
			}
			for j := range 16 {
				var s int
				for _, q := range blk[4+16*j : 4+16*j+16] {
					s += int(int8(q))
				}
				if got := int(int16(binary.LittleEndian.Uint16(blk[260+2*j:]))); got != s {
					t.Fatalf("block %d: bsums[%d] = %d, want %d", b, j, got, s)
				}
			}
		}
		PrepareVec(gguf.TypeQ4_K, zero, &v)
		for i, c := range v.Q {
			if c != 0 {
				t.Fatalf("all-zero input: byte %d is %#x", i, c)
			}
		}
	})
	t.Run("halves", func(t *testing.T) {
		// 127 in the block makes d = 1 for Q8_0 (q = x, halves away from
		// zero) and iscale = -1 for Q8_K (q = -x, halves to even).
		x := make([]float32, 256)
		for i := range x {
			x[i] = float32(i%64-32) + 0.5 // -31.5 .. 31.5
		}
		x[0] = 127
		var v Vec
		PrepareVec(gguf.TypeQ8_0, x, &v)
		for i := 1; i < 32; i++ {
			want := math.Floor(float64(x[i])) + 1 // away from zero
			if x[i] < 0 {
				want = math.Ceil(float64(x[i])) - 1
			}
			if got := float64(int8(v.Q[2+i])); got != want {
				t.Errorf("Q8_0: x = %v: q = %v, want %v", x[i], got, want)
			}
		}
		PrepareVec(gguf.TypeQ8_K, x, &v)
		for i := 1; i < 256; i++ {
			if got, want := float64(int8(v.Q[4+i])), math.RoundToEven(-float64(x[i])); got != want {
				t.Errorf("Q8_K: x = %v: q = %v, want %v", x[i], got, want)
			}
		}
	})
	t.Run("F32", func(t *testing.T) {
		v := Vec{Q: make([]byte, 10)}
		PrepareVec(gguf.TypeF16, x, &v)
		if v.N != len(x) || len(v.F32) != len(x) || len(v.Q) != 0 || &v.F32[0] == &x[0] {
			t.Fatalf("N=%d len(F32)=%d len(Q)=%d (must be a copy)", v.N, len(v.F32), len(v.Q))
		}
		for i := range x {
			if v.F32[i] != x[i] {
				t.Fatalf("F32[%d] = %v, want %v", i, v.F32[i], x[i])
			}
		}
	})
}

// TestDotRowsFastMatchesRef checks every fast kernel against its reference,
// bit for bit: both add the same float32 values in the same order. The
// rows are random bytes, so every bit pattern of the quantised fields is
// exercised, and the row counts cover the multi-row kernels' remainders.
func TestDotRowsFastMatchesRef(t *testing.T) {
	if len(fastTypes()) == 0 {
		t.Skip("no fast kernels on this CPU or build")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, typ := range fastTypes() {
		ref := refRows(typ)
		fast := dotKernels[typ]
		for _, n := range testLengths(typ) {
			t.Run(fmt.Sprintf("%s/%d", typ, n), func(t *testing.T) {
				for _, rows := range []int{1, 2, 3, 4, 5, 8, 11} {
					size, _ := typ.RowSize(n)
					stride := size + rng.IntN(3)*64 // rows need not be packed
					w := make([]byte, (rows-1)*stride+size)
					packed := randomRows(rng, typ, rows, n)
					for r := range rows {
						copy(w[r*stride:], packed[r*size:(r+1)*size])
					}
					var v Vec
					PrepareVec(typ, randomActivations(rng, n), &v)
					want := make([]float32, rows)
					got := make([]float32, rows)
					ref(want, w, stride, &v)
					fast(got, w, stride, &v)
					for r := range rows {
						if math.Float32bits(got[r]) != math.Float32bits(want[r]) {
							t.Errorf("%d rows: row %d: fast %v (%#08x), reference %v (%#08x)", rows, r, got[r], math.Float32bits(got[r]), want[r], math.Float32bits(want[r]))
						}
					}
				}
			})
		}
	}
}

// TestDotRowsChunking checks that splitting the rows into calls of any
// size does not change any row's bits, for every type.
func TestDotRowsChunking(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const rows = 23
	for _, typ := range dotTypes {
		t.Run(typ.String(), func(t *testing.T) {
			n := 2 * gguf.QK_K
			size, _ := typ.RowSize(n)
			w := randomRows(rng, typ, rows, n)
			var v Vec
			PrepareVec(typ, randomActivations(rng, n), &v)
			whole := make([]float32, rows)
			DotRows(whole, typ, w, size, &v, 0, rows)
			for trial := range 5 {
				got := make([]float32, rows)
				for r0 := 0; r0 < rows; {
					r1 := min(rows, r0+1+rng.IntN(6))
					if trial == 0 {
						r1 = r0 + 1
					}
					DotRows(got[r0:r1], typ, w, size, &v, r0, r1)
					r0 = r1
				}
				for r := range rows {
					if math.Float32bits(got[r]) != math.Float32bits(whole[r]) {
						t.Fatalf("trial %d: row %d: chunked %v, whole %v", trial, r, got[r], whole[r])
					}
				}
			}
		})
	}
}

// TestDotRowsPanics checks that misuse is reported, not silently computed.
func TestDotRowsPanics(t *testing.T) {
	x := make([]float32, 64)
	var v Vec
	PrepareVec(gguf.TypeQ8_0, x, &v)
	size, _ := gguf.TypeQ8_0.RowSize(64)
	w := make([]byte, 4*size)
	out := make([]float32, 4)
	cases := []struct {
		name string
		f    func()
	}{
		{"unsupported type", func() { DotRows(out, gguf.TypeIQ2_XXS, w, size, &v, 0, 1) }},
		{"unknown type", func() { DotRows(out, gguf.Type(1000), w, size, &v, 0, 1) }},
		{"vector for another type", func() { DotRows(out, gguf.TypeQ4_K, w, size, &v, 0, 1) }},
		{"w too short", func() { DotRows(out, gguf.TypeQ8_0, w, size, &v, 0, 5) }},
		{"out too short", func() { DotRows(out[:1], gguf.TypeQ8_0, w, size, &v, 0, 2) }},
		{"stride too small", func() { DotRows(out, gguf.TypeQ8_0, w, size-1, &v, 0, 2) }},
		{"PrepareVec length", func() { PrepareVec(gguf.TypeQ4_K, x, &v) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			c.f()
		})
	}
}

func TestVecDotType(t *testing.T) {
	want := map[gguf.Type]gguf.Type{
		gguf.TypeF32: gguf.TypeF32, gguf.TypeF16: gguf.TypeF32, gguf.TypeBF16: gguf.TypeF32,
		gguf.TypeQ4_0: gguf.TypeQ8_0, gguf.TypeQ4_1: gguf.TypeQ8_0, gguf.TypeQ5_0: gguf.TypeQ8_0,
		gguf.TypeQ5_1: gguf.TypeQ8_0, gguf.TypeQ8_0: gguf.TypeQ8_0,
		gguf.TypeQ2_K: gguf.TypeQ8_K, gguf.TypeQ3_K: gguf.TypeQ8_K, gguf.TypeQ4_K: gguf.TypeQ8_K,
		gguf.TypeQ5_K: gguf.TypeQ8_K, gguf.TypeQ6_K: gguf.TypeQ8_K, gguf.TypeQ8_K: gguf.TypeQ8_K,
	}
	for _, typ := range dotTypes {
		if got := VecDotType(typ); got != want[typ] {
			t.Errorf("VecDotType(%s) = %s, want %s", typ, got, want[typ])
		}
	}
}

// BenchmarkDotRows measures one core's matrix-vector product over a
// 4096x4096 matrix of each type, through the pure-Go reference ("go") and,
// where there is one, the fast kernel ("asm"). Run with -cpu 1. GB/s counts
// weight bytes; GFLOP/s counts a multiply and an add per weight.
func BenchmarkDotRows(b *testing.B) {
	const rows, cols = 4096, 4096
	rng := rand.New(rand.NewPCG(9, 10))
	x := randomActivations(rng, cols)
	for _, typ := range dotTypes {
		size, _ := typ.RowSize(cols)
		var w []byte // made on first use, so that -bench filters skip the cost
		impls := []struct {
			name string
			k    rowsDot
		}{{"go", refRows(typ)}}
		if k := fastKernels[typ]; k != nil {
			impls = append(impls, struct {
				name string
				k    rowsDot
			}{"asm", k})
		}
		for _, impl := range impls {
			b.Run(typ.String()+"/"+impl.name, func(b *testing.B) {
				if w == nil {
					w = randomRows(rng, typ, rows, cols)
				}
				var v Vec
				PrepareVec(typ, x, &v)
				out := make([]float32, rows)
				b.SetBytes(int64(rows * size))
				b.ResetTimer()
				for b.Loop() {
					impl.k(out, w, size, &v)
				}
				sec := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(float64(rows*size)/sec/1e9, "GB/s")
				b.ReportMetric(2*rows*cols/sec/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkPrepareVec measures the conversion of a 4096-element activation
// vector to each vec dot type.
func BenchmarkPrepareVec(b *testing.B) {
	x := randomActivations(rand.New(rand.NewPCG(11, 12)), 4096)
	for _, typ := range []gguf.Type{gguf.TypeF32, gguf.TypeQ8_0, gguf.TypeQ4_K} {
		b.Run(VecDotType(typ).String(), func(b *testing.B) {
			var v Vec
			b.SetBytes(4 * int64(len(x)))
			for b.Loop() {
				PrepareVec(typ, x, &v)
			}
		})
	}
}

// TestPrepareVecFastMatchesRef checks the assembly activation quantisers
// against the references, byte for byte, on random blocks and on the edge
// cases: an all-zero block, ties between +max and -max, values that land
// on a half after scaling, tiny values (subnormal fp16 d) and huge ones.
func TestPrepareVecFastMatchesRef(t *testing.T) {
	if len(fastTypes()) == 0 {
		t.Skip("no fast kernels on this CPU or build")
	}
	rng := rand.New(rand.NewPCG(13, 14))
	const n = 4 * gguf.QK_K
	cases := map[string][]float32{}
	for k := range 5 {
		cases[fmt.Sprintf("random%d", k)] = randomActivations(rng, n)
	}
	x := randomActivations(rng, n)
	clear(x[256:512])
	x[5], x[40], x[600], x[700] = 100, -100, -50, 50 // ties, first is kept
	cases["zeros+ties"] = x
	halves := make([]float32, n)
	for i := range halves {
		// With 127 in every block, d = 1 (Q8_0) and iscale = -1 (Q8_K):
		// every other value is an exact half.
		halves[i] = float32(rng.IntN(254)-127) + 0.5
		if i%32 == 7 {
			halves[i] = 127
		}
	}
	cases["halves"] = halves
	tiny, huge := randomActivations(rng, n), randomActivations(rng, n)
	for i := range tiny {
		tiny[i] *= 1e-9
		huge[i] *= 1e30
	}
	cases["tiny"], cases["huge"] = tiny, huge
	for name, x := range cases {
		for _, vt := range []struct {
			name      string
			ref, fast func([]byte, []float32)
			size      int
		}{
			{"Q8_0", quantizeQ8_0, quantQ8_0, n / 32 * 34},
			{"Q8_K", quantizeQ8_K, quantQ8_K, n / 256 * 292},
		} {
			want, got := make([]byte, vt.size), make([]byte, vt.size)
			for i := range got {
				got[i] = 0xAA // stale bytes must be overwritten
			}
			vt.ref(want, x)
			vt.fast(got, x)
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("%s/%s: byte %d is %#02x, reference %#02x", name, vt.name, i, got[i], want[i])
					break
				}
			}
		}
	}
}
