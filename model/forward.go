package model

import (
	"errors"
	"fmt"
	"math"

	"github.com/forgepipe/forgepipe/kernels"
)

// ErrContextFull is returned when a sequence would grow past the context size.
var ErrContextFull = errors.New("context is full")

// LayerCache is one layer's keys and values for one sequence: row p holds
// position p, KVDim floats each.
type LayerCache struct {
	K, V []float32
	Len  int // positions filled
}

// ensure grows the cache to hold n positions of width kvDim.
func (c *LayerCache) ensure(n, kvDim int) {
	if need := n * kvDim; need > len(c.K) {
		size := max(need, 2*len(c.K))
		k := make([]float32, size)
		v := make([]float32, size)
		copy(k, c.K[:c.Len*kvDim])
		copy(v, c.V[:c.Len*kvDim])
		c.K, c.V = k, v
	}
}

// Bytes is the memory the cache holds.
func (c *LayerCache) Bytes() int { return 4 * (len(c.K) + len(c.V)) }

// Segment is one sequence's rows within a batch passed to Block.Forward:
// N consecutive rows whose first is at position Pos, with that sequence's
// cache for this layer.
type Segment struct {
	N     int
	Pos   int
	Cache *LayerCache
}

// Scratch holds a forward step's temporary buffers so that steps allocate
// nothing once warm. A Scratch is used by one goroutine at a time.
type Scratch struct {
	xn, q, k, v, att, o, gate, up []float32
}

func grow(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}

// Forward runs this block on n rows of activations x (n×Dim, updated in
// place), which belong to one or more sequences as described by segs. The
// projections run over all rows at once; attention runs per sequence.
// A row's result does not depend on what else is in the batch.
func (b *Block) Forward(c *Config, x []float32, segs []Segment, s *Scratch) {
	n := 0
	for _, sg := range segs {
		n += sg.N
	}
	dim, qdim, kvdim, ffn := c.Dim, c.QDim(), c.KVDim(), c.FFN
	s.xn = grow(s.xn, n*dim)
	s.q = grow(s.q, n*qdim)
	s.k = grow(s.k, n*kvdim)
	s.v = grow(s.v, n*kvdim)
	s.att = grow(s.att, n*qdim)
	s.o = grow(s.o, n*dim)
	s.gate = grow(s.gate, n*ffn)
	s.up = grow(s.up, n*ffn)

	// Attention: x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
	kernels.RMSNormRows(s.xn, x, b.AttnNorm, n, c.RMSEps)
	b.Query.Forward(s.q, s.xn, n)
	b.Key.Forward(s.k, s.xn, n)
	b.Value.Forward(s.v, s.xn, n)
	row := 0
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	for _, sg := range segs {
		for i := 0; i < sg.N; i++ {
			r := row + i
			c.Rope.Apply(s.q[r*qdim:(r+1)*qdim], c.Heads, c.HeadDim, sg.Pos+i)
			c.Rope.Apply(s.k[r*kvdim:(r+1)*kvdim], c.KVHeads, c.HeadDim, sg.Pos+i)
		}
		cache := sg.Cache
		cache.ensure(sg.Pos+sg.N, kvdim)
		copy(cache.K[sg.Pos*kvdim:], s.k[row*kvdim:(row+sg.N)*kvdim])
		copy(cache.V[sg.Pos*kvdim:], s.v[row*kvdim:(row+sg.N)*kvdim])
		cache.Len = sg.Pos + sg.N
		kernels.Attention(s.att[row*qdim:(row+sg.N)*qdim], s.q[row*qdim:(row+sg.N)*qdim],
			cache.K, cache.V, sg.N, sg.Pos, c.Heads, c.KVHeads, c.HeadDim, scale)
		row += sg.N
	}
	b.Output.Forward(s.o, s.att, n)
	kernels.Add(x, x, s.o)

	// Feed-forward: x += Wdown · (silu(Wgate·norm(x)) * Wup·norm(x))
	kernels.RMSNormRows(s.xn, x, b.FFNNorm, n, c.RMSEps)
	b.Gate.Forward(s.gate, s.xn, n)
	b.Up.Forward(s.up, s.xn, n)
	kernels.SwiGLU(s.gate, s.gate, s.up)
	b.Down.Forward(s.o, s.gate, n)
	kernels.Add(x, x, s.o)
}

// State is one sequence's progress through the model: its position and the
// KV cache of every layer.
type State struct {
	Pos     int
	Caches  []LayerCache
	scratch Scratch
	x       []float32
	logits  []float32
}

// NewState returns an empty sequence.
func (m *Model) NewState() *State {
	return &State{Caches: make([]LayerCache, m.Config.Layers)}
}

// Embed writes the token embeddings of ids into x (len(ids)×Dim).
func (m *Model) Embed(x []float32, ids []int32) error {
	dim := m.Config.Dim
	for i, id := range ids {
		if id < 0 || int(id) >= m.Config.Vocab {
			return fmt.Errorf("token id %d out of range [0, %d)", id, m.Config.Vocab)
		}
		if err := kernels.Embedding(x[i*dim:(i+1)*dim], m.Globals.TokenEmbd.Weight, int(id)); err != nil {
			return err
		}
	}
	return nil
}

// Logits applies the final norm and the output projection to n rows of x
// (which it overwrites with the normed values) and writes n×Vocab logits.
func (m *Model) Logits(out, x []float32, n int) {
	kernels.RMSNormRows(x, x, m.Globals.OutputNorm, n, m.Config.RMSEps)
	m.Globals.Output.Forward(out, x, n)
}

// Forward runs ids through the model at positions st.Pos.., appends them to
// the KV cache, and returns the logits of the last token (Vocab floats), or
// of every token (len(ids)×Vocab) when all is set. The returned slice is
// reused by the next call.
func (m *Model) Forward(st *State, ids []int32, all bool) ([]float32, error) {
	n := len(ids)
	if n == 0 {
		return nil, errors.New("forward: no tokens")
	}
	if st.Pos+n > m.contextSize {
		return nil, fmt.Errorf("%w: %d tokens at position %d exceed the context size %d", ErrContextFull, n, st.Pos, m.contextSize)
	}
	c := m.Config
	st.x = grow(st.x, n*c.Dim)
	if err := m.Embed(st.x, ids); err != nil {
		return nil, err
	}
	for i, b := range m.Blocks {
		b.Forward(c, st.x, []Segment{{N: n, Pos: st.Pos, Cache: &st.Caches[i]}}, &st.scratch)
	}
	st.Pos += n
	rows, x := n, st.x
	if !all {
		rows, x = 1, st.x[(n-1)*c.Dim:]
	}
	st.logits = grow(st.logits, rows*c.Vocab)
	m.Logits(st.logits, x, rows)
	return st.logits, nil
}
