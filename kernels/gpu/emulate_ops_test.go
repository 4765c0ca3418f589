package gpu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/kernels"
)

// Tests of the host driver's emulations of the element-wise, norm, rope and
// attention kernels (emulate_ops.go), through the Go wrappers, against
// float64 references or package kernels, with no GPU.

// emulatedOps are the kernels emulate_ops.go emulates.
var emulatedOps = []string{
	"add_f32", "add_rows_f32", "swiglu_f32", "rmsnorm_f32", "rope_f32", "argmax_f32",
	"attn_split_f32", "attn_combine_f32", "kv_store_f32",
	"attn_rows_split_f32_d64", "attn_rows_split_f32_d128", "attn_rows_split_f32_d256", "attn_rows_combine_f32",
	"attn_rows_prefill_f32_d64", "attn_rows_prefill_f32_d128", "attn_rows_prefill_f32_d256",
	"add_rmsnorm_q8", "swiglu_q8", "rope_kv_store", "topk_slice_f32", "topk_merge_f32",
	"attn_rows_rope_f32_d64", "attn_rows_rope_f32_d128", "attn_rows_rope_f32_d256",
	"attn_rows_rope1_f32_d64", "attn_rows_rope1_f32_d128", "attn_rows_rope1_f32_d256",
	"attn_rows_rope1m_f32_d64", "attn_rows_rope1m_f32_d128", "attn_rows_rope1m_f32_d256",
}

// matrixPrefixes start the names of the kernels emulate_matvec.go emulates.
var matrixPrefixes = []string{"matvec", "mvrows_", "dequant_", "embed_", "quantize_act_q8", "f32_to_"}

func TestEmulatedOpsRegistered(t *testing.T) {
	registered := map[string]bool{}
	for _, name := range hip.HostKernels() {
		registered[name] = true
	}
	module := kernelNames()
	for _, name := range emulatedOps {
		if !slices.Contains(module, name) {
			t.Errorf("%s is not a kernel of the module", name)
		}
		if !registered[name] {
			t.Errorf("%s has no host kernel registered", name)
		}
	}
	for _, name := range module {
		matrix := slices.ContainsFunc(matrixPrefixes, func(p string) bool { return strings.HasPrefix(name, p) })
		if !matrix && !slices.Contains(emulatedOps, name) {
			t.Errorf("kernel %s is in neither half of the emulations", name)
		}
	}
}

func f64To32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

func TestEmulatedElementwise(t *testing.T) {
	e := emulatedEnv(t, 101)
	for _, c := range []struct{ rows, n int }{{1, 1}, {3, 37}, {2, 1000}, {1, 4096*256 + 3}} {
		n := c.rows * c.n
		a, b := e.randVec(n), e.randVec(n)
		ad, bd := e.uploadF32(a), e.uploadF32(b)
		sum, silu, rows := make([]float64, n), make([]float64, n), make([]float64, n)
		for i := range n {
			sum[i] = float64(a[i]) + float64(b[i])
			g := float64(a[i])
			silu[i] = g / (1 + math.Exp(-g)) * float64(b[i])
			rows[i] = float64(a[i]) + float64(b[i%c.n])
		}
		out := e.poisoned(n)
		e.check(e.k.Add(e.s, out, ad, bd, n))
		e.expect(fmt.Sprintf("add/%d", n), e.download(out, n), f64To32(sum))

		out = e.poisoned(n)
		e.check(e.k.SwiGLU(e.s, out, ad, bd, n))
		e.expect(fmt.Sprintf("swiglu/%d", n), e.download(out, n), f64To32(silu))

		y := e.uploadF32(a)
		e.check(e.k.AddRows(e.s, y, bd, c.rows, c.n)) // b's first row is the bias
		e.expect(fmt.Sprintf("add/rows/%dx%d", c.rows, c.n), e.download(y, n), f64To32(rows))

		// In place, as the model runs them: x = x + o, gate = silu(gate)·up.
		e.check(e.k.Add(e.s, ad, ad, bd, n))
		e.expect(fmt.Sprintf("add/inplace/%d", n), e.download(ad, n), f64To32(sum))
		gd := e.uploadF32(a)
		e.check(e.k.SwiGLU(e.s, gd, gd, bd, n))
		e.expect(fmt.Sprintf("swiglu/inplace/%d", n), e.download(gd, n), f64To32(silu))
	}
}

// rmsNormRef is RMSNorm of rows of x in float64.
func rmsNormRef(x, w []float32, rows int, eps float32) []float32 {
	n := len(w)
	out := make([]float64, rows*n)
	for r := range rows {
		var ss float64
		for _, v := range x[r*n : (r+1)*n] {
			ss += float64(v) * float64(v)
		}
		scale := 1 / math.Sqrt(ss/float64(n)+float64(eps))
		for i, v := range x[r*n : (r+1)*n] {
			out[r*n+i] = float64(v) * scale * float64(w[i])
		}
	}
	return f64To32(out)
}

func TestEmulatedRMSNorm(t *testing.T) {
	e := emulatedEnv(t, 102)
	for _, c := range []struct {
		rows, n int
		eps     float32
	}{{1, 1, 1e-5}, {1, 64, 1e-6}, {3, 1000, 1e-5}, {7, 257, 1e-5}} {
		x, w := e.randVec(c.rows*c.n), e.randVec(c.n)
		ref := rmsNormRef(x, w, c.rows, c.eps)
		out := e.poisoned(len(x))
		e.check(e.k.RMSNorm(e.s, out, e.uploadF32(x), e.uploadF32(w), c.rows, c.n, c.eps))
		e.expect(fmt.Sprintf("rmsnorm/%dx%d", c.rows, c.n), e.download(out, len(x)), ref)
		xd := e.uploadF32(x)
		e.check(e.k.RMSNorm(e.s, xd, xd, e.uploadF32(w), c.rows, c.n, c.eps))
		e.expect(fmt.Sprintf("rmsnorm/%dx%d/inplace", c.rows, c.n), e.download(xd, len(x)), ref)
	}
}

func TestEmulatedArgmax(t *testing.T) {
	e := emulatedEnv(t, 103)
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	cases := []struct {
		name  string
		x     []float32
		index int32
		value float32
	}{
		{"single", []float32{-7}, 0, -7},
		{"tie", []float32{1, 3, 2, 3}, 1, 3},
		{"nan skipped", []float32{nan, 1, nan, 2, 2, nan}, 3, 2},
		{"all nan", []float32{nan, nan}, 0, -inf},
		{"all -inf", []float32{-inf, -inf}, 0, -inf},
		{"-inf then a value", []float32{-inf, -inf, -5}, 2, -5},
		{"+inf", []float32{1, inf, inf}, 1, inf},
		{"signed zeros", []float32{-1, float32(math.Copysign(0, -1)), 0}, 1, 0},
	}
	for _, c := range cases {
		out := e.alloc(8)
		e.check(e.s.MemsetD32Async(out, 0xffffffff, 2))
		e.check(e.k.Argmax(e.s, out, e.uploadF32(c.x), 1, len(c.x)))
		got := e.download(out, 2)
		idx, val := int32(math.Float32bits(got[0])), got[1]
		if idx != c.index || math.Float32bits(val) != math.Float32bits(c.value) && !(val == 0 && c.value == 0) {
			t.Errorf("%s: got index %d value %v, want %d value %v", c.name, idx, val, c.index, c.value)
		}
	}
	// Several rows at once, each with its maximum somewhere else.
	const rows, n = 5, 1001
	x := e.randVec(rows * n)
	want := make([]int, rows)
	for r := range rows {
		want[r] = e.rng.IntN(n)
		x[r*n+want[r]] = 1 + float32(r)
	}
	out := e.alloc(8 * rows)
	e.check(e.s.MemsetD32Async(out, 0xffffffff, 2*rows))
	e.check(e.k.Argmax(e.s, out, e.uploadF32(x), rows, n))
	got := e.download(out, 2*rows)
	for r := range rows {
		if idx := int(math.Float32bits(got[2*r])); idx != want[r] || got[2*r+1] != 1+float32(r) {
			t.Errorf("row %d: got index %d value %v, want %d value %v", r, idx, got[2*r+1], want[r], 1+float32(r))
		}
	}
}

// ropeCases are the rotations the rope tests cover: every mode and scaling,
// partial and odd dims. ff holds freq factors for 64 pairs.
func ropeCases(ff []float32) []struct {
	name    string
	r       kernels.Rope
	headDim int
} {
	return []struct {
		name    string
		r       kernels.Rope
		headDim int
	}{
		{"normal", kernels.Rope{Dims: 128, Base: 500000}, 128},
		{"neox", kernels.Rope{Dims: 64, Base: 10000, Mode: kernels.RopeNeoX}, 64},
		{"linear", kernels.Rope{Dims: 64, Base: 10000, FreqScale: 0.25}, 64},
		{"freqfactors", kernels.Rope{Dims: 128, Base: 500000, FreqFactors: ff}, 128},
		{"yarn", kernels.Rope{Dims: 96, Base: 10000, Mode: kernels.RopeNeoX, FreqScale: 0.25, ExtFactor: 1,
			BetaFast: 32, BetaSlow: 1, OrigCtx: 4096, AttnFactor: 0.9}, 96},
		{"partial", kernels.Rope{Dims: 32, Base: 10000}, 80},
		{"partial-neox-yarn", kernels.Rope{Dims: 40, Base: 1e6, Mode: kernels.RopeNeoX, FreqScale: 0.5, ExtFactor: 0.5,
			BetaFast: 32, BetaSlow: 1, OrigCtx: 2048}, 64},
		{"odd dims", kernels.Rope{Dims: 33, Base: 10000}, 40},
	}
}

func freqFactors(n int) []float32 {
	ff := make([]float32, n)
	for i := range ff {
		ff[i] = 1 + float32(i)/16
	}
	return ff
}

// TestEmulatedRope checks rope_f32 against kernels.Rope.Apply bit for bit:
// both compute the same float32 operations.
func TestEmulatedRope(t *testing.T) {
	e := emulatedEnv(t, 104)
	const nHeads = 3
	positions := []int32{0, 1, 17, 511, 4095, 100000}
	for _, c := range ropeCases(freqFactors(64)) {
		for _, asMeta := range []bool{false, true} {
			nTok := len(positions)
			x := e.randVec(nTok * nHeads * c.headDim)
			ref := slices.Clone(x)
			for i, p := range positions {
				c.r.Apply(ref[i*nHeads*c.headDim:(i+1)*nHeads*c.headDim], nHeads, c.headDim, int(p))
			}
			var pb []byte
			if asMeta { // the row metadata serves as positions: pos[n] comes first
				pb = make([]byte, RowMetaBytes(nTok))
				for i, p := range positions {
					PutRowMeta(pb, nTok, i, p, p+1, hip.DevicePtr(0x10000*(i+1)))
				}
			} else {
				pb = make([]byte, 4*nTok)
				for i, p := range positions {
					binary.LittleEndian.PutUint32(pb[4*i:], uint32(p))
				}
			}
			var ffd hip.DevicePtr
			if c.r.FreqFactors != nil {
				ffd = e.uploadF32(c.r.FreqFactors)
			}
			xd := e.uploadF32(x)
			e.check(e.k.Rope(e.s, &c.r, ffd, xd, e.upload(pb), nTok, nHeads, c.headDim))
			if got := e.download(xd, len(x)); !sameBits(got, ref) {
				t.Errorf("rope/%s (positions from metadata: %v): differs from kernels.Rope.Apply (relative error %.3g)",
					c.name, asMeta, relErr(got, ref))
			}
		}
	}
}

// TestEmulatedRopeKVStore checks rope_kv_store bit for bit: queries rotated
// by kernels.Rope.Apply at every row's position, padding rows included; the
// live rows' keys rotated (tails kept) and values copied into their
// sequences' NaN-poisoned caches, nothing else written.
func TestEmulatedRopeKVStore(t *testing.T) {
	e := emulatedEnv(t, 105)
	const layers = 3
	for i, c := range ropeCases(freqFactors(64)) {
		nHead, nKVHead := []int{4, 8, 6, 2}[i%4], []int{2, 8, 3, 1}[i%4]
		layer := i % layers
		kvDim := c.headDim * nKVHead
		caps := []int32{40, 9} // two sequences
		// rows: seq 0 at 0, seq 1 at 8 (its last position), seq 0 at 39, padding x3, seq 0 at 12
		type row struct {
			seq      int // -1: padding
			pos, cap int32
		}
		rowsList := []row{{0, 0, 40}, {1, 8, 9}, {0, 39, 40}, {-1, 0, 0}, {1, 9, 9}, {0, -1, 40}, {0, 12, 40}}
		n := len(rowsList)
		blocks := []hip.DevicePtr{}
		for _, cp := range caps {
			blocks = append(blocks, e.poisoned(int(KVBlockBytes(layers, int(cp), kvDim)/4)))
		}
		meta := make([]byte, RowMetaBytes(n))
		for r, rw := range rowsList {
			var base hip.DevicePtr
			if rw.cap > 0 {
				base = blocks[rw.seq]
			}
			PutRowMeta(meta, n, r, rw.pos, rw.cap, base)
		}
		qv, kv, vv := e.randVec(n*nHead*c.headDim), e.randVec(n*kvDim), e.randVec(n*kvDim)
		var ffd hip.DevicePtr
		if c.r.FreqFactors != nil {
			ffd = e.uploadF32(c.r.FreqFactors)
		}
		qd, kd := e.uploadF32(qv), e.uploadF32(kv)
		e.check(e.k.RopeKVStore(e.s, &c.r, ffd, qd, kd, e.uploadF32(vv), e.upload(meta), n, layer, nHead, nKVHead, c.headDim))

		qRef := slices.Clone(qv)
		var want [][]uint32
		for _, cp := range caps {
			w := make([]uint32, KVBlockBytes(layers, int(cp), kvDim)/4)
			for j := range w {
				w[j] = 0x7fc00000
			}
			want = append(want, w)
		}
		for r, rw := range rowsList {
			qs := nHead * c.headDim
			c.r.Apply(qRef[r*qs:(r+1)*qs], nHead, c.headDim, int(rw.pos))
			if rw.cap == 0 || rw.pos < 0 || rw.pos >= rw.cap {
				continue
			}
			k := slices.Clone(kv[r*kvDim : (r+1)*kvDim])
			c.r.Apply(k, nKVHead, c.headDim, int(rw.pos))
			k0 := layer*2*int(rw.cap)*kvDim + int(rw.pos)*kvDim
			for j := range kvDim {
				want[rw.seq][k0+j] = math.Float32bits(k[j])
				want[rw.seq][k0+int(rw.cap)*kvDim+j] = math.Float32bits(vv[r*kvDim+j])
			}
		}
		if got := e.download(qd, len(qv)); !sameBits(got, qRef) {
			t.Errorf("%s: queries differ from kernels.Rope.Apply (relative error %.3g)", c.name, relErr(got, qRef))
		}
		if got := e.download(kd, len(kv)); !sameBits(got, kv) {
			t.Errorf("%s: the keys' source was changed", c.name)
		}
		for s, b := range blocks {
			got := e.download(b, len(want[s]))
			bad := 0
			for j := range got {
				if math.Float32bits(got[j]) != want[s][j] {
					if bad == 0 {
						t.Errorf("%s: cache %d word %d: got %#x, want %#x", c.name, s, j, math.Float32bits(got[j]), want[s][j])
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%s: cache %d: %d of %d words differ", c.name, s, bad, len(got))
			}
		}
	}
}

// attentionRowRef is causal grouped-query attention of one query row (nHead
// heads) at position pos in float64: over positions 0..pos of k and v
// (position p at p·kvDim, KV head h/(nHead/nKVHead) for query head h).
func attentionRowRef(out, q, k, v []float32, pos, nHead, nKVHead, headDim int, scale float32) {
	kvDim, group := nKVHead*headDim, nHead/nKVHead
	w := make([]float64, pos+1)
	for h := range nHead {
		qh, kvOff := q[h*headDim:(h+1)*headDim], h/group*headDim
		m := math.Inf(-1)
		for p := range w {
			var dot float64
			for d, x := range qh {
				dot += float64(x) * float64(k[p*kvDim+kvOff+d])
			}
			w[p] = dot * float64(scale)
			m = max(m, w[p])
		}
		var sum float64
		for p := range w {
			w[p] = math.Exp(w[p] - m)
			sum += w[p]
		}
		for d := range headDim {
			var a float64
			for p, wp := range w {
				a += wp * float64(v[p*kvDim+kvOff+d])
			}
			out[h*headDim+d] = float32(a / sum)
		}
	}
}

func TestEmulatedAttention(t *testing.T) {
	e := emulatedEnv(t, 106)
	cases := []struct{ nQ, pos0, nHead, nKVHead, headDim int }{
		{1, 0, 4, 4, 64},     // first token
		{1, 999, 8, 2, 64},   // decode, GQA, 16 splits
		{17, 0, 8, 2, 64},    // prefill from empty
		{9, 300, 4, 1, 128},  // prefill after a prefix (MQA)
		{40, 30, 2, 1, 64},   // two splits, the second empty for the first rows
		{3, 37, 6, 3, 80},    // head size not a multiple of the warp
		{2, 5, 2, 2, 256},    // largest head size
		{64, 64, 4, 2, 32},   // a prompt chunk
		{1, 4100, 2, 1, 128}, // long context
	}
	for _, c := range cases {
		nCtx := c.pos0 + c.nQ
		kvDim, qs := c.nKVHead*c.headDim, c.nHead*c.headDim
		q, kc, vc := e.randVec(c.nQ*qs), e.randVec(nCtx*kvDim), e.randVec(nCtx*kvDim)
		scale := float32(1 / math.Sqrt(float64(c.headDim)))
		ref := make([]float32, len(q))
		for i := range c.nQ {
			attentionRowRef(ref[i*qs:(i+1)*qs], q[i*qs:(i+1)*qs], kc, vc, c.pos0+i, c.nHead, c.nKVHead, c.headDim, scale)
		}
		out := e.poisoned(len(q))
		scratch := e.poisoned(int(AttentionScratchBytes(c.nQ, c.nHead, c.headDim, nCtx) / 4))
		e.check(e.k.Attention(e.s, out, e.uploadF32(q), e.uploadF32(kc), e.uploadF32(vc), scratch,
			c.nQ, c.pos0, c.nHead, c.nKVHead, c.headDim, scale))
		e.expect(fmt.Sprintf("attention/q%d_pos%d_h%d_kv%d_d%d_splits%d", c.nQ, c.pos0, c.nHead, c.nKVHead, c.headDim,
			AttentionSplits(c.nQ, c.nHead, nCtx)), e.download(out, len(q)), ref)
	}
}

// markPadding rewrites b's metadata so that its padding rows take the
// three forms the kernels must skip: no KV block (as setupRows writes),
// and a real block with the position at its capacity or negative.
func (e *env) markPadding(b *rowsBatch) {
	e.t.Helper()
	meta := make([]byte, RowMetaBytes(b.n))
	pad := 0
	for r, s := range b.seq {
		if s >= 0 {
			PutRowMeta(meta, b.n, r, int32(b.pos[r]), int32(b.c.seqs[s].cap), b.pool.Add(b.base[s]))
			continue
		}
		capacity := int32(b.c.seqs[0].cap)
		switch pad % 3 {
		case 0:
			PutRowMeta(meta, b.n, r, 0, 0, 0)
		case 1:
			PutRowMeta(meta, b.n, r, capacity, capacity, b.pool.Add(b.base[0]))
		case 2:
			PutRowMeta(meta, b.n, r, -1, capacity, b.pool.Add(b.base[0]))
		}
		pad++
	}
	e.check(e.s.MemcpyHtoDAsync(b.meta, meta))
	e.sync()
}

// TestEmulatedAttentionRows runs KVStore (the whole pool checked bit for
// bit), AttentionRows with several piece counts over NaN-poisoned scratch,
// and AttentionRowsPrefill, on batches of many sequences with padding rows,
// against attentionRowRef per row.
func TestEmulatedAttentionRows(t *testing.T) {
	e := emulatedEnv(t, 107)
	cases := []rowsCase{
		{name: "n1_decode", nHead: 8, nKVHead: 2, headDim: 64, layers: 2, layer: 1,
			seqs: []rowsSeq{{300, 1, 512}}},
		{name: "n3_decode_gqa7", nHead: 14, nKVHead: 2, headDim: 64, layers: 1, layer: 0,
			seqs: []rowsSeq{{0, 1, 16}, {37, 1, 40}, {5, 1, 6}}},
		{name: "n20_chunks_pad", nHead: 8, nKVHead: 8, headDim: 128, layers: 3, layer: 2,
			seqs: []rowsSeq{{0, 12, 64}, {200, 1, 256}, {63, 1, 64}, {3, 2, 100}}, pad: 3},
		{name: "n16_decode", nHead: 4, nKVHead: 2, headDim: 64, layers: 2, layer: 1,
			seqs: e.decodeSeqs(16, 300), pad: 2},
		{name: "n64_two_chunks_shuffled", nHead: 14, nKVHead: 2, headDim: 64, layers: 1, layer: 0,
			seqs: []rowsSeq{{0, 40, 40}, {17, 23, 50}, {80, 1, 81}}, shuffle: true},
		{name: "n11_mqa_d256", nHead: 4, nKVHead: 1, headDim: 256, layers: 2, layer: 1,
			seqs: []rowsSeq{{5, 9, 20}, {0, 1, 1}}, pad: 1, shuffle: true},
		{name: "n6_d80", nHead: 6, nKVHead: 3, headDim: 80, layers: 1, layer: 0,
			seqs: []rowsSeq{{10, 3, 16}, {100, 1, 128}}, pad: 2},
		{name: "n40_d32_chunk", nHead: 4, nKVHead: 2, headDim: 32, layers: 1, layer: 0,
			seqs: []rowsSeq{{0, 40, 64}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			b := e.setupRows(c)
			e.markPadding(b)
			e.store(b)
			scale := float32(1 / math.Sqrt(float64(c.headDim)))
			qs := c.nHead * c.headDim
			q := e.randVec(b.n * qs)
			ref := make([]float32, len(q))
			for r, s := range b.seq {
				if s >= 0 {
					attentionRowRef(ref[r*qs:(r+1)*qs], q[r*qs:(r+1)*qs], b.kHost[s], b.vHost[s], b.pos[r],
						c.nHead, c.nKVHead, c.headDim, scale)
				}
			}
			check := func(what string, got []float32) {
				t.Helper()
				e.expect(what, got, ref)
				for r, s := range b.seq {
					if s < 0 && slices.ContainsFunc(got[r*qs:(r+1)*qs], func(x float32) bool { return x != 0 }) {
						t.Errorf("%s: padding row %d is not zeros", what, r)
					}
				}
			}
			qd := e.uploadF32(q)
			maxCap := 0
			for _, s := range c.seqs {
				maxCap = max(maxCap, s.cap)
			}
			for _, nSplit := range []int{AttentionRowsSplits(c.nHead, maxCap), 1, 7, 256} {
				out := e.poisoned(len(q))
				scratch := e.rowsScratch(b.n, c.nHead, c.headDim, nSplit)
				e.check(e.k.AttentionRows(e.s, out, qd, b.meta, scratch, b.n, c.layer, c.nHead, c.nKVHead, c.headDim, scale, nSplit))
				check(fmt.Sprintf("attention/rows/%s/splits%d", c.name, nSplit), e.download(out, len(q)))
			}
			out := e.poisoned(len(q))
			e.check(e.k.AttentionRowsPrefill(e.s, out, qd, b.meta, b.n, c.layer, c.nHead, c.nKVHead, c.headDim, scale))
			check("attention/prefill/"+c.name, e.download(out, len(q)))
		})
	}
}

// TestEmulatedAttentionRowsRepeat: the merged AttentionRows' emulation on
// one scratch again and again, in a graph too (checkAttentionRowsRepeat).
func TestEmulatedAttentionRowsRepeat(t *testing.T) {
	emulatedEnv(t, 111).checkAttentionRowsRepeat(t)
}

// TestEmulatedAttentionRowsCounters checks that the emulation, as the GPU
// kernel needs, fails a launch on scratch whose arrival counters are not
// zero (scratch not cleared before its first use).
func TestEmulatedAttentionRowsCounters(t *testing.T) {
	e := emulatedEnv(t, 112)
	c := rowsCase{name: "n2", nHead: 4, nKVHead: 2, headDim: 64, layers: 1, seqs: []rowsSeq{{3, 1, 8}, {20, 1, 32}}}
	b := e.setupRows(c)
	e.store(b)
	q := e.uploadF32(e.randVec(b.n * c.nHead * c.headDim))
	scratch := e.poisoned(int(AttentionRowsScratchBytes(b.n, c.nHead, c.headDim, 4) / 4))
	// the merged launch (the one that counts arrivals)
	e.check(e.k.attentionRows("AttentionRows", e.s, e.alloc(int64(b.n*c.nHead*c.headDim)*4), 0, q, b.meta, scratch, b.n, 0, c.nHead, c.nKVHead, c.headDim, 1, 4, false))
	if err := e.s.Synchronize(context.Background()); !errors.Is(err, hip.ErrLaunchFailure) || !strings.Contains(err.Error(), "arrival counter") {
		t.Errorf("merged AttentionRows on NaN-filled scratch: Synchronize: %v, want ErrLaunchFailure for an arrival counter", err)
	}
}

// q8Ref is x as quantize_act_q8 writes it: the int8 values of ggml's Q8_0
// (gguf.Quantize), then each block's scale amax/127 in float32.
func q8Ref(t *testing.T, x []float32) []byte {
	t.Helper()
	q8, err := gguf.Quantize(gguf.TypeQ8_0, nil, x)
	if err != nil {
		t.Fatal(err)
	}
	n := len(x)
	out := make([]byte, ActQ8Bytes(n))
	for b := range n / 32 {
		copy(out[32*b:32*b+32], q8[34*b+2:34*b+34]) // after the block's fp16 scale
		var amax float32
		for _, v := range x[32*b : 32*b+32] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		binary.LittleEndian.PutUint32(out[n+4*b:], math.Float32bits(amax/127))
	}
	return out
}

// checkQ8 compares the int8 activations at xq with q8Ref of x and, when
// the matrix half's quantize_act_q8 is registered, with what it makes of x.
func (e *env) checkQ8(t *testing.T, what string, xq hip.DevicePtr, x []float32) {
	t.Helper()
	got := e.downloadBytes(xq, int(ActQ8Bytes(len(x))))
	if want := q8Ref(t, x); !slices.Equal(got, want) {
		t.Errorf("%s: int8 activations differ from ggml's Q8_0 values and float32 scales", what)
	}
	if e.k.fns["quantize_act_q8"] == nil {
		return
	}
	other := e.alloc(ActQ8Bytes(len(x)))
	e.check(e.k.QuantizeActQ8(e.s, e.uploadF32(x), other, len(x)))
	if !slices.Equal(got, e.downloadBytes(other, len(got))) {
		t.Errorf("%s: int8 activations differ from QuantizeActQ8's", what)
	}
}

// TestEmulatedFused checks AddRMSNormQ8 and SwiGLUQ8 against float64
// references and, bit for bit, against the kernels they fuse.
func TestEmulatedFused(t *testing.T) {
	e := emulatedEnv(t, 108)
	for _, n := range []int{32, 96, 2048 + 32} {
		a, b, w := e.randVec(n), e.randVec(n), e.randVec(n)
		ad, bd, wd := e.uploadF32(a), e.uploadF32(b), e.uploadF32(w)
		sumRef := make([]float64, n)
		for i := range n {
			sumRef[i] = float64(a[i]) + float64(b[i])
		}
		sum, xn, xq := e.poisoned(n), e.poisoned(n), e.alloc(ActQ8Bytes(n))
		e.check(e.k.AddRMSNormQ8(e.s, sum, ad, bd, xn, xq, wd, 1, n, 1e-5))
		gotSum, gotXn := e.download(sum, n), e.download(xn, n)
		e.expect(fmt.Sprintf("add/fused/%d", n), gotSum, f64To32(sumRef))
		e.expect(fmt.Sprintf("rmsnorm/fused/%d", n), gotXn, rmsNormRef(f64To32(sumRef), w, 1, 1e-5))
		sum1, xn1 := e.poisoned(n), e.poisoned(n)
		e.check(e.k.Add(e.s, sum1, ad, bd, n))
		e.check(e.k.RMSNorm(e.s, xn1, sum1, wd, 1, n, 1e-5))
		if !sameBits(gotSum, e.download(sum1, n)) || !sameBits(gotXn, e.download(xn1, n)) {
			t.Errorf("AddRMSNormQ8 n=%d: sum or norm differs from Add then RMSNorm", n)
		}
		e.checkQ8(t, fmt.Sprintf("AddRMSNormQ8 n=%d", n), xq, gotXn)

		// No b: the norm of several rows of a, no sum, no quantisation.
		const rows = 3
		x := e.randVec(rows * n)
		xd := e.uploadF32(x)
		xn2 := e.poisoned(rows * n)
		e.check(e.k.AddRMSNormQ8(e.s, 0, xd, 0, xn2, 0, wd, rows, n, 1e-6))
		got := e.download(xn2, rows*n)
		e.expect(fmt.Sprintf("rmsnorm/fused/%dx%d", rows, n), got, rmsNormRef(x, w, rows, 1e-6))
		xn3 := e.poisoned(rows * n)
		e.check(e.k.RMSNorm(e.s, xn3, xd, wd, rows, n, 1e-6))
		if !sameBits(got, e.download(xn3, rows*n)) {
			t.Errorf("AddRMSNormQ8 of %d rows of %d without b differs from RMSNorm", rows, n)
		}
	}
	for _, n := range []int{32, 1024, 2048 + 96} {
		g, u := e.randVec(n), e.randVec(n)
		// A first block of exact values (silu(32) is 32 in float32): 127, so
		// that d = 1, and halves, which round away from zero.
		g[0], u[0] = 32, 127.0/32
		for i := 1; i < 32; i++ {
			g[i], u[i] = 32, (float32(i)-16.5)/32
		}
		gd, ud := e.uploadF32(g), e.uploadF32(u)
		ref := make([]float64, n)
		for i := range n {
			x := float64(g[i])
			ref[i] = x / (1 + math.Exp(-x)) * float64(u[i])
		}
		out, xq := e.poisoned(n), e.alloc(ActQ8Bytes(n))
		e.check(e.k.SwiGLUQ8(e.s, out, gd, ud, xq, n))
		got := e.download(out, n)
		e.expect(fmt.Sprintf("swiglu/fused/%d", n), got, f64To32(ref))
		out1 := e.poisoned(n)
		e.check(e.k.SwiGLU(e.s, out1, gd, ud, n))
		if !sameBits(got, e.download(out1, n)) {
			t.Errorf("SwiGLUQ8 n=%d differs from SwiGLU", n)
		}
		e.checkQ8(t, fmt.Sprintf("SwiGLUQ8 n=%d", n), xq, got)
	}
	// NaN and infinite activations quantise as QuantizeActQ8 has them: amax
	// ignores NaN, a value that rounds to NaN becomes 0.
	if e.k.fns["quantize_act_q8"] == nil {
		t.Log("no quantize_act_q8 registered: NaN and Inf quantisation not compared")
		return
	}
	const n = 96
	g, u := e.randVec(n), e.randVec(n)
	g[3], g[40], u[41], u[70] = float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())
	out, xq, other := e.poisoned(n), e.alloc(ActQ8Bytes(n)), e.alloc(ActQ8Bytes(n))
	e.check(e.k.SwiGLUQ8(e.s, out, e.uploadF32(g), e.uploadF32(u), xq, n))
	e.check(e.k.QuantizeActQ8(e.s, out, other, n))
	if got, want := e.downloadBytes(xq, int(ActQ8Bytes(n))), e.downloadBytes(other, int(ActQ8Bytes(n))); !slices.Equal(got, want) {
		t.Errorf("SwiGLUQ8 with NaN and Inf: int8 activations %v differ from QuantizeActQ8's %v", got, want)
	}
}

// TestEmulatedAttentionRowsQ8 checks AttentionRowsQ8's emulation bit for
// bit against AttentionRows then QuantizeActQ8's, and its int8 output
// against ggml's Q8_0 rule (q8Ref).
func TestEmulatedAttentionRowsQ8(t *testing.T) {
	e := emulatedEnv(t, 110)
	outs, xqs := e.checkAttentionRowsQ8(t)
	for i, out := range outs {
		if want := q8Ref(t, out); !slices.Equal(xqs[i], want) {
			t.Errorf("%s: int8 output differs from ggml's Q8_0 values and float32 scales", fusedAttnCases[i].name)
		}
	}
}

// TestEmulatedLaunchFaults checks that a launch reading memory outside any
// allocation fails the stream with ErrLaunchFailure, as a GPU fault would,
// instead of panicking or writing elsewhere.
func TestEmulatedLaunchFaults(t *testing.T) {
	e := emulatedEnv(t, 109)
	const n, nHead, headDim = 2, 2, 64
	kvDim := nHead * headDim
	bad := make([]byte, RowMetaBytes(n))
	PutRowMeta(bad, n, 0, 0, 4, e.alloc(KVBlockBytes(1, 4, kvDim)))
	PutRowMeta(bad, n, 1, 3, 4, 0x7fff_0000_0000) // no such allocation
	meta := e.upload(bad)
	x := e.uploadF32(e.randVec(n * kvDim))
	out := e.poisoned(n * kvDim)
	scratch := e.rowsScratch(n, nHead, headDim, 1)
	e.sync() // the poisoning, before other streams touch out
	cases := []struct {
		name   string
		launch func(s hip.Stream) error
	}{
		{"KVStore", func(s hip.Stream) error { return e.k.KVStore(s, meta, x, x, n, 0, kvDim) }},
		{"AttentionRows", func(s hip.Stream) error {
			return e.k.AttentionRows(s, out, x, meta, scratch, n, 0, nHead, nHead, headDim, 1, 1)
		}},
		{"AttentionRowsPrefill", func(s hip.Stream) error {
			return e.k.AttentionRowsPrefill(s, out, x, meta, n, 0, nHead, nHead, headDim, 1)
		}},
		{"Add past its buffer", func(s hip.Stream) error { return e.k.Add(s, out, x, x, n*kvDim+1) }},
	}
	for _, c := range cases {
		s, err := e.dev.StreamCreate()
		e.check(err)
		e.check(c.launch(s))
		if err := s.Synchronize(context.Background()); !errors.Is(err, hip.ErrLaunchFailure) {
			t.Errorf("%s: Synchronize: %v, want ErrLaunchFailure", c.name, err)
		}
		_ = s.Destroy()
	}
}
