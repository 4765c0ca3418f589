package kernels

import (
	"fmt"
	"math"

	"github.com/forgepipe/forgepipe/gguf"
)

// RMSNorm normalises one vector to unit root-mean-square and scales it by
// weight: out[i] = x[i] / sqrt(mean(x²) + eps) * weight[i]. It follows
// ggml's rms_norm followed by mul: squares summed in float64, the scale
// computed in float32. out may alias x; len(out), len(weight) >= len(x).
func RMSNorm(out, x, weight []float32, eps float32) {
	n := len(x)
	out, weight = out[:n], weight[:n]
	var sum float64
	for _, v := range x {
		sum += float64(v * v)
	}
	mean := float32(sum / float64(n))
	scale := 1 / float32(math.Sqrt(float64(mean+eps)))
	for i, v := range x {
		out[i] = float32(v*scale) * weight[i]
	}
}

// RMSNormRows applies RMSNorm to each of the n rows of x (n x len(weight),
// row-major), writing the rows of out. out may alias x.
func RMSNormRows(out, x, weight []float32, n int, eps float32) {
	d := len(weight)
	for r := 0; r < n; r++ {
		RMSNorm(out[r*d:(r+1)*d], x[r*d:(r+1)*d], weight, eps)
	}
}

// Add sets dst[i] = a[i] + b[i] for i < len(dst). Any of the slices may
// alias one another.
func Add(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	for i := range dst {
		dst[i] = a[i] + b[i]
	}
}

// Mul sets dst[i] = a[i] * b[i] for i < len(dst). Any of the slices may
// alias one another.
func Mul(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	for i := range dst {
		dst[i] = a[i] * b[i]
	}
}

// Silu is x * sigmoid(x), computed as ggml does: x / (1 + e^-x).
func Silu(x float32) float32 {
	return x / (1 + expf(-x))
}

// SwiGLU sets out[i] = silu(gate[i]) * up[i] for i < len(out), the gated
// feed-forward activation of llama-style models. out may alias gate or up.
func SwiGLU(out, gate, up []float32) {
	gate, up = gate[:len(out)], up[:len(out)]
	for i := range out {
		out[i] = Silu(gate[i]) * up[i]
	}
}

// Softmax replaces x by softmax(x) in place: the maximum is subtracted
// before exponentiating, the sum is accumulated in float64 and the result
// is scaled by its float32 reciprocal, as ggml's soft_max does. Entries of
// -Inf (masked) become 0.
func Softmax(x []float32) {
	if len(x) == 0 {
		return
	}
	m := float32(math.Inf(-1))
	for _, v := range x {
		m = max(m, v)
	}
	var sum float64
	for i, v := range x {
		e := expf(v - m)
		x[i] = e
		sum += float64(e)
	}
	inv := float32(1 / sum)
	for i := range x {
		x[i] *= inv
	}
}

// Embedding dequantises row row of w into out[:w.Cols] (the token embedding
// lookup). It fails when row is out of range or out is too short.
func Embedding(out []float32, w Mat, row int) error {
	if row < 0 || row >= w.Rows {
		return fmt.Errorf("embedding: row %d out of range [0, %d)", row, w.Rows)
	}
	if len(out) < w.Cols {
		return fmt.Errorf("embedding: output holds %d values, row has %d", len(out), w.Cols)
	}
	rb := w.RowBytes()
	src := w.Data[row*rb : (row+1)*rb]
	if err := gguf.Dequantize(w.Type, src, out[:w.Cols]); err != nil {
		return fmt.Errorf("embedding row %d: %w", row, err)
	}
	return nil
}

// expf is e^x rounded to float32.
func expf(x float32) float32 { return float32(math.Exp(float64(x))) }
