package gpu

import (
	"math"
	"slices"
	"testing"

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
