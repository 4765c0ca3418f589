package kernels

import "golang.org/x/sys/cpu"

// attnAVX2 selects the AVX2 attention kernels; tests turn it off to compare
// them with the Go reference.
var attnAVX2 = cpu.X86.HasAVX2

//go:noescape
func attnScoresAVX2(out *float32, q *float32, k *float32, stride int, n int, d int)

//go:noescape
func attnAccumulateAVX2(out *float32, w *float32, v *float32, stride int, n int, d int)
