package kernels

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
)

// ropeRef64 is rotary embedding written from the formulas in float64 (ggml's
// rope_yarn and rope_yarn_corr_dims, without the float32 roundings and the
// iterative theta): theta_i = pos * base^(-2i/dims) / freqFactor_i.
func ropeRef64(r Rope, x []float32, nHeads, headDim, pos int) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	dims := r.Dims
	fs := float64(r.FreqScale)
	if fs == 0 {
		fs = 1
	}
	mscale := float64(r.AttnFactor)
	if mscale == 0 {
		mscale = 1
	}
	base := float64(r.Base)
	var lo, hi float64
	if r.ExtFactor != 0 {
		corr := func(beta float64) float64 {
			return float64(dims) * math.Log(float64(r.OrigCtx)/(beta*2*math.Pi)) / (2 * math.Log(base))
		}
		lo = math.Max(0, math.Floor(corr(float64(r.BetaFast))))
		hi = math.Min(float64(dims-1), math.Ceil(corr(float64(r.BetaSlow))))
		mscale *= 1 + 0.1*math.Log(1/fs)
	}
	for h := 0; h < nHeads; h++ {
		head := out[h*headDim : (h+1)*headDim]
		for i := 0; i < dims/2; i++ {
			extrap := float64(pos) * math.Pow(base, -2*float64(i)/float64(dims))
			if r.FreqFactors != nil {
				extrap /= float64(r.FreqFactors[i])
			}
			theta := fs * extrap
			if r.ExtFactor != 0 {
				y := (float64(i) - lo) / math.Max(0.001, hi-lo)
				mix := (1 - math.Min(1, math.Max(0, y))) * float64(r.ExtFactor)
				theta = theta*(1-mix) + extrap*mix
			}
			c, s := math.Cos(theta)*mscale, math.Sin(theta)*mscale
			a, b := 2*i, 2*i+1
			if r.Mode == RopeNeoX {
				a, b = i, i+dims/2
			}
			x0, x1 := head[a], head[b]
			head[a] = x0*c - x1*s
			head[b] = x0*s + x1*c
		}
	}
	return out
}

func TestRope(t *testing.T) {
	ff := make([]float32, 32)
	for i := range ff {
		ff[i] = 1 + float32(i)*0.25 // llama 3.1 style: low frequencies slowed down
	}
	yarn := Rope{Dims: 64, Base: 10000, FreqScale: 0.25, ExtFactor: 1, AttnFactor: 1, BetaFast: 32, BetaSlow: 1, OrigCtx: 4096}
	cases := []struct {
		name            string
		rope            Rope
		nHeads, headDim int
	}{
		{"normal", Rope{Dims: 64, Base: 10000}, 3, 64},
		{"neox", Rope{Dims: 64, Base: 1000000, Mode: RopeNeoX}, 2, 64},
		{"normal-partial", Rope{Dims: 32, Base: 10000}, 2, 80},
		{"neox-partial", Rope{Dims: 24, Base: 10000, Mode: RopeNeoX}, 2, 64},
		{"linear-scaling", Rope{Dims: 64, Base: 10000, FreqScale: 0.25}, 2, 64},
		{"freq-factors", Rope{Dims: 64, Base: 500000, FreqFactors: ff}, 2, 64},
		{"yarn", yarn, 2, 64},
		{"yarn-neox-attn", Rope{Dims: 128, Base: 1000000, Mode: RopeNeoX, FreqScale: 0.125, ExtFactor: 0.5, AttnFactor: 0.9, BetaFast: 32, BetaSlow: 1, OrigCtx: 32768}, 1, 128},
	}
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range cases {
		if c.rope.ExtFactor != 0 {
			// The float32 and float64 corr dims must floor/ceil alike.
			for _, beta := range []float32{c.rope.BetaFast, c.rope.BetaSlow} {
				d := yarnCorrDim(c.rope.Dims, c.rope.OrigCtx, beta, c.rope.Base)
				if math.Abs(float64(d)-math.Round(float64(d))) < 1e-3 {
					t.Fatalf("%s: corr dim %g too close to an integer for this test", c.name, d)
				}
			}
		}
		for _, pos := range []int{0, 1, 17, 300, 5000} {
			x := opsRandVec(rng, c.nHeads*c.headDim, 0.1, 2)
			want := ropeRef64(c.rope, x, c.nHeads, c.headDim, pos)
			got := append([]float32(nil), x...)
			c.rope.Apply(got, c.nHeads, c.headDim, pos)
			ms := float64(max(c.rope.AttnFactor, 1)) * 1.2
			for i := range got {
				if i%c.headDim >= c.rope.Dims {
					if got[i] != x[i] {
						t.Fatalf("%s pos %d: pass-through [%d] = %g, want %g", c.name, pos, i, got[i], x[i])
					}
					continue
				}
				// ggml's float32 theta (rounded at magnitude pos, then
				// multiplied step by step) is off by up to ~pos*4e-7 rad; the
				// rest is a few float32 roundings. |x| < 2 bounds the pair.
				tol := ms * 4 * (float64(pos)*6e-7 + 3e-7)
				if d := math.Abs(float64(got[i]) - want[i]); d > tol {
					t.Fatalf("%s pos %d: [%d] = %g, want %g (diff %g > %g)", c.name, pos, i, got[i], want[i], d, tol)
				}
			}
		}
	}
}

// TestRopeYarnReduces checks that YaRN with ExtFactor 0 is plain rope with
// linear scaling, bit for bit, and that pos 0 is the identity scaled by AttnFactor.
func TestRopeYarnReduces(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	x := opsRandVec(rng, 4*64, 0.1, 2)
	yarn := Rope{Dims: 64, Base: 10000, FreqScale: 0.5, BetaFast: 32, BetaSlow: 1, OrigCtx: 2048}
	lin := Rope{Dims: 64, Base: 10000, FreqScale: 0.5}
	a := append([]float32(nil), x...)
	b := append([]float32(nil), x...)
	yarn.Apply(a, 4, 64, 123)
	lin.Apply(b, 4, 64, 123)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("[%d]: yarn ext 0 = %g, linear = %g", i, a[i], b[i])
		}
	}
	c := append([]float32(nil), x...)
	(&Rope{Dims: 64, Base: 10000}).Apply(c, 4, 64, 0)
	for i := range c {
		if c[i] != x[i] {
			t.Fatalf("pos 0 changed [%d]: %g -> %g", i, x[i], c[i])
		}
	}
}

func TestRopeConcurrent(t *testing.T) {
	r := Rope{Dims: 64, Base: 10000, Mode: RopeNeoX}
	rng := rand.New(rand.NewPCG(15, 16))
	x := opsRandVec(rng, 8*64, 0.1, 2)
	want := append([]float32(nil), x...)
	r.Apply(want, 8, 64, 77)
	var wg sync.WaitGroup
	errs := make(chan int, 8)
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			y := append([]float32(nil), x...)
			r.Apply(y, 8, 64, 77)
			for i := range y {
				if y[i] != want[i] {
					errs <- i
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for i := range errs {
		t.Errorf("concurrent Apply differs at [%d]", i)
	}
}
