package gpu

import (
	"fmt"
	"os"

	"github.com/forgepipe/forgepipe/gguf"
)

// Device layouts. Most weights live on the device as in the GGUF file.
// The exception is Q8_0 with rows of a multiple of 256 values: its 34-byte
// blocks put every quant at a 2-byte boundary, so a kernel reads them two
// bytes at a time. On the device such a matrix is regrouped (quant.cu's
// TQ8_0X): every eight blocks become their eight half scales (16 bytes)
// followed by their 256 quants, the same 272 bytes, so that 16 quants are
// one aligned 16-byte load. The kernels sum the same products in the same
// order, so results do not change by a bit; only the loads do.
//
// Whoever copies weights to the device writes them with ToDevice (the
// uploader, gpufwd, the tests), and every kernel taking weights expects
// that form: Grouped says which matrices are regrouped.
// FORGEPIPE_Q8_0X=0, read when the program starts, keeps every weight as
// in the file (for A/B timing).

// q8x is the kernel-name suffix of regrouped Q8_0.
const q8x = "q8_0x"

// q8Group is the bytes of one regrouped run of eight Q8_0 blocks.
const q8Group = 8 * 34

var groupQ8 = os.Getenv("FORGEPIPE_Q8_0X") != "0"

// Grouped reports whether t weights with rows of cols values are
// regrouped on the device.
func Grouped(t gguf.Type, cols int) bool {
	return groupQ8 && t == gguf.TypeQ8_0 && cols > 0 && cols%256 == 0
}

// DeviceUnit is the granule of ToDevice for t weights with rows of cols
// values: the bytes it transforms as a whole (1 where it copies).
func DeviceUnit(t gguf.Type, cols int) int {
	if Grouped(t, cols) {
		return q8Group
	}
	return 1
}

// ToDevice writes src, bytes of a t matrix with rows of cols values, to
// dst in the form the kernels read on the device, and returns the bytes
// written (len(src)). src must start at a multiple of DeviceUnit(t, cols)
// from the matrix's start and hold a whole number of units; dst must be at
// least as long.
func ToDevice(dst, src []byte, t gguf.Type, cols int) int {
	if !Grouped(t, cols) {
		return copy(dst, src)
	}
	if len(src)%q8Group != 0 || len(dst) < len(src) {
		panic(fmt.Sprintf("kernels/gpu: ToDevice: %d bytes into %d, not whole groups of %d", len(src), len(dst), q8Group))
	}
	for o := 0; o < len(src); o += q8Group {
		groupQ8_0(dst[o:o+q8Group], src[o:o+q8Group])
	}
	return len(src)
}

// groupQ8_0 regroups eight Q8_0 blocks: scales first, then the quants.
func groupQ8_0(dst, src []byte) {
	_, _ = dst[q8Group-1], src[q8Group-1]
	for b := range 8 {
		s := src[34*b : 34*b+34]
		dst[2*b], dst[2*b+1] = s[0], s[1]
		copy(dst[16+32*b:16+32*b+32], s[2:34])
	}
}

// ungroupQ8_0 is groupQ8_0's inverse (the emulation decodes GGUF bytes).
func ungroupQ8_0(dst, src []byte) {
	_, _ = dst[q8Group-1], src[q8Group-1]
	for b := range 8 {
		d := dst[34*b : 34*b+34]
		d[0], d[1] = src[2*b], src[2*b+1]
		copy(d[2:34], src[16+32*b:16+32*b+32])
	}
}
