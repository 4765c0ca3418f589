package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// parallelThreshold is the amount of work (in the caller's units, roughly
// bytes touched or multiply-adds) below which parallelFor runs inline: waking
// a goroutine costs a few microseconds, about what one core needs for 256 KiB
// of weights, so smaller problems (such as the bundled model's 256x256
// matrices) stay on the calling goroutine. A variable only so that tests can
// force the parallel path on small inputs.
var parallelThreshold = 1 << 19

// chunksPerWorker splits the range finer than one chunk per worker so that a
// worker that is descheduled or slower does not hold up the rest.
const chunksPerWorker = 4

// parallelFor calls body(lo, hi) on contiguous sub-ranges that together
// cover [0, n) exactly once. work is the estimated cost of the whole range;
// below parallelThreshold, or with GOMAXPROCS 1, body runs once on [0, n)
// in the calling goroutine. Sub-range starts are multiples of align (>= 1),
// so a caller can keep blocks of items together.
//
// body must compute each item independently of how the range was split;
// that is what makes the results independent of GOMAXPROCS.
func parallelFor(n, work, align int, body func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if align < 1 {
		align = 1
	}
	workers := runtime.GOMAXPROCS(0)
	units := (n + align - 1) / align
	if workers <= 1 || work < parallelThreshold || units < 2 {
		body(0, n)
		return
	}
	// Chunks: a few per worker, but not smaller than the threshold's share.
	chunks := workers * chunksPerWorker
	if maxByWork := work / (parallelThreshold / 4); chunks > maxByWork {
		chunks = max(maxByWork, workers)
	}
	chunks = min(chunks, units)
	workers = min(workers, chunks)
	unitsPer := (units + chunks - 1) / chunks
	chunks = (units + unitsPer - 1) / unitsPer

	var next atomic.Int64
	run := func() {
		for {
			c := int(next.Add(1) - 1)
			if c >= chunks {
				return
			}
			lo := c * unitsPer * align
			hi := min(lo+unitsPer*align, n)
			body(lo, hi)
		}
	}
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Go(run)
	}
	run()
	wg.Wait()
}
