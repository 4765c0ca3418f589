package gpu

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/kernels"
)

// Go emulations, for the host driver (LoadEmulated), of the element-wise,
// norm, rope and attention kernels of src/ops.cu, src/attention.cu and
// src/fused.cu, and (emulate_topk.go) the top-k kernels of src/topk.cu.
// Each takes its GPU kernel's arguments and grid and computes what the
// whole launch computes, not how: package kernels' host functions
// where they fit (Add, SwiGLU, RMSNorm), rope_cs's float32 formula for the
// rotations, and float64 sums for the attention softmax. The split
// attention kernels write their partial results in the GPU's format, so
// each kernel of a pair stands on its own. Nothing is shared between
// launches: the emulations may run on many streams at once.

func init() {
	for name, fn := range opsEmulations() {
		hip.RegisterHostKernel(name, fn)
	}
}

// opsEmulations maps each kernel name of this half of the module to its
// emulation (emulate_matvec.go has the matrix half).
func opsEmulations() map[string]hip.HostKernel {
	m := map[string]hip.HostKernel{
		"add_f32":               emulateAdd,
		"add_rows_f32":          emulateAddRows,
		"swiglu_f32":            emulateSwiGLU,
		"rmsnorm_f32":           emulateRMSNorm,
		"argmax_f32":            emulateArgmax,
		"rope_f32":              emulateRope,
		"add_rmsnorm_q8":        emulateAddRMSNormQ8,
		"swiglu_q8":             emulateSwiGLUQ8,
		"rope_kv_store":         emulateRopeKVStore,
		"attn_split_f32":        emulateAttnSplit,
		"attn_combine_f32":      emulateAttnCombine,
		"kv_store_f32":          emulateKVStore,
		"attn_rows_combine_f32": emulateAttnRowsCombine,
	}
	for d, name := range rowsSplitKernels {
		m[name] = emulateAttnRowsSplit(d)
	}
	for d, name := range rowsRopeKernels {
		m[name] = emulateAttnRowsRope(d)
		m[rowsRope1Kernels[d]] = emulateAttnRowsRope(d)
		m[rowsRope1MKernels[d]] = emulateAttnRowsRope(d)
	}
	for d, v := range rowsPrefillKernels {
		m[v.name] = emulateAttnRowsPrefill(d)
	}
	maps.Copy(m, topKEmulations())
	return m
}

// f32Views returns n float32 of device memory at each of the pointer
// arguments idx of l, in order (n > 0).
func f32Views(l *hip.HostLaunch, n int, idx ...int) ([][]float32, error) {
	views := make([][]float32, len(idx))
	for i, a := range idx {
		v, err := l.Float32s(l.Arg(a).Ptr(), n)
		if err != nil {
			return nil, err
		}
		views[i] = v
	}
	return views, nil
}

// ------------------------------------------------------------ element-wise and norms

// emulateAdd is add_f32(dst, a, b, n): dst = a + b.
func emulateAdd(l *hip.HostLaunch) error {
	n := int(l.Arg(3).Int32())
	if n <= 0 {
		return nil
	}
	v, err := f32Views(l, n, 0, 1, 2)
	if err != nil {
		return err
	}
	kernels.Add(v[0], v[1], v[2])
	return nil
}

// emulateAddRows is add_rows_f32(y, b, rows, n): each row of y += b.
func emulateAddRows(l *hip.HostLaunch) error {
	rows, n := int(l.Arg(2).Int32()), int(l.Arg(3).Int32())
	if rows <= 0 || n <= 0 {
		return nil
	}
	y, err := l.Float32s(l.Arg(0).Ptr(), rows*n)
	if err != nil {
		return err
	}
	b, err := l.Float32s(l.Arg(1).Ptr(), n)
	if err != nil {
		return err
	}
	for r := range rows {
		row := y[r*n : (r+1)*n]
		kernels.Add(row, row, b)
	}
	return nil
}

// emulateSwiGLU is swiglu_f32(out, gate, up, n): out = silu(gate) * up.
func emulateSwiGLU(l *hip.HostLaunch) error {
	n := int(l.Arg(3).Int32())
	if n <= 0 {
		return nil
	}
	v, err := f32Views(l, n, 0, 1, 2)
	if err != nil {
		return err
	}
	kernels.SwiGLU(v[0], v[1], v[2])
	return nil
}

// emulateRMSNorm is rmsnorm_f32(out, x, weight, n, eps), one row per block
// of the grid.
func emulateRMSNorm(l *hip.HostLaunch) error {
	rows, n, eps := int(l.Grid.X), int(l.Arg(3).Int32()), l.Arg(4).Float32()
	if n <= 0 {
		return nil
	}
	v, err := f32Views(l, rows*n, 0, 1)
	if err != nil {
		return err
	}
	w, err := l.Float32s(l.Arg(2).Ptr(), n)
	if err != nil {
		return err
	}
	kernels.RMSNormRows(v[0], v[1], w, rows, eps)
	return nil
}

// emulateArgmax is argmax_f32(out, x, n), one row per block of the grid:
// out[row] = {index, value bits} of the largest value, the first on ties;
// NaN is never chosen, and a row with nothing above -Inf gives {0, -Inf}.
func emulateArgmax(l *hip.HostLaunch) error {
	rows, n := int(l.Grid.X), int(l.Arg(2).Int32())
	if n <= 0 {
		return nil
	}
	out, err := hip.HostSlice[int32](l, l.Arg(0).Ptr(), 2*rows)
	if err != nil {
		return err
	}
	x, err := l.Float32s(l.Arg(1).Ptr(), rows*n)
	if err != nil {
		return err
	}
	for r := range rows {
		best, idx := float32(math.Inf(-1)), 0
		for i, v := range x[r*n : (r+1)*n] {
			if v > best {
				best, idx = v, i
			}
		}
		out[2*r], out[2*r+1] = int32(idx), int32(math.Float32bits(best))
	}
	return nil
}

// ------------------------------------------------------------ fused norm and SwiGLU

// emulateAddRMSNormQ8 is add_rmsnorm_q8(sum, a, b, xn, xq, weight, n, eps),
// one row per block of the grid: sum = a + b (b null: the norm of a, sum
// untouched), xn = rmsnorm(·) * weight, and xq = the int8 form of xn when
// xq is not null (one row; a launch of more would leave the last row's).
func emulateAddRMSNormQ8(l *hip.HostLaunch) error {
	rows, n, eps := int(l.Grid.X), int(l.Arg(6).Int32()), l.Arg(7).Float32()
	if n <= 0 {
		return nil
	}
	v, err := f32Views(l, rows*n, 1, 3) // a, xn
	if err != nil {
		return err
	}
	x, xn := v[0], v[1]
	w, err := l.Float32s(l.Arg(5).Ptr(), n)
	if err != nil {
		return err
	}
	if l.Arg(2).Ptr() != 0 {
		sb, err := f32Views(l, rows*n, 0, 2) // sum, b
		if err != nil {
			return err
		}
		kernels.Add(sb[0], x, sb[1])
		x = sb[0]
	}
	kernels.RMSNormRows(xn, x, w, rows, eps)
	if xq := l.Arg(4).Ptr(); xq != 0 {
		for r := range rows {
			if err := quantizeActRow(l, xq, xn[r*n:(r+1)*n]); err != nil {
				return err
			}
		}
	}
	return nil
}

// emulateSwiGLUQ8 is swiglu_q8(out, gate, up, xq, n): out = silu(gate) * up
// and xq = its int8 form.
func emulateSwiGLUQ8(l *hip.HostLaunch) error {
	n := int(l.Arg(4).Int32())
	if n <= 0 {
		return nil
	}
	v, err := f32Views(l, n, 0, 1, 2)
	if err != nil {
		return err
	}
	kernels.SwiGLU(v[0], v[1], v[2])
	return quantizeActRow(l, l.Arg(3).Ptr(), v[0])
}

// quantizeActRow writes x (a multiple of 32 values) at xq as
// quantize_act_q8 does: len(x) int8 values, then a float32 scale per 32,
// d = amax/127 and q = round(x · (1/d)), halves away from zero (ggml's
// quantize_row_q8_0 with the scale kept in float32). As on the GPU, amax
// ignores NaNs (fmaxf) and a value that rounds to NaN becomes 0.
func quantizeActRow(l *hip.HostLaunch, xq hip.DevicePtr, x []float32) error {
	n := len(x)
	if n%32 != 0 {
		return fmt.Errorf("%s: %w: %d activations to quantise, not a multiple of 32", l.Kernel, hip.ErrInvalidValue, n)
	}
	q, err := hip.HostSlice[int8](l, xq, n)
	if err != nil {
		return err
	}
	scales, err := l.Float32s(xq.Add(int64(n)), n/32)
	if err != nil {
		return err
	}
	for b := range n / 32 {
		blk := x[32*b : 32*b+32]
		amax := float32(math.NaN())
		for _, v := range blk {
			if a := float32(math.Abs(float64(v))); a > amax || amax != amax {
				amax = a
			}
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		for i, v := range blk {
			r := math.Round(float64(float32(v * id)))
			if r != r {
				r = 0
			}
			q[32*b+i] = int8(r)
		}
		scales[b] = d
	}
	return nil
}

// ------------------------------------------------------------ rope

// ropeArgs are a rope launch's rotation constants (ropeParams in gpu.go):
// the nine arguments from dims on, in the order rope_f32 and rope_kv_store
// both take them.
type ropeArgs struct {
	dims              int
	neox              bool
	thetaScale        float32
	freqScale         float32
	freqFactors       []float32 // nil when the launch passes none
	extFactor, mscale float32
	corrLo, corrHi    float32
}

// readRopeArgs reads the rope constants starting at argument first.
func readRopeArgs(l *hip.HostLaunch, first int) (ropeArgs, error) {
	r := ropeArgs{
		dims:       int(l.Arg(first).Int32()),
		neox:       l.Arg(first+1).Int32() != 0,
		thetaScale: l.Arg(first + 2).Float32(),
		freqScale:  l.Arg(first + 3).Float32(),
		extFactor:  l.Arg(first + 5).Float32(),
		mscale:     l.Arg(first + 6).Float32(),
		corrLo:     l.Arg(first + 7).Float32(),
		corrHi:     l.Arg(first + 8).Float32(),
	}
	if p := l.Arg(first + 4).Ptr(); p != 0 && r.dims >= 2 {
		ff, err := l.Float32s(p, r.dims/2)
		if err != nil {
			return r, err
		}
		r.freqFactors = ff
	}
	return r, nil
}

// cosSin fills cs (2 per rotated pair) with the cosine and sine, scaled by
// mscale, of each pair's angle at position p: rope_cs, with theta built by
// the same float32 recurrence (theta_i = p · thetaScale^i, one multiply at
// a time), every product and sum rounded as the kernel's __fmul_rn and
// __fadd_rn do.
func (r *ropeArgs) cosSin(cs []float32, p int32) {
	theta := float32(p)
	for i := range r.dims / 2 {
		thetaExtrap := theta
		if r.freqFactors != nil {
			thetaExtrap = theta / r.freqFactors[i]
		}
		thetaInterp := r.freqScale * thetaExtrap
		th := thetaInterp
		if r.extFactor != 0 {
			y := (float32(i) - r.corrLo) / max(0.001, r.corrHi-r.corrLo)
			ramp := (1 - min(1, max(0, y))) * r.extFactor
			th = float32(thetaInterp*(1-ramp)) + float32(thetaExtrap*ramp)
		}
		cs[2*i] = float32(math.Cos(float64(th))) * r.mscale
		cs[2*i+1] = float32(math.Sin(float64(th))) * r.mscale
		theta *= r.thetaScale
	}
}

// rotate writes src's rotated pairs, turned by cs, into dst (which may be
// src); the values past the pairs are left alone.
func (r *ropeArgs) rotate(dst, src, cs []float32) {
	half := r.dims / 2
	for i := range half {
		a, b := 2*i, 2*i+1
		if r.neox {
			a, b = i, i+half
		}
		c, s := cs[2*i], cs[2*i+1]
		x0, x1 := src[a], src[b]
		dst[a] = float32(x0*c) - float32(x1*s)
		dst[b] = float32(x0*s) + float32(x1*c)
	}
}

// emulateRope is rope_f32(x, pos, nTok, nHeads, headDim, dims, neox,
// thetaScale, freqScale, freqFactors, extFactor, mscale, corrLo, corrHi):
// nTok rows of nHeads heads rotated in place, row t at position pos[t].
func emulateRope(l *hip.HostLaunch) error {
	nTok, nHeads, headDim := int(l.Arg(2).Int32()), int(l.Arg(3).Int32()), int(l.Arg(4).Int32())
	r, err := readRopeArgs(l, 5)
	if err != nil || nTok <= 0 || nHeads <= 0 || r.dims < 2 {
		return err
	}
	x, err := l.Float32s(l.Arg(0).Ptr(), nTok*nHeads*headDim)
	if err != nil {
		return err
	}
	pos, err := hip.HostSlice[int32](l, l.Arg(1).Ptr(), nTok)
	if err != nil {
		return err
	}
	cs := make([]float32, r.dims)
	for t := range nTok {
		r.cosSin(cs, pos[t])
		for h := range nHeads {
			head := x[(t*nHeads+h)*headDim:][:headDim]
			r.rotate(head, head, cs)
		}
	}
	return nil
}

// emulateRopeKVStore is rope_kv_store(q, k, v, meta, nTok, layer, nHead,
// nKVHead, headDim, dims, neox, thetaScale, freqScale, freqFactors,
// extFactor, mscale, corrLo, corrHi), one row per grid column Y: the row's
// query heads rotated in place at its metadata position (padding rows
// too, as the kernel does), its key heads rotated into its sequence's
// cache (the values past the rotated pairs copied) and its value heads
// copied there, padding rows skipped. That is Rope then KVStore, as
// RopeKVStore promises; with odd dims the kernel itself (fused.cu) leaves
// the key's value at dims−1 unwritten.
func emulateRopeKVStore(l *hip.HostLaunch) error {
	rows, nTok, layer := int(l.Grid.Y), int(l.Arg(4).Int32()), int(l.Arg(5).Int32())
	nHead, nKVHead, headDim := int(l.Arg(6).Int32()), int(l.Arg(7).Int32()), int(l.Arg(8).Int32())
	kvDim := nKVHead * headDim
	r, err := readRopeArgs(l, 9)
	if err != nil {
		return err
	}
	meta, err := readRowMeta(l, l.Arg(3).Ptr(), nTok)
	if err != nil {
		return err
	}
	q, err := l.Float32s(l.Arg(0).Ptr(), rows*nHead*headDim)
	if err != nil {
		return err
	}
	kv, err := f32Views(l, rows*kvDim, 1, 2)
	if err != nil {
		return err
	}
	cs := make([]float32, max(0, r.dims))
	for t := range rows {
		r.cosSin(cs, meta.pos[t])
		for h := range nHead {
			head := q[(t*nHead+h)*headDim:][:headDim]
			r.rotate(head, head, cs)
		}
		if !meta.live(t) {
			continue
		}
		if err := r.storeKV(l, meta, t, layer, headDim, cs, kv[0][t*kvDim:(t+1)*kvDim], kv[1][t*kvDim:(t+1)*kvDim]); err != nil {
			return err
		}
	}
	return nil
}

// storeKV writes live row t's new key ks, rotated by cs (cosSin at its
// position; the values past the rotated pairs copied), and its value vs
// into its sequence's cache for layer at its position: rope_kv_store's
// key and value heads.
func (r *ropeArgs) storeKV(l *hip.HostLaunch, meta rowMeta, t, layer, headDim int, cs, ks, vs []float32) error {
	p := int(meta.pos[t])
	kd, vd, err := meta.kv(l, t, layer, len(ks), p, p+1)
	if err != nil {
		return err
	}
	rotated := max(0, r.dims) / 2 * 2
	for h := range len(ks) / headDim {
		src, dst := ks[h*headDim:(h+1)*headDim], kd[h*headDim:(h+1)*headDim]
		r.rotate(dst, src, cs)
		copy(dst[rotated:], src[rotated:])
	}
	copy(vd, vs)
	return nil
}

// ------------------------------------------------------------ row metadata and KV store

// rowMeta is a view of the metadata of n rows (PutRowMeta): each row's
// position, its cache's capacity and its sequence's KV block.
type rowMeta struct {
	pos, cap []int32
	base     []uint64
}

// readRowMeta views the metadata of n rows at p.
func readRowMeta(l *hip.HostLaunch, p hip.DevicePtr, n int) (rowMeta, error) {
	if n <= 0 {
		return rowMeta{}, fmt.Errorf("%s: %w: metadata of %d rows", l.Kernel, hip.ErrInvalidValue, n)
	}
	pc, err := hip.HostSlice[int32](l, p, 2*n)
	if err != nil {
		return rowMeta{}, err
	}
	base, err := hip.HostSlice[uint64](l, p.Add(8*int64(n)), n)
	if err != nil {
		return rowMeta{}, err
	}
	return rowMeta{pos: pc[:n], cap: pc[n:], base: base}, nil
}

// live reports whether row r is a real row rather than padding: row_kv.
func (m rowMeta) live(r int) bool {
	return m.base[r] != 0 && m.pos[r] >= 0 && m.pos[r] < m.cap[r]
}

// kv views positions [from, to) (from < to) of live row r's K and V rows
// for layer, kvDim float32 each.
func (m rowMeta) kv(l *hip.HostLaunch, r, layer, kvDim, from, to int) (k, v []float32, err error) {
	rowBytes := int64(kvDim) * 4
	kBase := hip.DevicePtr(m.base[r]).Add(int64(layer) * 2 * int64(m.cap[r]) * rowBytes)
	if k, err = l.Float32s(kBase.Add(int64(from)*rowBytes), (to-from)*kvDim); err != nil {
		return nil, nil, err
	}
	if v, err = l.Float32s(kBase.Add((int64(m.cap[r])+int64(from))*rowBytes), (to-from)*kvDim); err != nil {
		return nil, nil, err
	}
	return k, v, nil
}

// emulateKVStore is kv_store_f32(meta, k, v, n, layer, kvDim), one row per
// grid column Y: each live row's K and V into its cache at its position.
func emulateKVStore(l *hip.HostLaunch) error {
	rows, n, layer, kvDim := int(l.Grid.Y), int(l.Arg(3).Int32()), int(l.Arg(4).Int32()), int(l.Arg(5).Int32())
	if kvDim <= 0 {
		return nil
	}
	meta, err := readRowMeta(l, l.Arg(0).Ptr(), n)
	if err != nil {
		return err
	}
	src, err := f32Views(l, rows*kvDim, 1, 2)
	if err != nil {
		return err
	}
	for r := range rows {
		if !meta.live(r) {
			continue
		}
		p := int(meta.pos[r])
		kd, vd, err := meta.kv(l, r, layer, kvDim, p, p+1)
		if err != nil {
			return err
		}
		copy(kd, src[0][r*kvDim:(r+1)*kvDim])
		copy(vd, src[1][r*kvDim:(r+1)*kvDim])
	}
	return nil
}

// ------------------------------------------------------------ attention

// attnWork is a launch's buffers for the scores and sums of one piece.
type attnWork struct{ scores, acc []float64 }

// piece writes one query head's partial softmax over positions [p0, p1)
// (p0 < p1) in the split kernels' format, part holding headDim+2 values:
// m, the largest score q·k·scale; l = Σ e^(score−m); then Σ e^(score−m)·v.
// k and v hold the head's rows, position p at p·stride. Sums are float64,
// relative to m rounded to float32 as it is stored.
func (w *attnWork) piece(part, q, k, v []float32, stride, p0, p1 int, scale float32) {
	headDim := len(q)
	if len(w.scores) < p1-p0 {
		w.scores = make([]float64, p1-p0)
	}
	if len(w.acc) < headDim {
		w.acc = make([]float64, headDim)
	}
	scores, acc := w.scores[:p1-p0], w.acc[:headDim]
	m := math.Inf(-1)
	for i := range scores {
		kr := k[(p0+i)*stride:][:headDim]
		var dot float64
		for d, x := range q {
			dot += float64(x) * float64(kr[d])
		}
		scores[i] = dot * float64(scale)
		m = max(m, scores[i])
	}
	mf := float64(float32(m))
	var sum float64
	clear(acc)
	for i, sc := range scores {
		e := math.Exp(sc - mf)
		sum += e
		for d, x := range v[(p0+i)*stride:][:headDim] {
			acc[d] += e * float64(x)
		}
	}
	part[0], part[1] = float32(mf), float32(sum)
	for d, a := range acc {
		part[2+d] = float32(a)
	}
}

// mergePieces writes out = Σ w_s·acc_s / Σ w_s·l_s over the nSplit
// partials at part (len(out)+2 values each), w_s = e^(m_s − max m): the
// combine kernels. Empty pieces (m = −Inf) are skipped, their l and acc
// never read; with every piece empty, out is zeros (a padding row).
func mergePieces(out, part []float32, nSplit int) {
	stride := len(out) + 2
	mx := math.Inf(-1)
	for s := range nSplit {
		mx = max(mx, float64(part[s*stride]))
	}
	clear(out)
	if math.IsInf(mx, -1) {
		return
	}
	var sum float64
	for s := range nSplit {
		if m := float64(part[s*stride]); !math.IsInf(m, -1) {
			sum += math.Exp(m-mx) * float64(part[s*stride+1])
		}
	}
	for d := range out {
		var a float64
		for s := range nSplit {
			if m := float64(part[s*stride]); !math.IsInf(m, -1) {
				a += math.Exp(m-mx) * float64(part[s*stride+2+d])
			}
		}
		out[d] = float32(a / sum)
	}
}

// checkHeads checks the head counts an attention launch passes.
func checkHeads(l *hip.HostLaunch, nHead, nKVHead, headDim int) error {
	if nHead <= 0 || nKVHead <= 0 || nHead%nKVHead != 0 || headDim <= 0 {
		return fmt.Errorf("%s: %w: %d query heads over %d KV heads of %d", l.Kernel, hip.ErrInvalidValue, nHead, nKVHead, headDim)
	}
	return nil
}

// emulateAttnSplit is attn_split_f32(part, q, k, v, pos0, nHead, nKVHead,
// headDim, scale, splitLen), grid (nSplit, heads, nQ): the partial of
// piece s (positions [s·splitLen, (s+1)·splitLen) of 0..pos0+i) of each
// query row i and head, an empty piece as m = −Inf and zeros.
func emulateAttnSplit(l *hip.HostLaunch) error {
	nSplit, heads, nQ := int(l.Grid.X), int(l.Grid.Y), int(l.Grid.Z)
	pos0, nHead, nKVHead, headDim := int(l.Arg(4).Int32()), int(l.Arg(5).Int32()), int(l.Arg(6).Int32()), int(l.Arg(7).Int32())
	scale, splitLen := l.Arg(8).Float32(), int(l.Arg(9).Int32())
	if err := checkHeads(l, nHead, nKVHead, headDim); err != nil {
		return err
	}
	kvStride, group, pw := nKVHead*headDim, nHead/nKVHead, headDim+2
	part, err := l.Float32s(l.Arg(0).Ptr(), nQ*nHead*nSplit*pw)
	if err != nil {
		return err
	}
	q, err := l.Float32s(l.Arg(1).Ptr(), nQ*nHead*headDim)
	if err != nil {
		return err
	}
	kv, err := f32Views(l, (pos0+nQ)*kvStride, 2, 3)
	if err != nil {
		return err
	}
	var w attnWork
	for i := range nQ {
		for h := range heads {
			kvOff := h / group * headDim
			for s := range nSplit {
				pp := part[((i*nHead+h)*nSplit+s)*pw:][:pw]
				p0, p1 := s*splitLen, min(pos0+i+1, (s+1)*splitLen)
				if p0 >= p1 {
					clear(pp)
					pp[0] = float32(math.Inf(-1))
					continue
				}
				w.piece(pp, q[(i*nHead+h)*headDim:][:headDim], kv[0][kvOff:], kv[1][kvOff:], kvStride, p0, p1, scale)
			}
		}
	}
	return nil
}

// emulateAttnCombine is attn_combine_f32(out, part, nHead, headDim,
// nSplit), grid (heads, rows): each row and head's partials merged
// (mergePieces).
func emulateAttnCombine(l *hip.HostLaunch) error {
	heads, rows := int(l.Grid.X), int(l.Grid.Y)
	nHead, headDim, nSplit := int(l.Arg(2).Int32()), int(l.Arg(3).Int32()), int(l.Arg(4).Int32())
	if nHead <= 0 || headDim <= 0 || nSplit <= 0 {
		return fmt.Errorf("%s: %w: %d heads of %d, %d pieces", l.Kernel, hip.ErrInvalidValue, nHead, headDim, nSplit)
	}
	pw := headDim + 2
	out, err := l.Float32s(l.Arg(0).Ptr(), rows*nHead*headDim)
	if err != nil {
		return err
	}
	part, err := l.Float32s(l.Arg(1).Ptr(), rows*nHead*nSplit*pw)
	if err != nil {
		return err
	}
	for r := range rows {
		for h := range heads {
			rh := r*nHead + h
			mergePieces(out[rh*headDim:][:headDim], part[rh*nSplit*pw:][:nSplit*pw], nSplit)
		}
	}
	return nil
}

// emulateAttnRowsCombine is attn_rows_combine_f32(out, part, nHead,
// headDim, nSplit, xq, rowStride), grid (heads, rows): attn_rows_split's
// merge (rowsScratch.merge) as a launch of its own.
func emulateAttnRowsCombine(l *hip.HostLaunch) error {
	heads, rows := int(l.Grid.X), int(l.Grid.Y)
	nHead, headDim, nSplit := int(l.Arg(2).Int32()), int(l.Arg(3).Int32()), int(l.Arg(4).Int32())
	if nHead <= 0 || headDim <= 0 || nSplit <= 0 || heads > nHead {
		return fmt.Errorf("%s: %w: %d of %d heads of %d, %d pieces", l.Kernel, hip.ErrInvalidValue, heads, nHead, headDim, nSplit)
	}
	sc, err := viewRowsScratch(l, l.Arg(1).Ptr(), int(l.Arg(6).Int32()), rows, nHead, headDim, nSplit)
	if err != nil {
		return err
	}
	return sc.merge(l, l.Arg(0).Ptr(), l.Arg(5).Ptr(), rows, heads)
}

// rowsScratch is a view of attn_rows_split's scratch (see attention.cu):
// per row, nHead uint32 arrival counters then nHead×nSplit partials of
// headDim+2 float32, rowStride words in all.
type rowsScratch struct {
	words                  []float32
	nHead, headDim, nSplit int
	rowStride              int
}

// viewRowsScratch views the scratch of rows rows at p.
func viewRowsScratch(l *hip.HostLaunch, p hip.DevicePtr, rowStride, rows, nHead, headDim, nSplit int) (rowsScratch, error) {
	sc := rowsScratch{nHead: nHead, headDim: headDim, nSplit: nSplit, rowStride: rowStride}
	if rowStride < nHead*(1+nSplit*(headDim+2)) {
		return sc, fmt.Errorf("%s: %w: %d words per row of scratch, too few for %d heads of %d pieces of %d",
			l.Kernel, hip.ErrInvalidValue, rowStride, nHead, nSplit, headDim)
	}
	var err error
	sc.words, err = l.Float32s(p, (rows-1)*rowStride+nHead*(1+nSplit*(headDim+2)))
	return sc, err
}

// partials returns head h's pieces of row r, nSplit·(headDim+2) values.
func (sc rowsScratch) partials(r, h int) []float32 {
	pw := sc.headDim + 2
	return sc.words[r*sc.rowStride+sc.nHead+h*sc.nSplit*pw:][:sc.nSplit*pw]
}

// counter returns row r's arrival counter of block column y.
func (sc rowsScratch) counter(r, y int) uint32 { return math.Float32bits(sc.words[r*sc.rowStride+y]) }

// merge is attn_rows_merge over heads 0..heads-1 of each of the rows rows
// into out (rows×nHead×headDim): each head's pieces merged (mergePieces,
// empty pieces skipped), and, when xq is not 0, the int8 form of every
// head it wrote, as quantize_act_q8 of all the rows' outputs at once
// (mvQuantizeBlock per 32 values; rows·nHead·headDim int8, then the
// scales).
func (sc rowsScratch) merge(l *hip.HostLaunch, outPtr, xqPtr hip.DevicePtr, rows, heads int) error {
	total := rows * sc.nHead * sc.headDim
	out, err := l.Float32s(outPtr, total)
	if err != nil {
		return err
	}
	for r := range rows {
		for h := range heads {
			mergePieces(out[(r*sc.nHead+h)*sc.headDim:][:sc.headDim], sc.partials(r, h), sc.nSplit)
		}
	}
	if xqPtr == 0 {
		return nil
	}
	if sc.headDim%32 != 0 {
		return fmt.Errorf("%s: %w: int8 output of heads of %d (want a multiple of 32)", l.Kernel, hip.ErrInvalidValue, sc.headDim)
	}
	q, err := hip.HostSlice[int8](l, xqPtr, total)
	if err != nil {
		return err
	}
	scales, err := l.Float32s(xqPtr.Add(int64(total)), total/32)
	if err != nil {
		return err
	}
	for r := range rows {
		for i := r * sc.nHead * sc.headDim; i < (r*sc.nHead+heads)*sc.headDim; i += 32 {
			scales[i/32] = mvQuantizeBlock(q[i:i+32], out[i:i+32])
		}
	}
	return nil
}

// rowsAttnArgs are the arguments attn_rows_split and attn_rows_prefill
// share, from q on: (q, meta, n, layer, nHead, nKVHead, headDim, scale).
type rowsAttnArgs struct {
	q                       []float32
	meta                    rowMeta
	n, layer                int
	nHead, nKVHead, headDim int
	scale                   float32
}

// readRowsAttnArgs reads them, q being argument 1, for a kernel variant
// of head size up to maxDim.
func readRowsAttnArgs(l *hip.HostLaunch, maxDim int) (rowsAttnArgs, error) {
	a := rowsAttnArgs{n: int(l.Arg(3).Int32()), layer: int(l.Arg(4).Int32()), nHead: int(l.Arg(5).Int32()),
		nKVHead: int(l.Arg(6).Int32()), headDim: int(l.Arg(7).Int32()), scale: l.Arg(8).Float32()}
	if err := checkHeads(l, a.nHead, a.nKVHead, a.headDim); err != nil {
		return a, err
	}
	if a.headDim > maxDim {
		return a, fmt.Errorf("%s: %w: head size %d above the kernel's %d", l.Kernel, hip.ErrInvalidValue, a.headDim, maxDim)
	}
	var err error
	if a.meta, err = readRowMeta(l, l.Arg(2).Ptr(), a.n); err != nil {
		return a, err
	}
	a.q, err = l.Float32s(l.Arg(1).Ptr(), a.n*a.nHead*a.headDim)
	return a, err
}

// context returns how many positions row r attends to (0 for padding)
// and views of its layer's K and V rows for them, from position 0, every
// KV head's values side by side (kvDim per position).
func (a *rowsAttnArgs) context(l *hip.HostLaunch, r int) (ctx int, k, v []float32, err error) {
	if !a.meta.live(r) {
		return 0, nil, nil, nil
	}
	ctx = int(a.meta.pos[r]) + 1
	k, v, err = a.meta.kv(l, r, a.layer, a.nKVHead*a.headDim, 0, ctx)
	return ctx, k, v, err
}

// emulateAttnRowsSplit returns attn_rows_split_f32_d<maxDim>(part, q, meta,
// n, layer, nHead, nKVHead, headDim, scale, minSplit, rowStride, out, xq),
// grid (nSplit, ·, rows): every head's partial of piece s of each row's
// context, positions [s·len, (s+1)·len) of 0..pos with len = max(minSplit,
// ⌈(pos+1)/nSplit⌉), into the scratch (rowsScratch); an empty piece, and
// every piece of a padding row, as m = −Inf alone. When out is not 0 the
// pieces are then merged into out and xq (rowsScratch.merge), as the last
// block of each row and column does on a GPU, which requires the column's
// arrival counter to be zero (the scratch zeroed before its first use) and
// leaves it so: a counter that is not fails the launch.
func emulateAttnRowsSplit(maxDim int) hip.HostKernel {
	return func(l *hip.HostLaunch) error {
		nSplit, cols, rows := int(l.Grid.X), int(l.Grid.Y), int(l.Grid.Z)
		a, err := readRowsAttnArgs(l, maxDim)
		if err != nil {
			return err
		}
		minSplit, rowStride, out := int(l.Arg(9).Int32()), int(l.Arg(10).Int32()), l.Arg(11).Ptr()
		if cols > a.nHead {
			return fmt.Errorf("%s: %w: %d block columns for %d heads", l.Kernel, hip.ErrInvalidValue, cols, a.nHead)
		}
		sc, err := viewRowsScratch(l, l.Arg(0).Ptr(), rowStride, rows, a.nHead, a.headDim, nSplit)
		if err != nil {
			return err
		}
		if out != 0 {
			if err := sc.countersZero(l, rows, cols); err != nil {
				return err
			}
		}
		if err := a.pieces(l, sc, rows, minSplit); err != nil || out == 0 {
			return err
		}
		return sc.merge(l, out, l.Arg(12).Ptr(), rows, a.nHead)
	}
}

// countersZero fails the launch unless the arrival counters of the first
// cols block columns of the first rows rows are zero, as a merging launch
// needs them (the scratch zeroed before its first use; each merging
// launch leaves them so).
func (sc rowsScratch) countersZero(l *hip.HostLaunch, rows, cols int) error {
	for r := range rows {
		for y := range cols {
			if c := sc.counter(r, y); c != 0 {
				return fmt.Errorf("%s: %w: arrival counter %d of row %d is %d, not 0 (scratch not zeroed before its first use?)",
					l.Kernel, hip.ErrInvalidValue, y, r, c)
			}
		}
	}
	return nil
}

// pieces writes attn_rows_split's partials of every head of the first rows
// rows into sc: piece s of each row's context, positions [s·len, (s+1)·len)
// of 0..pos with len = max(minSplit, ⌈(pos+1)/nSplit⌉); an empty piece,
// and every piece of a padding row, as m = −Inf alone.
func (a *rowsAttnArgs) pieces(l *hip.HostLaunch, sc rowsScratch, rows, minSplit int) error {
	kvDim, group, nSplit := a.nKVHead*a.headDim, a.nHead/a.nKVHead, sc.nSplit
	var w attnWork
	for r := range rows {
		ctx, k, v, err := a.context(l, r)
		if err != nil {
			return err
		}
		size := max(minSplit, (ctx+nSplit-1)/nSplit)
		for h := range a.nHead {
			kvOff := h / group * a.headDim
			part := sc.partials(r, h)
			for s := range nSplit {
				pp := part[s*(a.headDim+2):][:a.headDim+2]
				p0 := min(ctx, s*size)
				p1 := min(ctx, p0+size)
				if p0 >= p1 {
					pp[0] = float32(math.Inf(-1)) // only m: the kernel leaves the rest stale
					continue
				}
				w.piece(pp, a.q[(r*a.nHead+h)*a.headDim:][:a.headDim], k[kvOff:], v[kvOff:], kvDim, p0, p1, a.scale)
			}
		}
	}
	return nil
}

// emulateAttnRowsRope returns attn_rows_rope_f32_d<maxDim>(part, q, meta,
// n, layer, nHead, nKVHead, headDim, scale, minSplit, rowStride, k, v,
// dims, neox, thetaScale, freqScale, freqFactors, extFactor, mscale,
// corrLo, corrHi, out, xq), and of its one-head variants (attn_rows_rope1_…,
// the same; attn_rows_rope1m_…, whose pieces are then merged into out and
// xq as attn_rows_split's), grid (nSplit, ·, rows): rope_kv_store's key and value
// heads of each live row into its cache (ropeArgs.storeKV), then
// attn_rows_split's pieces, with no merge, of the live rows' query heads
// rotated at their positions: into a copy, as the kernel rotates them on
// loading, q itself left as it was.
func emulateAttnRowsRope(maxDim int) hip.HostKernel {
	return func(l *hip.HostLaunch) error {
		nSplit, cols, rows := int(l.Grid.X), int(l.Grid.Y), int(l.Grid.Z)
		a, err := readRowsAttnArgs(l, maxDim)
		if err != nil {
			return err
		}
		if cols > a.nHead {
			return fmt.Errorf("%s: %w: %d block columns for %d heads", l.Kernel, hip.ErrInvalidValue, cols, a.nHead)
		}
		r, err := readRopeArgs(l, 13)
		if err != nil {
			return err
		}
		kvDim, qs := a.nKVHead*a.headDim, a.nHead*a.headDim
		kv, err := f32Views(l, rows*kvDim, 11, 12)
		if err != nil {
			return err
		}
		sc, err := viewRowsScratch(l, l.Arg(0).Ptr(), int(l.Arg(10).Int32()), rows, a.nHead, a.headDim, nSplit)
		if err != nil {
			return err
		}
		a.q = slices.Clone(a.q)
		cs := make([]float32, max(0, r.dims))
		for t := range rows {
			if !a.meta.live(t) {
				continue
			}
			r.cosSin(cs, a.meta.pos[t])
			for h := range a.nHead {
				head := a.q[t*qs+h*a.headDim:][:a.headDim]
				r.rotate(head, head, cs)
			}
			if err := r.storeKV(l, a.meta, t, a.layer, a.headDim, cs, kv[0][t*kvDim:(t+1)*kvDim], kv[1][t*kvDim:(t+1)*kvDim]); err != nil {
				return err
			}
		}
		merged := strings.HasPrefix(l.Kernel, "attn_rows_rope1m_")
		if merged {
			if err := sc.countersZero(l, rows, cols); err != nil {
				return err
			}
		}
		if err := a.pieces(l, sc, rows, int(l.Arg(9).Int32())); err != nil || !merged {
			return err
		}
		return sc.merge(l, l.Arg(22).Ptr(), l.Arg(23).Ptr(), rows, a.nHead)
	}
}

// emulateAttnRowsPrefill returns attn_rows_prefill_f32_d<maxDim>(out, q,
// meta, n, layer, nHead, nKVHead, headDim, scale), grid (·, heads): each
// of the n rows' attention over its sequence's positions 0..pos, zeros for
// padding rows.
func emulateAttnRowsPrefill(maxDim int) hip.HostKernel {
	return func(l *hip.HostLaunch) error {
		heads := int(l.Grid.Y)
		a, err := readRowsAttnArgs(l, maxDim)
		if err != nil {
			return err
		}
		kvDim, group := a.nKVHead*a.headDim, a.nHead/a.nKVHead
		out, err := l.Float32s(l.Arg(0).Ptr(), a.n*a.nHead*a.headDim)
		if err != nil {
			return err
		}
		var w attnWork
		part := make([]float32, a.headDim+2)
		for r := range a.n {
			ctx, k, v, err := a.context(l, r)
			if err != nil {
				return err
			}
			for h := range heads {
				o := out[(r*a.nHead+h)*a.headDim:][:a.headDim]
				if ctx == 0 {
					clear(o)
					continue
				}
				kvOff := h / group * a.headDim
				w.piece(part, a.q[(r*a.nHead+h)*a.headDim:][:a.headDim], k[kvOff:], v[kvOff:], kvDim, 0, ctx, a.scale)
				mergePieces(o, part, 1)
			}
		}
		return nil
	}
}
