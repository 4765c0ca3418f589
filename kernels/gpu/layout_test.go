package gpu

import (
	"bytes"
	"math"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
)

// TestToDevice checks the regrouping of Q8_0 (layout.go): the scales of
// eight blocks first, then their quants; ungroupQ8_0 undoes it; other
// types and rows of other lengths are copied as they are.
func TestToDevice(t *testing.T) {
	if !groupQ8 {
		t.Skip("FORGEPIPE_Q8_0X=0: nothing is regrouped")
	}
	src := make([]byte, 2*q8Group)
	for i := range src {
		src[i] = byte(i*7 + 3)
	}
	dst := make([]byte, len(src))
	if n := ToDevice(dst, src, gguf.TypeQ8_0, 512); n != len(src) {
		t.Fatalf("ToDevice wrote %d bytes, want %d", n, len(src))
	}
	for g := range 2 {
		for b := range 8 {
			blk := src[g*q8Group+34*b:]
			out := dst[g*q8Group:]
			if out[2*b] != blk[0] || out[2*b+1] != blk[1] {
				t.Fatalf("group %d block %d: scale % x, want % x", g, b, out[2*b:2*b+2], blk[:2])
			}
			if !bytes.Equal(out[16+32*b:16+32*b+32], blk[2:34]) {
				t.Fatalf("group %d block %d: quants moved wrongly", g, b)
			}
		}
	}
	back := make([]byte, len(src))
	for o := 0; o < len(src); o += q8Group {
		ungroupQ8_0(back[o:o+q8Group], dst[o:o+q8Group])
	}
	if !bytes.Equal(back, src) {
		t.Fatal("ungroupQ8_0 does not undo groupQ8_0")
	}
	for _, c := range []struct {
		t    gguf.Type
		cols int
	}{{gguf.TypeQ8_0, 96}, {gguf.TypeQ4_0, 512}, {gguf.TypeF16, 512}} {
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
	ToDevice(dst, src[:100], gguf.TypeQ8_0, 512)
}

// TestGroupedQ8Exact runs every kernel that reads weights on one Q8_0
// matrix twice, as in the file and regrouped, and wants the same bits:
// MatVecQ8 (with and without a residual), MatVec, MatVecQ8Rows,
// Dequantize (half and float32) and Embedding. On the GPU this checks that
// TQ8_0X and MvrQ8_0X sum what TQ8_0 and MvrQ8_0 do in the same order.
func TestGroupedQ8Exact(t *testing.T) {
	t.Run("gpu", func(t *testing.T) { newEnv(t, 61).checkGroupedQ8(t) })
	t.Run("emulated", func(t *testing.T) { emulatedEnv(t, 61).checkGroupedQ8(t) })
}

func (e *env) checkGroupedQ8(t *testing.T) {
	if !groupQ8 {
		t.Skip("FORGEPIPE_Q8_0X=0: nothing is regrouped")
	}
	defer func() { groupQ8 = true }()
	for _, sh := range [][2]int{{67, 4096}, {130, 2048}, {5, 256}} {
		rows, cols := sh[0], sh[1]
		raw, err := gguf.QuantizeParallel(gguf.TypeQ8_0, e.randVec(rows*cols), cols)
		e.check(err)
		grouped := make([]byte, len(raw))
		ToDevice(grouped, raw, gguf.TypeQ8_0, cols)
		x := e.randVec(3 * cols)
		xd := e.uploadF32(x)
		xq1, xq3 := e.alloc(ActQ8Bytes(cols)), e.alloc(ActQ8Bytes(3*cols))
		e.check(e.k.QuantizeActQ8(e.s, xd, xq1, cols))
		e.check(e.k.QuantizeActQ8(e.s, xd, xq3, 3*cols))
		res := e.uploadF32(e.randVec(rows))
		toks := []int32{int32(rows - 1), 0, int32(rows / 2)}
		tb := make([]byte, 4*len(toks))
		for i, v := range toks {
			tb[4*i], tb[4*i+1], tb[4*i+2], tb[4*i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		}
		tokens := e.upload(tb)
		run := func(group bool, data []byte) [][]byte {
			groupQ8 = group
			w := e.upload(data)
			outs := [][]byte{}
			out := func(n int64, f func(y hip.DevicePtr) error) {
				y := e.alloc(n)
				e.check(e.s.MemsetD32Async(y, 0x7fc00001, n/4))
				e.check(f(y))
				outs = append(outs, e.downloadBytes(y, int(n)))
			}
			out(4*int64(rows), func(y hip.DevicePtr) error { return e.k.MatVecQ8(e.s, gguf.TypeQ8_0, w, xq1, y, rows, cols) })
			out(4*int64(rows), func(y hip.DevicePtr) error {
				return e.k.MatVecQ8Add(e.s, gguf.TypeQ8_0, w, xq1, res, y, rows, cols)
			})
			out(4*int64(rows), func(y hip.DevicePtr) error { return e.k.MatVec(e.s, gguf.TypeQ8_0, w, xd, y, rows, cols) })
			out(12*int64(rows), func(y hip.DevicePtr) error {
				return e.k.MatVecQ8Rows(e.s, gguf.TypeQ8_0, w, xq3, y, rows, cols, 3)
			})
			out(2*int64(rows*cols), func(y hip.DevicePtr) error {
				return e.k.Dequantize(e.s, gguf.TypeQ8_0, w, y, rows, cols, true)
			})
			out(4*int64(rows*cols), func(y hip.DevicePtr) error {
				return e.k.Dequantize(e.s, gguf.TypeQ8_0, w, y, rows, cols, false)
			})
			out(4*int64(len(toks)*cols), func(y hip.DevicePtr) error {
				return e.k.Embedding(e.s, gguf.TypeQ8_0, w, tokens, y, len(toks), rows, cols)
			})
			e.sync()
			return outs
		}
		want, got := run(false, raw), run(true, grouped)
		names := []string{"MatVecQ8", "MatVecQ8Add", "MatVec", "MatVecQ8Rows", "Dequantize f16", "Dequantize f32", "Embedding"}
		for i, name := range names {
			if !bytes.Equal(got[i], want[i]) {
				t.Errorf("%dx%d %s: regrouped differs from Q8_0", rows, cols, name)
				continue
			}
			for o := 0; o+4 <= len(got[i]); o += 4 {
				if v := math.Float32frombits(uint32(got[i][o]) | uint32(got[i][o+1])<<8 | uint32(got[i][o+2])<<16 | uint32(got[i][o+3])<<24); name != "Dequantize f16" && math.IsNaN(float64(v)) {
					t.Errorf("%dx%d %s: [%d] not written", rows, cols, name, o/4)
					break
				}
			}
		}
	}
}
