// Package kernels holds every operation the model's forward pass needs, in
// the Go host version: matrix-vector and matrix-matrix products over GGUF
// weight rows of any supported type, RMS normalisation, element-wise ops,
// SwiGLU, softmax, rotary position embeddings (including YaRN) and causal
// grouped-query attention.
//
// The host kernels are the reference the GPU kernels are tested against, so
// each op has a plainly written version; where a faster path exists it sits
// beside the reference (named ...Ref for the reference) and is tested
// against it.
//
// Results are deterministic: every output element is computed by one
// goroutine in a fixed order, so they do not depend on GOMAXPROCS, and
// batched entry points (MatMul, RMSNormRows, Attention with several query
// positions) give bit-for-bit the same rows as their one-row forms.
package kernels
