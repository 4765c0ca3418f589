// Package gpufwd is the eager forward pass of package model on a GPU: every
// weight uploaded at Load, one sequence's KV cache in device memory, and the
// same steps as model.Block.Forward enqueued on one compute stream through
// the kernels of package kernels/gpu. It is the GPU counterpart of the host
// reference (model.Model.Forward) and what the lazily loaded actor pipeline
// is compared with on a GPU.
//
// Activations and the KV cache are float32. Decode (one token) runs the
// matrix-vector kernels with float32 activations (or int8 ones, see
// SetInt8Activations); prefill (several tokens) runs kernels/gpu's MatMul,
// which rounds activations and dequantised weights to half for a BLAS GEMM
// with float32 accumulation.
package gpufwd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
	"unsafe"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/kernels/gpu"
	"github.com/forgepipe/forgepipe/model"
)

// weight is one matrix on the device, with its optional bias.
type weight struct {
	typ        gguf.Type
	w          hip.DevicePtr
	rows, cols int
	bias       hip.DevicePtr // 0: none
	bytes      int64
}

// block is one layer's weights on the device.
type block struct {
	attnNorm, ffnNorm                         hip.DevicePtr
	query, key, value, output, gate, up, down weight
	// gateUp is gate and up as one matrix of 2×FFN rows, when they have
	// the same type, no bias and lie back to back: one launch in decode.
	gateUp *weight
}

// Model is a model whose weights live on one device. Its methods are safe
// for concurrent use but run one step at a time (they share the activation
// buffers).
type Model struct {
	Config *model.Config
	host   *model.Model
	dev    hip.Device
	k      *gpu.Kernels
	stream hip.Stream // compute
	copy   hip.Stream // weight uploads
	loaded hip.Event  // recorded on copy after the last upload
	blas   hip.BLAS

	weights               hip.DevicePtr // one allocation holding every tensor
	weightBytes           int64         // matrix bytes (what a decode step reads)
	tokEmbd, output       weight
	outputNorm, freqs     hip.DevicePtr
	blocks                []block
	staging               []hip.HostBuffer // freed after the first step's sync
	contextSize, maxBatch int

	mu           sync.Mutex
	int8Act      bool
	act          actBuffers
	pinned       hip.HostBuffer // ids, positions, results
	profile      []hip.Event    // when set: recorded before the embedding, after each op of each block (opNames) and after the logits
	enqueueStart time.Time
	enqueued     time.Duration // host time spent enqueueing the last Greedy step
}

// actBuffers are the activation buffers of a step of up to n rows.
type actBuffers struct {
	n                                   int
	x, xn, q, att, o, gate, logits      hip.DevicePtr
	ids, pos, xq, argmax                hip.DevicePtr
	scratch, attnScratch                hip.DevicePtr
	scratchBytes, attnBytes, logitsRows int64
	allocs                              []hip.DevicePtr
}

// stagingBytes is the size of one pinned staging buffer; two alternate.
const stagingBytes = 64 << 20

// Load uploads every weight of m (a host-loaded model; model.Options
// NoPrefault avoids reading the file twice) to dev and loads the GPU
// kernels. The uploads run on a copy stream through pinned staging buffers;
// the compute stream waits on the copy stream's event, so Load returns
// without waiting for the last copies.
func Load(dev hip.Device, m *model.Model) (*Model, error) {
	k, err := gpu.Load(dev)
	if errors.Is(err, gpu.ErrHost) {
		k, err = gpu.LoadEmulated(dev) // tests without a GPU
	}
	if err != nil {
		return nil, fmt.Errorf("gpufwd: %w", err)
	}
	g := &Model{Config: m.Config, host: m, dev: dev, k: k, contextSize: m.ContextSize()}
	if err := g.load(); err != nil {
		g.Close()
		return nil, fmt.Errorf("gpufwd: load: %w", err)
	}
	return g, nil
}

// upload is one tensor waiting to be copied: its bytes and where they go.
type upload struct {
	data []byte
	dst  *hip.DevicePtr
	typ  gguf.Type // weights (cols > 0): written with gpu.ToDevice
	cols int
}

func (g *Model) load() error {
	var err error
	if g.stream, err = g.dev.StreamCreate(); err != nil {
		return err
	}
	if g.copy, err = g.dev.StreamCreate(); err != nil {
		return err
	}
	if g.loaded, err = g.dev.EventCreate(); err != nil {
		return err
	}
	if g.blas, err = g.dev.BLASCreate(g.stream); err != nil {
		return err
	}
	c := g.Config
	var ups []upload
	vec := func(dst *hip.DevicePtr, v []float32) {
		if v != nil {
			ups = append(ups, upload{data: unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v)), dst: dst})
		}
	}
	lin := func(dst *weight, l *model.Linear) {
		*dst = weight{typ: l.Weight.Type, rows: l.Weight.Rows, cols: l.Weight.Cols, bytes: int64(len(l.Weight.Data))}
		ups = append(ups, upload{data: l.Weight.Data, dst: &dst.w, typ: l.Weight.Type, cols: l.Weight.Cols})
		vec(&dst.bias, l.Bias)
		g.weightBytes += dst.bytes
	}
	gl := &g.host.Globals
	lin(&g.tokEmbd, gl.TokenEmbd)
	g.weightBytes -= g.tokEmbd.bytes // one row of it is read per token
	if gl.Output == gl.TokenEmbd {
		g.output = g.tokEmbd // tied: filled in after the upload
	} else {
		lin(&g.output, gl.Output)
	}
	vec(&g.outputNorm, gl.OutputNorm)
	vec(&g.freqs, c.Rope.FreqFactors)
	g.blocks = make([]block, len(g.host.Blocks))
	for i, hb := range g.host.Blocks {
		b := &g.blocks[i]
		vec(&b.attnNorm, hb.AttnNorm)
		vec(&b.ffnNorm, hb.FFNNorm)
		for _, p := range []struct {
			dst *weight
			src *model.Linear
		}{{&b.query, hb.Query}, {&b.key, hb.Key}, {&b.value, hb.Value}, {&b.output, hb.Output},
			{&b.gate, hb.Gate}, {&b.up, hb.Up}, {&b.down, hb.Down}} {
			lin(p.dst, p.src)
		}
	}

	// One allocation, each tensor at a 256-byte boundary (the kernels need
	// 16-byte alignment at most).
	const align = 256
	var total int64
	offs := make([]int64, len(ups))
	for i, u := range ups {
		offs[i] = total
		total += (int64(len(u.data)) + align - 1) / align * align
	}
	if g.weights, err = g.dev.Malloc(total); err != nil {
		return err
	}
	for i, u := range ups {
		*u.dst = g.weights.Add(offs[i])
	}
	if gl.Output == gl.TokenEmbd {
		g.output = g.tokEmbd
		g.weightBytes += g.output.bytes // read again by the output projection
	}
	for i := range g.blocks {
		b := &g.blocks[i]
		if b.gate.typ == b.up.typ && b.gate.cols == b.up.cols && b.gate.bias == 0 && b.up.bias == 0 &&
			b.up.w == b.gate.w.Add(b.gate.bytes) {
			b.gateUp = &weight{typ: b.gate.typ, w: b.gate.w, rows: b.gate.rows + b.up.rows, cols: b.gate.cols, bytes: b.gate.bytes + b.up.bytes}
		}
	}

	// Copy through two pinned buffers in turn: fill one from the mapped
	// file while the other's copy runs. The host waits only before reusing
	// a buffer, never per tensor.
	size := min(int64(stagingBytes), total)
	var ready [2]hip.Event
	for i := range ready {
		hb, err := g.dev.HostAlloc(size)
		if err != nil {
			return err
		}
		g.staging = append(g.staging, hb)
		if ready[i], err = g.dev.EventCreate(); err != nil {
			return err
		}
		defer ready[i].Destroy()
	}
	cur, fill := 0, int64(0)
	var dstStart hip.DevicePtr
	flush := func() error {
		if fill == 0 {
			return nil
		}
		if err := g.copy.MemcpyHtoDAsync(dstStart, g.staging[cur].Bytes()[:fill]); err != nil {
			return err
		}
		if err := ready[cur].Record(g.copy); err != nil {
			return err
		}
		cur, fill = 1-cur, 0
		return ready[cur].Synchronize(context.Background()) // the other buffer's copy is done
	}
	for i, u := range ups {
		dst := g.weights.Add(offs[i])
		for data := u.data; len(data) > 0; {
			// Tensors are packed contiguously in the staging buffer only
			// when they are contiguous on the device too.
			if fill > 0 && dstStart.Add(fill) != dst {
				if err := flush(); err != nil {
					return err
				}
			}
			if fill == 0 {
				dstStart = dst
			}
			// Weights go in their device layout, whole units of it at a time.
			n := len(data)
			if u.cols > 0 {
				unit := gpu.DeviceUnit(u.typ, u.cols)
				n = int(min(int64(n), size-fill)) / unit * unit
				if n == 0 { // the unit does not fit: copy what is filled first
					if err := flush(); err != nil {
						return err
					}
					continue
				}
				n = gpu.ToDevice(g.staging[cur].Bytes()[fill:], data[:n], u.typ, u.cols)
			} else {
				n = copy(g.staging[cur].Bytes()[fill:], data)
			}
			fill += int64(n)
			data, dst = data[n:], dst.Add(int64(n))
			if fill == size {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		// Pad to the next tensor's offset so consecutive tensors share a copy.
		if i+1 < len(ups) && fill > 0 {
			pad := offs[i+1] - (int64(dst) - int64(g.weights))
			if fill+pad <= size {
				fill += pad
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if err := g.loaded.Record(g.copy); err != nil {
		return err
	}
	return g.stream.WaitEvent(g.loaded)
}

// WeightBytes is the size of the weight matrices a decode step reads (the
// output projection counted even when it is tied to the embedding).
func (g *Model) WeightBytes() int64 { return g.weightBytes }

// Device is the device the model lives on.
func (g *Model) Device() hip.Device { return g.dev }

// SetInt8Activations makes decode steps quantise activations to 8 bits
// (kernels/gpu QuantizeActQ8) for the weight types gpu.HasMatVecQ8 names,
// as the host does: faster, and no longer float32-exact.
func (g *Model) SetInt8Activations(on bool) {
	g.mu.Lock()
	g.int8Act = on
	g.mu.Unlock()
}

// Close releases the model's device memory, streams and kernels. States
// made by NewState must be closed separately.
func (g *Model) Close() error {
	if g.stream != nil {
		_ = g.stream.Synchronize(context.Background())
	}
	if g.copy != nil {
		_ = g.copy.Synchronize(context.Background())
	}
	var errs []error
	g.freeActs()
	for _, hb := range g.staging {
		errs = append(errs, hb.Free())
	}
	g.staging = nil
	if g.pinned != nil {
		errs = append(errs, g.pinned.Free())
		g.pinned = nil
	}
	errs = append(errs, g.dev.Free(g.weights))
	g.weights = 0
	for _, e := range g.profile {
		errs = append(errs, e.Destroy())
	}
	g.profile = nil
	if g.loaded != nil {
		errs = append(errs, g.loaded.Destroy())
		g.loaded = nil
	}
	if g.blas != nil {
		errs = append(errs, g.blas.Destroy())
		g.blas = nil
	}
	for _, s := range []*hip.Stream{&g.stream, &g.copy} {
		if *s != nil {
			errs = append(errs, (*s).Destroy())
			*s = nil
		}
	}
	if g.k != nil {
		errs = append(errs, g.k.Close())
		g.k = nil
	}
	return errors.Join(errs...)
}

// State is one sequence on the device: its position and its KV cache
// (float32, ContextSize positions of every layer, allocated up front).
type State struct {
	Pos    int
	kv     hip.DevicePtr
	kc, vc []hip.DevicePtr // per layer
	logits []float32
	g      *Model
}

// NewState allocates an empty sequence's KV cache.
func (g *Model) NewState() (*State, error) {
	c := g.Config
	layer := int64(g.contextSize) * int64(c.KVDim()) * 4
	p, err := g.dev.Malloc(2 * layer * int64(c.Layers))
	if err != nil {
		return nil, fmt.Errorf("gpufwd: KV cache: %w", err)
	}
	st := &State{kv: p, g: g}
	for i := 0; i < c.Layers; i++ {
		st.kc = append(st.kc, p.Add(int64(2*i)*layer))
		st.vc = append(st.vc, p.Add(int64(2*i+1)*layer))
	}
	return st, nil
}

// Close frees the state's KV cache.
func (st *State) Close() error {
	if st.kv == 0 {
		return nil
	}
	err := st.g.dev.Free(st.kv)
	st.kv = 0
	return err
}

// KVBytes is the device memory the state's cache holds.
func (st *State) KVBytes() int64 {
	return 2 * int64(len(st.kc)) * int64(st.g.contextSize) * int64(st.g.Config.KVDim()) * 4
}

// ContextSize is the most tokens one sequence may hold.
func (g *Model) ContextSize() int { return g.contextSize }

// Forward runs ids through the model at positions st.Pos.., appends them to
// the KV cache and returns the logits of the last token (Vocab floats), or
// of every token (len(ids)×Vocab) when all is set, as model.Model.Forward
// does. The returned slice is reused by the next call on st.
func (g *Model) Forward(st *State, ids []int32, all bool) ([]float32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	logits, rows, err := g.step(st, ids, all)
	if err != nil {
		return nil, err
	}
	vocab := g.Config.Vocab
	nb := rows * vocab * 4
	if err := g.stream.MemcpyDtoHAsync(g.pinned.Bytes()[:nb], logits); err != nil {
		return nil, err
	}
	if err := g.sync(); err != nil {
		return nil, err
	}
	if cap(st.logits) < rows*vocab {
		st.logits = make([]float32, rows*vocab)
	}
	st.logits = st.logits[:rows*vocab]
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&st.logits[0])), nb), g.pinned.Bytes()[:nb])
	return st.logits, nil
}

// Greedy runs ids through the model like Forward and returns the most
// likely next token, chosen on the device: only its id comes back.
func (g *Model) Greedy(st *State, ids []int32) (int32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.enqueueGreedy(st, ids); err != nil {
		return 0, err
	}
	return g.finishGreedy()
}

// enqueueGreedy enqueues a step and the argmax with its copy back.
func (g *Model) enqueueGreedy(st *State, ids []int32) error {
	logits, _, err := g.step(st, ids, false)
	if err != nil {
		return err
	}
	if err := g.k.Argmax(g.stream, g.act.argmax, logits, 1, g.Config.Vocab); err != nil {
		return err
	}
	if err := g.stream.MemcpyDtoHAsync(g.pinned.Bytes()[:4], g.act.argmax); err != nil {
		return err
	}
	g.enqueued = time.Since(g.enqueueStart)
	return nil
}

// finishGreedy waits for the step and returns its token.
func (g *Model) finishGreedy() (int32, error) {
	if err := g.sync(); err != nil {
		return 0, err
	}
	return int32(binary.LittleEndian.Uint32(g.pinned.Bytes())), nil
}

func (g *Model) sync() error {
	if err := g.stream.Synchronize(context.Background()); err != nil {
		return err
	}
	// The first step's sync also says the uploads are done.
	for _, hb := range g.staging {
		if err := hb.Free(); err != nil {
			return err
		}
	}
	g.staging = nil
	return nil
}

// step enqueues the forward pass of ids and returns the device address of
// the logits (rows×Vocab float32, rows = len(ids) when all, else 1).
func (g *Model) step(st *State, ids []int32, all bool) (hip.DevicePtr, int, error) {
	g.enqueueStart = time.Now()
	n := len(ids)
	c := g.Config
	if n == 0 {
		return 0, 0, errors.New("gpufwd: forward: no tokens")
	}
	if st.kv == 0 {
		return 0, 0, errors.New("gpufwd: forward: state is closed")
	}
	if st.Pos+n > g.contextSize {
		return 0, 0, fmt.Errorf("gpufwd: %w: %d tokens at position %d exceed the context size %d", model.ErrContextFull, n, st.Pos, g.contextSize)
	}
	for _, id := range ids {
		if id < 0 || int(id) >= c.Vocab {
			return 0, 0, fmt.Errorf("gpufwd: token id %d out of range [0, %d)", id, c.Vocab)
		}
	}
	rows := 1
	if all {
		rows = n
	}
	if err := g.ensure(n, rows, st.Pos+n); err != nil {
		return 0, 0, err
	}
	a := &g.act
	// ids and positions through the pinned buffer: safe, since the
	// previous step's sync left nothing in flight.
	hb := g.pinned.Bytes()
	for i, id := range ids {
		binary.LittleEndian.PutUint32(hb[4*i:], uint32(id))
		binary.LittleEndian.PutUint32(hb[4*(n+i):], uint32(st.Pos+i))
	}
	s, k := g.stream, g.k
	pos := a.ids.Add(int64(4 * n))
	up := a.gate.Add(int64(n * c.FFN * 4)) // right after gate's n rows, where gateUp writes it for one row
	if err := s.MemcpyHtoDAsync(a.ids, hb[:8*n]); err != nil {
		return 0, 0, err
	}
	if g.profile != nil {
		if err := g.profile[0].Record(s); err != nil {
			return 0, 0, err
		}
	}
	e := &errList{}
	e.add(k.Embedding(s, g.tokEmbd.typ, g.tokEmbd.w, a.ids, a.x, n, g.tokEmbd.rows, g.tokEmbd.cols))
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	dim, qdim, kvdim, ffn := c.Dim, c.QDim(), c.KVDim(), c.FFN
	for i := range g.blocks {
		b := &g.blocks[i]
		kOff := int64(st.Pos) * int64(kvdim) * 4
		kc, vc := st.kc[i], st.vc[i]
		// Attention: x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x));
		// K and V are written straight into the cache rows of these positions.
		mark := func(op int) { // profiling: an event after each op
			if g.profile != nil {
				e.add(g.profile[1+i*len(opNames)+op].Record(s))
			}
		}
		e.add(k.RMSNorm(s, a.xn, a.x, b.attnNorm, n, dim, c.RMSEps))
		mark(0)
		e.add(g.linear(n, a.xn, dim, out{&b.query, a.q}, out{&b.key, kc.Add(kOff)}, out{&b.value, vc.Add(kOff)}))
		mark(1)
		e.add(k.Rope(s, &c.Rope, g.freqs, a.q, pos, n, c.Heads, c.HeadDim))
		e.add(k.Rope(s, &c.Rope, g.freqs, kc.Add(kOff), pos, n, c.KVHeads, c.HeadDim))
		mark(2)
		e.add(k.Attention(s, a.att, a.q, kc, vc, a.attnScratch, n, st.Pos, c.Heads, c.KVHeads, c.HeadDim, scale))
		mark(3)
		e.add(g.linear(n, a.att, qdim, out{&b.output, a.o}))
		mark(4)
		e.add(k.Add(s, a.x, a.x, a.o, n*dim))
		mark(5)
		// Feed-forward: x += Wdown · (silu(Wgate·norm(x)) * Wup·norm(x))
		e.add(k.RMSNorm(s, a.xn, a.x, b.ffnNorm, n, dim, c.RMSEps))
		mark(6)
		if n == 1 && b.gateUp != nil {
			e.add(g.linear(n, a.xn, dim, out{b.gateUp, a.gate})) // up follows gate in a.gate
		} else {
			e.add(g.linear(n, a.xn, dim, out{&b.gate, a.gate}, out{&b.up, up}))
		}
		mark(7)
		e.add(k.SwiGLU(s, a.gate, a.gate, up, n*ffn))
		mark(8)
		e.add(g.linear(n, a.gate, ffn, out{&b.down, a.o}))
		mark(9)
		e.add(k.Add(s, a.x, a.x, a.o, n*dim))
		mark(10)
		if e.err != nil {
			return 0, 0, fmt.Errorf("gpufwd: block %d: %w", i, e.err)
		}
	}
	x := a.x
	if !all {
		x = x.Add(int64(n-1) * int64(dim) * 4)
	}
	e.add(k.RMSNorm(s, a.xn, x, g.outputNorm, rows, dim, c.RMSEps))
	e.add(g.linear(rows, a.xn, dim, out{&g.output, a.logits}))
	if g.profile != nil {
		e.add(g.profile[len(g.profile)-1].Record(s))
	}
	if e.err != nil {
		return 0, 0, fmt.Errorf("gpufwd: logits: %w", e.err)
	}
	st.Pos += n
	return a.logits, rows, nil
}

type errList struct{ err error }

func (e *errList) add(err error) {
	if e.err == nil {
		e.err = err
	}
}

// out is one product of a shared input: the weight and where its n rows go.
type out struct {
	w *weight
	y hip.DevicePtr
}

// linear computes y = W·x (+ bias) for each out over n rows of x (cols
// wide): matrix-vector products for one row (int8 activations quantised
// once for all outs when enabled), BLAS products for more.
func (g *Model) linear(n int, x hip.DevicePtr, cols int, outs ...out) error {
	s, k, a := g.stream, g.k, &g.act
	quantised := false
	for _, o := range outs {
		w := o.w
		var err error
		switch {
		case n > 1:
			err = k.MatMul(s, g.blas, w.typ, w.w, x, o.y, a.scratch, w.rows, w.cols, n)
		case g.int8Act && gpu.HasMatVecQ8(w.typ):
			if !quantised {
				if err := k.QuantizeActQ8(s, x, a.xq, cols); err != nil {
					return err
				}
				quantised = true
			}
			err = k.MatVecQ8(s, w.typ, w.w, a.xq, o.y, w.rows, w.cols)
		default:
			err = k.MatVec(s, w.typ, w.w, x, o.y, w.rows, w.cols)
		}
		if err != nil {
			return err
		}
		if w.bias != 0 {
			for r := 0; r < n; r++ {
				y := o.y.Add(int64(r) * int64(w.rows) * 4)
				if err := k.Add(s, y, y, w.bias, w.rows); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// ensure sizes the activation buffers for a step of n rows, rows of logits,
// over a context of nCtx positions. Called with nothing in flight (every
// step ends in a sync), so old buffers can be freed at once.
func (g *Model) ensure(n, rows, nCtx int) error {
	c := g.Config
	a := &g.act
	attn := gpu.AttentionScratchBytes(n, c.Heads, c.HeadDim, nCtx)
	var scratch int64
	if n > 1 {
		for _, w := range g.matrices() {
			scratch = max(scratch, gpu.MatMulScratchBytes(w.typ, w.rows, w.cols, n))
		}
	}
	if n <= a.n && int64(rows) <= a.logitsRows && attn <= a.attnBytes && scratch <= a.scratchBytes && g.pinned != nil {
		return nil
	}
	n = max(n, a.n)
	rows = max(rows, int(a.logitsRows))
	attn = max(attn, a.attnBytes, gpu.AttentionScratchBytes(1, c.Heads, c.HeadDim, g.contextSize))
	scratch = max(scratch, a.scratchBytes)
	g.freeActs()
	widest := max(c.Dim, c.QDim(), c.FFN)
	sizes := []struct {
		p    *hip.DevicePtr
		size int64
	}{
		{&a.x, int64(n * c.Dim * 4)}, {&a.xn, int64(n * c.Dim * 4)}, {&a.q, int64(n * c.QDim() * 4)},
		{&a.att, int64(n * c.QDim() * 4)}, {&a.o, int64(n * c.Dim * 4)},
		{&a.gate, int64(2 * n * c.FFN * 4)},
		{&a.logits, int64(rows) * int64(c.Vocab) * 4},
		{&a.ids, int64(n * 8)}, {&a.xq, gpu.ActQ8Bytes(widest)}, {&a.argmax, 8},
		{&a.scratch, scratch}, {&a.attnScratch, attn},
	}
	for _, sz := range sizes {
		p, err := g.dev.Malloc(max(sz.size, 256))
		if err != nil {
			g.freeActs()
			return fmt.Errorf("gpufwd: activations for %d rows: %w", n, err)
		}
		*sz.p = p
		a.allocs = append(a.allocs, p)
	}
	a.n, a.logitsRows, a.attnBytes, a.scratchBytes = n, int64(rows), attn, scratch
	pinned := max(int64(8*n), int64(rows)*int64(c.Vocab)*4)
	if g.pinned == nil || int64(len(g.pinned.Bytes())) < pinned {
		if g.pinned != nil {
			if err := g.pinned.Free(); err != nil {
				return err
			}
			g.pinned = nil
		}
		hb, err := g.dev.HostAlloc(pinned)
		if err != nil {
			return fmt.Errorf("gpufwd: pinned buffer: %w", err)
		}
		g.pinned = hb
	}
	return nil
}

func (g *Model) freeActs() {
	for _, p := range g.act.allocs {
		_ = g.dev.Free(p)
	}
	g.act = actBuffers{}
}

// matrices lists every weight matrix.
func (g *Model) matrices() []*weight {
	ws := []*weight{&g.output}
	for i := range g.blocks {
		b := &g.blocks[i]
		ws = append(ws, &b.query, &b.key, &b.value, &b.output, &b.gate, &b.up, &b.down)
	}
	return ws
}

// Stepper is st as a model.Stepper, for model.GenerateWith: greedy steps
// pick the token on the device.
func (g *Model) Stepper(st *State) model.Stepper { return stepper{g, st} }

type stepper struct {
	g  *Model
	st *State
}

func (s stepper) Step(ids []int32, greedy bool) ([]float32, int32, error) {
	if greedy {
		id, err := s.g.Greedy(s.st, ids)
		return nil, id, err
	}
	l, err := s.g.Forward(s.st, ids, false)
	return l, -1, err
}

func (s stepper) Pos() int { return s.st.Pos }
