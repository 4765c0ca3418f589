//go:build !amd64

package kernels

// attnAVX2 is false off amd64: Attention uses the Go reference throughout.
var attnAVX2 = false

func attnScoresAVX2(out *float32, q *float32, k *float32, stride int, n int, d int) {
	panic("unreachable")
}

func attnAccumulateAVX2(out *float32, w *float32, v *float32, stride int, n int, d int) {
	panic("unreachable")
}
