package gpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
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
	if got := AttentionRowsScratchBytes(5, 32, 64, 7); got != 5*32*7*66*4 {
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
				scratch := e.alloc(AttentionRowsScratchBytes(b.n, c.nHead, c.headDim, nSplit))
				e.check(e.k.AttentionRows(e.s, out, qd, b.meta, scratch, b.n, c.layer, c.nHead, c.nKVHead, c.headDim, scale, nSplit))
				e.expect(fmt.Sprintf("attention/rows/%s/splits%d", c.name, nSplit), e.download(out, len(q)), ref)
			}
			out := e.poisoned(len(q))
			e.check(e.k.AttentionRowsPrefill(e.s, out, qd, b.meta, b.n, c.layer, c.nHead, c.nKVHead, c.headDim, scale))
			e.expect(fmt.Sprintf("attention/prefill/%s", c.name), e.download(out, len(q)), ref)
			if c.headDim <= 64 {
				for name, v := range prefillVariants {
					out := e.poisoned(len(q))
					e.check(e.k.attentionRowsPrefill(e.s, v, out, qd, b.meta, b.n, c.layer, c.nHead, c.nKVHead, c.headDim, scale))
					e.expect(fmt.Sprintf("attention/prefill/%s/%s", c.name, name), e.download(out, len(q)), ref)
				}
			}
		})
	}
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

// benchRows sets up nSeq sequences of one layer whose caches (filled with
// 1/64) hold cap positions, and metadata for rows at positions[r] of
// sequence seq[r].
func (e *env) benchRows(nSeq, cap, kvDim int, seq, positions []int) (meta hip.DevicePtr, bases []hip.DevicePtr) {
	e.t.Helper()
	size := KVBlockBytes(1, cap, kvDim)
	pool := e.alloc(size * int64(nSeq))
	e.check(e.s.MemsetD32Async(pool, math.Float32bits(1.0/64), size*int64(nSeq)/4))
	for i := 0; i < nSeq; i++ {
		bases = append(bases, pool.Add(size*int64(i)))
	}
	n := len(seq)
	mb := make([]byte, RowMetaBytes(n))
	for r := range seq {
		PutRowMeta(mb, n, r, int32(positions[r]), int32(cap), bases[seq[r]])
	}
	return e.upload(mb), bases
}

// BenchmarkAttentionRows times the batched attention on Llama-3.2-1B's head
// layout (32 query heads, 8 KV heads, 64 dims): a decode batch of 64 sequences at
// context 1024, one row at context 2048, and a 512-row prompt (positions
// 0..511 of one sequence). GB/s is the K and V bytes the rows attend to
// over the device time; the decode caches together exceed the L2 cache,
// the single row rotates over 32 sequences (256 MiB) for the same reason.
// The single-sequence Attention is timed beside them as a baseline.
func BenchmarkAttentionRows(b *testing.B) {
	e := newEnv(b, 22)
	const nHead, nKVHead, headDim = 32, 8, 64
	const kvDim = nKVHead * headDim
	scale := float32(1 / math.Sqrt(headDim))
	nSplit := AttentionRowsSplits(nHead, 4096) // a model served at 4096 positions
	report := func(b *testing.B, ms, hostUS float64, kvBytes, flops float64) {
		per := ms / 1e3 / float64(b.N)
		b.ReportMetric(per*1e6, "us/op")
		if kvBytes > 0 {
			b.ReportMetric(kvBytes/per/1e9, "GB/s")
		}
		b.ReportMetric(flops/per/1e9, "GFLOP/s")
		b.ReportMetric(hostUS, "host-us/op")
	}
	// flops is 4·headDim per head per attended position (q·k and p·v).
	flops := func(positions []int) float64 {
		var s float64
		for _, p := range positions {
			s += float64(p + 1)
		}
		return 4 * headDim * nHead * s
	}

	type shape struct {
		name       string
		nSeq, cap  int
		rotate     bool // one launch per sequence in turn (rows of one sequence)
		seq, pos   []int
		tunings    [][2]int // minSplit, target blocks
		prefill    bool
		singleSeq  bool // time Attention on sequence 0 too
		singlePos0 int
		splitOnly  bool // time the first kernel of AttentionRows alone too
	}
	dec64 := shape{name: "decode64_ctx1024", nSeq: 64, cap: 1024,
		tunings: [][2]int{{64, 1024}, {64, 2048}, {64, 4096}, {64, 8192}, {128, 4096}, {256, 1 << 20}}}
	for i := 0; i < 64; i++ {
		dec64.seq, dec64.pos = append(dec64.seq, i), append(dec64.pos, 1023)
	}
	dec1 := shape{name: "decode1_ctx2048", nSeq: 32, cap: 2048, rotate: true, seq: []int{0}, pos: []int{2047},
		tunings: [][2]int{{32, 4096}, {64, 4096}, {128, 4096}}, singleSeq: true, singlePos0: 2047}
	dec1l2 := shape{name: "decode1_ctx2048_sameseq", nSeq: 1, cap: 2048, seq: []int{0}, pos: []int{2047},
		tunings: [][2]int{{64, 4096}}, splitOnly: true}
	pre := shape{name: "prefill512", nSeq: 1, cap: 512, tunings: [][2]int{{64, 4096}}, prefill: true, singleSeq: true}
	for i := 0; i < 512; i++ {
		pre.seq, pre.pos = append(pre.seq, 0), append(pre.pos, i)
	}

	for _, sh := range []shape{dec64, dec1, dec1l2, pre} {
		n := len(sh.seq)
		q, out := e.uploadF32(e.randVec(n*nHead*headDim)), e.alloc(int64(n*nHead*headDim)*4)
		scratch := e.alloc(AttentionRowsScratchBytes(n, nHead, headDim, nSplit))
		metas := []hip.DevicePtr{}
		var bases []hip.DevicePtr
		if sh.rotate {
			_, bases = e.benchRows(sh.nSeq, sh.cap, kvDim, sh.seq, sh.pos)
			for i := 0; i < sh.nSeq; i++ {
				mb := make([]byte, RowMetaBytes(n))
				for r := range sh.seq {
					PutRowMeta(mb, n, r, int32(sh.pos[r]), int32(sh.cap), bases[i])
				}
				metas = append(metas, e.upload(mb))
			}
		} else {
			m, bs := e.benchRows(sh.nSeq, sh.cap, kvDim, sh.seq, sh.pos)
			metas, bases = []hip.DevicePtr{m}, bs
		}
		var kvBytes float64
		for _, p := range sh.pos {
			kvBytes += float64(p+1) * kvDim * 8
		}
		if sh.prefill {
			kvBytes = 0 // one sequence's cache, read from L2 many times
		}
		fl := flops(sh.pos)
		for _, tu := range sh.tunings {
			minSplit, target := tu[0], tu[1]
			b.Run(fmt.Sprintf("%s/rows/splits%d_min%d_target%d", sh.name, nSplit, minSplit, target), func(b *testing.B) {
				launch := func(i int) {
					e.check(e.k.attentionRows(e.s, out, q, metas[i%len(metas)], scratch, n, 0, nHead, nKVHead, headDim, scale, nSplit, minSplit, target))
				}
				launch(0)
				e.sync()
				ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, launch)
				report(b, ms, hostUS, kvBytes, fl)
			})
		}
		if !sh.prefill {
			b.Run(sh.name+"/rows_prefetch", func(b *testing.B) {
				ns := min(nSplit, (4096+n*nKVHead-1)/(n*nKVHead))
				launch := func(i int) {
					e.check(e.s.Launch(e.k.fn("attn_rows_split_f32_d64_pf"), hip.Dim3{X: uint32(ns), Y: nKVHead, Z: uint32(n)},
						hip.Dim1(128), 0, hip.Ptr(scratch), hip.Ptr(q), hip.Ptr(metas[i%len(metas)]), hip.Int32(int32(n)), hip.Int32(0),
						hip.Int32(nHead), hip.Int32(nKVHead), hip.Int32(headDim), hip.Float32(scale), hip.Int32(64)))
					e.check(e.s.Launch(e.k.fn("attn_rows_combine_f32"), hip.Dim2(nHead, uint32(n)), hip.Dim1(128), 0,
						hip.Ptr(out), hip.Ptr(scratch), hip.Int32(nHead), hip.Int32(headDim), hip.Int32(int32(ns))))
				}
				launch(0)
				e.sync()
				ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, launch)
				report(b, ms, hostUS, kvBytes, fl)
			})
		}
		if sh.splitOnly {
			for _, ns := range []int{8, 64} {
				b.Run(fmt.Sprintf("%s/split_kernel_only/splits%d", sh.name, ns), func(b *testing.B) {
					launch := func(i int) {
						e.check(e.s.Launch(e.k.fn(rowsSplitKernels[64]), hip.Dim3{X: uint32(ns), Y: nKVHead, Z: uint32(n)},
							hip.Dim1(128), 0, hip.Ptr(scratch), hip.Ptr(q), hip.Ptr(metas[0]), hip.Int32(int32(n)), hip.Int32(0),
							hip.Int32(nHead), hip.Int32(nKVHead), hip.Int32(headDim), hip.Float32(scale), hip.Int32(64)))
					}
					launch(0)
					e.sync()
					ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, launch)
					report(b, ms, hostUS, kvBytes, fl)
				})
				b.Run(fmt.Sprintf("%s/combine_kernel_only/splits%d", sh.name, ns), func(b *testing.B) {
					launch := func(i int) {
						e.check(e.s.Launch(e.k.fn("attn_rows_combine_f32"), hip.Dim2(nHead, uint32(n)), hip.Dim1(128), 0,
							hip.Ptr(out), hip.Ptr(scratch), hip.Int32(nHead), hip.Int32(headDim), hip.Int32(int32(ns))))
					}
					launch(0)
					e.sync()
					ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, launch)
					report(b, ms, hostUS, 0, 0)
				})
			}
		}
		if sh.prefill {
			variants := map[string]prefillKernel{"default": rowsPrefillKernels[headDim]}
			for name, v := range prefillVariants {
				variants[name] = v
			}
			for name, v := range variants {
				b.Run(sh.name+"/prefill/"+name, func(b *testing.B) {
					launch := func(i int) {
						e.check(e.k.attentionRowsPrefill(e.s, v, out, q, metas[i%len(metas)], n, 0, nHead, nKVHead, headDim, scale))
					}
					launch(0)
					e.sync()
					ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, launch)
					report(b, ms, hostUS, kvBytes, fl)
				})
			}
		}
		if sh.singleSeq {
			// The single-sequence kernel on the same caches (capacity = context).
			nQ, pos0 := n, sh.singlePos0
			sc := e.alloc(AttentionScratchBytes(nQ, nHead, headDim, pos0+nQ))
			b.Run(sh.name+"/single_seq_Attention", func(b *testing.B) {
				launch := func(i int) {
					kc := bases[i%len(bases)]
					vc := kc.Add(int64(sh.cap) * kvDim * 4)
					e.check(e.k.Attention(e.s, out, q, kc, vc, sc, nQ, pos0, nHead, nKVHead, headDim, scale))
				}
				launch(0)
				e.sync()
				ms, hostUS := e.timeLaunches(b.N, int64(b.N)*200_000, launch)
				report(b, ms, hostUS, kvBytes, fl)
			})
		}
	}
}
