package gpu

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/kernels"
)

// The fused kernels must give bit for bit what the kernels they replace
// give in turn: the tests run both on the same inputs and compare bits.

func (e *env) downloadBytes(p hip.DevicePtr, n int) []byte {
	e.t.Helper()
	b := make([]byte, n)
	e.check(e.s.MemcpyDtoHAsync(b, p))
	e.sync()
	return b
}

func sameBits(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

func TestAddRMSNormQ8(t *testing.T) {
	e := newEnv(t, 21)
	for _, n := range []int{2048, 4096 + 32, 96} {
		a, b, w := e.randVec(n), e.randVec(n), e.randVec(n)
		ad, bd, wd := e.uploadF32(a), e.uploadF32(b), e.uploadF32(w)
		// unfused: Add, RMSNorm, QuantizeActQ8
		sum1, xn1, xq1 := e.poisoned(n), e.poisoned(n), e.alloc(ActQ8Bytes(n))
		e.check(e.k.Add(e.s, sum1, ad, bd, n))
		e.check(e.k.RMSNorm(e.s, xn1, sum1, wd, 1, n, 1e-5))
		e.check(e.k.QuantizeActQ8(e.s, xn1, xq1, n))
		sum2, xn2, xq2 := e.poisoned(n), e.poisoned(n), e.alloc(ActQ8Bytes(n))
		e.check(e.k.AddRMSNormQ8(e.s, sum2, ad, bd, xn2, xq2, wd, 1, n, 1e-5))
		if !sameBits(e.download(sum2, n), e.download(sum1, n)) || !sameBits(e.download(xn2, n), e.download(xn1, n)) {
			t.Errorf("n=%d: sum or norm differs from Add+RMSNorm", n)
		}
		if !slices.Equal(e.downloadBytes(xq2, int(ActQ8Bytes(n))), e.downloadBytes(xq1, int(ActQ8Bytes(n)))) {
			t.Errorf("n=%d: int8 activations differ from QuantizeActQ8", n)
		}
		// no b: a plain norm of several rows, no quantisation
		const rows = 3
		x := e.uploadF32(e.randVec(rows * n))
		xn3, xn4 := e.poisoned(rows*n), e.poisoned(rows*n)
		e.check(e.k.RMSNorm(e.s, xn3, x, wd, rows, n, 1e-6))
		e.check(e.k.AddRMSNormQ8(e.s, 0, x, 0, xn4, 0, wd, rows, n, 1e-6))
		if !sameBits(e.download(xn4, rows*n), e.download(xn3, rows*n)) {
			t.Errorf("n=%d: norm of %d rows differs from RMSNorm", n, rows)
		}
	}
}

func TestSwiGLUQ8(t *testing.T) {
	e := newEnv(t, 22)
	for _, n := range []int{8192, 14336, 32} {
		g, u := e.uploadF32(e.randVec(n)), e.uploadF32(e.randVec(n))
		o1, q1 := e.poisoned(n), e.alloc(ActQ8Bytes(n))
		e.check(e.k.SwiGLU(e.s, o1, g, u, n))
		e.check(e.k.QuantizeActQ8(e.s, o1, q1, n))
		o2, q2 := e.poisoned(n), e.alloc(ActQ8Bytes(n))
		e.check(e.k.SwiGLUQ8(e.s, o2, g, u, q2, n))
		if !sameBits(e.download(o2, n), e.download(o1, n)) ||
			!slices.Equal(e.downloadBytes(q2, int(ActQ8Bytes(n))), e.downloadBytes(q1, int(ActQ8Bytes(n)))) {
			t.Errorf("n=%d: differs from SwiGLU+QuantizeActQ8", n)
		}
	}
}

func TestRopeKVStore(t *testing.T) {
	e := newEnv(t, 23)
	ff := make([]float32, 32)
	for i := range ff {
		ff[i] = 1 + float32(i)/8
	}
	for _, c := range []struct {
		name                   string
		r                      kernels.Rope
		nHead, nKVHead, hd, ly int
	}{
		{"normal-gqa", kernels.Rope{Dims: 64, Base: 500000}, 32, 8, 64, 2},
		{"neox", kernels.Rope{Dims: 128, Base: 10000, Mode: kernels.RopeNeoX}, 8, 8, 128, 0},
		{"partial-freqs", kernels.Rope{Dims: 64, Base: 10000, FreqFactors: ff}, 14, 2, 96, 1},
	} {
		const layers, capacity = 3, 40
		positions := []int32{0, 7, 39, 12}
		n := len(positions)
		kvDim := c.nKVHead * c.hd
		qv, kv, vv := e.randVec(n*c.nHead*c.hd), e.randVec(n*kvDim), e.randVec(n*kvDim)
		var ffd hip.DevicePtr
		if c.r.FreqFactors != nil {
			ffd = e.uploadF32(c.r.FreqFactors)
		}
		// Two sequences (rows 0,2 in one, 1,3 in the other), poisoned caches.
		run := func(fused bool) (q []float32, caches [][]float32) {
			blocks := []hip.DevicePtr{e.poisoned(int(KVBlockBytes(layers, capacity, kvDim) / 4)), e.poisoned(int(KVBlockBytes(layers, capacity, kvDim) / 4))}
			meta := make([]byte, RowMetaBytes(n))
			for r, p := range positions {
				PutRowMeta(meta, n, r, p, capacity, blocks[r%2])
			}
			md, qd, kd, vd := e.upload(meta), e.uploadF32(qv), e.uploadF32(kv), e.uploadF32(vv)
			if fused {
				e.check(e.k.RopeKVStore(e.s, &c.r, ffd, qd, kd, vd, md, n, c.ly, c.nHead, c.nKVHead, c.hd))
			} else {
				e.check(e.k.Rope(e.s, &c.r, ffd, qd, md, n, c.nHead, c.hd))
				e.check(e.k.Rope(e.s, &c.r, ffd, kd, md, n, c.nKVHead, c.hd))
				e.check(e.k.KVStore(e.s, md, kd, vd, n, c.ly, kvDim))
			}
			q = e.download(qd, len(qv))
			for _, b := range blocks {
				caches = append(caches, e.download(b, int(KVBlockBytes(layers, capacity, kvDim)/4)))
			}
			return q, caches
		}
		q1, c1 := run(false)
		q2, c2 := run(true)
		if !sameBits(q2, q1) {
			t.Errorf("%s: queries differ from Rope", c.name)
		}
		for i := range c1 {
			// NaN poison compares equal bit for bit where nothing was written.
			if !slices.Equal(f32Bytes(c2[i]), f32Bytes(c1[i])) {
				t.Errorf("%s: cache %d differs from Rope+KVStore", c.name, i)
			}
		}
		written := 0
		for _, v := range c2[0] {
			if !math.IsNaN(float64(v)) {
				written++
			}
		}
		if want := 2 * 2 * kvDim; written != want { // rows 0 and 2: K and V
			t.Errorf("%s: %d cache values written, want %d", c.name, written, want)
		}
	}
}

// fusedAttnCases are the batches checkAttentionRowsQ8 runs: one decode row
// at 64 and at 128 dims (the 1B's and 8B's heads), several rows with
// padding, and heads of 32 and 256 dims.
var fusedAttnCases = []rowsCase{
	{name: "n1_d64", nHead: 32, nKVHead: 8, headDim: 64, layers: 2, layer: 1, seqs: []rowsSeq{{700, 1, 1024}}},
	{name: "n1_d128", nHead: 8, nKVHead: 2, headDim: 128, layers: 1, layer: 0, seqs: []rowsSeq{{90, 1, 128}}},
	{name: "n4_d64_pad", nHead: 14, nKVHead: 2, headDim: 64, layers: 1, layer: 0,
		seqs: []rowsSeq{{0, 1, 16}, {37, 1, 40}, {5, 1, 6}}, pad: 1},
	{name: "n3_d128_chunk", nHead: 4, nKVHead: 4, headDim: 128, layers: 2, layer: 1, seqs: []rowsSeq{{10, 3, 16}}},
	{name: "n2_d32", nHead: 4, nKVHead: 2, headDim: 32, layers: 1, layer: 0, seqs: []rowsSeq{{3, 1, 8}, {60, 1, 64}}},
	{name: "n2_d256", nHead: 4, nKVHead: 1, headDim: 256, layers: 1, layer: 0, seqs: []rowsSeq{{20, 1, 32}, {0, 1, 4}}},
}

// checkAttentionRowsQ8 runs AttentionRowsQ8 and AttentionRows followed by
// QuantizeActQ8 over all rows on the same batch and compares their
// outputs and int8 forms bit for bit (NaN-poisoned outputs, int8 areas
// filled with 0x55, so anything left unwritten shows). It returns each
// case's fused output and int8 bytes for further checks.
func (e *env) checkAttentionRowsQ8(t *testing.T) (outs [][]float32, xqs [][]byte) {
	for _, c := range fusedAttnCases {
		e.t = t
		b := e.setupRows(c)
		e.store(b)
		scale := float32(1 / math.Sqrt(float64(c.headDim)))
		nv := b.n * c.nHead * c.headDim
		qd := e.uploadF32(e.randVec(nv))
		nSplit := AttentionRowsSplits(c.nHead, 1024)
		run := func(fused bool) ([]float32, []byte) {
			out, xq := e.poisoned(nv), e.alloc(ActQ8Bytes(nv))
			e.check(e.s.MemsetD8Async(xq, 0x55, ActQ8Bytes(nv)))
			scratch := e.rowsScratch(b.n, c.nHead, c.headDim, nSplit)
			if fused {
				e.check(e.k.AttentionRowsQ8(e.s, out, xq, qd, b.meta, scratch, b.n, c.layer, c.nHead, c.nKVHead, c.headDim, scale, nSplit))
			} else {
				e.check(e.k.AttentionRows(e.s, out, qd, b.meta, scratch, b.n, c.layer, c.nHead, c.nKVHead, c.headDim, scale, nSplit))
				e.check(e.k.QuantizeActQ8(e.s, out, xq, nv))
			}
			return e.download(out, nv), e.downloadBytes(xq, int(ActQ8Bytes(nv)))
		}
		o1, q1 := run(false)
		o2, q2 := run(true)
		if !sameBits(o2, o1) {
			t.Errorf("%s: AttentionRowsQ8's output differs from AttentionRows'", c.name)
		}
		if !slices.Equal(q2, q1) {
			t.Errorf("%s: AttentionRowsQ8's int8 output differs from AttentionRows then QuantizeActQ8", c.name)
		}
		outs, xqs = append(outs, o2), append(xqs, q2)
	}
	return outs, xqs
}

func TestAttentionRowsQ8(t *testing.T) {
	newEnv(t, 24).checkAttentionRowsQ8(t)
}

// checkMatVecQ8Add runs MatVecQ8 with a residual (into another buffer and
// in place) and MatVecQ8 followed by Add, in place and staged, for every
// rows per block, and compares the results bit for bit.
func (e *env) checkMatVecQ8Add(t *testing.T) {
	defer func() { e.k.mvt = mvTune{} }()
	for _, typ := range Types() {
		if !HasMatVecQ8(typ) {
			continue
		}
		bs := typ.BlockSize()
		for _, sh := range [][2]int{{1, bs}, {29, 9 * bs}, {67, 4096}} {
			rows, cols := sh[0], sh[1]
			data, _ := e.randWeights(typ, rows, cols)
			w := e.upload(data)
			xq := e.alloc(ActQ8Bytes(cols))
			e.check(e.k.QuantizeActQ8(e.s, e.uploadF32(e.randVec(cols)), xq, cols))
			res := e.randVec(rows)
			resd := e.uploadF32(res)
			for _, tu := range []mvTune{{}, {staged: true}, {staged: true, split: 2, gridCap: 1}} {
				e.k.mvt = tu
				for _, rpb := range []int{1, 2, 4} {
					what := fmt.Sprintf("%s/%dx%d/%+v/r%d", typ, rows, cols, tu, rpb)
					prod, want := e.poisoned(rows), e.poisoned(rows)
					e.check(e.k.MatVecQ8R(e.s, typ, rpb, w, xq, prod, rows, cols))
					e.check(e.k.Add(e.s, want, resd, prod, rows))
					wantV := e.download(want, rows)
					y := e.poisoned(rows)
					e.check(e.k.matVecQ8(e.s, typ, rpb, w, xq, resd, y, rows, cols))
					if !sameBits(e.download(y, rows), wantV) {
						t.Errorf("%s: W·x + res differs from MatVecQ8 then Add", what)
					}
					yy := e.uploadF32(res) // y += W·x
					e.check(e.k.matVecQ8(e.s, typ, rpb, w, xq, yy, yy, rows, cols))
					if !sameBits(e.download(yy, rows), wantV) {
						t.Errorf("%s: y += W·x in place differs from MatVecQ8 then Add", what)
					}
				}
			}
			e.k.mvt = mvTune{}
			y := e.uploadF32(res)
			e.check(e.k.MatVecQ8Add(e.s, typ, w, xq, y, y, rows, cols))
			prod := e.poisoned(rows)
			e.check(e.k.MatVecQ8(e.s, typ, w, xq, prod, rows, cols))
			e.check(e.k.Add(e.s, prod, prod, resd, rows)) // the order enqueueBlock's Add had: out + product
			if !sameBits(e.download(y, rows), e.download(prod, rows)) {
				t.Errorf("%s/%dx%d: MatVecQ8Add differs from MatVecQ8 then Add", typ, rows, cols)
			}
		}
	}
}

func TestMatVecQ8Add(t *testing.T) {
	newEnv(t, 25).checkMatVecQ8Add(t)
}

func TestFusedBadArguments(t *testing.T) {
	// Argument checks need no device: they fail before any launch.
	k := &Kernels{fns: map[string]hip.Function{}}
	var s hip.Stream
	cases := []struct {
		name string
		err  error
	}{
		{"AttentionRowsQ8 no xq", k.AttentionRowsQ8(s, 0, 0, 0, 0, 0, 1, 0, 4, 4, 64, 1, 1)},
		{"AttentionRowsQ8 misaligned xq", k.AttentionRowsQ8(s, 0, 2, 0, 0, 0, 1, 0, 4, 4, 64, 1, 1)},
		{"AttentionRowsQ8 head size 80", k.AttentionRowsQ8(s, 0, 16, 0, 0, 0, 1, 0, 4, 4, 80, 1, 1)},
		{"AttentionRowsQ8 misaligned q", k.AttentionRowsQ8(s, 0, 16, 8, 0, 0, 1, 0, 4, 4, 64, 1, 1)},
		{"MatVecQ8Add no residual", k.MatVecQ8Add(s, gguf.TypeQ8_0, 0, 0, 0, 0, 4, 32)},
		{"MatVecQ8Add misaligned residual", k.MatVecQ8Add(s, gguf.TypeQ8_0, 0, 0, 2, 0, 4, 32)},
	}
	for _, c := range cases {
		if !errors.Is(c.err, hip.ErrInvalidValue) {
			t.Errorf("%s: %v, want ErrInvalidValue", c.name, c.err)
		}
	}
}
