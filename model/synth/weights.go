package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/forgepipe/forgepipe/gguf"
)

// tensor is one tensor of a synthetic model and how its values are drawn:
// center + amp*u with u uniform in (-1, 1) and |u| >= minU.
type tensor struct {
	name   string
	shape  []uint64 // ggml order: shape[0] is the row length
	typ    gguf.Type
	center float32
	amp    float32
}

func (t *tensor) rowLen() int { return int(t.shape[0]) }

func (t *tensor) elements() int {
	n := 1
	for _, d := range t.shape {
		n *= int(d)
	}
	return n
}

func (t *tensor) bytes() int64 {
	size, _ := t.typ.RowSize(t.rowLen())
	return int64(size) * int64(t.elements()/t.rowLen())
}

// uniformAmp is the half-width of a uniform distribution with standard
// deviation std.
func uniformAmp(std float64) float32 { return float32(std * math.Sqrt(3)) }

// tensors lists the model's tensors in file order, with the scale of their
// values. Matrices have std 1/sqrt(fan_in), so each projection keeps the
// root mean square of its (normalised) input; the two projections that write
// into the residual stream (attn_output, ffn_down) are further scaled by
// 1/sqrt(2*layers), so the stream's size stays about that of the embedding
// however deep the model is. The output projection has std 2/sqrt(dim):
// logits with a standard deviation near 2.
func (s *Spec) tensors() []tensor {
	dim, ffn, vocab := s.Dim, s.FFN, s.VocabSize()
	qdim, kvdim := s.Heads*s.HeadDim(), s.KVHeads*s.HeadDim()
	residual := 1 / math.Sqrt(float64(2*s.Layers))

	matrix := func(name string, cols, rows int, std float64) tensor {
		return tensor{name: name, shape: []uint64{uint64(cols), uint64(rows)}, typ: s.Type, amp: uniformAmp(std)}
	}
	norm := func(name string) tensor {
		return tensor{name: name, shape: []uint64{uint64(dim)}, typ: gguf.TypeF32, center: 1, amp: 0.1}
	}
	bias := func(name string, n int) tensor {
		return tensor{name: name, shape: []uint64{uint64(n)}, typ: gguf.TypeF32, amp: 0.1}
	}
	fanIn := func(n int) float64 { return 1 / math.Sqrt(float64(n)) }

	out := []tensor{matrix("token_embd.weight", dim, vocab, 1)}
	for i := 0; i < s.Layers; i++ {
		p := fmt.Sprintf("blk.%d.", i)
		out = append(out,
			norm(p+"attn_norm.weight"),
			matrix(p+"attn_q.weight", dim, qdim, fanIn(dim)),
			matrix(p+"attn_k.weight", dim, kvdim, fanIn(dim)),
			matrix(p+"attn_v.weight", dim, kvdim, fanIn(dim)),
		)
		if s.Arch == "qwen2" {
			out = append(out,
				bias(p+"attn_q.bias", qdim),
				bias(p+"attn_k.bias", kvdim),
				bias(p+"attn_v.bias", kvdim),
			)
		}
		out = append(out,
			matrix(p+"attn_output.weight", qdim, dim, fanIn(qdim)*residual),
			norm(p+"ffn_norm.weight"),
			matrix(p+"ffn_gate.weight", dim, ffn, fanIn(dim)),
			matrix(p+"ffn_up.weight", dim, ffn, fanIn(dim)),
			matrix(p+"ffn_down.weight", ffn, dim, fanIn(ffn)*residual),
		)
	}
	out = append(out,
		norm("output_norm.weight"),
		matrix("output.weight", dim, vocab, 2*fanIn(dim)),
	)
	return out
}

// chunkElems is about how many values one random stream produces. Chunks
// are whole rows and their boundaries depend only on the tensor's shape, so
// the values do not depend on the number of goroutines.
const chunkElems = 1 << 16

// minU keeps values away from zero: |u| >= 2^-10, so even F16 and BF16
// store every value as non-zero.
const minU = 1.0 / 1024

// splitmix64 scrambles a seed (Steele, Lea and Flood's SplitMix64 finaliser).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// fill draws t's values and encodes them into dst (exactly t.bytes() long).
// Chunk c of tensor i is drawn from PCG(splitmix64(seed ^ splitmix64(i)), c).
func fill(dst []byte, t *tensor, seed uint64, index int) error {
	if int64(len(dst)) != t.bytes() {
		return fmt.Errorf("tensor %s: buffer of %d bytes, want %d", t.name, len(dst), t.bytes())
	}
	rowLen := t.rowLen()
	rows := t.elements() / rowLen
	rowBytes, err := t.typ.RowSize(rowLen)
	if err != nil {
		return fmt.Errorf("tensor %s: %w", t.name, err)
	}
	perChunk := max(1, chunkElems/rowLen)
	chunks := (rows + perChunk - 1) / perChunk
	streamSeed := splitmix64(seed ^ splitmix64(uint64(index)))

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan int)
	)
	workers := min(runtime.GOMAXPROCS(0), chunks)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := make([]float32, perChunk*rowLen)
			for c := range next {
				r0, r1 := c*perChunk, min((c+1)*perChunk, rows)
				vals := src[:(r1-r0)*rowLen]
				draw(vals, rand.NewPCG(streamSeed, uint64(c)), t.center, t.amp)
				out := dst[r0*rowBytes : r1*rowBytes]
				enc, err := gguf.Quantize(t.typ, out[:0], vals)
				if err == nil && len(enc) != len(out) {
					err = fmt.Errorf("encoded %d bytes, want %d", len(enc), len(out))
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("tensor %s: %w", t.name, err)
					}
					mu.Unlock()
					continue
				}
				if &enc[0] != &out[0] { // Quantize encoded in place unless it had to grow
					copy(out, enc)
				}
			}
		}()
	}
	for c := 0; c < chunks; c++ {
		next <- c
	}
	close(next)
	wg.Wait()
	return firstErr
}

// draw fills vals with center + amp*u, u uniform in [-1, 1) with |u| >= minU.
// Each 64-bit draw gives two values.
func draw(vals []float32, rng *rand.PCG, center, amp float32) {
	i := 0
	for ; i+1 < len(vals); i += 2 {
		r := rng.Uint64()
		vals[i] = center + amp*unit(uint32(r))
		vals[i+1] = center + amp*unit(uint32(r>>32))
	}
	if i < len(vals) {
		vals[i] = center + amp*unit(uint32(rng.Uint64()))
	}
}

// unit maps 32 random bits to [-1, 1), moving values within minU of zero
// out to ±minU.
func unit(bits uint32) float32 {
	u := float32(int32(bits)) * (1.0 / (1 << 31))
	if u > -minU && u < minU {
		if u < 0 {
			return -minU
		}
		return minU
	}
	return u
}
