// Package gpu holds the GPU versions of forgepipe's kernels: sources in one
// HIP/CUDA dialect (src/*.cu, with src/compat.h hiding warp size,
// shuffles and half/bfloat16), compiled at run time by the device's driver
// (nvrtc or hiprtc, cached on disk by the driver), and typed Go wrappers
// that launch them on a stream.
//
// Every kernel has a host reference in package kernels (or gguf for the
// dequantisers); the tests check each against it within the tolerances in
// TOLERANCES.md. Activations are float32 throughout: matrix-vector products
// dequantise the weights in registers and accumulate in float32 (the host
// quantises activations to Q8_0/Q8_K instead, so the GPU is the more exact
// of the two). Prompt-sized products dequantise the weights to half and
// run a BLAS GEMM with float32 accumulation.
//
// All sizes are element counts; all pointers are device pointers that the
// caller owns. Wrappers enqueue and return; a bad argument is an error
// wrapping hip.ErrInvalidValue, never a launch.
package gpu

import (
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/kernels"
)

//go:embed src/compat.h src/*.cu
var srcFS embed.FS

// sourceFiles are the kernel sources, in the order they are concatenated.
var sourceFiles = []string{"quant.cu", "matvec_rows.cu", "ops.cu", "attention.cu", "fused.cu", "topk.cu"}

// Source returns the module source the drivers compile: compat.h followed
// by every .cu file, their `#include "compat.h"` lines removed (nvrtc and
// hiprtc see one translation unit and need no include path).
func Source() string {
	var b strings.Builder
	b.WriteString(mustRead("src/compat.h"))
	for _, f := range sourceFiles {
		fmt.Fprintf(&b, "\n// ---- %s\n", f)
		for _, line := range strings.SplitAfter(mustRead("src/"+f), "\n") {
			if strings.TrimSpace(line) == `#include "compat.h"` {
				continue
			}
			b.WriteString(line)
		}
	}
	return b.String()
}

// SourceFiles returns the embedded sources by name (compat.h and the .cu
// files), as `make amd-check` compiles them.
func SourceFiles() map[string]string {
	out := map[string]string{}
	_ = fs.WalkDir(srcFS, "src", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out[strings.TrimPrefix(p, "src/")] = mustRead(p)
		}
		return nil
	})
	return out
}

func mustRead(name string) string {
	b, err := srcFS.ReadFile(name)
	if err != nil {
		panic("kernels/gpu: embedded source missing: " + name)
	}
	return string(b)
}

// ErrHost is returned by Load for the host driver, which runs package
// kernels instead of GPU sources.
var ErrHost = errors.New("kernels/gpu: the host driver has no GPU kernels (use package kernels)")

// Kernels is the loaded module on one device. Its methods only enqueue work
// and are safe for concurrent use.
type Kernels struct {
	dev hip.Device
	mod hip.Module
	fns map[string]hip.Function
	mv  map[mvKey]hip.Function // matvec kernels, looked up without formatting a name per call
	mvt mvTune                 // launch choices the benchmarks override

	dependent bool // launches are dependent (launch.go) unless FORGEPIPE_PDL=0
}

// mvTune holds matrix-vector launch choices that tests and benchmarks
// override; the zero value means the defaults.
type mvTune struct {
	staged  bool // MatVecQ8 through matvec8s (weights staged in shared memory), not matvec8
	split   int  // warps of a matvec8s block sharing one row group (1, 2, 4); 0: by shape
	gridCap int  // most blocks per matvec or matvec8s launch (blocks then stride); 0: no cap
}

type mvKey struct {
	suffix string
	rows   int
}

// typeNames maps each supported weight type to its kernel-name suffix.
var typeNames = map[gguf.Type]string{
	gguf.TypeF32: "f32", gguf.TypeF16: "f16", gguf.TypeBF16: "bf16",
	gguf.TypeQ4_0: "q4_0", gguf.TypeQ4_1: "q4_1", gguf.TypeQ5_0: "q5_0", gguf.TypeQ5_1: "q5_1",
	gguf.TypeQ8_0: "q8_0", gguf.TypeQ2_K: "q2_k", gguf.TypeQ3_K: "q3_k", gguf.TypeQ4_K: "q4_k",
	gguf.TypeQ5_K: "q5_k", gguf.TypeQ6_K: "q6_k", gguf.TypeQ8_K: "q8_k",
}

// Types lists the weight types the GPU kernels support, in type order.
func Types() []gguf.Type {
	ts := make([]gguf.Type, 0, len(typeNames))
	for t := range typeNames {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}

// kernelNames lists every kernel of the module.
func kernelNames() []string {
	names := []string{"add_rmsnorm_q8", "swiglu_q8", "rope_kv_store", "rmsnorm_f32", "add_f32", "add_rows_f32", "swiglu_f32", "rope_f32", "argmax_f32",
		"f32_to_f16", "f32_to_bf16", "attn_split_f32", "attn_combine_f32", "topk_slice_f32", "topk_merge_f32"}
	suffixes := []string{"f32s", "f16s", "bf16s", q8Regroup.suffix, q4Regroup.suffix}
	for _, s := range typeNames {
		suffixes = append(suffixes, s)
	}
	for _, s := range suffixes {
		for _, r := range []int{1, 2, 4} {
			names = append(names, fmt.Sprintf("matvec_%s_r%d", s, r))
		}
		names = append(names, "dequant_"+s+"_f32", "dequant_"+s+"_f16", "embed_"+s)
	}
	for _, s := range []string{"q4_0", "q8_0", "q4_k", "q6_k", q8Regroup.suffix, q4Regroup.suffix} {
		for _, r := range []int{1, 2, 4} {
			names = append(names, fmt.Sprintf("matvec_decoded_%s_r%d", s, r), fmt.Sprintf("matvec8_%s_r%d", s, r))
			if !isGrouped(s) { // the staged kernels read GGUF blocks only
				names = append(names, fmt.Sprintf("matvec8s_%s_r%d", s, r))
			}
		}
	}
	names = append(names, "quantize_act_q8")
	names = append(names, rowsKernelNames()...)
	names = append(names, matVecRowsKernelNames()...)
	slices.Sort(names)
	return names
}

// Load compiles (or fetches from the driver's cache) and loads the module
// on dev, and looks up every kernel.
func Load(dev hip.Device) (*Kernels, error) {
	if dev.Driver() == "host" {
		return nil, ErrHost
	}
	return load(dev)
}

// LoadEmulated loads, on the host driver, Go emulations of every GPU kernel
// (registered with hip.RegisterHostKernel by this package, emulate_*.go):
// slow, but they let the code that drives the GPU kernels (model/gpustep,
// the actors' GPU path) run and be tested where there is no GPU. Their
// results match the GPU kernels within the tolerances of TOLERANCES.md, not
// bit for bit.
func LoadEmulated(dev hip.Device) (*Kernels, error) {
	if dev.Driver() != "host" {
		return nil, fmt.Errorf("kernels/gpu: LoadEmulated on the %s driver: %w", dev.Driver(), hip.ErrNotSupported)
	}
	return load(dev)
}

func load(dev hip.Device) (*Kernels, error) {
	var opts []string
	if os.Getenv("FORGEPIPE_PREFETCH_WEIGHTS") == "1" {
		// matvec8's blocks prefetch their weights into the L2 while they
		// wait for the kernel ahead (compat.h, FP_GRID_WAIT_PREFETCH).
		opts = append(opts, "-DFP_PREFETCH_WEIGHTS=1")
	}
	if os.Getenv("FORGEPIPE_PDL_EARLY") == "1" {
		// dependent launches triggered as blocks begin, not as they end
		// (compat.h, FP_PDL_EARLY)
		opts = append(opts, "-DFP_PDL_EARLY=1")
	}
	mod, err := dev.LoadModule(hip.ModuleSpec{Name: "forgepipe-kernels", Source: Source(), Options: opts})
	if err != nil {
		return nil, fmt.Errorf("kernels/gpu: load: %w", err)
	}
	k := &Kernels{dev: dev, mod: mod, fns: map[string]hip.Function{}, dependent: dependentFromEnv()}
	for _, name := range kernelNames() {
		f, err := mod.Function(name)
		if err != nil {
			_ = mod.Unload()
			return nil, fmt.Errorf("kernels/gpu: load: %w", err)
		}
		k.fns[name] = f
	}
	k.mv = map[mvKey]hip.Function{}
	for name, f := range k.fns {
		var suffix string
		var r int
		if strings.HasPrefix(name, "matvec") {
			i := strings.LastIndex(name, "_r")
			suffix = name[:i] // matvec_q4_0, matvec_decoded_q4_0, matvec8_q4_0, matvec8s_q4_0
			fmt.Sscan(name[i+2:], &r)
			k.mv[mvKey{suffix, r}] = f
		}
	}
	return k, nil
}

// Close unloads the module.
func (k *Kernels) Close() error { return k.mod.Unload() }

func (k *Kernels) fn(name string) hip.Function { return k.fns[name] }

func badArg(call, format string, args ...any) error {
	return fmt.Errorf("kernels/gpu: %s: %w: %s", call, hip.ErrInvalidValue, fmt.Sprintf(format, args...))
}

func blocks(n, per int) uint32 { return uint32((n + per - 1) / per) }

// ------------------------------------------------------------ weights

// geometry is a weight type's block layout as the kernels see it.
type geometry struct {
	suffix string // kernel name suffix
	qk     int    // values per kernel block
	align  int    // required alignment of w, bytes
}

// geom picks the kernel variant for t rows of cols values: the 16-byte
// vector variants for float types when cols allows, else the one-value ones.
func geom(call string, t gguf.Type, cols int) (geometry, error) {
	s, ok := typeNames[t]
	if !ok {
		return geometry{}, fmt.Errorf("kernels/gpu: %s: %w: %s weights", call, hip.ErrNotSupported, t)
	}
	g := geometry{suffix: s, qk: t.BlockSize(), align: 4}
	switch t {
	case gguf.TypeF32:
		g.qk, g.align = 4, 16
		if cols%4 != 0 {
			g = geometry{"f32s", 1, 4}
		}
	case gguf.TypeF16, gguf.TypeBF16:
		g.qk, g.align = 8, 16
		if cols%8 != 0 {
			g = geometry{s + "s", 1, 2}
		}
	case gguf.TypeQ4_K, gguf.TypeQ5_K:
		g.align = 16
	case gguf.TypeQ4_0, gguf.TypeQ5_0, gguf.TypeQ8_0, gguf.TypeQ3_K, gguf.TypeQ6_K:
		g.align = 2
	}
	if r := regrouped(t, cols); r != nil {
		g = geometry{r.suffix, 256, 16} // layout.go
	}
	if cols <= 0 || cols%g.qk != 0 {
		return geometry{}, badArg(call, "%d columns is not a positive multiple of %s's block size %d", cols, t, t.BlockSize())
	}
	return g, nil
}

func checkWeights(call string, t gguf.Type, w hip.DevicePtr, rows, cols int) (geometry, int64, error) {
	g, err := geom(call, t, cols)
	if err != nil {
		return g, 0, err
	}
	if rows <= 0 || rows > math.MaxInt32 || cols > math.MaxInt32 {
		return g, 0, badArg(call, "%d x %d matrix", rows, cols)
	}
	if uint64(w)%uint64(g.align) != 0 {
		return g, 0, badArg(call, "%s weights at %v are not %d-byte aligned", t, w, g.align)
	}
	rb, _ := t.RowSize(cols)
	return g, int64(rb), nil
}

// DefaultRowsPerBlock is the number of rows one block of a matrix-vector
// product computes: x is reused across them, and fewer rows per block mean
// more blocks in flight. 2 was best or within noise of best for every fast
// type on an H100 at 4096x4096 and 2048x8192 (kernels/gpu/NOTES.md).
func DefaultRowsPerBlock(t gguf.Type) int { return 2 }

// MatVec computes y[r] = (row r of w) · x for the rows×cols matrix w of
// type t (GGUF layout, row-major blocks): x holds cols float32, y rows.
func (k *Kernels) MatVec(s hip.Stream, t gguf.Type, w, x, y hip.DevicePtr, rows, cols int) error {
	return k.MatVecR(s, t, DefaultRowsPerBlock(t), w, x, y, rows, cols)
}

// MatVecR is MatVec with rowsPerBlock (1, 2 or 4) chosen by the caller.
func (k *Kernels) MatVecR(s hip.Stream, t gguf.Type, rowsPerBlock int, w, x, y hip.DevicePtr, rows, cols int) error {
	return k.matVec(s, t, rowsPerBlock, false, w, x, y, rows, cols)
}

// matVec launches the product; decoded picks the plain decode-then-dot
// variant of the types that have a faster dot (for benchmarks).
func (k *Kernels) matVec(s hip.Stream, t gguf.Type, rowsPerBlock int, decoded bool, w, x, y hip.DevicePtr, rows, cols int) error {
	g, rb, err := checkWeights("MatVec", t, w, rows, cols)
	if err != nil {
		return err
	}
	if rowsPerBlock != 1 && rowsPerBlock != 2 && rowsPerBlock != 4 {
		return badArg("MatVec", "%d rows per block (want 1, 2 or 4)", rowsPerBlock)
	}
	key := mvKey{"matvec_" + g.suffix, rowsPerBlock}
	if decoded {
		key.suffix = "matvec_decoded_" + g.suffix
	}
	f, ok := k.mv[key]
	if !ok {
		return fmt.Errorf("kernels/gpu: MatVec: %w: no %s kernel", hip.ErrNotFound, key.suffix)
	}
	return k.launch(s, f, hip.Dim1(k.capGrid(blocks(rows, rowsPerBlock))), hip.Dim1(128), 0,
		hip.Ptr(w), hip.Ptr(x), hip.Ptr(y), hip.Int32(int32(rows)), hip.Int32(int32(cols)), hip.Int64(rb))
}

// capGrid limits a matvec grid of n blocks to the benchmarks' cap.
func (k *Kernels) capGrid(n uint32) uint32 {
	if c := uint32(k.mvt.gridCap); c > 0 && n > c {
		return c
	}
	return n
}

// ActQ8Bytes is the size of n activations quantised by QuantizeActQ8:
// n int8 values and n/32 float32 scales.
func ActQ8Bytes(n int) int64 { return int64(n) + int64(n/32)*4 }

// HasMatVecQ8 reports whether MatVecQ8 supports t.
func HasMatVecQ8(t gguf.Type) bool {
	switch t {
	case gguf.TypeQ4_0, gguf.TypeQ8_0, gguf.TypeQ4_K, gguf.TypeQ6_K:
		return true
	}
	return false
}

// QuantizeActQ8 quantises n float32 activations (n a multiple of 32) to
// int8 in blocks of 32 with a float32 scale each (ggml's Q8_0 rule, the
// scale kept in float32), into xq (ActQ8Bytes(n), 4-byte aligned). One
// quantised vector serves every product with it (Q, K and V; gate and up).
func (k *Kernels) QuantizeActQ8(s hip.Stream, x, xq hip.DevicePtr, n int) error {
	if n <= 0 || n%32 != 0 {
		return badArg("QuantizeActQ8", "%d activations, not a positive multiple of 32", n)
	}
	if xq%4 != 0 {
		return badArg("QuantizeActQ8", "xq at %v is not 4-byte aligned", xq)
	}
	return k.launch(s, k.fn("quantize_act_q8"), hip.Dim1(blocks(n, 128)), hip.Dim1(128), 0,
		hip.Ptr(xq), hip.Ptr(x), hip.Int32(int32(n)))
}

// MatVecQ8 is MatVec with int8 activations xq from QuantizeActQ8, for the
// types HasMatVecQ8 names: four products per dp4a instruction, the faster
// path for 4- to 8-bit weights, at the precision of the host's own
// products (activations rounded to 8 bits).
func (k *Kernels) MatVecQ8(s hip.Stream, t gguf.Type, w, xq, y hip.DevicePtr, rows, cols int) error {
	return k.MatVecQ8R(s, t, DefaultRowsPerBlockQ8(t), w, xq, y, rows, cols)
}

// DefaultRowsPerBlockQ8 is MatVecQ8's rows per block for t, the fastest
// on an H100 (kernels/gpu/NOTES.md).
func DefaultRowsPerBlockQ8(t gguf.Type) int {
	if t == gguf.TypeQ4_K {
		return 4
	}
	return 2
}

// MatVecQ8R is MatVecQ8 with rowsPerBlock (1, 2 or 4) chosen by the caller:
// the rows that share each load of the activations.
func (k *Kernels) MatVecQ8R(s hip.Stream, t gguf.Type, rowsPerBlock int, w, xq, y hip.DevicePtr, rows, cols int) error {
	return k.matVecQ8(s, t, rowsPerBlock, w, xq, 0, y, rows, cols)
}

// MatVecQ8Add is MatVecQ8 with a residual: y = W·xq + res (rows float32),
// bit for bit what MatVecQ8 into a scratch row followed by Add(y, res,
// scratch) gives, in one launch. res may be y itself (y += W·xq): each
// value of res is read before its row of y is written, by the same thread.
func (k *Kernels) MatVecQ8Add(s hip.Stream, t gguf.Type, w, xq, res, y hip.DevicePtr, rows, cols int) error {
	if res == 0 || res%4 != 0 {
		return badArg("MatVecQ8Add", "residual at %v (want a 4-byte aligned address)", res)
	}
	return k.matVecQ8(s, t, DefaultRowsPerBlockQ8(t), w, xq, res, y, rows, cols)
}

// matVecQ8 is MatVecQ8R adding the residual res (0: none) to the products.
func (k *Kernels) matVecQ8(s hip.Stream, t gguf.Type, rowsPerBlock int, w, xq, res, y hip.DevicePtr, rows, cols int) error {
	g, rb, err := checkWeights("MatVecQ8", t, w, rows, cols)
	if err != nil {
		return err
	}
	if !HasMatVecQ8(t) {
		return fmt.Errorf("kernels/gpu: MatVecQ8: %w: %s weights (use MatVec)", hip.ErrNotSupported, t)
	}
	if xq%4 != 0 || k.mvt.staged && xq%16 != 0 {
		return badArg("MatVecQ8", "activations at %v are not 4-byte aligned (16 for the staged kernels)", xq)
	}
	// Regrouped weights have no staged kernel: their loads are the
	// aligned ones that staging makes.
	if !k.mvt.staged || isGrouped(g.suffix) {
		f, ok := k.mv[mvKey{"matvec8_" + g.suffix, rowsPerBlock}]
		if !ok {
			return badArg("MatVecQ8", "%d rows per block (want 1, 2 or 4)", rowsPerBlock)
		}
		return k.launch(s, f, hip.Dim1(blocks(rows, rowsPerBlock)), hip.Dim1(128), 0,
			hip.Ptr(w), hip.Ptr(xq), hip.Ptr(y), hip.Int32(int32(rows)), hip.Int32(int32(cols)), hip.Int64(rb), hip.Ptr(res))
	}
	f, ok := k.mv[mvKey{"matvec8s_" + g.suffix, rowsPerBlock}]
	if !ok {
		return badArg("MatVecQ8", "%d rows per block (want 1, 2 or 4)", rowsPerBlock)
	}
	groups := (rows + rowsPerBlock - 1) / rowsPerBlock
	split := k.mvt.split
	if split == 0 {
		split = mv8Split(groups, (cols/t.BlockSize()+mv8TileBlocks(t, rowsPerBlock)-1)/mv8TileBlocks(t, rowsPerBlock))
	}
	steps := blocks(groups, mv8Warps/split)
	return k.launch(s, f, hip.Dim1(k.capGrid(steps)), hip.Dim1(mv8Threads), 0,
		hip.Ptr(w), hip.Ptr(xq), hip.Ptr(y), hip.Int32(int32(rows)), hip.Int32(int32(cols)), hip.Int64(rb),
		hip.Int32(int32(split)), hip.Ptr(res))
}

// mv8Threads is the threads of a matvec8s block (MV8_THREADS in
// quant.cu), mv8Warps its warps on a 32-lane GPU. The kernel derives its
// steps itself: the grid is only an upper bound, right on 64-lane GPUs too.
const (
	mv8Threads = 128
	mv8Warps   = mv8Threads / 32
)

// mv8TileBlocks is the weight blocks per row in one warp's tile of
// matvec8s (Mv8<T, R>::TB in quant.cu, for 32-lane warps).
func mv8TileBlocks(t gguf.Type, rowsPerBlock int) int {
	unitsPerLane, unitsPerBlock := 2, 1 // Q8_0
	switch t {
	case gguf.TypeQ4_0:
		unitsPerLane = 4
	case gguf.TypeQ4_K:
		unitsPerLane, unitsPerBlock = 4, 8
	case gguf.TypeQ6_K:
		unitsPerBlock = 8
	}
	return 32 * max(1, unitsPerLane/rowsPerBlock) / unitsPerBlock
}

// mv8Split is how many warps of a matvec8s block share one row group of
// the groups row groups with tiles tiles each: warps stream whole row
// groups on their own while there are enough of them to fill a large GPU
// (about 2048 warps: 16 on each of an H100's 132 SMs), and split the
// columns when there are not, as long as each warp keeps a tile.
func mv8Split(groups, tiles int) int {
	split := 1
	for split < mv8Warps && groups*split < 2048 && tiles >= 2*split {
		split *= 2
	}
	return split
}

// chunksPerRow is the number of threads the embedding of one row uses.
func chunksPerRow(t gguf.Type, g geometry, cols int) int {
	if isGrouped(g.suffix) {
		return cols / 16 // TQ8_0X, TQ4_0X: chunks of 16 values
	}
	cpb := map[gguf.Type]int{
		gguf.TypeQ4_0: 2, gguf.TypeQ4_1: 2, gguf.TypeQ5_0: 2, gguf.TypeQ5_1: 2, gguf.TypeQ8_0: 2,
		gguf.TypeQ2_K: 16, gguf.TypeQ3_K: 16, gguf.TypeQ4_K: 8, gguf.TypeQ5_K: 8, gguf.TypeQ6_K: 16, gguf.TypeQ8_K: 16,
	}[t]
	if cpb == 0 {
		cpb = 1
	}
	return cols / g.qk * cpb
}

// Dequantize decodes the rows×cols matrix w of type t into out: float32
// values, or IEEE half values when half is set (the scratch for MatMul).
func (k *Kernels) Dequantize(s hip.Stream, t gguf.Type, w, out hip.DevicePtr, rows, cols int, half bool) error {
	g, rb, err := checkWeights("Dequantize", t, w, rows, cols)
	if err != nil {
		return err
	}
	if g.qk > 1 && uint64(out)%16 != 0 {
		return badArg("Dequantize", "output at %v is not 16-byte aligned", out)
	}
	name := "dequant_" + g.suffix + "_f32"
	if half {
		name = "dequant_" + g.suffix + "_f16"
	}
	threads := dequantThreads(t, g, rows, cols)
	return k.launch(s, k.fn(name), hip.Dim1(uint32((threads+dequantBlock-1)/dequantBlock)), hip.Dim1(dequantBlock), 0,
		hip.Ptr(w), hip.Ptr(out), hip.Int32(int32(rows)), hip.Int32(int32(cols)), hip.Int64(rb))
}

// dequantBlock is the threads of a dequant_ block (DQ_THREADS in quant.cu).
const dequantBlock = 128

// dequantThreads is the number of threads dequant_ takes for a rows×cols
// matrix: one per unit of dequantUnit values.
func dequantThreads(t gguf.Type, g geometry, rows, cols int) int64 {
	per := int64(dequantUnit(t, g))
	return (int64(rows)*int64(cols) + per - 1) / per
}

// dequantUnit is the values one thread of dequant_ decodes (Dq<T>::UV in
// quant.cu): whole runs of 16 values, or one value for the one-value
// variants (f32s, f16s, bf16s).
func dequantUnit(t gguf.Type, g geometry) int {
	switch {
	case g.qk == 1:
		return 1
	case g.suffix == q8Regroup.suffix:
		return 16 // one aligned chunk (Dq<TQ8_0X>)
	case g.suffix == q4Regroup.suffix:
		return 64 // four chunks of 16
	case t == gguf.TypeF32 || t == gguf.TypeF16 || t == gguf.TypeBF16:
		return 16
	case t == gguf.TypeQ2_K || t == gguf.TypeQ3_K || t == gguf.TypeQ6_K || t == gguf.TypeQ8_K:
		return 64 // four chunks of 16
	}
	return 32 // a 32-value block, or a Q4_K/Q5_K chunk
}

// Embedding writes, for each of the n token ids at tokens (int32), the
// token's row of the rows×cols matrix w, dequantised, as a row of out
// (n×cols float32). An id outside [0, rows) gives a row of NaN.
func (k *Kernels) Embedding(s hip.Stream, t gguf.Type, w, tokens, out hip.DevicePtr, n, rows, cols int) error {
	return k.embedding("Embedding", s, t, w, tokens, 1, out, n, rows, cols)
}

// EmbeddingArgmax is Embedding of the tokens Argmax picked: the first n
// rows of its output at picked. The ids never visit the host, so the next
// step of a greedy sequence can be enqueued before its token is read.
func (k *Kernels) EmbeddingArgmax(s hip.Stream, t gguf.Type, w, picked, out hip.DevicePtr, n, rows, cols int) error {
	return k.embedding("EmbeddingArgmax", s, t, w, picked, 2, out, n, rows, cols)
}

func (k *Kernels) embedding(call string, s hip.Stream, t gguf.Type, w, tokens hip.DevicePtr, stride int, out hip.DevicePtr, n, rows, cols int) error {
	g, rb, err := checkWeights(call, t, w, rows, cols)
	if err != nil {
		return err
	}
	if n <= 0 || n > 65535 {
		return badArg(call, "%d tokens (1..65535)", n)
	}
	per := chunksPerRow(t, g, cols)
	return k.launch(s, k.fn("embed_"+g.suffix), hip.Dim2(blocks(per, 128), uint32(n)), hip.Dim1(128), 0,
		hip.Ptr(w), hip.Ptr(tokens), hip.Ptr(out), hip.Int32(int32(rows)), hip.Int32(int32(cols)), hip.Int64(rb),
		hip.Int32(int32(stride)))
}

// MatMulScratchBytes is the scratch MatMul needs for n activation rows.
func MatMulScratchBytes(t gguf.Type, rows, cols, n int) int64 {
	switch t {
	case gguf.TypeF32:
		return 0
	case gguf.TypeF16, gguf.TypeBF16:
		return int64(n) * int64(cols) * 2
	}
	return (int64(rows) + int64(n)) * int64(cols) * 2
}

// MatMul multiplies n activation rows by w for prompt processing: x is
// n×cols float32, y n×rows float32, y[i][r] = (row r of w) · (row i of x).
// F32 weights go to Sgemm; F16 and BF16 weights to GemmEx as they are,
// with x rounded to the same type; other types are dequantised to half
// into scratch (MatMulScratchBytes) and multiplied by GemmEx with float32
// accumulation. bl must work on s.
func (k *Kernels) MatMul(s hip.Stream, bl hip.BLAS, t gguf.Type, w, x, y, scratch hip.DevicePtr, rows, cols, n int) error {
	if _, _, err := checkWeights("MatMul", t, w, rows, cols); err != nil {
		return err
	}
	if n <= 0 {
		return badArg("MatMul", "%d activation rows", n)
	}
	// Row-major Y (n×rows) = X (n×cols) · Wᵀ: column-major Yᵀ = W·Xᵀ with W
	// stored cols×rows column-major, i.e. op(A) = Wᵀ of the stored cols×rows.
	switch t {
	case gguf.TypeF32:
		return bl.Sgemm(hip.OpT, hip.OpN, rows, n, cols, 1, w, cols, x, cols, 0, y, rows)
	case gguf.TypeF16, gguf.TypeBF16:
		conv, dt := "f32_to_f16", hip.R16F
		if t == gguf.TypeBF16 {
			conv, dt = "f32_to_bf16", hip.R16BF
		}
		if err := k.convert(s, conv, scratch, x, int64(n)*int64(cols)); err != nil {
			return err
		}
		return bl.GemmEx(hip.OpT, hip.OpN, rows, n, cols, 1, w, dt, cols, scratch, dt, cols, 0, y, hip.R32F, rows)
	}
	w16 := scratch
	x16 := scratch.Add(int64(rows) * int64(cols) * 2)
	if err := k.Dequantize(s, t, w, w16, rows, cols, true); err != nil {
		return err
	}
	if err := k.convert(s, "f32_to_f16", x16, x, int64(n)*int64(cols)); err != nil {
		return err
	}
	return bl.GemmEx(hip.OpT, hip.OpN, rows, n, cols, 1, w16, hip.R16F, cols, x16, hip.R16F, cols, 0, y, hip.R32F, rows)
}

func (k *Kernels) convert(s hip.Stream, name string, out, x hip.DevicePtr, n int64) error {
	grid := uint32(min((n+255)/256, 65535))
	return k.launch(s, k.fn(name), hip.Dim1(grid), hip.Dim1(256), 0, hip.Ptr(out), hip.Ptr(x), hip.Int64(n))
}

// ------------------------------------------------------------ element-wise

// elementwise is the launch shape of the grid-stride element-wise kernels.
func elementwise(n int) (hip.Dim3, hip.Dim3) {
	return hip.Dim1(uint32(min((n+255)/256, 4096))), hip.Dim1(256)
}

// Add sets dst = a + b over n float32 (any may alias): the residual add.
func (k *Kernels) Add(s hip.Stream, dst, a, b hip.DevicePtr, n int) error {
	if n <= 0 {
		return badArg("Add", "%d elements", n)
	}
	g, bl := elementwise(n)
	return k.launch(s, k.fn("add_f32"), g, bl, 0, hip.Ptr(dst), hip.Ptr(a), hip.Ptr(b), hip.Int32(int32(n)))
}

// AddRows adds the bias b (n float32) to each of the rows of y (rows×n).
func (k *Kernels) AddRows(s hip.Stream, y, b hip.DevicePtr, rows, n int) error {
	if rows <= 0 || n <= 0 {
		return badArg("AddRows", "%d rows of %d", rows, n)
	}
	g, bl := elementwise(rows * n)
	return k.launch(s, k.fn("add_rows_f32"), g, bl, 0, hip.Ptr(y), hip.Ptr(b), hip.Int32(int32(rows)), hip.Int32(int32(n)))
}

// SwiGLU sets out = silu(gate) * up over n float32 (out may alias either).
func (k *Kernels) SwiGLU(s hip.Stream, out, gate, up hip.DevicePtr, n int) error {
	if n <= 0 {
		return badArg("SwiGLU", "%d elements", n)
	}
	g, bl := elementwise(n)
	return k.launch(s, k.fn("swiglu_f32"), g, bl, 0, hip.Ptr(out), hip.Ptr(gate), hip.Ptr(up), hip.Int32(int32(n)))
}

// RMSNorm normalises each of the rows of n float32 at x and scales it by
// weight (n float32), writing out (which may alias x): kernels.RMSNormRows.
func (k *Kernels) RMSNorm(s hip.Stream, out, x, weight hip.DevicePtr, rows, n int, eps float32) error {
	if rows <= 0 || n <= 0 {
		return badArg("RMSNorm", "%d rows of %d", rows, n)
	}
	return k.launch(s, k.fn("rmsnorm_f32"), hip.Dim1(uint32(rows)), hip.Dim1(normThreads(n)), 0,
		hip.Ptr(out), hip.Ptr(x), hip.Ptr(weight), hip.Int32(int32(n)), hip.Float32(eps))
}

// normThreads is the block size of a row of n in rmsnorm_f32 and
// add_rmsnorm_q8 (the same for both, so that they sum alike): a thread
// per float4 of the row, whole warps, at most 1024.
func normThreads(n int) uint32 {
	per := n
	if n%4 == 0 {
		per = n / 4
	}
	return uint32(min(1024, max(32, (per+31)/32*32)))
}

// Argmax writes, for each of the rows of n float32 at x, the index of the
// largest value (the first on ties) and the value's bits: out holds 2
// int32 per row, so only 8 bytes per sequence come back per token.
func (k *Kernels) Argmax(s hip.Stream, out, x hip.DevicePtr, rows, n int) error {
	if rows <= 0 || n <= 0 {
		return badArg("Argmax", "%d rows of %d", rows, n)
	}
	return k.launch(s, k.fn("argmax_f32"), hip.Dim1(uint32(rows)), hip.Dim1(1024), 0,
		hip.Ptr(out), hip.Ptr(x), hip.Int32(int32(n)))
}

// ------------------------------------------------------------ rope

// Rope applies r in place to nTok rows of nHeads×headDim float32 at x, row
// t at the position held by the int32 pos[t] (kernels.Rope.Apply per row).
// r.FreqFactors is not read: freqFactors is its copy on the device (len >=
// Dims/2), or 0 when r has none.
func (k *Kernels) Rope(s hip.Stream, r *kernels.Rope, freqFactors, x, pos hip.DevicePtr, nTok, nHeads, headDim int) error {
	dims := min(r.Dims, headDim)
	half := dims / 2
	if nTok <= 0 || nHeads <= 0 || nTok > 65535 || nHeads > 65535 {
		return badArg("Rope", "%d rows of %d heads", nTok, nHeads)
	}
	if (r.FreqFactors != nil) != (freqFactors != 0) {
		return badArg("Rope", "freq factors on the host and device disagree")
	}
	if half == 0 {
		return nil
	}
	p := ropeParams(r, dims)
	neox := int32(0)
	if r.Mode == kernels.RopeNeoX {
		neox = 1
	}
	return k.launch(s, k.fn("rope_f32"), hip.Dim3{X: blocks(half, 64), Y: uint32(nHeads), Z: uint32(nTok)}, hip.Dim1(64), 0,
		hip.Ptr(x), hip.Ptr(pos), hip.Int32(int32(nTok)), hip.Int32(int32(nHeads)), hip.Int32(int32(headDim)),
		hip.Int32(int32(dims)), hip.Int32(neox), hip.Float32(p.thetaScale), hip.Float32(p.freqScale), hip.Ptr(freqFactors),
		hip.Float32(r.ExtFactor), hip.Float32(p.mscale), hip.Float32(p.corrLo), hip.Float32(p.corrHi))
}

type ropeP struct{ thetaScale, freqScale, mscale, corrLo, corrHi float32 }

// ropeParams computes the per-model constants exactly as kernels.Rope's
// cache does (the same float32 operations).
func ropeParams(r *kernels.Rope, dims int) ropeP {
	p := ropeP{freqScale: r.FreqScale, mscale: r.AttnFactor}
	if p.freqScale == 0 {
		p.freqScale = 1
	}
	if p.mscale == 0 {
		p.mscale = 1
	}
	base := r.Base
	if base == 0 {
		base = 10000
	}
	if r.ExtFactor != 0 {
		corrDim := func(nRot float32) float32 {
			return float32(dims) * logf(float32(r.OrigCtx)/(nRot*2*math.Pi)) / (2 * logf(base))
		}
		p.corrLo = max(0, float32(math.Floor(float64(corrDim(r.BetaFast)))))
		p.corrHi = min(float32(dims-1), float32(math.Ceil(float64(corrDim(r.BetaSlow)))))
		p.mscale *= 1 + 0.1*logf(1/p.freqScale)
	}
	p.thetaScale = float32(math.Pow(float64(base), float64(-2/float32(dims))))
	return p
}

func logf(x float32) float32 { return float32(math.Log(float64(x))) }

// ------------------------------------------------------------ attention

// maxHeadDim is the largest head size the attention kernels take.
const maxHeadDim = 256

// AttentionSplits is the number of pieces the context is cut into for nQ
// query rows of nHead heads over nCtx positions: enough blocks to fill a
// large GPU, no piece shorter than 64 positions.
func AttentionSplits(nQ, nHead, nCtx int) int {
	want := max(1, 512/max(1, nQ*nHead))
	return max(1, min(want, (nCtx+63)/64))
}

// AttentionScratchBytes is the scratch Attention needs.
func AttentionScratchBytes(nQ, nHead, headDim, nCtx int) int64 {
	return int64(nQ) * int64(nHead) * int64(AttentionSplits(nQ, nHead, nCtx)) * int64(headDim+2) * 4
}

// Attention is kernels.Attention on the GPU: causal grouped-query attention
// of nQ query rows (positions pos0..pos0+nQ-1; q is nQ×nHead×headDim) over
// the float32 KV cache k, v (pos0+nQ rows of nKVHead×headDim), into out
// (like q). The context is split across blocks (flash-decoding) and the
// partial softmaxes merged by a second kernel; scratch holds
// AttentionScratchBytes.
func (k *Kernels) Attention(s hip.Stream, out, q, kc, vc, scratch hip.DevicePtr,
	nQ, pos0, nHead, nKVHead, headDim int, scale float32) error {
	switch {
	case nQ <= 0 || pos0 < 0 || nQ > 65535 || nHead > 65535:
		return badArg("Attention", "%d query rows at %d, %d heads", nQ, pos0, nHead)
	case nKVHead <= 0 || nHead%nKVHead != 0:
		return badArg("Attention", "%d query heads do not share %d KV heads evenly", nHead, nKVHead)
	case headDim <= 0 || headDim > maxHeadDim:
		return badArg("Attention", "head size %d (1..%d)", headDim, maxHeadDim)
	}
	nCtx := pos0 + nQ
	nSplit := AttentionSplits(nQ, nHead, nCtx)
	splitLen := (nCtx + nSplit - 1) / nSplit
	err := k.launch(s, k.fn("attn_split_f32"), hip.Dim3{X: uint32(nSplit), Y: uint32(nHead), Z: uint32(nQ)}, hip.Dim1(128), 0,
		hip.Ptr(scratch), hip.Ptr(q), hip.Ptr(kc), hip.Ptr(vc), hip.Int32(int32(pos0)), hip.Int32(int32(nHead)),
		hip.Int32(int32(nKVHead)), hip.Int32(int32(headDim)), hip.Float32(scale), hip.Int32(int32(splitLen)))
	if err != nil {
		return err
	}
	return k.launch(s, k.fn("attn_combine_f32"), hip.Dim2(uint32(nHead), uint32(nQ)), hip.Dim1(128), 0,
		hip.Ptr(out), hip.Ptr(scratch), hip.Int32(int32(nHead)), hip.Int32(int32(headDim)), hip.Int32(int32(nSplit)))
}

// AttentionDecode is Attention for one new token at position pos.
func (k *Kernels) AttentionDecode(s hip.Stream, out, q, kc, vc, scratch hip.DevicePtr,
	pos, nHead, nKVHead, headDim int, scale float32) error {
	return k.Attention(s, out, q, kc, vc, scratch, 1, pos, nHead, nKVHead, headDim, scale)
}

// AttentionPrefill is Attention for a prompt's nQ rows starting at pos0.
// It is the decode kernel run over every query row (correct, not yet a
// tiled flash-attention kernel).
func (k *Kernels) AttentionPrefill(s hip.Stream, out, q, kc, vc, scratch hip.DevicePtr,
	nQ, pos0, nHead, nKVHead, headDim int, scale float32) error {
	return k.Attention(s, out, q, kc, vc, scratch, nQ, pos0, nHead, nKVHead, headDim, scale)
}

// ------------------------------------------------------------ attention over rows of many sequences

// Row metadata and KV blocks (see src/attention.cu): the batched kernels read
// every row's position, capacity and KV block from device memory, never from
// per-token kernel arguments, so a layer's launches can be captured once into
// a graph and replayed for every token. A row whose base is 0 or whose
// position is outside [0, capacity) is padding: KVStore skips it and the
// attention kernels write zeros for it, so a batch of fixed size can carry
// idle rows. A KV block's address must be 16-byte aligned (every Malloc'd
// address plus any multiple of KVBlockBytes is).

// rowsMinSplit is the shortest context piece AttentionRows cuts: shorter
// contexts use fewer pieces, the rest of them empty. (Decode of a 1B and an
// 8B model at context 512–640 ran within ±3 % with 8, 16, 32 or 64.)
// FORGEPIPE_ATTN_MIN_SPLIT overrides it, for timing.
var rowsMinSplit = max(1, envInt("FORGEPIPE_ATTN_MIN_SPLIT", 64))

// rowsMaxSplit is the most pieces AttentionRows takes (its merge's shared
// memory).
const rowsMaxSplit = 256

// rowsHeadsPerBlock is how many query heads of one KV head a block of
// AttentionRows computes (ROWS_GB in attention.cu).
const rowsHeadsPerBlock = 4

// rowsTargetBlocks is how many blocks AttentionRows aims for: a row's
// context is cut into fewer than nSplit pieces when n rows fill the GPU
// without them (fewer partial results to write and merge).
const rowsTargetBlocks = 4096

// prefillKernel is AttentionRowsPrefill's kernel for one head-size variant:
// its name, and the rows and threads of one block.
type prefillKernel struct {
	name          string
	rows, threads int
}

// The batched attention kernels per head-size variant (rowsShape).
var (
	rowsSplitKernels   = map[int]string{64: "attn_rows_split_f32_d64", 128: "attn_rows_split_f32_d128", 256: "attn_rows_split_f32_d256"}
	rowsRopeKernels    = map[int]string{64: "attn_rows_rope_f32_d64", 128: "attn_rows_rope_f32_d128", 256: "attn_rows_rope_f32_d256"}
	rowsRope1Kernels   = map[int]string{64: "attn_rows_rope1_f32_d64", 128: "attn_rows_rope1_f32_d128", 256: "attn_rows_rope1_f32_d256"}
	rowsRope1MKernels  = map[int]string{64: "attn_rows_rope1m_f32_d64", 128: "attn_rows_rope1m_f32_d128", 256: "attn_rows_rope1m_f32_d256"}
	rowsPrefillKernels = map[int]prefillKernel{
		64:  {"attn_rows_prefill_f32_d64", 64, 256},
		128: {"attn_rows_prefill_f32_d128", 32, 256},
		256: {"attn_rows_prefill_f32_d256", 16, 256},
	}
)

// rowsKernelNames lists the kernels of the batched attention.
func rowsKernelNames() []string {
	names := []string{"kv_store_f32", "attn_rows_combine_f32"}
	for _, d := range []int{64, 128, 256} {
		names = append(names, rowsSplitKernels[d], rowsRopeKernels[d], rowsRope1Kernels[d], rowsRope1MKernels[d], rowsPrefillKernels[d].name)
	}
	return names
}

// RowMetaBytes is the size of the row metadata of n rows.
func RowMetaBytes(n int) int64 { return 16 * int64(n) }

// PutRowMeta writes row r's entry (of n) into b (len ≥ RowMetaBytes(n)), little-endian.
// It panics when r is not in [0, n) or b is too short.
func PutRowMeta(b []byte, n, r int, pos, capacity int32, base hip.DevicePtr) {
	if r < 0 || r >= n {
		panic(fmt.Sprintf("kernels/gpu: PutRowMeta: row %d of %d", r, n))
	}
	binary.LittleEndian.PutUint32(b[4*r:], uint32(pos))
	binary.LittleEndian.PutUint32(b[4*n+4*r:], uint32(capacity))
	binary.LittleEndian.PutUint64(b[8*n+8*r:], uint64(base))
}

// KVBlockBytes is the size of one sequence's KV block: layers × 2 × capacity × kvDim float32.
func KVBlockBytes(layers, capacity, kvDim int) int64 {
	return int64(layers) * 2 * int64(capacity) * int64(kvDim) * 4
}

// KVStore copies the n rows of k and v (each n×kvDim float32, contiguous) into
// their sequences' caches for layer, at the rows' positions.
func (k *Kernels) KVStore(s hip.Stream, meta, kSrc, vSrc hip.DevicePtr, n, layer, kvDim int) error {
	switch {
	case n <= 0 || n > 65535 || kvDim <= 0 || layer < 0:
		return badArg("KVStore", "%d rows of %d at layer %d", n, kvDim, layer)
	case meta%8 != 0:
		return badArg("KVStore", "metadata at %v is not 8-byte aligned", meta)
	}
	return k.launch(s, k.fn("kv_store_f32"), hip.Dim2(blocks(kvDim, 256), uint32(n)), hip.Dim1(256), 0,
		hip.Ptr(meta), hip.Ptr(kSrc), hip.Ptr(vSrc), hip.Int32(int32(n)), hip.Int32(int32(layer)), hip.Int32(int32(kvDim)))
}

// AttentionRowsSplits is the number of pieces each row's context is cut into,
// for nHead heads on contexts of up to maxCtx positions: enough blocks to fill
// a large GPU at one row; a constant for a given model and context size.
func AttentionRowsSplits(nHead, maxCtx int) int {
	want := (2048 + nHead - 1) / max(1, nHead)
	return max(1, min(want, (maxCtx+rowsMinSplit-1)/rowsMinSplit, rowsMaxSplit))
}

// AttentionRowsScratchBytes is the scratch AttentionRows needs for up to n
// rows. Each row's part begins with arrival counters that must be zero
// before the scratch is first used (see AttentionRows).
func AttentionRowsScratchBytes(n, nHead, headDim, nSplit int) int64 {
	return int64(n) * rowsScratchWords(nHead, headDim, nSplit) * 4
}

// rowsScratchWords is the 32-bit words of AttentionRows' scratch per row
// (rowStride in attention.cu): nHead arrival counters, then nHead×nSplit
// partial results of headDim+2 float32.
func rowsScratchWords(nHead, headDim, nSplit int) int64 {
	return int64(nHead) * (1 + int64(nSplit)*int64(headDim+2))
}

// rowsShape checks the arguments the batched attention kernels share and
// returns the kernel variant for headDim (64, 128 or 256).
func rowsShape(call string, out, q, meta hip.DevicePtr, n, layer, nHead, nKVHead, headDim int) (int, error) {
	switch {
	case n <= 0 || n > 65535 || layer < 0:
		return 0, badArg(call, "%d rows at layer %d", n, layer)
	case nHead <= 0 || nKVHead <= 0 || nHead%nKVHead != 0 || nHead > 65535:
		return 0, badArg(call, "%d query heads do not share %d KV heads evenly", nHead, nKVHead)
	case headDim <= 0 || headDim > maxHeadDim || headDim%4 != 0:
		return 0, badArg(call, "head size %d (a multiple of 4, up to %d)", headDim, maxHeadDim)
	case meta%8 != 0 || q%16 != 0 || out%16 != 0:
		return 0, badArg(call, "metadata at %v (8-byte aligned), q at %v, out at %v (16-byte aligned)", meta, q, out)
	}
	for _, d := range []int{64, 128} {
		if headDim <= d {
			return d, nil
		}
	}
	return 256, nil
}

// AttentionRows is causal grouped-query attention for n query rows (q is
// n×nHead×headDim float32), each over its own sequence's cache for layer as
// described by meta, into out (like q). Each row's context is cut into nSplit
// pieces (flash-decoding; empty pieces are fine), then a second launch
// merges the pieces (attn_rows_combine_f32). Fewer pieces are taken when
// the n rows fill the GPU without them; the number depends on n, nHead,
// nKVHead and nSplit only, never on positions.
//
// A row at position p attends to positions 0..p of its sequence, so every
// row's K and V must be stored (KVStore) first (AttentionRowsRope stores
// them itself, for rows of distinct sequences). Query head h reads KV head
// h / (nHead/nKVHead); the heads of one KV head share its loads. headDim
// must be a multiple of 4, at most 256; nSplit is at most 256. For prompt
// chunks (many rows of one sequence) AttentionRowsPrefill is faster and
// needs no scratch.
//
// scratch (4-byte aligned) holds AttentionRowsScratchBytes(m, nHead,
// headDim, nSplit) for some m ≥ n and must be zeroed (MemsetD8Async) once
// before its first use: it holds the merge's arrival counters, which every
// launch leaves at zero again. One scratch then serves any number of
// launches, each of up to m rows, of the same nHead, headDim and nSplit,
// on one stream (or captured in a graph and replayed) but never two at once.
func (k *Kernels) AttentionRows(s hip.Stream, out, q, meta, scratch hip.DevicePtr,
	n, layer, nHead, nKVHead, headDim int, scale float32, nSplit int) error {
	return k.attentionRows("AttentionRows", s, out, 0, q, meta, scratch, n, layer, nHead, nKVHead, headDim, scale, nSplit, true)
}

// AttentionRowsQ8 is AttentionRows that also writes its output's int8 form
// to xq, bit for bit what QuantizeActQ8(out, xq, n*nHead*headDim) then
// gives (the layout MatVecQ8 and MatVecQ8Rows take), from its merge
// instead of a launch of its own. headDim must be a multiple of 32; xq
// holds ActQ8Bytes(n*nHead*headDim) and is 4-byte aligned.
func (k *Kernels) AttentionRowsQ8(s hip.Stream, out, xq, q, meta, scratch hip.DevicePtr,
	n, layer, nHead, nKVHead, headDim int, scale float32, nSplit int) error {
	if err := checkRowsQ8("AttentionRowsQ8", xq, n, nHead, headDim); err != nil {
		return err
	}
	return k.attentionRows("AttentionRowsQ8", s, out, xq, q, meta, scratch, n, layer, nHead, nKVHead, headDim, scale, nSplit, true)
}

// checkRowsQ8 checks the int8 output xq of attention over n rows of nHead
// heads of headDim (AttentionRowsQ8).
func checkRowsQ8(call string, xq hip.DevicePtr, n, nHead, headDim int) error {
	switch {
	case xq == 0 || xq%4 != 0:
		return badArg(call, "int8 output at %v (want a 4-byte aligned address)", xq)
	case headDim%32 != 0 || int64(n)*int64(nHead)*int64(headDim) > math.MaxInt32:
		return badArg(call, "int8 output of %d rows of %d heads of %d (head size a multiple of 32)", n, nHead, headDim)
	}
	return nil
}

// attentionRows is AttentionRows, and AttentionRowsQ8 when xq is not 0.
// With combine the pieces are merged by a second launch
// (attn_rows_combine_f32), which leaves the counters alone; without it,
// by the split launch's last block of each row and KV-head group (the
// same bits). The merged single launch was measured slower on an H100
// (NOTES.md: one row at ctx 2048 22.6 µs against 15.1 µs for the two
// launches; its serial tail outweighs a launch), so the exported calls
// take combine; the merged path is kept, tested and benchmarked.
func (k *Kernels) attentionRows(call string, s hip.Stream, out, xq, q, meta, scratch hip.DevicePtr,
	n, layer, nHead, nKVHead, headDim int, scale float32, nSplit int, combine bool) error {
	sp, err := rowsSplit(call, out, q, meta, scratch, n, layer, nHead, nKVHead, headDim, nSplit, rowsHeadsPerBlock)
	if err != nil {
		return err
	}
	mergeOut, mergeXQ := out, xq
	if combine {
		mergeOut, mergeXQ = 0, 0
	}
	err = k.launch(s, k.fn(rowsSplitKernels[sp.d]), sp.grid,
		hip.Dim1(128), 0, hip.Ptr(scratch), hip.Ptr(q), hip.Ptr(meta), hip.Int32(int32(n)), hip.Int32(int32(layer)),
		hip.Int32(int32(nHead)), hip.Int32(int32(nKVHead)), hip.Int32(int32(headDim)), hip.Float32(scale),
		hip.Int32(int32(rowsMinSplit)), hip.Int32(int32(sp.words)), hip.Ptr(mergeOut), hip.Ptr(mergeXQ))
	if err != nil || !combine {
		return err
	}
	return k.rowsCombine(s, sp, out, xq, scratch, n, nHead, headDim)
}

// rowsSplitShape is the shape of a launch of the split kernels
// (attn_rows_split, attn_rows_rope): the head-size variant (rowsShape),
// the grid (pieces, block columns, rows) and the scratch words per row.
type rowsSplitShape struct {
	d     int
	grid  hip.Dim3
	words int64
}

// rowsSplit checks the arguments of AttentionRows' split launch and
// returns its shape: nSplit pieces, or fewer when the n rows fill the GPU
// without them (AttentionRows).
func rowsSplit(call string, out, q, meta, scratch hip.DevicePtr, n, layer, nHead, nKVHead, headDim, nSplit, headsPerBlock int) (rowsSplitShape, error) {
	d, err := rowsShape(call, out, q, meta, n, layer, nHead, nKVHead, headDim)
	if err != nil {
		return rowsSplitShape{}, err
	}
	if nSplit <= 0 || nSplit > rowsMaxSplit {
		return rowsSplitShape{}, badArg(call, "%d pieces (1..%d)", nSplit, rowsMaxSplit)
	}
	words := rowsScratchWords(nHead, headDim, nSplit)
	switch {
	case out == 0:
		return rowsSplitShape{}, badArg(call, "no output")
	case scratch%4 != 0 || words > math.MaxInt32:
		return rowsSplitShape{}, badArg(call, "scratch at %v (4-byte aligned) of %d words per row", scratch, words)
	}
	group := nHead / nKVHead
	y := nKVHead * ((group + headsPerBlock - 1) / headsPerBlock)
	nSplit = min(nSplit, (rowsTargetBlocks+n*y-1)/(n*y)) // never more than words has room for
	return rowsSplitShape{d: d, grid: hip.Dim3{X: uint32(nSplit), Y: uint32(y), Z: uint32(n)}, words: words}, nil
}

// rowsCombine launches attn_rows_combine_f32: the pieces a split launch of
// shape sp left in scratch merged into out, and xq when it is not 0.
func (k *Kernels) rowsCombine(s hip.Stream, sp rowsSplitShape, out, xq, scratch hip.DevicePtr, n, nHead, headDim int) error {
	return k.launch(s, k.fn("attn_rows_combine_f32"), hip.Dim2(uint32(nHead), uint32(n)), hip.Dim1(128), 0,
		hip.Ptr(out), hip.Ptr(scratch), hip.Int32(int32(nHead)), hip.Int32(int32(headDim)), hip.Int32(int32(sp.grid.X)),
		hip.Ptr(xq), hip.Int32(int32(sp.words)))
}

// AttentionRowsPrefill is AttentionRows for prompt chunks, with the same
// arguments but no scratch: a tiled flash-attention kernel in which a block
// takes consecutive rows of one query head and streams their sequence's K
// and V through shared memory once for all of them. Any metadata gives the
// right answer, but it is fast only when runs of consecutive rows share a
// sequence (a block takes 16 to 64 rows and serves each sequence among
// them in turn); use AttentionRows for decode batches.
func (k *Kernels) AttentionRowsPrefill(s hip.Stream, out, q, meta hip.DevicePtr,
	n, layer, nHead, nKVHead, headDim int, scale float32) error {
	d, err := rowsShape("AttentionRowsPrefill", out, q, meta, n, layer, nHead, nKVHead, headDim)
	if err != nil {
		return err
	}
	v := rowsPrefillKernels[d]
	return k.launch(s, k.fn(v.name), hip.Dim2(blocks(n, v.rows), uint32(nHead)),
		hip.Dim1(uint32(v.threads)), 0, hip.Ptr(out), hip.Ptr(q), hip.Ptr(meta), hip.Int32(int32(n)), hip.Int32(int32(layer)),
		hip.Int32(int32(nHead)), hip.Int32(int32(nKVHead)), hip.Int32(int32(headDim)), hip.Float32(scale))
}
