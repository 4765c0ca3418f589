package gpu

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
)

// TestToDevice checks the regrouping of Q8_0 and Q4_0 (layout.go; Q4_0's
// is off unless asked for, and switched on here): the scales of eight
// blocks first, then their quants; ungroup undoes it; other types and rows
// of other lengths are copied as they are.
func TestToDevice(t *testing.T) {
	for _, typ := range []gguf.Type{gguf.TypeQ8_0, gguf.TypeQ4_0} {
		r := regroups[typ]
		defer func(on bool) { r.on = on }(r.on)
		r.on = true // whether the program regroups it or not
		n, g := 2+r.quants, r.group()
		src := make([]byte, 2*g)
		for i := range src {
			src[i] = byte(i*7 + 3)
		}
		dst := make([]byte, len(src))
		if w := ToDevice(dst, src, typ, 512); w != len(src) || DeviceUnit(typ, 512) != g {
			t.Fatalf("%s: ToDevice wrote %d bytes (want %d), unit %d (want %d)", typ, w, len(src), DeviceUnit(typ, 512), g)
		}
		for k := range 2 {
			for b := range 8 {
				blk := src[k*g+n*b:]
				out := dst[k*g:]
				if out[2*b] != blk[0] || out[2*b+1] != blk[1] {
					t.Fatalf("%s group %d block %d: scale % x, want % x", typ, k, b, out[2*b:2*b+2], blk[:2])
				}
				if !bytes.Equal(out[16+r.quants*b:16+r.quants*(b+1)], blk[2:n]) {
					t.Fatalf("%s group %d block %d: quants moved wrongly", typ, k, b)
				}
			}
		}
		back := make([]byte, len(src))
		for o := 0; o < len(src); o += g {
			r.ungroup(back[o:o+g], dst[o:o+g])
		}
		if !bytes.Equal(back, src) {
			t.Fatalf("%s: ungroup does not undo regroup", typ)
		}
	}
	src := make([]byte, 2*q8Regroup.group())
	for i := range src {
		src[i] = byte(i)
	}
	for _, c := range []struct {
		t    gguf.Type
		cols int
	}{{gguf.TypeQ8_0, 96}, {gguf.TypeQ4_0, 160}, {gguf.TypeQ4_K, 512}, {gguf.TypeF16, 512}} {
		if Grouped(c.t, c.cols) || DeviceUnit(c.t, c.cols) != 1 {
			t.Errorf("%s with %d columns: grouped", c.t, c.cols)
		}
		out := make([]byte, len(src))
		ToDevice(out, src, c.t, c.cols)
		if !bytes.Equal(out, src) {
			t.Errorf("%s with %d columns: not copied as is", c.t, c.cols)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("ToDevice of part of a group did not panic")
		}
	}()
	ToDevice(make([]byte, 100), src[:100], gguf.TypeQ8_0, 512)
}

// TestGroupedExact runs every kernel that reads weights on one Q8_0 or
// Q4_0 matrix twice, as in the file and regrouped, and wants the same bits:
// MatVecQ8 (with and without a residual), MatVec, MatVecQ8Rows,
// Dequantize (half and float32) and Embedding. On the GPU this checks that
// TQ8_0X, TQ4_0X and their mvrows readers sum what the GGUF layouts' do, in
// the same order.
func TestGroupedExact(t *testing.T) {
	for _, typ := range []gguf.Type{gguf.TypeQ8_0, gguf.TypeQ4_0} {
		t.Run(typ.String()+"/gpu", func(t *testing.T) { newEnv(t, 61).checkGrouped(t, typ) })
		t.Run(typ.String()+"/emulated", func(t *testing.T) { emulatedEnv(t, 61).checkGrouped(t, typ) })
	}
}

func (e *env) checkGrouped(t *testing.T, typ gguf.Type) {
	r := regroups[typ]
	defer func(on bool) { r.on = on }(r.on) // each run below picks the layout
	for _, sh := range [][2]int{{67, 4096}, {130, 2048}, {5, 256}} {
		rows, cols := sh[0], sh[1]
		raw, err := gguf.QuantizeParallel(typ, e.randVec(rows*cols), cols)
		e.check(err)
		grouped := make([]byte, len(raw))
		r.on = true
		ToDevice(grouped, raw, typ, cols)
		x := e.randVec(3 * cols)
		xd := e.uploadF32(x)
		xq1, xq3 := e.alloc(ActQ8Bytes(cols)), e.alloc(ActQ8Bytes(3*cols))
		e.check(e.k.QuantizeActQ8(e.s, xd, xq1, cols))
		e.check(e.k.QuantizeActQ8(e.s, xd, xq3, 3*cols))
		res := e.uploadF32(e.randVec(rows))
		toks := []int32{int32(rows - 1), 0, int32(rows / 2)}
		tb := make([]byte, 4*len(toks))
		for i, v := range toks {
			binary.LittleEndian.PutUint32(tb[4*i:], uint32(v))
		}
		tokens := e.upload(tb)
		run := func(group bool, data []byte) [][]byte {
			r.on = group
			w := e.upload(data)
			outs := [][]byte{}
			out := func(n int64, f func(y hip.DevicePtr) error) {
				y := e.alloc(n)
				e.check(e.s.MemsetD32Async(y, 0x7fc00001, n/4))
				e.check(f(y))
				outs = append(outs, e.downloadBytes(y, int(n)))
			}
			out(4*int64(rows), func(y hip.DevicePtr) error { return e.k.MatVecQ8(e.s, typ, w, xq1, y, rows, cols) })
			out(4*int64(rows), func(y hip.DevicePtr) error {
				return e.k.MatVecQ8Add(e.s, typ, w, xq1, res, y, rows, cols)
			})
			out(4*int64(rows), func(y hip.DevicePtr) error { return e.k.MatVec(e.s, typ, w, xd, y, rows, cols) })
			out(12*int64(rows), func(y hip.DevicePtr) error {
				return e.k.MatVecQ8Rows(e.s, typ, w, xq3, y, rows, cols, 3)
			})
			out(2*int64(rows*cols), func(y hip.DevicePtr) error {
				return e.k.Dequantize(e.s, typ, w, y, rows, cols, true)
			})
			out(4*int64(rows*cols), func(y hip.DevicePtr) error {
				return e.k.Dequantize(e.s, typ, w, y, rows, cols, false)
			})
			out(4*int64(len(toks)*cols), func(y hip.DevicePtr) error {
				return e.k.Embedding(e.s, typ, w, tokens, y, len(toks), rows, cols)
			})
			e.sync()
			return outs
		}
		want, got := run(false, raw), run(true, grouped)
		names := []string{"MatVecQ8", "MatVecQ8Add", "MatVec", "MatVecQ8Rows", "Dequantize f16", "Dequantize f32", "Embedding"}
		for i, name := range names {
			if !bytes.Equal(got[i], want[i]) {
				t.Errorf("%s %dx%d %s: regrouped differs from the file layout", typ, rows, cols, name)
				continue
			}
			for o := 0; o+4 <= len(got[i]); o += 4 {
				if v := math.Float32frombits(binary.LittleEndian.Uint32(got[i][o:])); name != "Dequantize f16" && math.IsNaN(float64(v)) {
					t.Errorf("%s %dx%d %s: [%d] not written", typ, rows, cols, name, o/4)
					break
				}
			}
		}
	}
}
