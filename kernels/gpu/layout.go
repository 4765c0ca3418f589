package gpu

import (
	"fmt"
	"os"

	"github.com/forgepipe/forgepipe/gguf"
)

// Device layouts. Most weights live on the device as in the GGUF file.
// The exceptions are Q8_0 and Q4_0 with rows of a multiple of 256 values:
// their blocks (a half scale, then 32 or 16 bytes of quants: 34 or 18
// bytes) put every quant at a 2-byte boundary, so a kernel reads them two
// bytes at a time. On the device such a matrix is regrouped (quant.cu's
// TQ8_0X, TQ4_0X): every eight blocks become their eight half scales (16
// bytes) followed by their quants in order, the same 272 or 144 bytes, so
// that the quants are aligned 16-byte (Q8_0) or 8-byte (Q4_0) loads. The
// kernels sum the same products in the same order, so results do not
// change by a bit; only the loads do.
//
// Whoever copies weights to the device writes them with ToDevice (the
// uploader, gpufwd, the tests), and every kernel taking weights expects
// that form: Grouped says which matrices are regrouped.
//
// Measured on an H100 (kernels/gpu/NOTES.md), regrouped Q8_0 decodes ~10 %
// faster, so it is on; regrouped Q4_0 was ~5 % slower, so it is off and
// kept for A/B timing. FORGEPIPE_Q8_0X=0 and FORGEPIPE_Q4_0X=1, read when
// the program starts, switch them.

// regroup is one regrouped type: its kernel-name suffix, the quant bytes
// of one of its blocks, and whether it is on.
type regroup struct {
	suffix string
	quants int
	on     bool
}

// group is the bytes of eight blocks, regrouped or not.
func (r *regroup) group() int { return 8 * (2 + r.quants) }

var (
	q8Regroup = &regroup{"q8_0x", 32, os.Getenv("FORGEPIPE_Q8_0X") != "0"}
	q4Regroup = &regroup{"q4_0x", 16, os.Getenv("FORGEPIPE_Q4_0X") == "1"}
	regroups  = map[gguf.Type]*regroup{gguf.TypeQ8_0: q8Regroup, gguf.TypeQ4_0: q4Regroup}
)

// regrouped returns t's regrouping where rows of cols values are
// regrouped, else nil.
func regrouped(t gguf.Type, cols int) *regroup {
	if r := regroups[t]; r != nil && r.on && cols > 0 && cols%256 == 0 {
		return r
	}
	return nil
}

// isGrouped reports whether a kernel-name suffix is a regrouped layout's.
func isGrouped(suffix string) bool {
	for _, r := range regroups {
		if r.suffix == suffix {
			return true
		}
	}
	return false
}

// Grouped reports whether t weights with rows of cols values are
// regrouped on the device.
func Grouped(t gguf.Type, cols int) bool { return regrouped(t, cols) != nil }

// DeviceUnit is the granule of ToDevice for t weights with rows of cols
// values: the bytes it transforms as a whole (1 where it copies).
func DeviceUnit(t gguf.Type, cols int) int {
	if r := regrouped(t, cols); r != nil {
		return r.group()
	}
	return 1
}

// ToDevice writes src, bytes of a t matrix with rows of cols values, to
// dst in the form the kernels read on the device, and returns the bytes
// written (len(src)). src must start at a multiple of DeviceUnit(t, cols)
// from the matrix's start and hold a whole number of units; dst must be at
// least as long.
func ToDevice(dst, src []byte, t gguf.Type, cols int) int {
	r := regrouped(t, cols)
	if r == nil {
		return copy(dst, src)
	}
	g := r.group()
	if len(src)%g != 0 || len(dst) < len(src) {
		panic(fmt.Sprintf("kernels/gpu: ToDevice: %d bytes into %d, not whole groups of %d", len(src), len(dst), g))
	}
	for o := 0; o < len(src); o += g {
		r.regroup(dst[o:o+g], src[o:o+g])
	}
	return len(src)
}

// regroup writes eight blocks: scales first, then the quants.
func (r *regroup) regroup(dst, src []byte) {
	n := 2 + r.quants
	_, _ = dst[8*n-1], src[8*n-1]
	for b := range 8 {
		s := src[n*b : n*b+n]
		dst[2*b], dst[2*b+1] = s[0], s[1]
		copy(dst[16+r.quants*b:16+r.quants*(b+1)], s[2:])
	}
}

// ungroup is regroup's inverse (the emulation decodes GGUF bytes).
func (r *regroup) ungroup(dst, src []byte) {
	n := 2 + r.quants
	_, _ = dst[8*n-1], src[8*n-1]
	for b := range 8 {
		d := dst[n*b : n*b+n]
		d[0], d[1] = src[2*b], src[2*b+1]
		copy(d[2:], src[16+r.quants*b:16+r.quants*(b+1)])
	}
}
