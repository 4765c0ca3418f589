package gguf

import (
	"fmt"
	"runtime"
	"sync"
)

// This file dispatches between the per-family codecs:
//
//	quant_float.go   F32, F16, BF16
//	quant_legacy.go  Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (32-element blocks)
//	quant_k.go       Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K (256-element super-blocks)
//
// Each dequantiser reproduces ggml's dequantize_row_* bit for bit: the same
// float32 operations in the same order, each rounded to float32 (explicit
// float32 conversions keep the Go compiler from fusing a*b+c into an FMA).

// codec is one type's block decoder and encoder. Both work on whole blocks:
// dequant decodes len(dst)/blockSize blocks from src, quant appends the
// encoding of src to dst.
type codec struct {
	dequant func(src []byte, dst []float32)
	quant   func(dst []byte, src []float32) []byte
}

var codecs = map[Type]codec{
	TypeF32:  {dequantF32, quantF32},
	TypeF16:  {dequantF16, quantF16},
	TypeBF16: {dequantBF16, quantBF16},
	TypeQ4_0: {dequantQ4_0, quantQ4_0},
	TypeQ4_1: {dequantQ4_1, quantQ4_1},
	TypeQ5_0: {dequantQ5_0, quantQ5_0},
	TypeQ5_1: {dequantQ5_1, quantQ5_1},
	TypeQ8_0: {dequantQ8_0, quantQ8_0},
	TypeQ2_K: {dequantQ2_K, quantQ2_K},
	TypeQ3_K: {dequantQ3_K, quantQ3_K},
	TypeQ4_K: {dequantQ4_K, quantQ4_K},
	TypeQ5_K: {dequantQ5_K, quantQ5_K},
	TypeQ6_K: {dequantQ6_K, quantQ6_K},
	TypeQ8_K: {dequantQ8_K, quantQ8_K},
}

func codecFor(t Type) (codec, error) {
	c, ok := codecs[t]
	if !ok || !t.Supported() {
		return codec{}, fmt.Errorf("gguf: %w %s", ErrUnsupportedType, t)
	}
	return c, nil
}

// Dequantize decodes len(dst) elements of type t from src into dst, exactly
// as ggml's dequantize_row_* does. len(dst) must be a multiple of t's block
// size and src must hold exactly t.RowSize(len(dst)) bytes. An unsupported
// type gives an error wrapping ErrUnsupportedType.
func Dequantize(t Type, src []byte, dst []float32) error {
	c, err := codecFor(t)
	if err != nil {
		return err
	}
	want, err := t.RowSize(len(dst))
	if err != nil {
		return fmt.Errorf("gguf: dequantize: %w", err)
	}
	if len(src) != want {
		return fmt.Errorf("gguf: dequantize %d elements of %s: got %d bytes, want %d", len(dst), t, len(src), want)
	}
	c.dequant(src, dst)
	return nil
}

// DequantizeTensor decodes the whole of tensor t of file f to float32. The
// error names the tensor; an unsupported type wraps ErrUnsupportedType.
func DequantizeTensor(f *File, t *TensorInfo) ([]float32, error) {
	if err := CheckSupported(t); err != nil {
		return nil, err
	}
	n := t.Elements()
	if n > uint64(maxInt) {
		return nil, fmt.Errorf("gguf: tensor %q: %d elements do not fit in memory", t.Name, n)
	}
	dst := make([]float32, n)
	if err := Dequantize(t.Type, f.TensorData(t), dst); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return dst, nil
}

const maxInt = int(^uint(0) >> 1)

// Quantize appends the encoding of src as type t to dst and returns the
// extended slice. len(src) must be a multiple of t's block size. F16 and BF16
// round to nearest even; Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 match ggml's
// quantize_row_*_ref bit for bit; the k-quants follow ggml's reference scale
// searches (see quant_k.go).
func Quantize(t Type, dst []byte, src []float32) ([]byte, error) {
	c, err := codecFor(t)
	if err != nil {
		return dst, err
	}
	size, err := t.RowSize(len(src))
	if err != nil {
		return dst, fmt.Errorf("gguf: quantize: %w", err)
	}
	dst = grow(dst, size)
	return c.quant(dst, src), nil
}

// QuantizeParallel encodes src, a matrix of rows of rowLen elements, as type
// t, spreading the rows over GOMAXPROCS goroutines. The output is the same
// bytes Quantize produces, whatever the number of goroutines.
func QuantizeParallel(t Type, src []float32, rowLen int) ([]byte, error) {
	c, err := codecFor(t)
	if err != nil {
		return nil, err
	}
	if rowLen <= 0 || len(src)%rowLen != 0 {
		return nil, fmt.Errorf("gguf: quantize: %d elements are not rows of %d", len(src), rowLen)
	}
	rowBytes, err := t.RowSize(rowLen)
	if err != nil {
		return nil, fmt.Errorf("gguf: quantize: %w", err)
	}
	rows := len(src) / rowLen
	out := make([]byte, rows*rowBytes)
	workers := min(runtime.GOMAXPROCS(0), rows)
	if workers <= 1 {
		c.quant(out[:0], src)
		return out, nil
	}
	var wg sync.WaitGroup
	per := (rows + workers - 1) / workers
	for r0 := 0; r0 < rows; r0 += per {
		r1 := min(r0+per, rows)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.quant(out[r0*rowBytes:r0*rowBytes], src[r0*rowLen:r1*rowLen])
		}()
	}
	wg.Wait()
	return out, nil
}

// grow makes room for n more bytes after len(b) without changing len(b).
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}
