package gpu

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/forgepipe/forgepipe/hip"
)

// Host-driver emulations of the top-k kernels of src/topk.cu, for
// LoadEmulated (registered with the other half of the ops, opsEmulations).
// Each takes its kernel's arguments and grid and writes what the launch
// writes: blocks rank the same 64-bit keys (topKKey), so ids come in the
// GPU's order exactly, and each block's partial result is written as the
// GPU's record (so each launch stands on its own); the sums are float64,
// rounded to float32 where the GPU stores them.

// topKEmulations returns the emulations of this file by kernel name.
func topKEmulations() map[string]hip.HostKernel {
	return map[string]hip.HostKernel{
		"topk_slice_f32": emulateTopKSlice,
		"topk_merge_f32": emulateTopKMerge,
	}
}

// topKLogit is v with NaN taken as -Inf (topk_logit).
func topKLogit(v float32) float32 {
	if v != v {
		return float32(math.Inf(-1))
	}
	return v
}

// topKKey is topk_key: logit v (NaN already -Inf) at index id as a key,
// its float bits made orderable in the high word (-0 as +0) and id
// inverted in the low word, so that descending keys are descending logits
// with the lower id first.
func topKKey(v float32, id int) uint64 {
	b := math.Float32bits(v)
	if b == 0x80000000 {
		b = 0
	}
	if b&0x80000000 != 0 {
		b = ^b
	} else {
		b |= 0x80000000
	}
	return uint64(b)<<32 | uint64(^uint32(id))
}

// topKStats are a block's stats: its largest logit and the sums of
// e^(x - m) and e^((x - m)·invT) over its logits.
type topKStats struct {
	m      float32
	s1, sT float64
}

// topKLaunch holds what both kernels take: out, part (the records this
// launch writes), the logits x of rows rows of n, invT, k and lk.
type topKLaunch struct {
	l          *hip.HostLaunch
	out, part  hip.DevicePtr
	x, invT    []float32
	n, k, run  int
	rows, nb   int // the grid: blocks per row, rows
	recordSize int64
}

// readTopKLaunch reads the arguments the kernels share: out and part first,
// x at xArg and invT after it, n at nArg, k at kArg and lk after it.
func readTopKLaunch(l *hip.HostLaunch, xArg, nArg, kArg int) (*topKLaunch, error) {
	a := &topKLaunch{l: l, out: l.Arg(0).Ptr(), part: l.Arg(1).Ptr(), n: int(l.Arg(nArg).Int32()),
		k: int(l.Arg(kArg).Int32()), nb: int(l.Grid.X), rows: int(l.Grid.Y)}
	lk := int(l.Arg(kArg + 1).Int32())
	if a.n < 1 || lk < 0 || lk > 8 || a.k < 1 || a.k > 1<<lk {
		return nil, fmt.Errorf("%s: %w: %d logits, k = %d, runs of 2^%d", l.Kernel, hip.ErrInvalidValue, a.n, a.k, lk)
	}
	a.run = 1 << lk
	a.recordSize = 8*int64(a.run) + 16
	var err error
	if a.x, err = l.Float32s(l.Arg(xArg).Ptr(), a.rows*a.n); err != nil {
		return nil, err
	}
	if p := l.Arg(xArg + 1).Ptr(); p != 0 {
		if a.invT, err = l.Float32s(p, a.rows); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// invTemp is row r's inverse temperature, 1 where there is none.
func (a *topKLaunch) invTemp(r int) float64 {
	if a.invT == nil || a.invT[r] == 0 {
		return 1
	}
	return float64(a.invT[r])
}

// record views record i of the records at p: its keys and its stats.
func (a *topKLaunch) record(p hip.DevicePtr, i int) ([]uint64, []float32, error) {
	rec := p.Add(int64(i) * a.recordSize)
	keys, err := hip.HostSlice[uint64](a.l, rec, a.run)
	if err != nil {
		return nil, nil, err
	}
	st, err := a.l.Float32s(rec.Add(8*int64(a.run)), 3)
	return keys, st, err
}

// finish is topk_finish for block b of row r: the top run of keys (in any
// order) and the block's stats as its record, or, when the grid has one
// block per row, as the row's result.
func (a *topKLaunch) finish(r, b int, keys []uint64, st topKStats) error {
	slices.SortFunc(keys, func(x, y uint64) int { return cmp.Compare(y, x) })
	keys = keys[:min(len(keys), a.run)]
	if a.nb > 1 {
		rk, rs, err := a.record(a.part, r*a.nb+b)
		if err != nil {
			return err
		}
		clear(rk)
		copy(rk, keys)
		rs[0], rs[1], rs[2] = st.m, float32(st.s1), float32(st.sT)
		return nil
	}
	words, err := hip.HostSlice[uint32](a.l, a.out.Add(int64(r)*TopKRowBytes(a.k)), 4+2*a.k)
	if err != nil {
		return err
	}
	count := min(a.k, a.n)
	if len(keys) < count || count > 0 && keys[count-1] == 0 {
		return fmt.Errorf("%s: %w: row %d has %d candidates for %d places", a.l.Kernel, hip.ErrInvalidValue, r, len(keys), count)
	}
	words[0], words[1], words[2] = math.Float32bits(st.m), math.Float32bits(float32(st.s1)), math.Float32bits(float32(st.sT))
	words[3] = uint32(count)
	for i := range a.k {
		id, v := int32(-1), float32(math.Inf(-1))
		if i < count {
			id = int32(^uint32(keys[i]))
			v = topKLogit(a.x[r*a.n+int(id)])
		}
		words[4+i], words[4+a.k+i] = uint32(id), math.Float32bits(v)
	}
	return nil
}

// emulateTopKSlice is topk_slice_f32(out, part, x, invT, n, k, lk), grid
// (blocks, rows): block b of row r ranks logits [b·4096, (b+1)·4096) of
// the row and sums e^(x - m) and e^((x - m)·invT) over them, m their max,
// skipping -Inf and NaN.
func emulateTopKSlice(l *hip.HostLaunch) error {
	a, err := readTopKLaunch(l, 2, 4, 5)
	if err != nil {
		return err
	}
	for r := range a.rows {
		t := a.invTemp(r)
		row := a.x[r*a.n : (r+1)*a.n]
		for b := range a.nb {
			lo, hi := min(a.n, b*topkSlice), min(a.n, (b+1)*topkSlice)
			keys := make([]uint64, 0, hi-lo)
			st := topKStats{m: float32(math.Inf(-1))}
			for i, v := range row[lo:hi] {
				v = topKLogit(v)
				keys = append(keys, topKKey(v, lo+i))
				st.m = max(st.m, v)
			}
			for _, v := range row[lo:hi] {
				if v = topKLogit(v); !math.IsInf(float64(v), -1) {
					d := float64(v) - float64(st.m)
					st.s1 += math.Exp(d)
					st.sT += math.Exp(d * t)
				}
			}
			if err := a.finish(r, b, keys, st); err != nil {
				return err
			}
		}
	}
	return nil
}

// emulateTopKMerge is topk_merge_f32(out, part, in, x, invT, n, nIn, k, lk),
// grid (blocks, rows): block b of row r merges records [b·c, (b+1)·c) of
// the row's nIn in `in` (c = 4096 >> lk): the top keys of their runs, the
// largest of their maxima M, and their sums rescaled by e^(m - M) and
// e^((m - M)·invT), records of max -Inf adding nothing.
func emulateTopKMerge(l *hip.HostLaunch) error {
	a, err := readTopKLaunch(l, 3, 5, 7)
	if err != nil {
		return err
	}
	in, nIn := l.Arg(2).Ptr(), int(l.Arg(6).Int32())
	per := topkSlice / a.run
	for r := range a.rows {
		t := a.invTemp(r)
		for b := range a.nb {
			first := b * per
			cnt := max(0, min(per, nIn-first))
			keys := make([]uint64, 0, cnt*a.run)
			stats := make([][]float32, cnt)
			st := topKStats{m: float32(math.Inf(-1))}
			for q := range cnt {
				rk, rs, err := a.record(in, r*nIn+first+q)
				if err != nil {
					return err
				}
				keys, stats[q] = append(keys, rk...), rs
				st.m = max(st.m, rs[0])
			}
			for _, rs := range stats {
				if !math.IsInf(float64(rs[0]), -1) {
					d := float64(rs[0]) - float64(st.m)
					st.s1 += float64(rs[1]) * math.Exp(d)
					st.sT += float64(rs[2]) * math.Exp(d*t)
				}
			}
			if err := a.finish(r, b, keys, st); err != nil {
				return err
			}
		}
	}
	return nil
}
