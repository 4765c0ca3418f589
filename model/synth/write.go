package synth

import (
	"fmt"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/model/quantize"
)

// archNumerics are the per-architecture constants written to the metadata.
var archNumerics = map[string]struct {
	eps, ropeBase float32
}{
	"llama": {eps: 1e-5, ropeBase: 10000},
	"qwen2": {eps: 1e-6, ropeBase: 1000000},
}

// Write validates spec and writes its model to path, tensor by tensor, so
// memory use stays at about one tensor whatever the model's size. progress,
// if set, is called after each tensor with the bytes of tensor data written
// and the total.
func Write(path string, spec Spec, progress func(done, total int64)) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	w := gguf.NewWriter()
	if err := spec.setMetadata(w); err != nil {
		return err
	}
	tensors := spec.tensors()
	var total, done int64
	for _, t := range tensors {
		total += t.bytes()
	}
	for i := range tensors {
		t := &tensors[i]
		err := w.AddTensorFunc(t.name, t.typ, t.shape, func(dst []byte) error {
			if err := fill(dst, t, spec.Seed, i); err != nil {
				return err
			}
			done += t.bytes()
			if progress != nil {
				progress(done, total)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("synth: tensor %s: %w", t.name, err)
		}
	}
	if err := w.WriteFile(path); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return nil
}

// setMetadata writes the general.* and architecture keys, then the
// tokenizer's entries.
func (s *Spec) setMetadata(w *gguf.Writer) error {
	ftype, err := quantize.FileType(s.Type)
	if err != nil {
		return err
	}
	num := archNumerics[s.Arch]
	name := s.Name
	if name == "" {
		name = "synthetic-" + s.Arch
	}
	arch := func(key string) string { return s.Arch + "." + key }
	kvs := []struct {
		key   string
		value any
	}{
		{"general.architecture", s.Arch},
		{"general.name", name},
		{"general.file_type", ftype},
		{"general.alignment", uint32(32)},
		{arch("context_length"), uint32(s.Context)},
		{arch("embedding_length"), uint32(s.Dim)},
		{arch("block_count"), uint32(s.Layers)},
		{arch("feed_forward_length"), uint32(s.FFN)},
		{arch("attention.head_count"), uint32(s.Heads)},
		{arch("attention.head_count_kv"), uint32(s.KVHeads)},
		{arch("attention.layer_norm_rms_epsilon"), num.eps},
		{arch("rope.dimension_count"), uint32(s.HeadDim())},
		{arch("rope.freq_base"), num.ropeBase},
		{arch("vocab_size"), uint32(s.VocabSize())},
	}
	if s.Type.BlockSize() > 1 {
		kvs = append(kvs, struct {
			key   string
			value any
		}{"general.quantization_version", uint32(2)})
	}
	for _, kv := range kvs {
		w.Set(kv.key, kv.value)
	}
	for _, kv := range s.Tokenizer {
		w.Set(kv.Key, kv.Value)
	}
	return nil
}
