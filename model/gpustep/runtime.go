// Package gpustep is the transformer's work on a GPU for the actor pipeline:
// weights bound to device memory the uploader filled, one KV block per
// sequence, and the steps the actors enqueue: the embedding of a batch, one
// block over a batch of rows from many sequences, and the projection to
// logits with the token picked on the device.
//
// Everything is enqueued on one compute stream per device, under one lock:
// the layer actors enqueue and pass their message on at once, never
// waiting for the GPU, and the order of the stream orders the work of
// different actors (a layer's input was enqueued before the message that
// carries it was sent). The only host waits are the sampler's, for the
// token ids of a step it has just enqueued, and the rare reuse of a pinned
// staging region.
//
// Activations are float32 rows on the device. A batch's row metadata
// (each row's position and its sequence's KV block: kernels/gpu
// RowMetaBytes) is written once by the sampler and travels with the rows
// through every layer, and a block's step writes its output over its
// input, so a batch keeps its buffers from the first layer to the last:
// a block's step depends only on its row count and buffers, and a decode
// step has the same launches every token.
package gpustep

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/kernels/gpu"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/sample"
)

// Options configure a Runtime.
type Options struct {
	// ContextSize is the most positions of one sequence.
	ContextSize int
	// MaxBatch is the most rows of one step.
	MaxBatch int
	// Float32Activations turns off the 8-bit activations of one-row
	// products of quantised weights (which the host uses too, as llama.cpp).
	Float32Activations bool
	// NoGraphs turns off the capture of repeated block steps into graphs.
	NoGraphs bool
	// Emulate runs on the host driver with kernels/gpu's Go emulations of
	// the GPU kernels (gpu.LoadEmulated): slow, for tests without a GPU.
	Emulate bool
}

// Runtime is one device's compute stream, kernels, buffers and sequences.
// Its methods are safe for concurrent use.
type Runtime struct {
	cfg  *model.Config
	dev  hip.Device
	k    *gpu.Kernels
	opts Options

	mu     sync.Mutex // one enqueuer at a time: the scratch buffers are shared
	stream hip.Stream
	blas   hip.BLAS
	pool   *pool
	stage  *staging
	nSplit int
	freqs  hip.DevicePtr // rope frequency factors (0: none)
	seqs   map[uint64]kvBlock
	s      scratch

	downMu sync.Mutex // the sampler's copies back
	down   hip.HostBuffer
	done   hip.Event

	graphs graphCache
	stats  Stats
	timing *stepTiming // nil unless TimeSteps
}

// kvBlock is one sequence's KV cache for every layer.
type kvBlock struct {
	base     hip.DevicePtr
	capacity int
}

// scratch are the per-step buffers, sized for MaxBatch rows.
type scratch struct {
	xn, qkv, att, o, gate, xq, attn hip.DevicePtr
	mm                              hip.DevicePtr // dequantised weights for BLAS products
	mmBytes                         int64
}

// sized is a buffer to take from the pool and where its address goes.
type sized struct {
	p    *hip.DevicePtr
	size int64
}

// Stats are a runtime's counters.
type Stats struct {
	Steps, GraphLaunches, GraphCaptures int64
}

// New makes the runtime of dev for a model: its stream, kernels and
// scratch buffers.
func New(dev hip.Device, cfg *model.Config, o Options) (*Runtime, error) {
	if o.ContextSize <= 0 || o.MaxBatch <= 0 {
		return nil, fmt.Errorf("gpustep: context size %d and max batch %d must be > 0", o.ContextSize, o.MaxBatch)
	}
	r := &Runtime{cfg: cfg, dev: dev, opts: o, seqs: make(map[uint64]kvBlock)}
	if err := r.init(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Runtime) init() error {
	var err error
	load := gpu.Load
	if r.opts.Emulate {
		load = gpu.LoadEmulated
	}
	if r.k, err = load(r.dev); err != nil {
		return fmt.Errorf("gpustep: %w", err)
	}
	if r.stream, err = r.dev.StreamCreate(); err != nil {
		return fmt.Errorf("gpustep: %w", err)
	}
	if r.blas, err = r.dev.BLASCreate(r.stream); err != nil {
		return fmt.Errorf("gpustep: %w", err)
	}
	if r.done, err = r.dev.EventCreate(); err != nil {
		return fmt.Errorf("gpustep: %w", err)
	}
	r.pool = newPool(r.dev)
	r.pool.idle = func() error { return r.stream.Synchronize(context.Background()) }
	if r.stage, err = newStaging(r.dev); err != nil {
		return err
	}
	c, n := r.cfg, r.opts.MaxBatch
	r.nSplit = gpu.AttentionRowsSplits(c.Heads, r.opts.ContextSize)
	sizes := []sized{
		{&r.s.xn, int64(n * c.Dim * 4)},
		{&r.s.qkv, int64(n * (c.QDim() + 2*c.KVDim()) * 4)},
		{&r.s.att, int64(n * c.QDim() * 4)},
		{&r.s.o, int64(n * c.Dim * 4)},
		{&r.s.gate, int64(2 * n * c.FFN * 4)},
		{&r.s.xq, gpu.ActQ8Bytes(min(n, gpu.MaxMatVecRows) * max(c.Dim, c.QDim(), c.FFN))},
		{&r.s.attn, gpu.AttentionRowsScratchBytes(n, c.Heads, c.HeadDim, r.nSplit)},
	}
	for _, sz := range sizes {
		if *sz.p, err = r.pool.get(sz.size); err != nil {
			return err
		}
	}
	// The attention's merge counts arrivals in its scratch: zero once, and
	// every AttentionRows launch leaves it so.
	if err := r.stream.MemsetD8Async(r.s.attn, 0, gpu.AttentionRowsScratchBytes(n, c.Heads, c.HeadDim, r.nSplit)); err != nil {
		return fmt.Errorf("gpustep: attention scratch: %w", err)
	}
	return nil
}

// Stream is the compute stream: the upload events are waited on there.
func (r *Runtime) Stream() hip.Stream { return r.stream }

// Device is the runtime's device.
func (r *Runtime) Device() hip.Device { return r.dev }

// Stats returns the runtime's counters.
func (r *Runtime) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Close waits for the stream and frees everything.
func (r *Runtime) Close() error {
	var errs []error
	if r.stream != nil {
		errs = append(errs, r.stream.Synchronize(context.Background()))
	}
	r.graphs.clear()
	if r.timing != nil {
		r.resolve()
		r.timing.close()
		r.timing = nil
	}
	if r.stage != nil {
		errs = append(errs, r.stage.close())
	}
	if r.pool != nil {
		r.pool.close()
	}
	if r.down != nil {
		errs = append(errs, r.down.Free())
	}
	if r.done != nil {
		errs = append(errs, r.done.Destroy())
	}
	if r.blas != nil {
		errs = append(errs, r.blas.Destroy())
	}
	if r.stream != nil {
		errs = append(errs, r.stream.Destroy())
	}
	if r.k != nil {
		errs = append(errs, r.k.Close())
	}
	return errors.Join(errs...)
}

// WaitEvent makes the compute stream wait for e (an upload's event)
// without blocking the caller.
func (r *Runtime) WaitEvent(e hip.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stream.WaitEvent(e)
}

// Record records e on the compute stream after everything enqueued so far
// (a holder's last use of weights it gives back).
func (r *Runtime) Record(e hip.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return e.Record(r.stream)
}

// ------------------------------------------------------------ sequences

// AddSeq allocates the KV block of a sequence of up to capacity positions.
func (r *Runtime) AddSeq(seq uint64, capacity int) error {
	if capacity <= 0 || capacity > r.opts.ContextSize {
		return fmt.Errorf("gpustep: sequence of %d positions (context size %d)", capacity, r.opts.ContextSize)
	}
	c := r.cfg
	p, err := r.pool.get(gpu.KVBlockBytes(c.Layers, capacity, c.KVDim()))
	if err != nil {
		return fmt.Errorf("gpustep: KV cache of %d positions: %w", capacity, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.seqs[seq]; dup {
		r.pool.put(p)
		return fmt.Errorf("gpustep: sequence %d already has a KV cache", seq)
	}
	r.seqs[seq] = kvBlock{base: p, capacity: capacity}
	return nil
}

// DropSeq gives a sequence's KV block back; the caller has enqueued its
// last use.
func (r *Runtime) DropSeq(seq uint64) {
	r.mu.Lock()
	kv, ok := r.seqs[seq]
	delete(r.seqs, seq)
	r.mu.Unlock()
	if ok {
		r.pool.put(kv.base)
	}
}

// KVBytes is the device memory the sequences' KV caches hold.
func (r *Runtime) KVBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	c := r.cfg
	for _, kv := range r.seqs {
		n += gpu.KVBlockBytes(c.Layers, kv.capacity, c.KVDim())
	}
	return n
}

// Segment is one sequence's consecutive rows in a batch.
type Segment struct {
	Seq      uint64
	Pos, N   int
	Capacity int // filled in by the runtime
}

// Rows are a batch's activations on the device (N×Dim float32) and their
// row metadata. The holder gives them back with Release, or passes them on.
type Rows struct {
	X, Meta hip.DevicePtr
	N       int
	// Chunked says that some sequence has a long run of rows in the batch
	// (a prompt chunk): attention then takes the tiled prefill kernel.
	Chunked bool
}

// chunkRows is the run of one sequence's rows from which a batch counts
// as Chunked.
const chunkRows = 16

func chunked(segs []Segment) bool {
	for _, s := range segs {
		if s.N >= chunkRows {
			return true
		}
	}
	return false
}

// Release gives rows back once their last use is enqueued.
func (r *Runtime) Release(x Rows) {
	r.pool.put(x.X)
	r.pool.put(x.Meta)
}

// meta writes the row metadata of segs (n rows) into b. Called under mu.
func (r *Runtime) meta(b []byte, segs []Segment, n int) error {
	row := 0
	for _, sg := range segs {
		kv, ok := r.seqs[sg.Seq]
		if !ok {
			return fmt.Errorf("gpustep: sequence %d has no KV cache", sg.Seq)
		}
		if sg.Pos < 0 || sg.Pos+sg.N > kv.capacity {
			return fmt.Errorf("gpustep: %w: %d rows at position %d of sequence %d (capacity %d)", model.ErrContextFull, sg.N, sg.Pos, sg.Seq, kv.capacity)
		}
		for i := 0; i < sg.N; i++ {
			gpu.PutRowMeta(b, n, row, int32(sg.Pos+i), int32(kv.capacity), kv.base)
			row++
		}
	}
	if row != n {
		return fmt.Errorf("gpustep: segments hold %d rows, want %d", row, n)
	}
	return nil
}

// Embed looks up the tokens of a batch (ids, in segment order) and writes
// the batch's row metadata.
func (r *Runtime) Embed(g *Globals, ids []int32, segs []Segment) (Rows, error) {
	n := len(ids)
	if n == 0 || n > r.opts.MaxBatch {
		return Rows{}, fmt.Errorf("gpustep: embed %d rows (1..%d)", n, r.opts.MaxBatch)
	}
	for _, id := range ids {
		if id < 0 || int(id) >= r.cfg.Vocab {
			return Rows{}, fmt.Errorf("gpustep: token id %d out of range [0, %d)", id, r.cfg.Vocab)
		}
	}
	// The ids travel in the metadata's buffer, after it.
	mb := gpu.RowMetaBytes(n)
	tail := make([]byte, 4*n)
	for i, id := range ids {
		binary.LittleEndian.PutUint32(tail[4*i:], uint32(id))
	}
	return r.batch("embed", segs, n, tail, func(x, meta hip.DevicePtr) error {
		t := g.TokenEmbd
		return r.k.Embedding(r.stream, t.Type, t.W, meta.Add(mb), x, n, t.Rows, t.Cols)
	})
}

// Concat joins the rows of several messages into one batch, with new
// metadata for segs (the segments of all parts, in order). The parts are
// left as they were; the caller releases them.
func (r *Runtime) Concat(parts []Rows, segs []Segment) (Rows, error) {
	n := 0
	for _, p := range parts {
		n += p.N
	}
	if n > r.opts.MaxBatch {
		return Rows{}, fmt.Errorf("gpustep: concat %d rows (at most %d)", n, r.opts.MaxBatch)
	}
	return r.batch("concat", segs, n, nil, func(x, _ hip.DevicePtr) error {
		row, off := int64(r.cfg.Dim*4), int64(0)
		for _, p := range parts {
			if err := r.stream.MemcpyDtoDAsync(x.Add(off), p.X, int64(p.N)*row); err != nil {
				return err
			}
			off += int64(p.N) * row
		}
		return nil
	})
}

// batch makes the rows of a new batch of n rows: their metadata for segs
// (followed by tail) uploaded, then fill enqueued to write the activations.
func (r *Runtime) batch(call string, segs []Segment, n int, tail []byte, fill func(x, meta hip.DevicePtr) error) (Rows, error) {
	nb, err := r.newBatch(segs, n, tail)
	if err != nil {
		return Rows{}, err
	}
	return nb.fill(call, fill)
}

// newBatch is a batch whose buffers are taken from the pool and whose
// metadata is made, but nothing enqueued yet.
type newBatch struct {
	r    *Runtime
	rows Rows
	host []byte
}

func (r *Runtime) newBatch(segs []Segment, n int, tail []byte) (*newBatch, error) {
	mb := gpu.RowMetaBytes(n)
	host := make([]byte, mb+int64(len(tail)))
	copy(host[mb:], tail)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.meta(host, segs, n); err != nil {
		return nil, err
	}
	meta, err := r.pool.get(int64(len(host)))
	if err != nil {
		return nil, err
	}
	x, err := r.pool.get(int64(n * r.cfg.Dim * 4))
	if err != nil {
		r.pool.put(meta)
		return nil, err
	}
	return &newBatch{r: r, rows: Rows{X: x, Meta: meta, N: n, Chunked: chunked(segs)}, host: host}, nil
}

// fill uploads the batch's metadata and enqueues fill to write its
// activations; on failure the buffers go back to the pool.
func (nb *newBatch) fill(call string, fill func(x, meta hip.DevicePtr) error) (Rows, error) {
	r, x, meta := nb.r, nb.rows.X, nb.rows.Meta
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.stage.upload(r.stream, meta, nb.host)
	if err == nil {
		err = fill(x, meta)
	}
	if err != nil {
		r.pool.put(meta)
		r.pool.put(x)
		return Rows{}, fmt.Errorf("gpustep: %s: %w", call, err)
	}
	return nb.rows, nil
}

// ------------------------------------------------------------ block step

// Step enqueues block b over the batch in, in place: in's activations
// become the block's output, and in is returned. A batch keeps its
// buffers from the first layer to the last, so a one-row step's graph
// (keyed by its buffers) is the same every token of a sequence.
func (r *Runtime) Step(b *Block, in Rows) (Rows, error) {
	if in.N <= 0 || in.N > r.opts.MaxBatch {
		return Rows{}, fmt.Errorf("gpustep: step of %d rows (1..%d)", in.N, r.opts.MaxBatch)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Steps++
	err := r.around(b.Layer, in.N, func() error { return r.launchBlock(b, in.X, in.Meta, in.N, in.Chunked) })
	if err != nil {
		return Rows{}, fmt.Errorf("gpustep: layer %d: %w", b.Layer, err)
	}
	return in, nil
}

// enqueueBlock enqueues one block over the rows x, in place: x +=
// attention(x), then x += ffn(x) (in and out below are both x: nothing
// reads the input after the kernel that adds the residual to it, each of
// whose threads reads a value before it writes it). One row rotates its
// query and key and stores its key and value inside the attention
// (AttentionRowsRope). One row with 8-bit
// activations takes the fused kernels:
// the norms quantise their output, the attention's merge quantises its
// output for the output projection, which adds the residual itself (out =
// in + O·att; or else the second norm does), SwiGLU quantises for the down
// projection, and that adds its residual too (out += down·h), each
// bit for bit what the separate kernels give. Called under mu.
func (r *Runtime) enqueueBlock(b *Block, x, meta hip.DevicePtr, n int, prefill bool) error {
	c, k, s, sc := r.cfg, r.k, r.stream, &r.s
	in, out := x, x
	dim, qdim, kvdim, ffn := c.Dim, c.QDim(), c.KVDim(), c.FFN
	q := sc.qkv
	kk := q.Add(int64(n * qdim * 4))
	v := kk.Add(int64(n * kvdim * 4))
	up := sc.gate.Add(int64(n * ffn * 4))
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	q8 := n == 1 && r.int8Block(b)
	var xq hip.DevicePtr
	if q8 {
		xq = sc.xq
	}
	e := &errList{}
	on := func(kernel string) bool { return skip == nil || !skip[kernel] }
	if on("norm1") {
		e.add(k.AddRMSNormQ8(s, 0, in, 0, sc.xn, xq, b.AttnNorm, n, dim, c.RMSEps))
	}
	if n == 1 && b.qkv != nil {
		if on("qkv") {
			e.add(r.linear(n, sc.xn, dim, q8, out1{b.qkv, q}))
		}
	} else {
		e.add(r.linear(n, sc.xn, dim, q8, out1{&b.Query, q}, out1{&b.Key, kk}, out1{&b.Value, v}))
	}
	// oq8: one row whose output projection takes int8 activations, which
	// the attention's merge kernel writes.
	oq8 := n == 1 && !prefill && c.HeadDim%32 == 0 && r.int8Product(b.Output.Type)
	switch {
	case n == 1 && !prefill:
		// One row: RoPE and the KV store happen in the attention's split.
		var aq hip.DevicePtr
		if oq8 {
			aq = sc.xq
		}
		if on("attn") {
			e.add(k.AttentionRowsRope(s, &c.Rope, r.freqs, sc.att, aq, q, kk, v, meta, sc.attn, n, b.Layer, c.Heads, c.KVHeads, c.HeadDim, scale, r.nSplit))
		}
	case prefill:
		e.add(k.RopeKVStore(s, &c.Rope, r.freqs, q, kk, v, meta, n, b.Layer, c.Heads, c.KVHeads, c.HeadDim))
		e.add(k.AttentionRowsPrefill(s, sc.att, q, meta, n, b.Layer, c.Heads, c.KVHeads, c.HeadDim, scale))
	default:
		e.add(k.RopeKVStore(s, &c.Rope, r.freqs, q, kk, v, meta, n, b.Layer, c.Heads, c.KVHeads, c.HeadDim))
		e.add(k.AttentionRows(s, sc.att, q, meta, sc.attn, n, b.Layer, c.Heads, c.KVHeads, c.HeadDim, scale, r.nSplit))
	}
	if oq8 && b.Output.Bias == 0 {
		o := &b.Output // out = in + O·att in the product: the norm has no sum to make
		if on("o") {
			e.add(k.MatVecQ8Add(s, o.Type, o.W, sc.xq, in, out, o.Rows, o.Cols))
		}
		if on("norm2") {
			e.add(k.AddRMSNormQ8(s, 0, out, 0, sc.xn, xq, b.FFNNorm, n, dim, c.RMSEps))
		}
	} else {
		e.add(r.linear(n, sc.att, qdim, oq8, out1{&b.Output, sc.o}))
		e.add(k.AddRMSNormQ8(s, out, in, sc.o, sc.xn, xq, b.FFNNorm, n, dim, c.RMSEps))
	}
	if n == 1 && b.gateUp != nil {
		if on("gateup") {
			e.add(r.linear(n, sc.xn, dim, q8, out1{b.gateUp, sc.gate})) // up lands right after gate
		}
	} else {
		e.add(r.linear(n, sc.xn, dim, q8, out1{&b.Gate, sc.gate}, out1{&b.Up, up}))
	}
	if q8 {
		if on("swiglu") {
			e.add(k.SwiGLUQ8(s, sc.gate, sc.gate, up, xq, ffn))
		}
	} else {
		e.add(k.SwiGLU(s, sc.gate, sc.gate, up, n*ffn))
	}
	if q8 && b.Down.Bias == 0 {
		d := &b.Down // out += down·h in the product (SwiGLUQ8 quantised h)
		if on("down") {
			e.add(k.MatVecQ8Add(s, d.Type, d.W, sc.xq, out, out, d.Rows, d.Cols))
		}
	} else {
		e.add(r.linear(n, sc.gate, ffn, q8, out1{&b.Down, sc.o}))
		e.add(k.Add(s, out, out, sc.o, n*dim))
	}
	return e.err
}

// int8Block reports whether one-row steps of b run every product on 8-bit
// activations (the fused path).
func (r *Runtime) int8Block(b *Block) bool {
	c := r.cfg
	if r.opts.Float32Activations || c.Dim%32 != 0 || c.FFN%32 != 0 {
		return false
	}
	for _, m := range []*Matrix{&b.Query, &b.Key, &b.Value, &b.Gate, &b.Up, &b.Down} {
		if !gpu.HasMatVecQ8(m.Type) {
			return false
		}
	}
	return true
}

// skip names kernels of a one-row step that enqueueBlock leaves out
// (norm1, qkv, attn, o, norm2, gateup, swiglu, down): for measurement only
// (BenchmarkDecodeDirect's FORGEPIPE_SKIP), as a step's time without a
// kernel is that kernel's real share of it inside the graph. The step's
// results are then wrong. Nil outside that benchmark.
var skip map[string]bool

type errList struct{ err error }

func (e *errList) add(err error) {
	if e.err == nil {
		e.err = err
	}
}

// out1 is one product of a shared input: the matrix and where its rows go.
type out1 struct {
	w *Matrix
	y hip.DevicePtr
}

// linear computes y = W·x (+ bias) for each out over n rows of x (cols
// wide). With pre, the 8-bit activations of x are already in the scratch.
// Called under mu.
func (r *Runtime) linear(n int, x hip.DevicePtr, cols int, pre bool, outs ...out1) error {
	s, k := r.stream, r.k
	if n > 1 && n <= maxRowsProduct && r.rowsProducts(outs) {
		return r.linearRows(n, x, cols, outs)
	}
	quantised := pre
	for _, o := range outs {
		w := o.w
		var err error
		q8 := r.int8Product(w.Type)
		switch {
		case n > 1:
			need := gpu.MatMulScratchBytes(w.Type, w.Rows, w.Cols, n)
			if need > r.s.mmBytes {
				if err := r.growMM(need); err != nil {
					return err
				}
			}
			err = k.MatMul(s, r.blas, w.Type, w.W, x, o.y, r.s.mm, w.Rows, w.Cols, n)
		case q8:
			if !quantised {
				if err := k.QuantizeActQ8(s, x, r.s.xq, cols); err != nil {
					return err
				}
				quantised = true
			}
			err = k.MatVecQ8(s, w.Type, w.W, r.s.xq, o.y, w.Rows, w.Cols)
		default:
			err = k.MatVec(s, w.Type, w.W, x, o.y, w.Rows, w.Cols)
		}
		if err != nil {
			return err
		}
		if err := r.addBias(n, o); err != nil {
			return err
		}
	}
	return nil
}

// addBias adds o's bias, if it has one, to each of the n rows of o.y.
// Called under mu.
func (r *Runtime) addBias(n int, o out1) error {
	w := o.w
	switch {
	case w.Bias == 0:
		return nil
	case n == 1:
		return r.k.Add(r.stream, o.y, o.y, w.Bias, w.Rows)
	default:
		return r.k.AddRows(r.stream, o.y, w.Bias, n, w.Rows)
	}
}

// maxRowsProduct is the most rows whose products go through MatVecQ8Rows,
// in chunks of up to gpu.MaxMatVecRows, rather than dequantisation and a
// GEMM. A chunk of 8 rows takes about one row's time (18 µs for a 1B
// model's gate+up in Q8_0, NOTES.md), the dequantise-and-GEMM path about
// 155 µs (Q8_0) to 250 µs (Q4_K) whatever the rows: 64 rows, 8 chunks,
// are still no slower.
const maxRowsProduct = 8 * gpu.MaxMatVecRows

// int8Product reports whether products with weights of type t take int8
// activations (MatVecQ8, MatVecQ8Rows).
func (r *Runtime) int8Product(t gguf.Type) bool {
	return !r.opts.Float32Activations && gpu.HasMatVecQ8(t)
}

// rowsProducts reports whether every product of outs can take
// MatVecQ8Rows.
func (r *Runtime) rowsProducts(outs []out1) bool {
	for _, o := range outs {
		if !r.int8Product(o.w.Type) {
			return false
		}
	}
	return true
}

// linearRows is linear for 2..maxRowsProduct rows through MatVecQ8Rows:
// the rows in balanced chunks of at most gpu.MaxMatVecRows, each chunk
// quantised once into the int8 scratch and multiplied with every matrix,
// so each weight block is read once per chunk. Called under mu.
func (r *Runtime) linearRows(n int, x hip.DevicePtr, cols int, outs []out1) error {
	s, k := r.stream, r.k
	chunks := (n + gpu.MaxMatVecRows - 1) / gpu.MaxMatVecRows
	per := (n + chunks - 1) / chunks
	for j0 := 0; j0 < n; j0 += per {
		m := min(per, n-j0)
		if err := k.QuantizeActQ8(s, x.Add(int64(j0*cols*4)), r.s.xq, m*cols); err != nil {
			return err
		}
		for _, o := range outs {
			w := o.w
			if err := k.MatVecQ8Rows(s, w.Type, w.W, r.s.xq, o.y.Add(int64(j0*w.Rows*4)), w.Rows, w.Cols, m); err != nil {
				return err
			}
		}
	}
	for _, o := range outs {
		if err := r.addBias(n, o); err != nil {
			return err
		}
	}
	return nil
}

// growMM replaces the BLAS scratch by a larger one. Graphs captured with
// the old one are dropped. Called under mu.
func (r *Runtime) growMM(need int64) error {
	p, err := r.pool.get(need)
	if err != nil {
		return err
	}
	r.pool.put(r.s.mm)
	r.s.mm, r.s.mmBytes = p, class(need)
	r.graphs.clear()
	return nil
}

// ------------------------------------------------------------ logits

// Want is what Project returns for one row besides its most likely token.
type Want struct {
	// Logits, when not nil (Vocab long), receives the row's logits.
	Logits []float32
	// Top, when not nil, receives the row's TopCandidates most likely
	// tokens and its softmax normalisers, SumT at Temperature (> 0).
	Top         *sample.Top
	Temperature float32
}

// TopCandidates is how many candidates a Want's Top receives (or the
// vocabulary, when smaller): enough for common top-k, top-p and min-p
// settings to be decided on them (sample.SampleTop).
const TopCandidates = gpu.TopKMax

// Project applies the final norm and the output projection to the given
// rows of x (row indexes), picks each one's most likely token on the
// device and returns the ids. want, when not nil, has one entry per row:
// rows whose entry asks for it also get their logits or their top
// candidates. It waits for the device: only the sampler calls it, for
// tokens it needs now.
func (r *Runtime) Project(g *Globals, x Rows, rows []int, want []Want) ([]int32, error) {
	p, err := r.StartProject(g, x, rows, want, nil)
	if err != nil {
		return nil, err
	}
	return p.Wait()
}

// errNoChain is Next's error when StartProject was asked for no chain.
var errNoChain = errors.New("gpustep: no chain asked for")

// Projection is a projection enqueued by StartProject whose results the
// host has not read yet. Until its Wait, no other projection can start.
type Projection struct {
	r       *Runtime
	n, k    int
	want    []Want
	tops    bool
	next    Rows
	nextErr error
	waited  bool
}

// StartProject enqueues what Project does and returns without waiting for
// the device; the caller must call the projection's Wait, once. With
// chain, the tokens picked for the first len(chain) rows are embedded on
// the device as a new batch of one row per segment of chain (Next): the
// next step of greedy sequences, enqueued before their tokens are known
// here. Every buffer StartProject takes from the pool is back in it when
// it returns, so that what the pool hands out next does not depend on
// when the caller waits (steps are captured as graphs keyed by their
// buffers).
func (r *Runtime) StartProject(g *Globals, x Rows, rows []int, want []Want, chain []Segment) (*Projection, error) {
	c := r.cfg
	n := len(rows)
	if n == 0 {
		return &Projection{r: r, nextErr: errors.New("gpustep: chain of an empty projection")}, nil
	}
	if want != nil && len(want) != n {
		return nil, fmt.Errorf("gpustep: logits: %d rows but %d wants", n, len(want))
	}
	k := min(TopCandidates, c.Vocab)
	tops := false
	need := int64(8 * n) // Argmax: index and value bits per row
	for i, w := range want {
		if w.Logits != nil {
			if len(w.Logits) != c.Vocab {
				return nil, fmt.Errorf("gpustep: logits: row %d's buffer holds %d, not %d", i, len(w.Logits), c.Vocab)
			}
			need += int64(4 * c.Vocab)
		}
		if w.Top != nil {
			if w.Temperature <= 0 || math.IsInf(float64(w.Temperature), 0) || math.IsNaN(float64(w.Temperature)) {
				return nil, fmt.Errorf("gpustep: logits: row %d's temperature %v", i, w.Temperature)
			}
			tops = true
		}
	}
	if tops {
		need += int64(n) * gpu.TopKRowBytes(k)
	}
	p := &Projection{r: r, n: n, k: k, want: want, tops: tops, nextErr: errNoChain}
	// The chained batch's buffers are taken first and the projection's
	// given back last: the projection's then come back the same every
	// token, and two chained batches alternate.
	var next *newBatch
	if len(chain) > 0 {
		next, p.nextErr = r.chainBatch(n, chain)
	}
	r.downMu.Lock()
	var bufs projectBufs
	defer bufs.release(r.pool) // every use is enqueued by then
	ok := false
	defer func() {
		if !ok {
			r.downMu.Unlock()
			if next != nil {
				r.pool.put(next.rows.X)
				r.pool.put(next.rows.Meta)
			}
		}
	}()
	if r.down == nil || int64(len(r.down.Bytes())) < need {
		if r.down != nil {
			if err := r.down.Free(); err != nil {
				return nil, err
			}
			r.down = nil
		}
		hb, err := r.dev.HostAlloc(max(need, 1<<16))
		if err != nil {
			return nil, fmt.Errorf("gpustep: logits buffer: %w", err)
		}
		r.down = hb
	}
	sizes := []sized{
		{&bufs.gather, int64(n * c.Dim * 4)},
		{&bufs.logits, int64(n) * int64(c.Vocab) * 4},
		{&bufs.ids, int64(8 * n)},
	}
	if tops {
		sizes = append(sizes,
			sized{&bufs.top, int64(n) * gpu.TopKRowBytes(k)},
			sized{&bufs.topScratch, gpu.TopKScratchBytes(n, c.Vocab, k)},
			sized{&bufs.invT, int64(4 * n)})
	}
	for _, sz := range sizes {
		d, err := r.pool.get(sz.size)
		if err != nil {
			return nil, err
		}
		*sz.p = d
		bufs.held = append(bufs.held, d)
	}

	r.mu.Lock()
	err := r.enqueueProject(g, x, rows, want, k, &bufs)
	if err == nil {
		err = r.done.Record(r.stream)
	}
	r.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("gpustep: logits: %w", err)
	}
	ok = true
	if next != nil {
		// The tokens Argmax picked for the first rows, embedded.
		t, m := g.TokenEmbd, next.rows.N
		p.next, p.nextErr = next.fill("chain", func(x, _ hip.DevicePtr) error {
			return r.k.EmbeddingArgmax(r.stream, t.Type, t.W, bufs.ids, x, m, t.Rows, t.Cols)
		})
	}
	return p, nil
}

// chainBatch takes the buffers of the batch chained to the first
// len(segs) of n projected rows: one row per segment.
func (r *Runtime) chainBatch(n int, segs []Segment) (*newBatch, error) {
	m := len(segs)
	if m > n || m > r.opts.MaxBatch {
		return nil, fmt.Errorf("gpustep: chain %d rows of a projection of %d", m, n)
	}
	for _, sg := range segs {
		if sg.N != 1 {
			return nil, fmt.Errorf("gpustep: chain a segment of %d rows (one each)", sg.N)
		}
	}
	return r.newBatch(segs, m, nil)
}

// Next returns the chained batch StartProject enqueued, which the caller
// releases as Embed's, or why there is none. Whatever the caller later
// learns of the tokens (an end of generation), that batch's embedding is
// already queued.
func (p *Projection) Next() (Rows, error) { return p.next, p.nextErr }

// Wait waits for the projection and returns each row's most likely token;
// the rows' wants are filled in.
func (p *Projection) Wait() ([]int32, error) {
	switch {
	case p.n == 0: // nothing enqueued, no lock held
		return nil, nil
	case p.waited:
		return nil, errors.New("gpustep: a projection waited for twice")
	}
	r, c, n := p.r, p.r.cfg, p.n
	p.waited = true
	defer r.downMu.Unlock()
	if err := r.done.Synchronize(context.Background()); err != nil {
		return nil, fmt.Errorf("gpustep: logits: %w", err)
	}
	if r.timing != nil {
		r.mu.Lock()
		r.resolve()
		r.mu.Unlock()
	}
	hb := r.down.Bytes()
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(hb[8*i:]))
	}
	off := 8 * n
	for _, w := range p.want {
		if w.Logits != nil {
			copy(w.Logits, unsafe.Slice((*float32)(unsafe.Pointer(&hb[off])), c.Vocab))
			off += 4 * c.Vocab
		}
	}
	if p.tops {
		rb := int(gpu.TopKRowBytes(p.k))
		for i, w := range p.want {
			if w.Top != nil {
				readTop(w.Top, hb[off+i*rb:off+(i+1)*rb], p.k, c.Vocab)
			}
		}
	}
	return out, nil
}

// projectBufs are one projection's device buffers from the pool.
type projectBufs struct {
	gather, logits, ids, top, topScratch, invT hip.DevicePtr
	held                                       []hip.DevicePtr
}

func (b *projectBufs) release(p *pool) {
	for _, d := range b.held {
		p.put(d)
	}
}

// readTop decodes one row of gpu.TopK's output (TopKRowBytes(k)) into t.
func readTop(t *sample.Top, b []byte, k, vocab int) {
	f := func(i int) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])) }
	cnt := min(int(binary.LittleEndian.Uint32(b[12:])), k)
	t.Max, t.Sum1, t.SumT, t.Vocab = f(0), float64(f(1)), float64(f(2)), vocab
	t.IDs, t.Logits = t.IDs[:0], t.Logits[:0]
	for i := range cnt {
		t.IDs = append(t.IDs, int32(binary.LittleEndian.Uint32(b[16+4*i:])))
		t.Logits = append(t.Logits, f(4+k+i))
	}
}

func (r *Runtime) enqueueProject(g *Globals, x Rows, rows []int, want []Want, topK int, b *projectBufs) error {
	c, s, k := r.cfg, r.stream, r.k
	n := len(rows)
	row := int64(c.Dim * 4)
	src := x.X
	contiguous := true
	for i, ri := range rows {
		if ri < 0 || ri >= x.N {
			return fmt.Errorf("row %d of %d", ri, x.N)
		}
		if ri != rows[0]+i {
			contiguous = false
		}
	}
	if contiguous {
		src = x.X.Add(int64(rows[0]) * row)
	} else {
		for i, ri := range rows {
			if err := s.MemcpyDtoDAsync(b.gather.Add(int64(i)*row), x.X.Add(int64(ri)*row), row); err != nil {
				return err
			}
		}
		src = b.gather
	}
	if err := k.RMSNorm(s, r.s.xn, src, g.OutputNorm, n, c.Dim, c.RMSEps); err != nil {
		return err
	}
	if n > r.opts.MaxBatch {
		return fmt.Errorf("%d rows (at most %d)", n, r.opts.MaxBatch)
	}
	if err := r.linear(n, r.s.xn, c.Dim, false, out1{&g.Output, b.logits}); err != nil {
		return err
	}
	if err := k.Argmax(s, b.ids, b.logits, n, c.Vocab); err != nil {
		return err
	}
	hb := r.down.Bytes()
	if err := s.MemcpyDtoHAsync(hb[:8*n], b.ids); err != nil {
		return err
	}
	off := 8 * n
	vb := int64(c.Vocab) * 4
	for i, w := range want {
		if w.Logits == nil {
			continue
		}
		if err := s.MemcpyDtoHAsync(hb[off:off+int(vb)], b.logits.Add(int64(i)*vb)); err != nil {
			return err
		}
		off += int(vb)
	}
	if b.top == 0 {
		return nil
	}
	invT := make([]byte, 4*n)
	for i, w := range want {
		if w.Top != nil {
			binary.LittleEndian.PutUint32(invT[4*i:], math.Float32bits(1/w.Temperature))
		}
	}
	if err := r.stage.upload(s, b.invT, invT); err != nil {
		return err
	}
	if err := k.TopK(s, b.top, b.topScratch, b.logits, b.invT, n, c.Vocab, topK); err != nil {
		return err
	}
	tb := int64(n) * gpu.TopKRowBytes(topK)
	return s.MemcpyDtoHAsync(hb[off:off+int(tb)], b.top)
}

// ------------------------------------------------------------ weights

// Matrix is a weight matrix on the device, with its optional bias.
type Matrix struct {
	Type       gguf.Type
	W          hip.DevicePtr
	Rows, Cols int
	Bias       hip.DevicePtr // 0: none
	Bytes      int64
}

// Block is one layer's weights on the device.
type Block struct {
	Layer                                     int
	AttnNorm, FFNNorm                         hip.DevicePtr
	Query, Key, Value, Output, Gate, Up, Down Matrix
	// qkv and gateUp are the products of one row fused into one launch,
	// when the matrices lie back to back with one type and no bias.
	qkv, gateUp *Matrix
	owned       []hip.DevicePtr // converted vectors, given back by Free
	r           *Runtime
}

// Globals are the weights outside the blocks on the device.
type Globals struct {
	TokenEmbd, Output Matrix
	OutputNorm        hip.DevicePtr
	RopeFreqs         hip.DevicePtr
	owned             []hip.DevicePtr
	r                 *Runtime
}

// Locator says where a tensor's bytes are on the device.
type Locator func(name string) (hip.DevicePtr, bool)

// BindBlock binds layer's weights: src gives their headers and host bytes
// (the mapped file; only the small vectors are read), at places where they
// lie on the device. The matrices are used as they are; a norm or bias
// whose type is not F32 is converted and uploaded.
func (r *Runtime) BindBlock(layer int, src model.Tensors, at Locator) (*Block, error) {
	hb := new(model.Block)
	prefix := model.BlockPrefix(layer)
	if err := model.Bind(src, prefix, r.cfg, hb); err != nil {
		return nil, err
	}
	b := &Block{Layer: layer, r: r}
	bd := binder{r: r, src: src, at: at}
	b.AttnNorm = bd.vector(prefix+"attn_norm.weight", hb.AttnNorm)
	b.FFNNorm = bd.vector(prefix+"ffn_norm.weight", hb.FFNNorm)
	for _, m := range []struct {
		dst  *Matrix
		name string
		l    *model.Linear
	}{{&b.Query, "attn_q", hb.Query}, {&b.Key, "attn_k", hb.Key}, {&b.Value, "attn_v", hb.Value},
		{&b.Output, "attn_output", hb.Output}, {&b.Gate, "ffn_gate", hb.Gate}, {&b.Up, "ffn_up", hb.Up}, {&b.Down, "ffn_down", hb.Down}} {
		*m.dst = bd.matrix(prefix+m.name, m.l)
	}
	b.owned = bd.owned
	if bd.err != nil {
		b.Free()
		return nil, fmt.Errorf("gpustep: layer %d: %w", layer, bd.err)
	}
	b.qkv = fuse(&b.Query, &b.Key, &b.Value)
	b.gateUp = fuse(&b.Gate, &b.Up)
	return b, nil
}

// Free gives back the vectors the binding converted (the uploader frees
// the weights' own memory).
func (b *Block) Free() {
	b.r.mu.Lock()
	b.r.graphs.dropBlock(b)
	b.r.mu.Unlock()
	for _, p := range b.owned {
		b.r.pool.put(p)
	}
	b.owned = nil
}

// BindGlobals binds the weights outside the blocks, as BindBlock does, and
// makes the rope frequency factors (if any) the ones the steps use.
func (r *Runtime) BindGlobals(src model.Tensors, at Locator) (*Globals, error) {
	hg := new(model.Globals)
	if err := model.Bind(src, "", r.cfg, hg); err != nil {
		return nil, err
	}
	g := &Globals{r: r}
	bd := binder{r: r, src: src, at: at}
	g.TokenEmbd = bd.matrix("token_embd", hg.TokenEmbd)
	if hg.Output != nil {
		g.Output = bd.matrix("output", hg.Output)
	} else {
		g.Output = g.TokenEmbd
	}
	g.OutputNorm = bd.vector("output_norm.weight", hg.OutputNorm)
	if hg.RopeFreqs != nil {
		g.RopeFreqs = bd.vector("rope_freqs.weight", hg.RopeFreqs)
	}
	g.owned = bd.owned
	if bd.err != nil {
		g.Free()
		return nil, fmt.Errorf("gpustep: globals: %w", bd.err)
	}
	r.mu.Lock()
	r.freqs = g.RopeFreqs
	r.graphs.clear()
	r.mu.Unlock()
	return g, nil
}

// Free gives back the vectors the binding converted.
func (g *Globals) Free() {
	for _, p := range g.owned {
		g.r.pool.put(p)
	}
	g.owned = nil
}

type binder struct {
	r     *Runtime
	src   model.Tensors
	at    Locator
	owned []hip.DevicePtr
	err   error
}

func (bd *binder) ptr(name string) hip.DevicePtr {
	p, ok := bd.at(name)
	if !ok && bd.err == nil {
		bd.err = fmt.Errorf("tensor %s is not on the device", name)
	}
	return p
}

// vector is a norm or bias as float32 on the device: the tensor itself when
// it is F32, else the bound values uploaded.
func (bd *binder) vector(name string, v []float32) hip.DevicePtr {
	if v == nil || bd.err != nil {
		return 0
	}
	if t, ok := bd.src.Tensor(name); ok && t.Type == gguf.TypeF32 {
		return bd.ptr(name)
	}
	r := bd.r
	p, err := r.pool.get(int64(4 * len(v)))
	if err != nil {
		bd.err = err
		return 0
	}
	bd.owned = append(bd.owned, p)
	r.mu.Lock()
	err = r.stage.upload(r.stream, p, unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v)))
	r.mu.Unlock()
	if err != nil {
		bd.err = fmt.Errorf("%s: %w", name, err)
	}
	return p
}

func (bd *binder) matrix(name string, l *model.Linear) Matrix {
	m := Matrix{Type: l.Weight.Type, Rows: l.Weight.Rows, Cols: l.Weight.Cols, Bytes: int64(len(l.Weight.Data))}
	m.W = bd.ptr(name + ".weight")
	if l.Bias != nil {
		m.Bias = bd.vector(name+".bias", l.Bias)
	}
	return m
}

// fuse returns ms as one matrix of all their rows when they lie back to
// back on the device with one type and width and no bias.
func fuse(ms ...*Matrix) *Matrix {
	f := *ms[0]
	for _, m := range ms[1:] {
		if m.Type != f.Type || m.Cols != f.Cols || m.Bias != 0 || f.Bias != 0 || m.W != f.W.Add(f.Bytes) {
			return nil
		}
		f.Rows += m.Rows
		f.Bytes += m.Bytes
	}
	return &f
}
