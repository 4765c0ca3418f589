package gpu

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/kernels"
)

// Tests of AttentionRowsRope: bit for bit what RopeKVStore then
// AttentionRows (AttentionRowsQ8 with xq) give on the same inputs — the
// output, its int8 form and every word of the KV caches — with q left
// unrotated, and, to within the tolerances, what the host's rope and
// attention give.

// ropeAttnShape is a model's head layout: group sizes 1, 4 and 7 (7 query
// heads per KV head take two blocks of attn_rows_piece, of which only the
// first writes the cache) at 64 and 128 dims, and the other two kernel
// variants: 256 dims, and 80 (less than its variant's 128; no int8 output).
type ropeAttnShape struct{ nHead, nKVHead, headDim int }

var ropeAttnShapes = []ropeAttnShape{
	{4, 4, 64}, {16, 4, 64}, {14, 2, 64},
	{4, 4, 128}, {16, 4, 128}, {14, 2, 128},
	{8, 2, 256}, {6, 3, 80},
}

// ropeAttnRopes are the rotations, for a head of headDim: normal and NeoX
// pairs over the whole head, with and without frequency factors, and one
// over fewer dims than the head with YaRN's ramp.
func ropeAttnRopes(headDim int) []struct {
	name string
	r    kernels.Rope
} {
	ff := freqFactors(headDim / 2)
	return []struct {
		name string
		r    kernels.Rope
	}{
		{"normal", kernels.Rope{Dims: headDim, Base: 500000}},
		{"neox", kernels.Rope{Dims: headDim, Base: 10000, Mode: kernels.RopeNeoX}},
		{"normal_ff", kernels.Rope{Dims: headDim, Base: 500000, FreqFactors: ff}},
		{"neox_ff", kernels.Rope{Dims: headDim, Base: 1e6, Mode: kernels.RopeNeoX, FreqFactors: ff}},
		{"partial_neox_yarn", kernels.Rope{Dims: 40, Base: 1e6, Mode: kernels.RopeNeoX, FreqScale: 0.5, ExtFactor: 0.5,
			BetaFast: 32, BetaSlow: 1, OrigCtx: 2048}},
	}
}

// ropeAttnCap is every sequence's capacity; ropeAttnLayers its layers, of
// which the tests take the last.
const (
	ropeAttnCap    = 208
	ropeAttnLayers = 2
)

// ropeAttnMaxSplit is the most pieces a batch takes.
const ropeAttnMaxSplit = 4

// ropeAttnBatch is one batch: a row per sequence at each position (-1: a
// padding row), cut into nSplit pieces (0: AttentionRowsSplits(nHead,
// ropeAttnCap), 4 pieces of 64 positions).
type ropeAttnBatch struct {
	name   string
	pos    []int
	nSplit int
}

var ropeAttnBatches = []ropeAttnBatch{
	{"n1_pos0", []int{0}, 0},
	{"n1_pos1", []int{1}, 0},
	{"n1_piece_first", []int{64}, 0}, // piece 1 holds the row's position alone
	{"n1_piece_last", []int{127}, 0}, // the row's position ends piece 1
	{"n1_ragged", []int{200}, 0},
	{"n1_ragged_3", []int{200}, 3}, // pieces of 67 positions
	{"n3", []int{0, 64, 200}, 0},
	{"n3_ragged_3", []int{1, 127, 100}, 3},
	{"n4_pad", []int{127, -1, 1, 100}, 0},
}

// ropeAttnBench is one head layout's buffers, shared by its runs: a pool
// of one KV block per row of the largest batch, and room for the inputs,
// outputs and scratch of any batch.
type ropeAttnBench struct {
	sh                        ropeAttnShape
	kvDim, rows, qs           int
	pool                      hip.DevicePtr
	poolLen                   int // float32
	q, k, v, out, xq, scratch hip.DevicePtr
}

func (e *env) ropeAttnBench(sh ropeAttnShape) *ropeAttnBench {
	e.t.Helper()
	b := &ropeAttnBench{sh: sh, kvDim: sh.nKVHead * sh.headDim, qs: sh.nHead * sh.headDim}
	for _, bt := range ropeAttnBatches {
		b.rows = max(b.rows, len(bt.pos))
	}
	b.poolLen = b.rows * int(KVBlockBytes(ropeAttnLayers, ropeAttnCap, b.kvDim)/4)
	b.pool = e.alloc(int64(b.poolLen) * 4)
	b.q, b.out = e.alloc(int64(b.rows*b.qs)*4), e.alloc(int64(b.rows*b.qs)*4)
	b.k, b.v = e.alloc(int64(b.rows*b.kvDim)*4), e.alloc(int64(b.rows*b.kvDim)*4)
	b.xq = e.alloc(ActQ8Bytes(b.rows * b.qs))
	b.scratch = e.alloc(AttentionRowsScratchBytes(b.rows, sh.nHead, sh.headDim, ropeAttnMaxSplit))
	return b
}

// ropeAttnInputs are one run's inputs on the host: the pool's contents
// (each live row's layer holding random K and V rows before its position,
// NaN everywhere else), the metadata, q and the new rows' k and v.
type ropeAttnInputs struct {
	pool    []float32
	meta    []byte
	q, k, v []float32
	nSplit  int
}

func (e *env) ropeAttnInputs(b *ropeAttnBench, bt ropeAttnBatch) ropeAttnInputs {
	n := len(bt.pos)
	in := ropeAttnInputs{pool: make([]float32, b.poolLen), meta: make([]byte, RowMetaBytes(n)),
		q: e.randVec(n * b.qs), k: e.randVec(n * b.kvDim), v: e.randVec(n * b.kvDim), nSplit: bt.nSplit}
	if in.nSplit == 0 {
		in.nSplit = AttentionRowsSplits(b.sh.nHead, ropeAttnCap)
	}
	nan := float32(math.NaN())
	for i := range in.pool {
		in.pool[i] = nan
	}
	block := int(KVBlockBytes(ropeAttnLayers, ropeAttnCap, b.kvDim) / 4)
	for r, p := range bt.pos {
		if p < 0 {
			PutRowMeta(in.meta, n, r, 0, 0, 0)
			continue
		}
		PutRowMeta(in.meta, n, r, int32(p), ropeAttnCap, b.pool.Add(int64(r*block)*4))
		k0 := r*block + (ropeAttnLayers-1)*2*ropeAttnCap*b.kvDim
		copy(in.pool[k0:], e.randVec(p*b.kvDim))
		copy(in.pool[k0+ropeAttnCap*b.kvDim:], e.randVec(p*b.kvDim))
	}
	return in
}

// ropeAttnResult is what a run leaves: the output, its int8 form (nil
// without xq), the pool and q.
type ropeAttnResult struct {
	out     []float32
	xq      []byte
	pool, q []float32
}

// poisonRopeAttn loads a run's inputs and poisons its outputs: NaN output
// and scratch (but for the arrival counters, zero), int8 output 0x55.
func (e *env) poisonRopeAttn(b *ropeAttnBench, in ropeAttnInputs, meta hip.DevicePtr) {
	e.t.Helper()
	n := len(in.q) / b.qs
	e.check(e.s.MemcpyHtoDAsync(b.pool, f32Bytes(in.pool)))
	e.check(e.s.MemcpyHtoDAsync(b.q, f32Bytes(in.q)))
	e.check(e.s.MemcpyHtoDAsync(b.k, f32Bytes(in.k)))
	e.check(e.s.MemcpyHtoDAsync(b.v, f32Bytes(in.v)))
	e.check(e.s.MemcpyHtoDAsync(meta, in.meta))
	e.check(e.s.MemsetD32Async(b.out, 0x7fc00000, int64(n*b.qs)))
	e.check(e.s.MemsetD8Async(b.xq, 0x55, ActQ8Bytes(n*b.qs)))
	words := rowsScratchWords(b.sh.nHead, b.sh.headDim, in.nSplit)
	e.check(e.s.MemsetD32Async(b.scratch, 0x7fc00000, int64(n)*words))
	for r := range n {
		e.check(e.s.MemsetD32Async(b.scratch.Add(int64(r)*words*4), 0, int64(b.sh.nHead)))
	}
	e.sync() // the host buffers above may be reused
}

// ropeAttnGet downloads a run's results.
func (e *env) ropeAttnGet(b *ropeAttnBench, n int, q8 bool) ropeAttnResult {
	res := ropeAttnResult{out: e.download(b.out, n*b.qs), pool: e.download(b.pool, b.poolLen), q: e.download(b.q, n*b.qs)}
	if q8 {
		res.xq = e.downloadBytes(b.xq, int(ActQ8Bytes(n*b.qs)))
	}
	return res
}

// ropeAttnRef is the host's answer for a run: q and each live row's new
// key rotated by kernels.Rope.Apply, the value copied, and kernels.Attention
// over positions 0..pos; zeros for padding rows. It returns the output
// and, per row, the rotated key (nil for padding).
func ropeAttnRef(b *ropeAttnBench, bt ropeAttnBatch, in ropeAttnInputs, r *kernels.Rope, scale float32) (out []float32, keys [][]float32) {
	sh, n := b.sh, len(bt.pos)
	out = make([]float32, n*b.qs)
	block := int(KVBlockBytes(ropeAttnLayers, ropeAttnCap, b.kvDim) / 4)
	for row, p := range bt.pos {
		if p < 0 {
			keys = append(keys, nil)
			continue
		}
		q := slices.Clone(in.q[row*b.qs : (row+1)*b.qs])
		r.Apply(q, sh.nHead, sh.headDim, p)
		k0 := row*block + (ropeAttnLayers-1)*2*ropeAttnCap*b.kvDim
		kc := slices.Clone(in.pool[k0 : k0+(p+1)*b.kvDim])
		vc := slices.Clone(in.pool[k0+ropeAttnCap*b.kvDim : k0+(ropeAttnCap+p+1)*b.kvDim])
		key := kc[p*b.kvDim:]
		copy(key, in.k[row*b.kvDim:(row+1)*b.kvDim])
		r.Apply(key, sh.nKVHead, sh.headDim, p)
		copy(vc[p*b.kvDim:], in.v[row*b.kvDim:(row+1)*b.kvDim])
		kernels.Attention(out[row*b.qs:(row+1)*b.qs], q, kc, vc, 1, p, sh.nHead, sh.nKVHead, sh.headDim, scale)
		keys = append(keys, key)
	}
	return out, keys
}

// checkAttentionRowsRope runs every shape, rotation and batch, with and
// without xq in turn (where the head size allows it), through RopeKVStore then AttentionRows(Q8) and
// through AttentionRowsRope on the same inputs and compares them bit for
// bit; the fused run's output and stored keys are also checked against
// the host (ropeAttnRef), its values exactly.
func (e *env) checkAttentionRowsRope(t *testing.T) {
	e.t = t
	for _, sh := range ropeAttnShapes {
		b := e.ropeAttnBench(sh)
		meta := e.alloc(RowMetaBytes(b.rows))
		scale := float32(1 / math.Sqrt(float64(sh.headDim)))
		for ri, rc := range ropeAttnRopes(sh.headDim) {
			var ffd hip.DevicePtr
			if rc.r.FreqFactors != nil {
				ffd = e.uploadF32(rc.r.FreqFactors)
			}
			for bi, bt := range ropeAttnBatches {
				q8 := (ri+bi)%2 == 0 && sh.headDim%32 == 0
				what := fmt.Sprintf("%dh%dkv%d/%s/%s", sh.nHead, sh.nKVHead, sh.headDim, rc.name, bt.name)
				if q8 {
					what += "/q8"
				}
				n := len(bt.pos)
				in := e.ropeAttnInputs(b, bt)
				xq := hip.DevicePtr(0)
				if q8 {
					xq = b.xq
				}
				// RopeKVStore then AttentionRows(Q8).
				e.poisonRopeAttn(b, in, meta)
				e.check(e.k.RopeKVStore(e.s, &rc.r, ffd, b.q, b.k, b.v, meta, n, ropeAttnLayers-1, sh.nHead, sh.nKVHead, sh.headDim))
				if q8 {
					e.check(e.k.AttentionRowsQ8(e.s, b.out, xq, b.q, meta, b.scratch, n, ropeAttnLayers-1, sh.nHead, sh.nKVHead, sh.headDim, scale, in.nSplit))
				} else {
					e.check(e.k.AttentionRows(e.s, b.out, b.q, meta, b.scratch, n, ropeAttnLayers-1, sh.nHead, sh.nKVHead, sh.headDim, scale, in.nSplit))
				}
				want := e.ropeAttnGet(b, n, q8)
				// AttentionRowsRope.
				e.poisonRopeAttn(b, in, meta)
				e.check(e.k.AttentionRowsRope(e.s, &rc.r, ffd, b.out, xq, b.q, b.k, b.v, meta, b.scratch,
					n, ropeAttnLayers-1, sh.nHead, sh.nKVHead, sh.headDim, scale, in.nSplit))
				got := e.ropeAttnGet(b, n, q8)
				e.compareRopeAttn(what, got, want, in)

				ref, keys := ropeAttnRef(b, bt, in, &rc.r, scale)
				e.expect("attention/rope/"+what, got.out, ref)
				block := int(KVBlockBytes(ropeAttnLayers, ropeAttnCap, b.kvDim) / 4)
				for row, p := range bt.pos {
					if p < 0 {
						continue
					}
					at := row*block + (ropeAttnLayers-1)*2*ropeAttnCap*b.kvDim + p*b.kvDim
					e.expect(fmt.Sprintf("rope/key/%s/row%d", what, row), got.pool[at:at+b.kvDim], keys[row])
					if v := got.pool[at+ropeAttnCap*b.kvDim:][:b.kvDim]; !sameBits(v, in.v[row*b.kvDim:(row+1)*b.kvDim]) {
						t.Errorf("%s: row %d's value in the cache differs from v", what, row)
					}
				}
			}
		}
	}
}

// compareRopeAttn fails the test unless the fused run got what the
// unfused one did: the same output, int8 output and pool bits, and q as
// it was given.
func (e *env) compareRopeAttn(what string, got, want ropeAttnResult, in ropeAttnInputs) {
	e.t.Helper()
	if !sameBits(got.out, want.out) {
		e.t.Errorf("%s: output differs from RopeKVStore then AttentionRows (relative error %.3g)", what, relErr(got.out, want.out))
	}
	if !slices.Equal(got.xq, want.xq) {
		e.t.Errorf("%s: int8 output differs from RopeKVStore then AttentionRowsQ8", what)
	}
	bad, first := 0, -1
	for i := range got.pool {
		if math.Float32bits(got.pool[i]) != math.Float32bits(want.pool[i]) {
			if bad == 0 {
				first = i
			}
			bad++
		}
	}
	if bad > 0 {
		e.t.Errorf("%s: %d of %d cache words differ from RopeKVStore's (first %d: got %#x, want %#x)", what, bad, len(got.pool),
			first, math.Float32bits(got.pool[first]), math.Float32bits(want.pool[first]))
	}
	if !sameBits(got.q, in.q) {
		e.t.Errorf("%s: q was changed", what)
	}
}

func TestAttentionRowsRope(t *testing.T) {
	newEnv(t, 27).checkAttentionRowsRope(t)
}

func TestEmulatedAttentionRowsRope(t *testing.T) {
	emulatedEnv(t, 113).checkAttentionRowsRope(t)
}

// checkAttentionRowsRopeGraph captures two AttentionRowsRope calls (as
// two steps of a layer make, on one scratch, into two outputs) into a
// graph and replays it twice in a row: each replay must give RopeKVStore
// then AttentionRowsQ8's output, int8 output and caches bit for bit (the
// keys and values are stored again, the same).
func (e *env) checkAttentionRowsRopeGraph(t *testing.T) {
	e.t = t
	for _, sh := range []ropeAttnShape{{14, 2, 64}, {32, 8, 128}} {
		b := e.ropeAttnBench(sh)
		meta := e.alloc(RowMetaBytes(b.rows))
		scale := float32(1 / math.Sqrt(float64(sh.headDim)))
		r := ropeAttnRopes(sh.headDim)[1]
		bt := ropeAttnBatches[len(ropeAttnBatches)-1] // rows with padding
		n := len(bt.pos)
		in := e.ropeAttnInputs(b, bt)
		layer := ropeAttnLayers - 1

		e.poisonRopeAttn(b, in, meta)
		e.check(e.k.RopeKVStore(e.s, &r.r, 0, b.q, b.k, b.v, meta, n, layer, sh.nHead, sh.nKVHead, sh.headDim))
		e.check(e.k.AttentionRowsQ8(e.s, b.out, b.xq, b.q, meta, b.scratch, n, layer, sh.nHead, sh.nKVHead, sh.headDim, scale, in.nSplit))
		want := e.ropeAttnGet(b, n, true)

		out2, xq2 := e.alloc(int64(n*b.qs)*4), e.alloc(ActQ8Bytes(n*b.qs))
		e.poisonRopeAttn(b, in, meta)
		e.check(e.s.BeginCapture())
		err1 := e.k.AttentionRowsRope(e.s, &r.r, 0, b.out, b.xq, b.q, b.k, b.v, meta, b.scratch, n, layer, sh.nHead, sh.nKVHead, sh.headDim, scale, in.nSplit)
		err2 := e.k.AttentionRowsRope(e.s, &r.r, 0, out2, xq2, b.q, b.k, b.v, meta, b.scratch, n, layer, sh.nHead, sh.nKVHead, sh.headDim, scale, in.nSplit)
		g, err := e.s.EndCapture()
		e.check(errors.Join(err1, err2, err))
		for i := range 2 {
			for _, o := range [][2]hip.DevicePtr{{b.out, b.xq}, {out2, xq2}} {
				e.check(e.s.MemsetD32Async(o[0], 0x7fc00000, int64(n*b.qs)))
				e.check(e.s.MemsetD8Async(o[1], 0x55, ActQ8Bytes(n*b.qs)))
			}
			e.check(g.Launch(e.s))
			what := fmt.Sprintf("%dh%dkv%d/graph%d", sh.nHead, sh.nKVHead, sh.headDim, i)
			e.compareRopeAttn(what+"_a", e.ropeAttnGet(b, n, true), want, in)
			got2 := ropeAttnResult{out: e.download(out2, n*b.qs), xq: e.downloadBytes(xq2, int(ActQ8Bytes(n*b.qs))),
				pool: e.download(b.pool, b.poolLen), q: e.download(b.q, n*b.qs)}
			e.compareRopeAttn(what+"_b", got2, want, in)
		}
		e.check(g.Destroy())
	}
}

func TestAttentionRowsRopeGraph(t *testing.T) {
	newEnv(t, 28).checkAttentionRowsRopeGraph(t)
}

func TestEmulatedAttentionRowsRopeGraph(t *testing.T) {
	emulatedEnv(t, 114).checkAttentionRowsRopeGraph(t)
}

func TestAttentionRowsRopeBadArguments(t *testing.T) {
	// Argument checks need no device: they fail before any launch.
	k := &Kernels{fns: map[string]hip.Function{}}
	var s hip.Stream
	r := &kernels.Rope{Dims: 64, Base: 10000}
	rf := &kernels.Rope{Dims: 64, Base: 10000, FreqFactors: freqFactors(32)}
	cases := []struct {
		name string
		err  error
	}{
		{"freq factors on the host only", k.AttentionRowsRope(s, rf, 0, 16, 0, 16, 0, 0, 8, 16, 1, 0, 4, 4, 64, 1, 1)},
		{"freq factors on the device only", k.AttentionRowsRope(s, r, 64, 16, 0, 16, 0, 0, 8, 16, 1, 0, 4, 4, 64, 1, 1)},
		{"misaligned xq", k.AttentionRowsRope(s, r, 0, 16, 2, 16, 0, 0, 8, 16, 1, 0, 4, 4, 64, 1, 1)},
		{"xq of heads of 80", k.AttentionRowsRope(s, r, 0, 16, 16, 16, 0, 0, 8, 16, 1, 0, 4, 4, 80, 1, 1)},
		{"6 heads over 4", k.AttentionRowsRope(s, r, 0, 16, 0, 16, 0, 0, 8, 16, 1, 0, 6, 4, 64, 1, 1)},
		{"misaligned q", k.AttentionRowsRope(s, r, 0, 16, 0, 8, 0, 0, 8, 16, 1, 0, 4, 4, 64, 1, 1)},
		{"no output", k.AttentionRowsRope(s, r, 0, 0, 0, 16, 0, 0, 8, 16, 1, 0, 4, 4, 64, 1, 1)},
		{"0 pieces", k.AttentionRowsRope(s, r, 0, 16, 0, 16, 0, 0, 8, 16, 1, 0, 4, 4, 64, 1, 0)},
		{"no rows", k.AttentionRowsRope(s, r, 0, 16, 0, 16, 0, 0, 8, 16, 0, 0, 4, 4, 64, 1, 1)},
	}
	for _, c := range cases {
		if !errors.Is(c.err, hip.ErrInvalidValue) {
			t.Errorf("%s: %v, want ErrInvalidValue", c.name, c.err)
		}
	}
}

// BenchmarkAttentionRowsRope times one decode row's rope, K/V store and
// attention — RopeKVStore then AttentionRowsQ8 (three launches) against
// AttentionRowsRope (two) — on Llama-3.2-1B's head layout (32 query heads,
// 8 KV heads, 64 dims) and Llama-3.1-8B's (128 dims), with Llama 3's rope
// (frequency factors), at positions 511 and 2047, each launch on the next
// of 32 sequences so that their caches (up to 512 MiB) are not read from
// L2. The pieces are those of a model served at 4096 positions
// (AttentionRowsSplits(32, 4096)).
func BenchmarkAttentionRowsRope(b *testing.B) {
	e := newEnv(b, 29)
	const nHead, nKVHead, nSeq = 32, 8, 32
	nSplit := AttentionRowsSplits(nHead, 4096)
	for _, headDim := range []int{64, 128} {
		kvDim, qs := nKVHead*headDim, nHead*headDim
		scale := float32(1 / math.Sqrt(float64(headDim)))
		r := kernels.Rope{Dims: headDim, Base: 500000, FreqFactors: freqFactors(headDim / 2)}
		ffd := e.uploadF32(r.FreqFactors)
		q, k, v := e.uploadF32(e.randVec(qs)), e.uploadF32(e.randVec(kvDim)), e.uploadF32(e.randVec(kvDim))
		out, xq := e.alloc(int64(qs)*4), e.alloc(ActQ8Bytes(qs))
		scratch := e.rowsScratch(1, nHead, headDim, nSplit)
		for _, ctx := range []int{512, 2048} {
			size := KVBlockBytes(1, ctx, kvDim)
			pool, err := e.dev.Malloc(size * nSeq) // freed after its runs: the largest is 512 MiB
			e.check(err)
			e.check(e.s.MemsetD32Async(pool, math.Float32bits(1.0/64), size*nSeq/4))
			var metas []hip.DevicePtr
			for i := range nSeq {
				mb := make([]byte, RowMetaBytes(1))
				PutRowMeta(mb, 1, 0, int32(ctx-1), int32(ctx), pool.Add(size*int64(i)))
				metas = append(metas, e.upload(mb))
			}
			run := func(name string, launch func(meta hip.DevicePtr)) {
				b.Run(fmt.Sprintf("d%d_ctx%d/%s", headDim, ctx, name), func(b *testing.B) {
					launch(metas[0])
					e.sync()
					ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, func(i int) { launch(metas[i%nSeq]) })
					b.ReportMetric(ms*1e3/float64(b.N), "us/op")
					b.ReportMetric(hostUS, "host-us/op")
				})
			}
			run("RopeKVStore+AttentionRowsQ8", func(meta hip.DevicePtr) {
				e.check(e.k.RopeKVStore(e.s, &r, ffd, q, k, v, meta, 1, 0, nHead, nKVHead, headDim))
				e.check(e.k.AttentionRowsQ8(e.s, out, xq, q, meta, scratch, 1, 0, nHead, nKVHead, headDim, scale, nSplit))
			})
			run("AttentionRowsRope", func(meta hip.DevicePtr) {
				e.check(e.k.AttentionRowsRope(e.s, &r, ffd, out, xq, q, k, v, meta, scratch, 1, 0, nHead, nKVHead, headDim, scale, nSplit))
			})
			e.sync()
			e.check(e.dev.Free(pool))
		}
	}
}
