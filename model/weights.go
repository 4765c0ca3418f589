package model

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unsafe"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/kernels"
)

// Linear is a weight matrix with an optional bias: y = W x + b.
type Linear struct {
	Weight kernels.Mat
	Bias   []float32 // nil when the file has no bias
}

// Forward computes n rows of outputs from n rows of inputs (x: n×Cols,
// out: n×Rows). Row i of a batch is bit-identical to the same row alone.
func (l *Linear) Forward(out, x []float32, n int) {
	kernels.MatMul(out, l.Weight, x, n)
	if l.Bias != nil {
		rows := l.Weight.Rows
		for i := 0; i < n; i++ {
			kernels.Add(out[i*rows:(i+1)*rows], out[i*rows:(i+1)*rows], l.Bias)
		}
	}
}

// Block is one transformer layer's weights. Tags name the tensor under the
// block's prefix ("blk.N."): a *Linear field binds NAME.weight and, if
// present, NAME.bias; a []float32 field binds NAME as a vector. The shape tag
// gives the expected dimensions in ggml order (columns first) in terms of the
// config: dim, qdim, kvdim, ffn, vocab, rope2 (rope dims / 2).
type Block struct {
	AttnNorm []float32 `gguf:"attn_norm.weight" shape:"dim"`
	Query    *Linear   `gguf:"attn_q" shape:"dim,qdim"`
	Key      *Linear   `gguf:"attn_k" shape:"dim,kvdim"`
	Value    *Linear   `gguf:"attn_v" shape:"dim,kvdim"`
	Output   *Linear   `gguf:"attn_output" shape:"qdim,dim"`
	FFNNorm  []float32 `gguf:"ffn_norm.weight" shape:"dim"`
	Gate     *Linear   `gguf:"ffn_gate" shape:"dim,ffn"`
	Up       *Linear   `gguf:"ffn_up" shape:"dim,ffn"`
	Down     *Linear   `gguf:"ffn_down" shape:"ffn,dim"`
}

// Globals are the weights outside the blocks.
type Globals struct {
	TokenEmbd  *Linear   `gguf:"token_embd" shape:"dim,vocab"`
	OutputNorm []float32 `gguf:"output_norm.weight" shape:"dim"`
	Output     *Linear   `gguf:"output,optional" shape:"dim,vocab"` // nil: tied to TokenEmbd
	RopeFreqs  []float32 `gguf:"rope_freqs.weight,optional" shape:"rope2"`
}

// Tensors is where bound weights come from: a mapped file, or (later) an
// uploader's device buffers.
type Tensors interface {
	Tensor(name string) (*gguf.TensorInfo, bool)
	TensorData(t *gguf.TensorInfo) []byte
}

// BlockPrefix is the tensor-name prefix of block i.
func BlockPrefix(i int) string { return fmt.Sprintf("blk.%d.", i) }

// Bind fills the tagged fields of dst (a pointer to a struct such as Block)
// from src, with names under prefix. A missing required tensor, a wrong
// shape or an unsupported type is an error naming the tensor.
func Bind(src Tensors, prefix string, c *Config, dst any) error {
	v := reflect.ValueOf(dst).Elem()
	typ := v.Type()
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		tag, ok := f.Tag.Lookup("gguf")
		if !ok {
			continue
		}
		name, optional := strings.CutSuffix(tag, ",optional")
		shape, err := c.expectShape(f.Tag.Get("shape"))
		if err != nil {
			return fmt.Errorf("field %s: %w", f.Name, err)
		}
		switch f.Type {
		case reflect.TypeFor[*Linear]():
			l, err := bindLinear(src, prefix+name, shape, optional)
			if err != nil {
				return err
			}
			if l != nil {
				v.Field(i).Set(reflect.ValueOf(l))
			}
		case reflect.TypeFor[[]float32]():
			vec, err := bindVector(src, prefix+name, shape, optional)
			if err != nil {
				return err
			}
			v.Field(i).Set(reflect.ValueOf(vec))
		default:
			return fmt.Errorf("field %s: cannot bind a %s", f.Name, f.Type)
		}
	}
	return nil
}

func (c *Config) expectShape(spec string) ([]int, error) {
	if spec == "" {
		return nil, nil
	}
	var dims []int
	for _, s := range strings.Split(spec, ",") {
		var d int
		switch s {
		case "dim":
			d = c.Dim
		case "qdim":
			d = c.QDim()
		case "kvdim":
			d = c.KVDim()
		case "ffn":
			d = c.FFN
		case "vocab":
			d = c.Vocab
		case "rope2":
			d = c.Rope.Dims / 2
		default:
			return nil, fmt.Errorf("unknown dimension %q in shape tag", s)
		}
		dims = append(dims, d)
	}
	return dims, nil
}

func checkShape(t *gguf.TensorInfo, want []int) error {
	if want == nil {
		return nil
	}
	got := make([]int, len(t.Shape))
	for i, d := range t.Shape {
		got[i] = int(d)
	}
	// Trailing dimensions of 1 are the same shape (ggml pads to 4).
	for len(got) > len(want) && got[len(got)-1] == 1 {
		got = got[:len(got)-1]
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("tensor %q has shape %v, want %v", t.Name, got, want)
	}
	return nil
}

func bindLinear(src Tensors, name string, shape []int, optional bool) (*Linear, error) {
	t, ok := src.Tensor(name + ".weight")
	if !ok {
		if optional {
			return nil, nil
		}
		return nil, fmt.Errorf("missing required tensor %q", name+".weight")
	}
	if err := checkShape(t, shape); err != nil {
		return nil, err
	}
	m, err := kernels.NewMat(t, src.TensorData(t))
	if err != nil {
		return nil, err
	}
	l := &Linear{Weight: m}
	if b, ok := src.Tensor(name + ".bias"); ok {
		var rows []int
		if shape != nil {
			rows = shape[1:]
		}
		if l.Bias, err = bindVector(src, name+".bias", rows, false); err != nil {
			return nil, err
		}
		if len(l.Bias) != m.Rows {
			return nil, fmt.Errorf("tensor %q has %d elements, want %d", b.Name, len(l.Bias), m.Rows)
		}
	}
	return l, nil
}

// bindVector returns a 1-D tensor as float32: a zero-copy view for aligned
// F32 data, a dequantised copy otherwise.
func bindVector(src Tensors, name string, shape []int, optional bool) ([]float32, error) {
	t, ok := src.Tensor(name)
	if !ok {
		if optional {
			return nil, nil
		}
		return nil, fmt.Errorf("missing required tensor %q", name)
	}
	if err := checkShape(t, shape); err != nil {
		return nil, err
	}
	if err := gguf.CheckSupported(t); err != nil {
		return nil, err
	}
	data := src.TensorData(t)
	n := int(t.Elements())
	if n == 0 {
		return nil, fmt.Errorf("tensor %q is empty", name)
	}
	if t.Type == gguf.TypeF32 && uintptr(unsafe.Pointer(&data[0]))%4 == 0 {
		return unsafe.Slice((*float32)(unsafe.Pointer(&data[0])), n), nil
	}
	out := make([]float32, n)
	if err := gguf.Dequantize(t.Type, data, out); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return out, nil
}
