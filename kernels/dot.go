package kernels

import (
	"fmt"
	"slices"

	"github.com/forgepipe/forgepipe/gguf"
)

// This file is the block dot product API: weight rows of any supported type
// dotted with one activation vector. The activations are converted once per
// vector to ggml's "vec dot type" (PrepareVec), exactly as llama.cpp's CPU
// backend does, and every row is then dotted with that prepared form
// (DotRows).
//
// Each row type has a readable reference in dot_ref.go. Where the CPU allows
// (dot_amd64.go: AVX2 and F16C, without the purego build tag) every type but
// Q8_K runs through generated assembly (dot_amd64.s, from internal/asmgen)
// instead. The assembly performs the same float32 operations in the same
// order as the reference, so both give the same bits on every CPU; the
// tests check that they do.

// VecDotType returns the type activations take before they are dotted with
// rows of type t: gguf.TypeF32 for F32, F16 and BF16 rows, gguf.TypeQ8_0 for
// the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and
// gguf.TypeQ8_K for the k-quants (Q2_K … Q6_K, Q8_K). It returns
// gguf.TypeF32 for types DotRows does not support.
func VecDotType(t gguf.Type) gguf.Type {
	switch t {
	case gguf.TypeQ4_0, gguf.TypeQ4_1, gguf.TypeQ5_0, gguf.TypeQ5_1, gguf.TypeQ8_0:
		return gguf.TypeQ8_0
	case gguf.TypeQ2_K, gguf.TypeQ3_K, gguf.TypeQ4_K, gguf.TypeQ5_K, gguf.TypeQ6_K, gguf.TypeQ8_K:
		return gguf.TypeQ8_K
	}
	return gguf.TypeF32
}

// Vec is an activation vector of N elements prepared by PrepareVec for dots
// with rows of one weight type. Exactly one of F32 and Q is in use: F32 holds
// the activations themselves when the vec dot type is F32, Q holds them as
// Q8_0 or Q8_K blocks otherwise. The zero Vec is ready for PrepareVec, which
// reuses its buffers.
type Vec struct {
	F32 []float32 // the activations, for F32, F16 and BF16 rows
	Q   []byte    // the activations as Q8_0 or Q8_K blocks, for quantised rows
	N   int       // number of elements
}

// PrepareVec fills v with x in the form rows of type t are dotted with
// (VecDotType), reusing v's buffers. For quantised t, len(x) must be a
// multiple of the vec dot type's block size (32 or 256), as every row of t
// is; PrepareVec panics otherwise, since no tensor can have such rows.
func PrepareVec(t gguf.Type, x []float32, v *Vec) {
	n := len(x)
	switch vt := VecDotType(t); vt {
	case gguf.TypeQ8_0, gguf.TypeQ8_K:
		if n%vt.BlockSize() != 0 {
			panic(fmt.Sprintf("kernels: PrepareVec: %d elements is not a multiple of %s's block size %d", n, vt, vt.BlockSize()))
		}
		size := n / vt.BlockSize() * vt.TypeSize()
		if cap(v.Q) < size {
			v.Q = make([]byte, size)
		}
		v.Q = v.Q[:size]
		if vt == gguf.TypeQ8_0 {
			quantQ8_0(v.Q, x)
		} else {
			quantQ8_K(v.Q, x)
		}
		v.F32 = v.F32[:0]
	default:
		v.F32 = append(v.F32[:0], x...)
		v.Q = v.Q[:0]
	}
	v.N = n
}

// DotRows computes out[i-r0] = (row i of w) · v for the rows i in [r0, r1).
// w holds consecutive rows of type t, rowBytes apart, each of v.N elements;
// v must have been prepared for t (PrepareVec). Each row's result depends
// only on that row and v: it is the same, bit for bit, however the rows are
// split into calls. DotRows panics on an unsupported t or on arguments that
// do not fit together (a programming error, not bad input: tensor shapes
// and types are checked when a model is loaded).
func DotRows(out []float32, t gguf.Type, w []byte, rowBytes int, v *Vec, r0, r1 int) {
	if r1 <= r0 {
		return
	}
	k := rowsKernel(t)
	if k == nil {
		panic(fmt.Sprintf("kernels: DotRows: %s rows are not supported", t))
	}
	if err := checkRows(out, t, w, rowBytes, v, r0, r1); err != nil {
		panic(fmt.Sprintf("kernels: DotRows(%s): %v", t, err))
	}
	k(out[:r1-r0], w[r0*rowBytes:], rowBytes, v)
}

// quantQ8_0 and quantQ8_K are the activation quantisers PrepareVec uses:
// the references, replaced by assembly that gives the same bytes where the
// CPU allows (dot_amd64.go).
var (
	quantQ8_0 = quantizeQ8_0
	quantQ8_K = quantizeQ8_K
)

// rowsDot computes out[i] = (row i) · v for len(out) rows, row i starting at
// w[i*stride]. Callers have checked that every row lies within w and that v
// is prepared for the row type.
type rowsDot func(out []float32, w []byte, stride int, v *Vec)

// dotRefs maps each supported row type to its readable one-row reference
// (dot_ref.go).
var dotRefs = map[gguf.Type]rowDotRef{
	gguf.TypeF32:  dotF32Ref,
	gguf.TypeF16:  dotF16Ref,
	gguf.TypeBF16: dotBF16Ref,
	gguf.TypeQ4_0: dotQ4_0Ref,
	gguf.TypeQ4_1: dotQ4_1Ref,
	gguf.TypeQ5_0: dotQ5_0Ref,
	gguf.TypeQ5_1: dotQ5_1Ref,
	gguf.TypeQ8_0: dotQ8_0Ref,
	gguf.TypeQ2_K: dotQ2_KRef,
	gguf.TypeQ3_K: dotQ3_KRef,
	gguf.TypeQ4_K: dotQ4_KRef,
	gguf.TypeQ5_K: dotQ5_KRef,
	gguf.TypeQ6_K: dotQ6_KRef,
	gguf.TypeQ8_K: dotQ8_KRef,
}

// rowDotRef is a reference dot of one row (exactly v.N elements' worth of
// bytes) with a vector prepared for the row's type.
type rowDotRef func(row []byte, v *Vec) float32

// refRows lifts t's one-row reference dot to a rowsDot.
func refRows(t gguf.Type) rowsDot {
	dot := dotRefs[t]
	if dot == nil {
		return nil
	}
	return func(out []float32, w []byte, stride int, v *Vec) {
		size, _ := t.RowSize(v.N) // checked by the caller
		for i := range out {
			out[i] = dot(w[i*stride:i*stride+size], v)
		}
	}
}

// dotKernels holds, indexed by row type, the kernel DotRows uses (nil for
// unsupported types). It starts as the references; dot_amd64.go's init
// replaces entries with assembly where the CPU supports it.
var dotKernels = func() (k [64]rowsDot) {
	for t := range dotRefs {
		k[t] = refRows(t)
	}
	return k
}()

// rowsKernel returns the kernel DotRows uses for t, or nil.
func rowsKernel(t gguf.Type) rowsDot {
	if int(t) >= len(dotKernels) {
		return nil
	}
	return dotKernels[t]
}

// fastKernels holds the kernels that replace the references on this CPU.
var fastKernels = map[gguf.Type]rowsDot{}

// useFast makes k the kernel for t rows.
func useFast(t gguf.Type, k rowsDot) {
	fastKernels[t] = k
	dotKernels[t] = k
}

// fastTypes lists the row types that have a fast kernel on this CPU, in
// type order.
func fastTypes() []gguf.Type {
	var ts []gguf.Type
	for t := range fastKernels {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}

// checkRows validates DotRows' arguments.
func checkRows(out []float32, t gguf.Type, w []byte, rowBytes int, v *Vec, r0, r1 int) error {
	size, err := t.RowSize(v.N)
	if err != nil {
		return err
	}
	switch vt := VecDotType(t); vt {
	case gguf.TypeF32:
		if len(v.F32) != v.N {
			return fmt.Errorf("vector not prepared for F32 dots: %d floats for N=%d", len(v.F32), v.N)
		}
	default:
		want := v.N / vt.BlockSize() * vt.TypeSize()
		if len(v.Q) != want {
			return fmt.Errorf("vector not prepared for %s dots: %d bytes for N=%d, want %d", vt, len(v.Q), v.N, want)
		}
	}
	switch {
	case r0 < 0:
		return fmt.Errorf("negative first row %d", r0)
	case rowBytes < size:
		return fmt.Errorf("row stride %d bytes is less than a row of %d elements (%d bytes)", rowBytes, v.N, size)
	case len(out) < r1-r0:
		return fmt.Errorf("out holds %d values, want %d", len(out), r1-r0)
	case len(w) < (r1-1)*rowBytes+size:
		return fmt.Errorf("w holds %d bytes, rows [%d, %d) need %d", len(w), r0, r1, (r1-1)*rowBytes+size)
	}
	return nil
}
