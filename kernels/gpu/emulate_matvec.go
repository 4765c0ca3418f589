package gpu

import (
	"fmt"
	"math"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
)

// Host-driver emulations of the matrix kernels, for LoadEmulated: the
// matrix-vector products (matvec_, matvec_decoded_, matvec8_, matvec8s_,
// mvrows_), the activation quantiser (quantize_act_q8), dequantisation
// (dequant_), embedding lookup (embed_) and the half/bfloat16 conversions
// (f32_to_f16, f32_to_bf16).
//
// Each takes the arguments and launch shape of its kernel in src/quant.cu,
// src/matvec_rows.cu or src/ops.cu and computes what the kernel computes,
// not how: weights are decoded by gguf's dequantisers and products are
// summed in float64, so results agree with the GPU within TOLERANCES.md,
// not bit for bit. Where a kernel derives its rows from the grid (matvec8,
// mvrows), a grid too small for the matrix leaves the same rows unwritten
// here; a launch whose partial result is not worth reproducing
// (dequant and embed with too few threads, columns that are not a whole
// number of the kernel's blocks) fails instead. Alignment is not checked
// beyond each view's element size. Nothing is shared between launches, so
// streams may run them concurrently.

func init() {
	for name, fn := range matVecEmulations() {
		hip.RegisterHostKernel(name, fn)
	}
}

// matVecEmulations returns the emulations of this file by kernel name.
func matVecEmulations() map[string]hip.HostKernel {
	m := map[string]hip.HostKernel{
		"quantize_act_q8": emulateQuantizeActQ8,
		"f32_to_f16":      emulateConvert(gguf.FP32ToFP16),
		"f32_to_bf16":     emulateConvert(gguf.FP32ToBF16),
	}
	for _, v := range mvWeightVariants() {
		for _, r := range []int{1, 2, 4} {
			m[fmt.Sprintf("matvec_%s_r%d", v.suffix, r)] = v.matVec()
			if HasMatVecQ8(v.t) {
				m[fmt.Sprintf("matvec_decoded_%s_r%d", v.suffix, r)] = v.matVec()
				m[fmt.Sprintf("matvec8_%s_r%d", v.suffix, r)] = v.matVec8(r, false)
				if v.grouped == nil {
					m[fmt.Sprintf("matvec8s_%s_r%d", v.suffix, r)] = v.matVec8(r, true)
				}
			}
		}
		m["dequant_"+v.suffix+"_f32"] = v.dequant(false)
		m["dequant_"+v.suffix+"_f16"] = v.dequant(true)
		m["embed_"+v.suffix] = v.embed()
	}
	for key, name := range mvRowsNames {
		t := mvRowsTypes[key.suffix]
		v := mvWeights{suffix: key.suffix, t: t, qk: t.BlockSize()}
		if isGrouped(key.suffix) {
			v.qk, v.grouped = 256, regroups[t]
		}
		m[name] = v.matVecRows(key.r, key.n)
	}
	return m
}

// mvWeights is one weight layout the kernels decode: the kernel-name
// suffix, the GGUF type of the weights and qk, the values of the kernel's
// block (the columns must be a multiple of it); grouped, if set, the
// regrouping of the device layout (layout.go).
type mvWeights struct {
	suffix  string
	t       gguf.Type
	qk      int
	grouped *regroup
}

// mvWeightVariants lists the weight layouts of the matvec_, dequant_ and
// embed_ kernels: every type of typeNames (F32 in blocks of 4, F16 and
// BF16 in blocks of 8, like their 16-byte kernels) and the one-value f32s,
// f16s and bf16s.
func mvWeightVariants() []mvWeights {
	vs := []mvWeights{{"f32s", gguf.TypeF32, 1, nil}, {"f16s", gguf.TypeF16, 1, nil}, {"bf16s", gguf.TypeBF16, 1, nil},
		{q8Regroup.suffix, gguf.TypeQ8_0, 256, q8Regroup}, {q4Regroup.suffix, gguf.TypeQ4_0, 256, q4Regroup}}
	for t, s := range typeNames {
		qk := t.BlockSize()
		switch t {
		case gguf.TypeF32:
			qk = 4
		case gguf.TypeF16, gguf.TypeBF16:
			qk = 8
		}
		vs = append(vs, mvWeights{s, t, qk, nil})
	}
	return vs
}

// mvMatrix is a rows×cols weight matrix in device memory, rows rowBytes
// apart, as a kernel reads it.
type mvMatrix struct {
	mvWeights
	data       []byte // from the first row to the end of the last
	rows, cols int
	rowBytes   int64
	rowSize    int64 // bytes of one row's blocks
}

// matrix views the rows×cols weights at w.
func (v mvWeights) matrix(l *hip.HostLaunch, w hip.DevicePtr, rows, cols int32, rowBytes int64) (mvMatrix, error) {
	if rows < 0 || cols <= 0 || int(cols)%v.qk != 0 || rowBytes < 0 {
		return mvMatrix{}, fmt.Errorf("%w: %d x %d %s matrix, rows %d bytes apart (columns must be a positive multiple of %d)",
			hip.ErrInvalidValue, rows, cols, v.t, rowBytes, v.qk)
	}
	rowSize, err := v.t.RowSize(int(cols))
	if err != nil {
		return mvMatrix{}, fmt.Errorf("%s weights: %w", v.t, err)
	}
	m := mvMatrix{mvWeights: v, rows: int(rows), cols: int(cols), rowBytes: rowBytes, rowSize: int64(rowSize)}
	if rows > 0 {
		m.data, err = l.Bytes(w, int64(rows-1)*rowBytes+m.rowSize)
	}
	return m, err
}

// row dequantises row r into dst (cols values).
func (m mvMatrix) row(r int, dst []float32) error {
	off := int64(r) * m.rowBytes
	src := m.data[off : off+m.rowSize]
	if r := m.grouped; r != nil {
		b, g := make([]byte, len(src)), r.group()
		for o := 0; o+g <= len(src); o += g {
			r.ungroup(b[o:o+g], src[o:o+g])
		}
		src = b
	}
	return gguf.Dequantize(m.t, src, dst)
}

// matVec emulates matvec_<t>_r<R> and matvec_decoded_<t>_r<R>(w, x, y,
// rows, cols, rowBytes): y[r] = (row r of w) · x. Their blocks stride over
// the row groups, so every row is written whatever the grid.
func (v mvWeights) matVec() hip.HostKernel {
	return func(l *hip.HostLaunch) error {
		m, err := v.matrix(l, l.Arg(0).Ptr(), l.Arg(3).Int32(), l.Arg(4).Int32(), l.Arg(5).Int64())
		if err != nil {
			return err
		}
		x, err := l.Float32s(l.Arg(1).Ptr(), m.cols)
		if err != nil {
			return err
		}
		y, err := l.Float32s(l.Arg(2).Ptr(), m.rows)
		if err != nil {
			return err
		}
		w := make([]float32, m.cols)
		for r := range y {
			if err := m.row(r, w); err != nil {
				return err
			}
			y[r] = float32(mvDot(w, x))
		}
		return nil
	}
}

// matVec8 emulates matvec8_<t>_r<R>(w, xq, y, rows, cols, rowBytes, res)
// and, when staged, matvec8s_<t>_r<R>(…, rowBytes, wc, res): y[r] = (row r
// of w) · the dequantised int8 activations xq (QuantizeActQ8's layout),
// rounded to float32, plus res[r] in float32 when res is not null (res may
// be y). matvec8 writes the rows of its grid's blocks (block b: rows
// bR..bR+R-1); matvec8s strides over the row groups and writes them all.
func (v mvWeights) matVec8(rowsPerBlock int, staged bool) hip.HostKernel {
	return func(l *hip.HostLaunch) error {
		m, err := v.matrix(l, l.Arg(0).Ptr(), l.Arg(3).Int32(), l.Arg(4).Int32(), l.Arg(5).Int64())
		if err != nil {
			return err
		}
		rows, resArg := m.rows, 6
		if staged {
			if wc := l.Arg(6).Int32(); wc < 1 {
				return fmt.Errorf("%w: %d warps per row group", hip.ErrInvalidValue, wc)
			}
			resArg = 7
		} else {
			rows = mvGridRows(l, rowsPerBlock, m.rows)
		}
		xq, xd, err := mvActQ8(l, l.Arg(1).Ptr(), 1, m.cols)
		if err != nil {
			return err
		}
		y, err := l.Float32s(l.Arg(2).Ptr(), rows)
		if err != nil {
			return err
		}
		var res []float32
		if p := l.Arg(resArg).Ptr(); p != 0 && rows > 0 {
			if res, err = l.Float32s(p, rows); err != nil {
				return err
			}
		}
		w := make([]float32, m.cols)
		for r := range y {
			if err := m.row(r, w); err != nil {
				return err
			}
			p := float32(mvDotQ8(w, xq, xd))
			if res != nil {
				p += res[r] // add_f32's one rounding; res[r] is read before y[r] is written
			}
			y[r] = p
		}
		return nil
	}
}

// matVecRows emulates mvrows_<t>_r<R>_n<N>(w, xq, y, rows, cols,
// rowBytes): y[j·rows + r] = (row r of w) · activation row j, for the N
// rows quantised together in xq (MatVecQ8Rows). Like matvec8 it writes the
// rows of its grid's blocks only.
func (v mvWeights) matVecRows(rowsPerBlock, n int) hip.HostKernel {
	return func(l *hip.HostLaunch) error {
		m, err := v.matrix(l, l.Arg(0).Ptr(), l.Arg(3).Int32(), l.Arg(4).Int32(), l.Arg(5).Int64())
		if err != nil {
			return err
		}
		rows := mvGridRows(l, rowsPerBlock, m.rows)
		if rows == 0 {
			return nil
		}
		xq, xd, err := mvActQ8(l, l.Arg(1).Ptr(), n, m.cols)
		if err != nil {
			return err
		}
		y, err := l.Float32s(l.Arg(2).Ptr(), (n-1)*m.rows+rows)
		if err != nil {
			return err
		}
		w := make([]float32, m.cols)
		nb := m.cols / 32
		for r := range rows {
			if err := m.row(r, w); err != nil {
				return err
			}
			for j := range n {
				y[j*m.rows+r] = float32(mvDotQ8(w, xq[j*m.cols:(j+1)*m.cols], xd[j*nb:(j+1)*nb]))
			}
		}
		return nil
	}
}

// dequant emulates dequant_<t>_f32 and dequant_<t>_f16(w, out, rows, cols,
// rowBytes): the whole matrix as float32, or as IEEE half rounded to
// nearest even. The kernel gives each thread one unit of values (a block,
// chunks of one, or one value), in blocks of dequantBlock threads but for
// the one-value variants; a grid with fewer threads than units, or other
// blocks, fails here.
func (v mvWeights) dequant(half bool) hip.HostKernel {
	return func(l *hip.HostLaunch) error {
		m, err := v.matrix(l, l.Arg(0).Ptr(), l.Arg(2).Int32(), l.Arg(3).Int32(), l.Arg(4).Int64())
		if err != nil {
			return err
		}
		g := geometry{suffix: v.suffix, qk: v.qk}
		if g.qk > 1 && l.Block.X != dequantBlock {
			return fmt.Errorf("%w: dequant_%s in blocks of %d threads (want %d)", hip.ErrInvalidValue, v.suffix, l.Block.X, dequantBlock)
		}
		if err := v.checkThreads(l, dequantThreads(v.t, g, m.rows, m.cols)); err != nil {
			return err
		}
		n := m.rows * m.cols
		if !half {
			out, err := l.Float32s(l.Arg(1).Ptr(), n)
			if err != nil {
				return err
			}
			for r := range m.rows {
				if err := m.row(r, out[r*m.cols:(r+1)*m.cols]); err != nil {
					return err
				}
			}
			return nil
		}
		out, err := hip.HostSlice[uint16](l, l.Arg(1).Ptr(), n)
		if err != nil {
			return err
		}
		w := make([]float32, m.cols)
		for r := range m.rows {
			if err := m.row(r, w); err != nil {
				return err
			}
			for c, x := range w {
				out[r*m.cols+c] = gguf.FP32ToFP16(x)
			}
		}
		return nil
	}
}

// embed emulates embed_<t>(w, tokens, out, rows, cols, rowBytes, stride):
// for each of the grid.Y token ids (every stride-th int32), its row of w
// dequantised into a row of out, or a row of NaN for an id outside [0,
// rows). The x threads of the grid must cover a row's chunks.
func (v mvWeights) embed() hip.HostKernel {
	return func(l *hip.HostLaunch) error {
		m, err := v.matrix(l, l.Arg(0).Ptr(), l.Arg(3).Int32(), l.Arg(4).Int32(), l.Arg(5).Int64())
		if err != nil {
			return err
		}
		if err := v.checkThreads(l, int64(v.chunksPerRow(m.cols))); err != nil {
			return err
		}
		n, stride := int(l.Grid.Y), int(l.Arg(6).Int32())
		if stride < 1 {
			return fmt.Errorf("embed: stride %d", stride)
		}
		tokens, err := hip.HostSlice[int32](l, l.Arg(1).Ptr(), (n-1)*stride+1)
		if err != nil {
			return err
		}
		out, err := l.Float32s(l.Arg(2).Ptr(), n*m.cols)
		if err != nil {
			return err
		}
		nan := math.Float32frombits(0x7fc00000)
		for i := range n {
			tok := tokens[i*stride]
			o := out[i*m.cols : (i+1)*m.cols]
			if tok < 0 || int(tok) >= m.rows {
				for c := range o {
					o[c] = nan
				}
				continue
			}
			if err := m.row(int(tok), o); err != nil {
				return err
			}
		}
		return nil
	}
}

// chunksPerRow is the number of threads the embed kernels give a row of
// cols values.
func (v mvWeights) chunksPerRow(cols int) int {
	return chunksPerRow(v.t, geometry{suffix: v.suffix, qk: v.qk}, cols)
}

// checkThreads fails unless the launch's x threads (grid.X × block.X)
// cover the kernel's need chunks.
func (v mvWeights) checkThreads(l *hip.HostLaunch, need int64) error {
	if have := int64(l.Grid.X) * int64(l.Block.X); have < need {
		return fmt.Errorf("%w: %d threads for %d chunks (the emulation does not reproduce partial results)",
			hip.ErrInvalidValue, have, need)
	}
	return nil
}

// emulateQuantizeActQ8 emulates quantize_act_q8(xq, x, n): each 32-value
// block of x to int8 with a float32 scale (mvQuantizeBlock), n int8 then
// n/32 scales at xq. Threads take one block per 32, so a grid of fewer
// than n threads leaves the blocks past it unwritten.
func emulateQuantizeActQ8(l *hip.HostLaunch) error {
	n := int(l.Arg(2).Int32())
	if n < 0 || n%32 != 0 || l.Block.X%32 != 0 {
		return fmt.Errorf("%w: %d activations in blocks of %d threads (want multiples of 32)", hip.ErrInvalidValue, n, l.Block.X)
	}
	nb := int(min(int64(n/32), int64(l.Grid.X)*int64(l.Block.X)/32))
	if nb == 0 {
		return nil
	}
	xq := l.Arg(0).Ptr()
	q, err := hip.HostSlice[int8](l, xq, 32*nb)
	if err != nil {
		return err
	}
	d, err := l.Float32s(xq.Add(int64(n)), nb)
	if err != nil {
		return err
	}
	x, err := l.Float32s(l.Arg(1).Ptr(), 32*nb)
	if err != nil {
		return err
	}
	for b := range nb {
		d[b] = mvQuantizeBlock(q[32*b:32*b+32], x[32*b:32*b+32])
	}
	return nil
}

// mvQuantizeBlock rounds the 32 values of x to q as quantize_act_q8 does
// and returns their scale: d = amax/127 (amax ignoring NaNs, as fmaxf
// does), q = roundf(x·(1/d)), halves away from zero, 0 where d is 0.
func mvQuantizeBlock(q []int8, x []float32) float32 {
	amax := float32(math.NaN())
	for _, v := range x {
		amax = mvFmaxf(amax, float32(math.Abs(float64(v))))
	}
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	for i, v := range x {
		p := v * id
		q[i] = int8(mvCvtInt32(math.Round(float64(p)))) // (i8)(int): the low byte
	}
	return d
}

// mvFmaxf is C's fmaxf: the larger of a and b, or the other if one is NaN.
func mvFmaxf(a, b float32) float32 {
	switch {
	case a != a:
		return b
	case b != b:
		return a
	}
	return max(a, b)
}

// mvCvtInt32 is the GPU's float-to-int conversion of an integral value:
// saturating, with NaN going to 0.
func mvCvtInt32(f float64) int32 {
	switch {
	case f != f:
		return 0
	case f >= math.MaxInt32:
		return math.MaxInt32
	case f <= math.MinInt32:
		return math.MinInt32
	}
	return int32(f)
}

// emulateConvert returns the emulation of a conversion kernel (out, x,
// n): out[i] = conv(x[i]) for the n float32 of x. The kernel strides over
// the grid, so every element is converted.
func emulateConvert(conv func(float32) uint16) hip.HostKernel {
	return func(l *hip.HostLaunch) error {
		n := l.Arg(2).Int64()
		if n <= 0 {
			return nil
		}
		out, err := hip.HostSlice[uint16](l, l.Arg(0).Ptr(), int(n))
		if err != nil {
			return err
		}
		x, err := l.Float32s(l.Arg(1).Ptr(), int(n))
		if err != nil {
			return err
		}
		for i, v := range x {
			out[i] = conv(v)
		}
		return nil
	}
}

// mvActQ8 views n rows of cols int8 activations quantised together by
// quantize_act_q8 at xq: n·cols int8 values, then n·cols/32 float32 scales.
func mvActQ8(l *hip.HostLaunch, xq hip.DevicePtr, n, cols int) ([]int8, []float32, error) {
	if cols%32 != 0 {
		return nil, nil, fmt.Errorf("%w: %d int8 activations per row, not a multiple of 32", hip.ErrInvalidValue, cols)
	}
	q, err := hip.HostSlice[int8](l, xq, n*cols)
	if err != nil {
		return nil, nil, err
	}
	d, err := l.Float32s(xq.Add(int64(n*cols)), n*cols/32)
	if err != nil {
		return nil, nil, err
	}
	return q, d, nil
}

// mvGridRows is the rows a kernel that takes rowsPerBlock rows per block of
// its grid, without striding, writes of a matrix of rows.
func mvGridRows(l *hip.HostLaunch, rowsPerBlock, rows int) int {
	return int(min(int64(rows), int64(l.Grid.X)*int64(rowsPerBlock)))
}

// mvDot is w · x, summed in float64.
func mvDot(w, x []float32) float64 {
	var s float64
	for i, v := range w {
		s += float64(v) * float64(x[i])
	}
	return s
}

// mvDotQ8 is w · the int8 activations q with a float32 scale d per 32,
// summed in float64.
func mvDotQ8(w []float32, q []int8, d []float32) float64 {
	var s float64
	for b, scale := range d {
		var sb float64
		for i := 32 * b; i < 32*b+32; i++ {
			sb += float64(w[i]) * float64(q[i])
		}
		s += float64(scale) * sb
	}
	return s
}
