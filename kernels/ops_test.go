package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
)

// opsRandVec returns n values uniform in ±[lo, hi), never zero.
func opsRandVec(rng *rand.Rand, n int, lo, hi float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		m := lo + (hi-lo)*rng.Float32()
		if m == 0 {
			m = hi / 2
		}
		if rng.IntN(2) == 0 {
			m = -m
		}
		v[i] = m
	}
	return v
}

// opsRelErr is |got-want| / max(|want|, floor).
func opsRelErr(got float32, want, floor float64) float64 {
	return math.Abs(float64(got)-want) / math.Max(math.Abs(want), floor)
}

func TestRMSNorm(t *testing.T) {
	cases := []struct {
		name  string
		n     int
		eps   float32
		scale float32
	}{
		{"one", 1, 1e-5, 1},
		{"odd", 7, 1e-6, 3},
		{"head", 64, 1e-5, 0.01},
		{"wide", 4099, 1e-5, 100},
		{"eps-dominates", 16, 1, 1e-3},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := opsRandVec(rng, c.n, 0.01*c.scale, c.scale)
			w := opsRandVec(rng, c.n, 0.5, 2)
			// float64 reference
			var ss float64
			for _, v := range x {
				ss += float64(v) * float64(v)
			}
			inv := 1 / math.Sqrt(ss/float64(c.n)+float64(c.eps))
			out := make([]float32, c.n)
			RMSNorm(out, x, w, c.eps)
			for i := range x {
				want := float64(x[i]) * inv * float64(w[i])
				if e := opsRelErr(out[i], want, 1e-30); e > 1e-6 {
					t.Fatalf("out[%d] = %g, want %g (rel err %g)", i, out[i], want, e)
				}
			}
			// in place gives the same bits
			y := append([]float32(nil), x...)
			RMSNorm(y, y, w, c.eps)
			for i := range y {
				if y[i] != out[i] {
					t.Fatalf("aliased out[%d] = %g, want %g", i, y[i], out[i])
				}
			}
		})
	}
}

func TestRMSNormRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const d, n = 48, 5
	x := opsRandVec(rng, d*n, 0.1, 4)
	w := opsRandVec(rng, d, 0.5, 2)
	out := make([]float32, d*n)
	RMSNormRows(out, x, w, n, 1e-5)
	for r := 0; r < n; r++ {
		one := make([]float32, d)
		RMSNorm(one, x[r*d:(r+1)*d], w, 1e-5)
		for i := range one {
			if out[r*d+i] != one[i] {
				t.Fatalf("row %d[%d] = %g, RMSNorm alone gives %g", r, i, out[r*d+i], one[i])
			}
		}
	}
	RMSNormRows(x, x, w, n, 1e-5)
	for i := range x {
		if x[i] != out[i] {
			t.Fatalf("aliased [%d] = %g, want %g", i, x[i], out[i])
		}
	}
}

func TestElementwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 333
	a := opsRandVec(rng, n, 0.001, 10)
	b := opsRandVec(rng, n, 0.001, 10)
	ops := []struct {
		name string
		fn   func(dst, a, b []float32)
		ref  func(a, b float64) float64
		tol  float64
	}{
		{"Add", Add, func(a, b float64) float64 { return a + b }, 0}, // correctly rounded: exact
		{"Mul", Mul, func(a, b float64) float64 { return a * b }, 0},
		{"SwiGLU", SwiGLU, func(g, u float64) float64 { return g / (1 + math.Exp(-g)) * u }, 3e-7},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			dst := make([]float32, n)
			op.fn(dst, a, b)
			for i := range dst {
				want := op.ref(float64(a[i]), float64(b[i]))
				if op.tol == 0 {
					if dst[i] != float32(want) {
						t.Fatalf("[%d] = %g, want %g", i, dst[i], float32(want))
					}
				} else if e := opsRelErr(dst[i], want, 1e-30); e > op.tol {
					t.Fatalf("[%d] = %g, want %g (rel err %g)", i, dst[i], want, e)
				}
			}
			// dst aliasing the first operand
			c := append([]float32(nil), a...)
			op.fn(c, c, b)
			for i := range c {
				if c[i] != dst[i] {
					t.Fatalf("aliased [%d] = %g, want %g", i, c[i], dst[i])
				}
			}
		})
	}
}

func TestSilu(t *testing.T) {
	for _, x := range []float32{-100, -10, -1, -1e-3, 1e-3, 0.5, 1, 10, 100} {
		want := float64(x) / (1 + math.Exp(-float64(x)))
		if e := opsRelErr(Silu(x), want, 1e-30); e > 3e-7 {
			t.Errorf("Silu(%g) = %g, want %g", x, Silu(x), want)
		}
	}
}

func TestSoftmax(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	ninf := float32(math.Inf(-1))
	cases := []struct {
		name string
		x    []float32
	}{
		{"single", []float32{3}},
		{"pair", []float32{1, 2}},
		{"random", opsRandVec(rng, 100, 0.01, 5)},
		{"large", opsRandVec(rng, 50, 500, 1000)}, // exp would overflow without the max
		{"masked", []float32{0.5, ninf, 2, ninf, -1}},
		{"equal", []float32{7, 7, 7, 7}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := math.Inf(-1)
			for _, v := range c.x {
				m = math.Max(m, float64(v))
			}
			want := make([]float64, len(c.x))
			var sum float64
			for i, v := range c.x {
				want[i] = math.Exp(float64(v) - m)
				sum += want[i]
			}
			x := append([]float32(nil), c.x...)
			Softmax(x)
			var got float64
			for i := range x {
				want[i] /= sum
				if math.Abs(float64(x[i])-want[i]) > 1e-6*want[i]+1e-12 {
					t.Fatalf("[%d] = %g, want %g", i, x[i], want[i])
				}
				if math.IsInf(float64(c.x[i]), -1) && x[i] != 0 {
					t.Fatalf("masked [%d] = %g, want 0", i, x[i])
				}
				got += float64(x[i])
			}
			if math.Abs(got-1) > 1e-5 {
				t.Fatalf("sum = %g", got)
			}
		})
	}
}

func TestEmbedding(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	const rows, cols = 6, 256
	src := opsRandVec(rng, rows*cols, 0.01, 1)
	for _, typ := range opsSupportedTypes() {
		t.Run(typ.String(), func(t *testing.T) {
			data, err := gguf.Quantize(typ, nil, src)
			if err != nil {
				t.Fatal(err)
			}
			w := Mat{Type: typ, Rows: rows, Cols: cols, Data: data}
			all := make([]float32, rows*cols)
			if err := gguf.Dequantize(typ, data, all); err != nil {
				t.Fatal(err)
			}
			out := make([]float32, cols)
			for r := 0; r < rows; r++ {
				if err := Embedding(out, w, r); err != nil {
					t.Fatal(err)
				}
				for i := range out {
					if out[i] != all[r*cols+i] {
						t.Fatalf("row %d [%d] = %g, want %g", r, i, out[i], all[r*cols+i])
					}
				}
			}
			if typ == gguf.TypeF32 {
				for i := range out {
					if out[i] != src[(rows-1)*cols+i] {
						t.Fatalf("F32 row [%d] = %g, want %g", i, out[i], src[(rows-1)*cols+i])
					}
				}
			}
			for _, bad := range []int{-1, rows} {
				if err := Embedding(out, w, bad); err == nil {
					t.Errorf("row %d: no error", bad)
				}
			}
			if err := Embedding(out[:cols-1], w, 0); err == nil {
				t.Error("short output: no error")
			}
		})
	}
}

// opsSupportedTypes lists every type the engine computes with.
func opsSupportedTypes() []gguf.Type {
	var ts []gguf.Type
	for t := gguf.Type(0); t < 64; t++ {
		if t.Known() && t.Supported() {
			ts = append(ts, t)
		}
	}
	return ts
}
