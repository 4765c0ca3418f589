package gpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/kernels"
)

// Tests and benchmarks of the batched attention over rows of many sequences
// (KVStore, AttentionRows, AttentionRowsPrefill) and its row metadata.

func TestPutRowMeta(t *testing.T) {
	const n = 3
	b := make([]byte, RowMetaBytes(n))
	if len(b) != 48 {
		t.Fatalf("RowMetaBytes(3) = %d, want 48", len(b))
	}
	PutRowMeta(b, n, 0, 7, 100, 0x1000)
	PutRowMeta(b, n, 2, -1, 5, 0xfedcba9876543210)
	want := []struct {
		off  int
		size int
		val  uint64
	}{
		{0, 4, 7}, {4, 4, 0}, {8, 4, 0xffffffff}, // pos[0..2]
		{12, 4, 100}, {16, 4, 0}, {20, 4, 5}, // cap[0..2]
		{24, 8, 0x1000}, {32, 8, 0}, {40, 8, 0xfedcba9876543210}, // base[0..2]
	}
	for _, w := range want {
		var got uint64
		if w.size == 4 {
			got = uint64(binary.LittleEndian.Uint32(b[w.off:]))
		} else {
			got = binary.LittleEndian.Uint64(b[w.off:])
		}
		if got != w.val {
			t.Errorf("byte %d: got %#x, want %#x", w.off, got, w.val)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("PutRowMeta of row 3 of 3 did not panic")
		}
	}()
	PutRowMeta(b, n, 3, 0, 0, 0)
}

func TestAttentionRowsSplits(t *testing.T) {
	cases := []struct{ nHead, maxCtx, want int }{
		{32, 2048, 32},   // 2048/64 positions per piece bounds it
		{32, 1024, 16},   //
		{32, 131072, 64}, // 64 pieces × 32 heads fill the GPU
		{14, 4096, 64},   // ceil(2048/14) = 147, bounded by 4096/64
		{1, 1 << 20, 256},
		{32, 1, 1},
	}
	for _, c := range cases {
		if got := AttentionRowsSplits(c.nHead, c.maxCtx); got != c.want {
			t.Errorf("AttentionRowsSplits(%d, %d) = %d, want %d", c.nHead, c.maxCtx, got, c.want)
		}
	}
	if got := KVBlockBytes(3, 100, 512); got != 3*2*100*512*4 {
		t.Errorf("KVBlockBytes(3, 100, 512) = %d", got)
	}
	if got := AttentionRowsScratchBytes(5, 32, 64, 7); got != 5*32*(1+7*66)*4 {
		t.Errorf("AttentionRowsScratchBytes(5, 32, 64, 7) = %d", got)
	}
}

func TestRowsBadArguments(t *testing.T) {
	// Argument checks need no device: they fail before any launch.
	k := &Kernels{fns: map[string]hip.Function{}}
	var s hip.Stream
	cases := []struct {
		name string
		err  error
	}{
		{"KVStore no rows", k.KVStore(s, 0, 0, 0, 0, 0, 512)},
		{"KVStore misaligned meta", k.KVStore(s, 4, 0, 0, 1, 0, 512)},
		{"AttentionRows 6 heads over 4", k.AttentionRows(s, 0, 0, 0, 0, 1, 0, 6, 4, 64, 1, 1)},
		{"AttentionRows head size 66", k.AttentionRows(s, 0, 0, 0, 0, 1, 0, 4, 4, 66, 1, 1)},
		{"AttentionRows head size 512", k.AttentionRows(s, 0, 0, 0, 0, 1, 0, 4, 4, 512, 1, 1)},
		{"AttentionRows 0 pieces", k.AttentionRows(s, 0, 0, 0, 0, 1, 0, 4, 4, 64, 1, 0)},
		{"AttentionRows 257 pieces", k.AttentionRows(s, 0, 0, 0, 0, 1, 0, 4, 4, 64, 1, 257)},
		{"AttentionRows negative layer", k.AttentionRows(s, 0, 0, 0, 0, 1, -1, 4, 4, 64, 1, 1)},
		{"AttentionRows misaligned q", k.AttentionRows(s, 0, 8, 0, 0, 1, 0, 4, 4, 64, 1, 1)},
		{"AttentionRowsPrefill 65536 rows", k.AttentionRowsPrefill(s, 0, 0, 0, 65536, 0, 4, 4, 64, 1)},
	}
	for _, c := range cases {
		if !errors.Is(c.err, hip.ErrInvalidValue) {
			t.Errorf("%s: %v, want ErrInvalidValue", c.name, c.err)
		}
	}
}

// rowsSeq is one sequence of a batched-attention case: prefix positions
// already in its cache, then rows new rows at positions prefix.., in a
// cache of cap positions.
type rowsSeq struct{ prefix, rows, cap int }

// rowsCase is one batch: its model shape, layer, sequences, padding rows
// and whether the rows come shuffled rather than sequence by sequence.
type rowsCase struct {
	name                    string
	nHead, nKVHead, headDim int
	layers, layer           int
	seqs                    []rowsSeq
	pad                     int
	shuffle                 bool
}

// decodeSeqs returns n sequences of one decode row each, at random
// positions below maxPrefix, with random room after them.
func (e *env) decodeSeqs(n, maxPrefix int) []rowsSeq {
	s := make([]rowsSeq, n)
	for i := range s {
		p := e.rng.IntN(maxPrefix)
		s[i] = rowsSeq{p, 1, p + 1 + e.rng.IntN(64)}
	}
	return s
}

// rowsBatch is a rowsCase set up on the device.
type rowsBatch struct {
	c       rowsCase
	n       int
	kvDim   int
	seq     []int // row → sequence, -1 for padding
	pos     []int // row → position
	pool    hip.DevicePtr
	poolLen int64
	base    []int64 // sequence → byte offset of its KV block in pool
	kHost   [][]float32
	vHost   [][]float32 // sequence → its layer's K and V rows, cap×kvDim
	meta    hip.DevicePtr
}

// setupRows allocates one pool for every sequence's KV block, fills it with
// NaN but for the prefixes of layer c.layer (random), and writes the metadata.
func (e *env) setupRows(c rowsCase) *rowsBatch {
	e.t.Helper()
	b := &rowsBatch{c: c, kvDim: c.nKVHead * c.headDim}
	for _, s := range c.seqs {
		b.base = append(b.base, b.poolLen)
		b.poolLen += KVBlockBytes(c.layers, s.cap, b.kvDim)
	}
	b.pool = e.alloc(b.poolLen)
	e.check(e.s.MemsetD32Async(b.pool, 0x7fc00000, b.poolLen/4))
	for i, s := range c.seqs {
		k, v := make([]float32, s.cap*b.kvDim), make([]float32, s.cap*b.kvDim)
		copy(k, e.randVec(s.prefix*b.kvDim))
		copy(v, e.randVec(s.prefix*b.kvDim))
		b.kHost, b.vHost = append(b.kHost, k), append(b.vHost, v)
		if s.prefix > 0 {
			kOff := b.base[i] + int64(c.layer)*2*int64(s.cap*b.kvDim)*4
			e.check(e.s.MemcpyHtoDAsync(b.pool.Add(kOff), f32Bytes(k[:s.prefix*b.kvDim])))
			e.check(e.s.MemcpyHtoDAsync(b.pool.Add(kOff+int64(s.cap*b.kvDim)*4), f32Bytes(v[:s.prefix*b.kvDim])))
		}
		for p := s.prefix; p < s.prefix+s.rows; p++ {
			b.seq, b.pos = append(b.seq, i), append(b.pos, p)
		}
	}
	for i := 0; i < c.pad; i++ { // padding rows in the middle of the batch
		at := len(b.seq) / 2
		b.seq = append(b.seq[:at], append([]int{-1}, b.seq[at:]...)...)
		b.pos = append(b.pos[:at], append([]int{0}, b.pos[at:]...)...)
	}
	if c.shuffle {
		e.rng.Shuffle(len(b.seq), func(i, j int) {
			b.seq[i], b.seq[j] = b.seq[j], b.seq[i]
			b.pos[i], b.pos[j] = b.pos[j], b.pos[i]
		})
	}
	b.n = len(b.seq)
	meta := make([]byte, RowMetaBytes(b.n))
	for r, s := range b.seq {
		if s < 0 {
			PutRowMeta(meta, b.n, r, 0, 0, 0)
			continue
		}
		PutRowMeta(meta, b.n, r, int32(b.pos[r]), int32(c.seqs[s].cap), b.pool.Add(b.base[s]))
	}
	b.meta = e.upload(meta)
	e.sync()
	return b
}

// rowsScratch allocates AttentionRows' scratch for n rows: NaN (so that
// a partial read before it is written shows) but for each row's arrival
// counters, zero as AttentionRows requires.
func (e *env) rowsScratch(n, nHead, headDim, nSplit int) hip.DevicePtr {
	e.t.Helper()
	words := rowsScratchWords(nHead, headDim, nSplit)
	p := e.poisoned(int(int64(n) * words))
	for r := range n {
		e.check(e.s.MemsetD32Async(p.Add(int64(r)*words*4), 0, int64(nHead)))
	}
	return p
}

// checkRowsCounters fails the test unless every arrival counter of the n
// rows of AttentionRows' scratch at p is zero.
func (e *env) checkRowsCounters(what string, p hip.DevicePtr, n, nHead, headDim, nSplit int) {
	e.t.Helper()
	words := int(rowsScratchWords(nHead, headDim, nSplit))
	got := e.download(p, n*words)
	for r := range n {
		for y, c := range got[r*words : r*words+nHead] {
			if math.Float32bits(c) != 0 {
				e.t.Errorf("%s: row %d's arrival counter %d is %#x, not 0", what, r, y, math.Float32bits(c))
				return
			}
		}
	}
}

// store runs KVStore with random new rows, records them in the host caches
// and checks the whole pool bit for bit: the new rows at their positions,
// the prefixes unchanged, NaN everywhere else.
func (e *env) store(b *rowsBatch) {
	e.t.Helper()
	c := b.c
	kNew, vNew := e.randVec(b.n*b.kvDim), e.randVec(b.n*b.kvDim)
	for r, s := range b.seq {
		if s >= 0 {
			copy(b.kHost[s][b.pos[r]*b.kvDim:], kNew[r*b.kvDim:(r+1)*b.kvDim])
			copy(b.vHost[s][b.pos[r]*b.kvDim:], vNew[r*b.kvDim:(r+1)*b.kvDim])
		}
	}
	e.check(e.k.KVStore(e.s, b.meta, e.uploadF32(kNew), e.uploadF32(vNew), b.n, c.layer, b.kvDim))
	got := e.download(b.pool, int(b.poolLen/4))
	want := make([]uint32, len(got))
	for i := range want {
		want[i] = 0x7fc00000
	}
	for s, sq := range c.seqs {
		filled := (sq.prefix + sq.rows) * b.kvDim
		k0 := int(b.base[s]/4) + c.layer*2*sq.cap*b.kvDim
		for i := 0; i < filled; i++ {
			want[k0+i] = math.Float32bits(b.kHost[s][i])
			want[k0+sq.cap*b.kvDim+i] = math.Float32bits(b.vHost[s][i])
		}
	}
	bad := 0
	for i := range want {
		if g := math.Float32bits(got[i]); g != want[i] {
			if bad == 0 {
				e.t.Errorf("kvstore/%s: pool word %d: got %#x, want %#x", c.name, i, g, want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		e.t.Errorf("kvstore/%s: %d of %d words differ", c.name, bad, len(want))
	}
}

// reference is kernels.Attention per row over its sequence's positions
// 0..pos, zeros for padding rows.
func (b *rowsBatch) reference(q []float32, scale float32) []float32 {
	c := b.c
	qs := c.nHead * c.headDim
	ref := make([]float32, b.n*qs)
	for r, s := range b.seq {
		if s < 0 {
			continue
		}
		ctx := (b.pos[r] + 1) * b.kvDim
		kernels.Attention(ref[r*qs:(r+1)*qs], q[r*qs:(r+1)*qs], b.kHost[s][:ctx], b.vHost[s][:ctx],
			1, b.pos[r], c.nHead, c.nKVHead, c.headDim, scale)
	}
	return ref
}

func TestAttentionRows(t *testing.T) {
	e := newEnv(t, 20)
	cases := []rowsCase{
		{name: "n1_decode", nHead: 32, nKVHead: 8, headDim: 64, layers: 2, layer: 1,
			seqs: []rowsSeq{{700, 1, 1024}}},
		{name: "n3_decode_gqa7", nHead: 14, nKVHead: 2, headDim: 64, layers: 1, layer: 0,
			seqs: []rowsSeq{{0, 1, 16}, {37, 1, 40}, {5, 1, 6}}},
		{name: "n17_chunks_pad", nHead: 8, nKVHead: 8, headDim: 128, layers: 3, layer: 2,
			seqs: []rowsSeq{{0, 12, 64}, {200, 1, 256}, {63, 1, 64}, {3, 2, 100}}, pad: 1},
		{name: "n64_decode", nHead: 32, nKVHead: 8, headDim: 64, layers: 2, layer: 1,
			seqs: e.decodeSeqs(64, 300)},
		{name: "n129_chunk_decode", nHead: 32, nKVHead: 8, headDim: 64, layers: 2, layer: 1,
			seqs: append(append(e.decodeSeqs(14, 300), rowsSeq{300, 100, 512}), e.decodeSeqs(15, 300)...)},
		{name: "n64_two_chunks_shuffled", nHead: 14, nKVHead: 2, headDim: 64, layers: 1, layer: 0,
			seqs: []rowsSeq{{0, 40, 40}, {17, 23, 50}, {80, 1, 81}}, shuffle: true},
		{name: "n10_mqa_d256", nHead: 4, nKVHead: 1, headDim: 256, layers: 2, layer: 1,
			seqs: []rowsSeq{{5, 9, 20}, {0, 1, 1}}, shuffle: true},
		{name: "n5_d80", nHead: 6, nKVHead: 3, headDim: 80, layers: 1, layer: 0,
			seqs: []rowsSeq{{10, 3, 16}, {100, 1, 128}}, pad: 1},
		{name: "n40_d32_chunk", nHead: 4, nKVHead: 2, headDim: 32, layers: 1, layer: 0,
			seqs: []rowsSeq{{0, 40, 64}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			b := e.setupRows(c)
			e.store(b)
			scale := float32(1 / math.Sqrt(float64(c.headDim)))
			q := e.randVec(b.n * c.nHead * c.headDim)
			ref := b.reference(q, scale)
			qd := e.uploadF32(q)
			maxCap := 0
			for _, s := range c.seqs {
				maxCap = max(maxCap, s.cap)
			}
			for _, nSplit := range []int{AttentionRowsSplits(c.nHead, maxCap), 1, 7} {
				out := e.poisoned(len(q))
				scratch := e.rowsScratch(b.n, c.nHead, c.headDim, nSplit)
				e.check(e.k.AttentionRows(e.s, out, qd, b.meta, scratch, b.n, c.layer, c.nHead, c.nKVHead, c.headDim, scale, nSplit))
				e.expect(fmt.Sprintf("attention/rows/%s/splits%d", c.name, nSplit), e.download(out, len(q)), ref)
			}
			out := e.poisoned(len(q))
			e.check(e.k.AttentionRowsPrefill(e.s, out, qd, b.meta, b.n, c.layer, c.nHead, c.nKVHead, c.headDim, scale))
			e.expect(fmt.Sprintf("attention/prefill/%s", c.name), e.download(out, len(q)), ref)
		})
	}
}

// checkAttentionRowsRepeat runs the merged AttentionRows (AttentionRowsQ8
// where the head size allows) again and again on one scratch, sized for
// more rows than the batch has: twice in a row, on a one-row batch, on the
// whole batch again, then captured into a graph of two launches (as two
// layers make) replayed several times. Every output must be bit for bit
// what the merge as a second launch (attn_rows_combine_f32) gives, and
// every arrival counter zero after each step.
func (e *env) checkAttentionRowsRepeat(t *testing.T) {
	cases := []rowsCase{
		{name: "n1_d64", nHead: 32, nKVHead: 8, headDim: 64, layers: 2, layer: 1, seqs: []rowsSeq{{600, 1, 1024}}},
		{name: "n6_gqa7_pad", nHead: 14, nKVHead: 2, headDim: 64, layers: 1, layer: 0,
			seqs: []rowsSeq{{130, 1, 200}, {0, 1, 16}, {37, 1, 40}, {900, 1, 1000}, {5, 1, 6}}, pad: 1},
		{name: "n3_d80", nHead: 6, nKVHead: 3, headDim: 80, layers: 2, layer: 1,
			seqs: []rowsSeq{{10, 1, 16}, {700, 1, 1024}, {63, 1, 64}}},
	}
	for _, c := range cases {
		e.t = t
		b := e.setupRows(c)
		e.store(b)
		scale := float32(1 / math.Sqrt(float64(c.headDim)))
		qs := c.nHead * c.headDim
		qd := e.uploadF32(e.randVec(b.n * qs))
		nSplit := AttentionRowsSplits(c.nHead, 1024)
		q8 := c.headDim%32 == 0
		// meta1 is a batch of the first row alone.
		m1 := make([]byte, RowMetaBytes(1))
		if s := b.seq[0]; s >= 0 {
			PutRowMeta(m1, 1, 0, int32(b.pos[0]), int32(c.seqs[s].cap), b.pool.Add(b.base[s]))
		}
		meta1 := e.upload(m1)

		type result struct {
			out []float32
			xq  []byte
		}
		// launch enqueues the attention of the first n rows (meta) into out and xq.
		launch := func(out, xq, meta, scratch hip.DevicePtr, n int, combine bool) error {
			if !q8 {
				xq = 0
			}
			return e.k.attentionRows("AttentionRows", e.s, out, xq, qd, meta, scratch, n, c.layer, c.nHead, c.nKVHead,
				c.headDim, scale, nSplit, combine)
		}
		newOut := func(n int) (out, xq hip.DevicePtr) {
			return e.alloc(int64(n*qs) * 4), e.alloc(ActQ8Bytes(n * qs))
		}
		poison := func(n int, out, xq hip.DevicePtr) {
			e.check(e.s.MemsetD32Async(out, 0x7fc00000, int64(n*qs)))
			e.check(e.s.MemsetD8Async(xq, 0x55, ActQ8Bytes(n*qs)))
		}
		get := func(n int, out, xq hip.DevicePtr) result {
			r := result{out: e.download(out, n*qs)}
			if q8 {
				r.xq = e.downloadBytes(xq, int(ActQ8Bytes(n*qs)))
			}
			return r
		}
		same := func(what string, got, want result) {
			t.Helper()
			if !sameBits(got.out, want.out) {
				t.Errorf("%s/%s: output differs from the merge as a second launch", c.name, what)
			}
			if !slices.Equal(got.xq, want.xq) {
				t.Errorf("%s/%s: int8 output differs from the merge as a second launch", c.name, what)
			}
		}
		// The references: the merge as a second launch, on scratch of its own.
		ref := func(n int, meta hip.DevicePtr) result {
			out, xq := newOut(n)
			poison(n, out, xq)
			e.check(launch(out, xq, meta, e.rowsScratch(n, c.nHead, c.headDim, nSplit), n, true))
			return get(n, out, xq)
		}
		want, want1 := ref(b.n, b.meta), ref(1, meta1)
		rowRef := b.reference(e.download(qd, b.n*qs), scale)
		e.expect(fmt.Sprintf("attention/rows/%s/combine", c.name), want.out, rowRef)

		rows := b.n + 3 // the scratch has room for more rows than any batch here
		scratch := e.rowsScratch(rows, c.nHead, c.headDim, nSplit)
		out, xq := newOut(b.n)
		step := func(what string, n int, meta hip.DevicePtr, want result) {
			t.Helper()
			poison(n, out, xq)
			e.check(launch(out, xq, meta, scratch, n, false))
			same(what, get(n, out, xq), want)
			e.checkRowsCounters(c.name+"/"+what, scratch, rows, c.nHead, c.headDim, nSplit)
		}
		step("first", b.n, b.meta, want)
		step("second", b.n, b.meta, want)
		step("one_row", 1, meta1, want1)
		step("third", b.n, b.meta, want)

		// A graph of two launches on the same scratch into two outputs, replayed.
		out2, xq2 := newOut(b.n)
		e.sync()
		e.check(e.s.BeginCapture())
		err1 := launch(out, xq, b.meta, scratch, b.n, false)
		err2 := launch(out2, xq2, b.meta, scratch, b.n, false)
		g, err := e.s.EndCapture()
		e.check(errors.Join(err1, err2, err))
		for i := range 4 {
			poison(b.n, out, xq)
			poison(b.n, out2, xq2)
			e.check(g.Launch(e.s))
			same(fmt.Sprintf("graph%d_a", i), get(b.n, out, xq), want)
			same(fmt.Sprintf("graph%d_b", i), get(b.n, out2, xq2), want)
			e.checkRowsCounters(fmt.Sprintf("%s/graph%d", c.name, i), scratch, rows, c.nHead, c.headDim, nSplit)
		}
		e.check(g.Destroy())
	}
}

func TestAttentionRowsRepeat(t *testing.T) {
	newEnv(t, 26).checkAttentionRowsRepeat(t)
}

// TestRopeRowMeta checks that Rope can take the row metadata as its
// positions: pos[n] comes first in it.
func TestRopeRowMeta(t *testing.T) {
	e := newEnv(t, 21)
	r := kernels.Rope{Dims: 64, Base: 500000}
	positions := []int32{0, 3, 1023, 7, 100000}
	const nHeads, headDim = 4, 64
	n := len(positions)
	meta := make([]byte, RowMetaBytes(n))
	for i, p := range positions {
		PutRowMeta(meta, n, i, p, p+1, hip.DevicePtr(0x10000*(i+1)))
	}
	x := e.randVec(n * nHeads * headDim)
	ref := append([]float32(nil), x...)
	for i, p := range positions {
		r.Apply(ref[i*nHeads*headDim:(i+1)*nHeads*headDim], nHeads, headDim, int(p))
	}
	xd := e.uploadF32(x)
	e.check(e.k.Rope(e.s, &r, 0, xd, e.upload(meta), n, nHeads, headDim))
	e.expect("rope/rowmeta", e.download(xd, len(x)), ref)
}

// BenchmarkAttentionRows times the batched attention on Llama-3.2-1B's head
// layout (32 query heads, 8 KV heads, 64 dims), with the pieces a model
// served at 4096 positions takes (AttentionRowsSplits(32, 4096) = 64):
//   - decode64_ctx1024: 64 rows of 64 sequences at position 1023 (their
//     caches, 256 MiB together, exceed the L2 cache);
//   - decode1_ctx2048: one row at position 2047, each launch on the next of
//     32 sequences (256 MiB) for the same reason;
//   - prefill512: 512 rows of one sequence at positions 0..511, by
//     AttentionRows and by AttentionRowsPrefill.
//
// GB/s is the K and V bytes the rows attend to over the device time (not
// given for the prompt, whose 2 MiB cache is read from L2 again and again);
// GFLOP/s counts 4·headDim per head and attended position (q·k and p·v).
// The single-sequence Attention on the same caches is timed beside them.
func BenchmarkAttentionRows(b *testing.B) {
	e := newEnv(b, 22)
	const nHead, nKVHead, headDim = 32, 8, 64
	const kvDim = nKVHead * headDim
	scale := float32(1 / math.Sqrt(headDim))
	nSplit := AttentionRowsSplits(nHead, 4096)
	cases := []struct {
		name      string
		nSeq, cap int
		seq, pos  []int // each row's sequence and position
		rotate    bool  // one launch per sequence in turn (of the rows of sequence 0)
		prompt    bool  // time AttentionRowsPrefill too; no GB/s (the cache is read from L2)
		baseline  bool  // time Attention too (rows of sequence 0 only)
	}{
		{name: "decode64_ctx1024", nSeq: 64, cap: 1024},
		{name: "decode1_ctx2048", nSeq: 32, cap: 2048, seq: []int{0}, pos: []int{2047}, rotate: true, baseline: true},
		{name: "prefill512", nSeq: 1, cap: 512, prompt: true, baseline: true},
	}
	for i := 0; i < 64; i++ {
		cases[0].seq, cases[0].pos = append(cases[0].seq, i), append(cases[0].pos, 1023)
	}
	for i := 0; i < 512; i++ {
		cases[2].seq, cases[2].pos = append(cases[2].seq, 0), append(cases[2].pos, i)
	}

	for _, c := range cases {
		n := len(c.seq)
		var kvBytes, attended float64
		for _, p := range c.pos {
			kvBytes += float64(p+1) * kvDim * 8
			attended += float64(p + 1)
		}
		if c.prompt {
			kvBytes = 0
		}
		flops := 4 * headDim * nHead * attended

		// The caches, filled with 1/64, and the metadata: one per sequence
		// when rotating.
		size := KVBlockBytes(1, c.cap, kvDim)
		pool := e.alloc(size * int64(c.nSeq))
		e.check(e.s.MemsetD32Async(pool, math.Float32bits(1.0/64), size*int64(c.nSeq)/4))
		var metas, bases []hip.DevicePtr
		for i := 0; i < c.nSeq; i++ {
			bases = append(bases, pool.Add(size*int64(i)))
		}
		for i := 0; i < c.nSeq; i++ {
			mb := make([]byte, RowMetaBytes(n))
			for r := range c.seq {
				base := bases[c.seq[r]]
				if c.rotate {
					base = bases[i]
				}
				PutRowMeta(mb, n, r, int32(c.pos[r]), int32(c.cap), base)
			}
			metas = append(metas, e.upload(mb))
			if !c.rotate {
				break
			}
		}
		q, out := e.uploadF32(e.randVec(n*nHead*headDim)), e.alloc(int64(n*nHead*headDim)*4)
		scratch := e.rowsScratch(n, nHead, headDim, nSplit)

		run := func(name string, kv float64, launch func(i int)) {
			b.Run(c.name+"/"+name, func(b *testing.B) {
				launch(0)
				e.sync()
				ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, launch)
				per := ms / 1e3 / float64(b.N)
				b.ReportMetric(per*1e6, "us/op")
				if kv > 0 {
					b.ReportMetric(kv/per/1e9, "GB/s")
				}
				b.ReportMetric(flops/per/1e9, "GFLOP/s")
				b.ReportMetric(hostUS, "host-us/op")
			})
		}
		run(fmt.Sprintf("AttentionRows_splits%d", nSplit), kvBytes, func(i int) { // split, then the combine launch
			e.check(e.k.AttentionRows(e.s, out, q, metas[i%len(metas)], scratch, n, 0, nHead, nKVHead, headDim, scale, nSplit))
		})
		run(fmt.Sprintf("AttentionRows_splits%d_merged", nSplit), kvBytes, func(i int) { // the last block merges: one launch
			e.check(e.k.attentionRows("AttentionRows", e.s, out, 0, q, metas[i%len(metas)], scratch, n, 0, nHead, nKVHead, headDim, scale, nSplit, false))
		})
		if c.prompt {
			run("AttentionRowsPrefill", kvBytes, func(i int) {
				e.check(e.k.AttentionRowsPrefill(e.s, out, q, metas[i%len(metas)], n, 0, nHead, nKVHead, headDim, scale))
			})
		}
		if c.baseline { // the rows are positions pos0.. of sequence 0 (capacity = context)
			pos0 := c.pos[0]
			sc := e.alloc(AttentionScratchBytes(n, nHead, headDim, pos0+n))
			run("single_seq_Attention", kvBytes, func(i int) {
				kc := bases[i%len(bases)]
				e.check(e.k.Attention(e.s, out, q, kc, kc.Add(int64(c.cap)*kvDim*4), sc, n, pos0, nHead, nKVHead, headDim, scale))
			})
		}
	}
}
