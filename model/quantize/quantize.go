// Package quantize converts a GGUF model's weight matrices to another tensor
// type, as llama.cpp's llama-quantize does for a single target type: every
// 2-D weight matrix is decoded to float32 and re-encoded, norms and biases
// stay F32, and all metadata is copied with general.file_type updated.
package quantize

import (
	"fmt"
	"strings"

	"github.com/rs/zerolog/log"

	"github.com/forgepipe/forgepipe/gguf"
)

// Plan is the type each tensor of a file gets when it is converted.
type Plan struct {
	Tensor *gguf.TensorInfo
	Type   gguf.Type // the type written
	// Fallback is set when Type differs from the requested type because the
	// tensor's rows do not fit the requested type's blocks.
	Fallback bool
}

// isMatrix reports whether t is a weight matrix that is converted: a tensor
// named *.weight with at least two dimensions of more than one element.
func isMatrix(t *gguf.TensorInfo) bool {
	return strings.HasSuffix(t.Name, ".weight") && len(t.Shape) >= 2 && t.Rows() > 1
}

// PlanFor returns, for every tensor of h in file order, the type it is
// written in when the file is converted to target. Matrices get target (or
// ForRow's fallback); F16 and BF16 vectors become F32; other tensors keep
// their type.
func PlanFor(h *gguf.Header, target gguf.Type) ([]Plan, error) {
	if _, err := FileType(target); err != nil {
		return nil, err
	}
	plans := make([]Plan, len(h.Tensors))
	for i, t := range h.Tensors {
		p := Plan{Tensor: t, Type: t.Type}
		switch {
		case isMatrix(t):
			p.Type = ForRow(target, int(t.Shape[0]))
			p.Fallback = p.Type != target
		case t.Type == gguf.TypeF16 || t.Type == gguf.TypeBF16:
			p.Type = gguf.TypeF32
		}
		if p.Type != t.Type && !t.Type.Supported() {
			return nil, fmt.Errorf("tensor %q: cannot convert from %w %s", t.Name, gguf.ErrUnsupportedType, t.Type)
		}
		plans[i] = p
	}
	return plans, nil
}

// File converts the model in to type t and writes it to out, one tensor at a
// time. progress, if set, is called after each tensor with the input bytes
// done and the total. A tensor that falls back to another type is logged as
// a warning.
func File(in, out string, t gguf.Type, progress func(done, total int64)) error {
	ftype, err := FileType(t)
	if err != nil {
		return err
	}
	src, err := gguf.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	plans, err := PlanFor(src.Header, t)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}

	w := gguf.NewWriter()
	for _, kv := range src.Metadata.KVs {
		switch kv.Key {
		case "general.file_type", "general.quantization_version":
			continue // set below
		}
		w.Set(kv.Key, kv.Value)
	}
	w.Set("general.file_type", ftype)
	if t.BlockSize() > 1 {
		w.Set("general.quantization_version", uint32(2))
	}

	var total, done int64
	for _, p := range plans {
		total += int64(p.Tensor.Size)
	}
	for _, p := range plans {
		if p.Fallback {
			log.Warn().Str("tensor", p.Tensor.Name).Int("row_len", int(p.Tensor.Shape[0])).
				Stringer("requested", t).Stringer("type", p.Type).
				Msg("row length does not fit the requested type's blocks: falling back")
		}
		err := w.AddTensorFunc(p.Tensor.Name, p.Type, p.Tensor.Shape, func(dst []byte) error {
			if err := convert(dst, src, p); err != nil {
				return err
			}
			done += int64(p.Tensor.Size)
			if progress != nil {
				progress(done, total)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("tensor %q: %w", p.Tensor.Name, err)
		}
	}
	if err := w.WriteFile(out); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}

// convert writes tensor p.Tensor of f, encoded as p.Type, into dst.
func convert(dst []byte, f *gguf.File, p Plan) error {
	data := f.TensorData(p.Tensor)
	if p.Type == p.Tensor.Type {
		if len(dst) != len(data) {
			return fmt.Errorf("tensor %q: buffer of %d bytes, want %d", p.Tensor.Name, len(dst), len(data))
		}
		copy(dst, data)
		return nil
	}
	vals, err := gguf.DequantizeTensor(f, p.Tensor)
	if err != nil {
		return err
	}
	enc, err := gguf.QuantizeParallel(p.Type, vals, int(p.Tensor.Shape[0]))
	if err != nil {
		return fmt.Errorf("tensor %q: %w", p.Tensor.Name, err)
	}
	if len(enc) != len(dst) {
		return fmt.Errorf("tensor %q: encoded %d bytes, want %d", p.Tensor.Name, len(enc), len(dst))
	}
	copy(dst, enc)
	return nil
}
