package model_test

import (
	"errors"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/synth"
)

// writeVariant writes a tiny synthetic model, then a copy of it changed by
// edit (which may alter metadata or drop/retype tensors), and returns the
// copy's path.
func writeVariant(t *testing.T, arch string, edit func(kvs map[string]any, tensors map[string]*tensorCopy)) string {
	t.Helper()
	dir := t.TempDir()
	spec, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	spec.Arch, spec.Type, spec.Seed = arch, gguf.TypeF32, 3
	if spec.Tokenizer, err = synth.TokenizerFrom(testutil.Testdata(t, "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base.gguf")
	if err := synth.Write(base, spec, nil); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kvs := map[string]any{}
	for _, kv := range f.Metadata.KVs {
		kvs[kv.Key] = kv.Value
	}
	tensors := map[string]*tensorCopy{}
	for _, ti := range f.Tensors {
		tensors[ti.Name] = &tensorCopy{typ: ti.Type, shape: ti.Shape, data: f.TensorData(ti)}
	}
	edit(kvs, tensors)
	w := gguf.NewWriter()
	for _, kv := range f.Metadata.KVs {
		if v, ok := kvs[kv.Key]; ok {
			w.Set(kv.Key, v)
			delete(kvs, kv.Key)
		}
	}
	added := make([]string, 0, len(kvs))
	for k := range kvs {
		added = append(added, k)
	}
	sort.Strings(added)
	for _, k := range added {
		w.Set(k, kvs[k])
	}
	for _, ti := range f.Tensors {
		if tc, ok := tensors[ti.Name]; ok {
			if err := w.AddTensor(ti.Name, tc.typ, tc.shape, tc.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := filepath.Join(dir, "variant.gguf")
	if err := w.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	return out
}

type tensorCopy struct {
	typ   gguf.Type
	shape []uint64
	data  []byte
}

func TestOpenErrors(t *testing.T) {
	cases := []struct {
		name    string
		edit    func(kvs map[string]any, ts map[string]*tensorCopy)
		wantIs  error
		wantMsg []string
	}{
		{
			name:    "unknown architecture lists the supported ones",
			edit:    func(kvs map[string]any, _ map[string]*tensorCopy) { kvs["general.architecture"] = "gpt-j" },
			wantIs:  model.ErrUnknownArch,
			wantMsg: []string{`"gpt-j"`, "llama", "qwen2"},
		},
		{
			name:    "missing required tensor is named",
			edit:    func(_ map[string]any, ts map[string]*tensorCopy) { delete(ts, "blk.1.ffn_down.weight") },
			wantMsg: []string{`"blk.1.ffn_down.weight"`, "missing"},
		},
		{
			name:    "missing metadata key is named",
			edit:    func(kvs map[string]any, _ map[string]*tensorCopy) { delete(kvs, "llama.block_count") },
			wantMsg: []string{"llama.block_count", "missing"},
		},
		{
			name: "wrong shape is named",
			edit: func(_ map[string]any, ts map[string]*tensorCopy) {
				tc := ts["blk.0.attn_q.weight"]
				tc.shape = []uint64{tc.shape[1], tc.shape[0] / 2}
				tc.data = tc.data[:len(tc.data)/2]
			},
			wantMsg: []string{`"blk.0.attn_q.weight"`, "shape"},
		},
		{
			name: "IQ tensor type is refused by name",
			edit: func(_ map[string]any, ts map[string]*tensorCopy) {
				tc := ts["blk.0.ffn_up.weight"]
				tc.typ = gguf.TypeIQ2_XXS
				n, _ := tc.typ.RowSize(int(tc.shape[0]))
				tc.data = make([]byte, n*int(tc.shape[1]))
			},
			wantIs:  gguf.ErrUnsupportedType,
			wantMsg: []string{"IQ2_XXS", `"blk.0.ffn_up.weight"`},
		},
		{
			name:    "head count not dividing kv heads",
			edit:    func(kvs map[string]any, _ map[string]*tensorCopy) { kvs["llama.attention.head_count_kv"] = uint32(3) },
			wantMsg: []string{"head_count_kv"},
		},
		{
			name:    "unknown rope scaling",
			edit:    func(kvs map[string]any, _ map[string]*tensorCopy) { kvs["llama.rope.scaling.type"] = "longrope" },
			wantMsg: []string{"longrope"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeVariant(t, "llama", c.edit)
			m, err := model.Open(path, model.Options{})
			if err == nil {
				m.Close()
				t.Fatal("Open succeeded")
			}
			if c.wantIs != nil && !errors.Is(err, c.wantIs) {
				t.Errorf("error %v is not %v", err, c.wantIs)
			}
			for _, s := range c.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %s", err, s)
				}
			}
		})
	}
}

func TestRopeScalingConfig(t *testing.T) {
	path := writeVariant(t, "llama", func(kvs map[string]any, _ map[string]*tensorCopy) {
		kvs["llama.rope.scaling.type"] = "yarn"
		kvs["llama.rope.scaling.factor"] = float32(4)
		kvs["llama.rope.scaling.original_context_length"] = uint32(128)
	})
	m, err := model.Open(path, model.Options{NoPrefault: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r := m.Config.Rope
	if r.FreqScale != 0.25 || r.ExtFactor != 1 || r.OrigCtx != 128 || r.BetaFast != 32 || r.BetaSlow != 1 {
		t.Errorf("yarn rope = %+v, want freq scale 0.25, ext factor 1, orig ctx 128, beta 32/1", r)
	}
}

func TestQwen2HasBiasesAndNeoXRope(t *testing.T) {
	path := writeVariant(t, "qwen2", func(map[string]any, map[string]*tensorCopy) {})
	m, err := model.Open(path, model.Options{NoPrefault: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b := m.Blocks[0]
	if b.Query.Bias == nil || b.Key.Bias == nil || b.Value.Bias == nil || b.Output.Bias != nil {
		t.Error("qwen2 block: want q/k/v biases and no output bias")
	}
	if m.Config.Rope.Mode != 1 || m.Config.RMSEps != 1e-6 || m.Config.Rope.Base != 1e6 {
		t.Errorf("qwen2 rope mode %v eps %g base %g", m.Config.Rope.Mode, m.Config.RMSEps, m.Config.Rope.Base)
	}
}
