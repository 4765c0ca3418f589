package kernels

import "math"

// RopeMode selects which pairs of a head's values rotary embedding rotates.
type RopeMode int

const (
	// RopeNormal rotates adjacent pairs (x[2i], x[2i+1]), as llama does.
	RopeNormal RopeMode = iota
	// RopeNeoX rotates (x[i], x[i+Dims/2]), as GPT-NeoX and qwen2 do.
	RopeNeoX
)

// Rope holds the parameters of rotary position embedding for one model.
// The zero values of FreqScale and AttnFactor mean 1. Its methods only read
// it, so one Rope may be used from many goroutines.
type Rope struct {
	Dims        int       // rotated dimensions per head (rope.dimension_count), <= headDim; the rest pass through
	Base        float32   // rope.freq_base (0 means 10000)
	Mode        RopeMode  // which pairs rotate
	FreqScale   float32   // 1/rope.scaling.factor for linear scaling, 1 when none
	FreqFactors []float32 // optional rope_freqs.weight (len >= Dims/2): theta_i is divided by FreqFactors[i]

	// YaRN (rope.scaling.type = yarn), as ggml's rope_yarn. With ExtFactor 0
	// it reduces to plain rope with FreqScale.
	ExtFactor  float32 // extrapolation mix (rope.scaling.yarn_ext_factor)
	AttnFactor float32 // magnitude scale of cos and sin (0 means 1)
	BetaFast   float32 // yarn_beta_fast (32 in llama.cpp)
	BetaSlow   float32 // yarn_beta_slow (1 in llama.cpp)
	OrigCtx    int     // rope.scaling.original_context_length
}

// Apply rotates, in place, one position's nHeads heads of headDim values
// each (x holds nHeads*headDim values) for position pos. It follows ggml-cpu's
// float32 formulas: theta_scale = base^(-2/Dims), theta multiplied by it
// step by step, YaRN correction dims and ramp, cos and sin in float32; it
// differs from llama.cpp at most by the last-bit rounding of the math library.
func (r *Rope) Apply(x []float32, nHeads, headDim, pos int) {
	dims := min(r.Dims, headDim)
	half := dims / 2
	if half == 0 {
		return
	}
	// cos/sin for each rotated pair; a stack array for all usual head sizes.
	var buf [2 * 256]float32
	var cs []float32
	if 2*half <= len(buf) {
		cs = buf[:2*half]
	} else {
		cs = make([]float32, 2*half)
	}
	r.cache(cs, dims, pos)

	x = x[:nHeads*headDim]
	for h := 0; h < nHeads; h++ {
		head := x[h*headDim : (h+1)*headDim]
		for i := 0; i < half; i++ {
			c, s := cs[2*i], cs[2*i+1]
			var a, b int
			if r.Mode == RopeNeoX {
				a, b = i, i+half
			} else {
				a, b = 2*i, 2*i+1
			}
			x0, x1 := head[a], head[b]
			head[a] = float32(x0*c) - float32(x1*s)
			head[b] = float32(x0*s) + float32(x1*c)
		}
	}
}

// cache fills cs with (cos, sin) of each rotated pair's angle at pos, scaled
// by the magnitude factor: ggml_rope_cache_init with rope_yarn.
func (r *Rope) cache(cs []float32, dims, pos int) {
	freqScale := r.FreqScale
	if freqScale == 0 {
		freqScale = 1
	}
	mscale := r.AttnFactor
	if mscale == 0 {
		mscale = 1
	}
	base := r.Base
	if base == 0 {
		base = 10000
	}
	var corrLo, corrHi float32
	if r.ExtFactor != 0 {
		corrLo, corrHi = yarnCorrDims(dims, r.OrigCtx, base, r.BetaFast, r.BetaSlow)
		// ggml scales the magnitude once per pair; the factor is the same for all.
		mscale *= 1 + 0.1*logf(1/freqScale)
	}
	thetaScale := powf(base, -2/float32(dims))
	theta := float32(pos)
	for i := 0; i < dims/2; i++ {
		thetaExtrap := theta
		if r.FreqFactors != nil {
			thetaExtrap = theta / r.FreqFactors[i]
		}
		thetaInterp := freqScale * thetaExtrap
		t := thetaInterp
		if r.ExtFactor != 0 {
			rampMix := yarnRamp(corrLo, corrHi, 2*i) * r.ExtFactor
			t = float32(thetaInterp*(1-rampMix)) + float32(thetaExtrap*rampMix)
		}
		cs[2*i] = cosf(t) * mscale
		cs[2*i+1] = sinf(t) * mscale
		theta *= thetaScale
	}
}

// yarnRamp is ggml's rope_yarn_ramp: 1 below the low correction dim, 0
// above the high one, linear between.
func yarnRamp(low, high float32, i0 int) float32 {
	y := (float32(i0/2) - low) / max(0.001, high-low)
	return 1 - min(1, max(0, y))
}

// yarnCorrDim is ggml's rope_yarn_corr_dim: the dimension whose wavelength
// turns nRot times over the original context.
func yarnCorrDim(dims, origCtx int, nRot, base float32) float32 {
	return float32(dims) * logf(float32(origCtx)/(nRot*2*math.Pi)) / (2 * logf(base))
}

// yarnCorrDims is ggml_rope_yarn_corr_dims: the range of dims YaRN blends.
func yarnCorrDims(dims, origCtx int, base, betaFast, betaSlow float32) (lo, hi float32) {
	start := floorf(yarnCorrDim(dims, origCtx, betaFast, base))
	end := ceilf(yarnCorrDim(dims, origCtx, betaSlow, base))
	return max(0, start), min(float32(dims-1), end)
}

func powf(x, y float32) float32 { return float32(math.Pow(float64(x), float64(y))) }
func logf(x float32) float32    { return float32(math.Log(float64(x))) }
func cosf(x float32) float32    { return float32(math.Cos(float64(x))) }
func sinf(x float32) float32    { return float32(math.Sin(float64(x))) }
func floorf(x float32) float32  { return float32(math.Floor(float64(x))) }
func ceilf(x float32) float32   { return float32(math.Ceil(float64(x))) }
