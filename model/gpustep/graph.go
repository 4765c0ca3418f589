package gpustep

import (
	"fmt"

	"github.com/forgepipe/forgepipe/hip"
)

// A block's step of one row enqueues some fifteen kernels; launched one by
// one they cost more host time than the GPU spends on them. Such a step is
// the same launches every token (positions and caches are read from the
// row metadata), so once a step with the same block, rows and buffers has
// been seen twice it is captured into a graph and relaunched as one unit.
// The buffer pool hands the same buffers back in steady decoding, so the
// keys repeat.

// graphKey is what a captured step depends on.
type graphKey struct {
	b       *Block
	x, meta hip.DevicePtr
	n       int
}

// graphCache holds captured steps and counts the steps seen once.
type graphCache struct {
	graphs map[graphKey]hip.Graph
	seen   map[graphKey]int
}

// capturable reports whether a step of n rows of b is captured: steps
// made only of kernels (one row, or up to maxRowsProduct rows of
// 8-bit-activation products); batched products through BLAS are not.
func (r *Runtime) capturable(b *Block, n int) bool {
	return n == 1 || (n <= maxRowsProduct && r.int8Block(b))
}

// maxGraphs bounds the graphs kept; past it the cache starts again.
const maxGraphs = 4096

// launchBlock enqueues a block step, through a graph when it repeats.
// Called under mu.
func (r *Runtime) launchBlock(b *Block, x, meta hip.DevicePtr, n int, prefill bool) error {
	if r.opts.NoGraphs || prefill || !r.capturable(b, n) {
		return r.enqueueBlock(b, x, meta, n, prefill)
	}
	c := &r.graphs
	key := graphKey{b, x, meta, n}
	if g := c.graphs[key]; g != nil {
		r.stats.GraphLaunches++
		return g.Launch(r.stream)
	}
	if c.seen == nil {
		c.seen, c.graphs = make(map[graphKey]int), make(map[graphKey]hip.Graph)
	}
	c.seen[key]++
	if c.seen[key] < 2 {
		if len(c.seen) > maxGraphs {
			c.seen = make(map[graphKey]int)
		}
		return r.enqueueBlock(b, x, meta, n, false)
	}
	if len(c.graphs) >= maxGraphs {
		c.clear()
		c.seen, c.graphs = make(map[graphKey]int), make(map[graphKey]hip.Graph)
	}
	if err := r.stream.BeginCapture(); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	err := r.enqueueBlock(b, x, meta, n, false)
	g, endErr := r.stream.EndCapture()
	if err != nil {
		if g != nil {
			_ = g.Destroy()
		}
		return err
	}
	if endErr != nil {
		return fmt.Errorf("capture: %w", endErr)
	}
	c.graphs[key] = g
	r.stats.GraphCaptures++
	r.stats.GraphLaunches++
	return g.Launch(r.stream)
}

// dropBlock destroys the graphs of b (its weights are going).
func (c *graphCache) dropBlock(b *Block) {
	for k, g := range c.graphs {
		if k.b == b {
			_ = g.Destroy()
			delete(c.graphs, k)
		}
	}
	for k := range c.seen {
		if k.b == b {
			delete(c.seen, k)
		}
	}
}

// clear destroys every graph (launches already enqueued still run).
func (c *graphCache) clear() {
	for _, g := range c.graphs {
		_ = g.Destroy()
	}
	c.graphs, c.seen = nil, nil
}
