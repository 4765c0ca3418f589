package layer

import (
	"math/bits"
	"sync/atomic"

	"github.com/forgepipe/forgepipe/model/gpustep"
)

// SeqID names one sequence (one generation) in the pipeline. IDs are never
// reused while a pipeline runs.
type SeqID uint64

// Segment is one sequence's rows within an Activations message: N
// consecutive rows whose first is at position Pos.
type Segment struct {
	Seq SeqID
	Pos int
	N   int
	// Logits asks the sampler for the logits of the segment's last row
	// (the last chunk of a prompt, or a decoded token).
	Logits bool
}

// Activations carry hidden states from the sampler through the layer
// actors and back: X holds the rows of all segments in order (rows × Dim)
// on the host backend; on a GPU, Dev holds them in device memory, with
// their row metadata. The receiver owns the message and its rows.
type Activations struct {
	X    []float32
	Dev  gpustep.Rows
	Segs []Segment
}

// Rows is the number of rows in the message.
func (a *Activations) Rows() int {
	n := 0
	for _, s := range a.Segs {
		n += s.N
	}
	return n
}

// FreeSequence drops a sequence's KV cache. The sampler sends it to every
// layer actor once none of the sequence's activations are in flight.
type FreeSequence struct {
	Seq SeqID
}

// Failed tells the sampler that a layer could not compute these sequences
// (their activations are dropped); it fails them to their callers.
type Failed struct {
	Layer int
	Seqs  []SeqID
	Err   error
}

// Stats are one layer actor's counters, readable at any time.
type Stats struct {
	Batches         atomic.Int64 // Block.Forward calls
	Rows            atomic.Int64 // rows computed
	MaxBatchRows    atomic.Int64 // largest batch
	MultiSeqBatches atomic.Int64 // batches holding more than one sequence
	// BatchSizes counts batches by rows: 1, 2-3, 4-7, ..., 128 and more.
	BatchSizes      [BatchBuckets]atomic.Int64
	Sequences       atomic.Int64 // live KV caches
	KVBytes         atomic.Int64 // bytes held by the KV caches
	WeightRequests  atomic.Int64 // WeightsRequests sent
	Restarts        atomic.Int64 // restarts after a panic
	Failed          atomic.Int64 // sequences failed
	WeightWaitNanos atomic.Int64 // time spent waiting for weight copies
}

// BatchBuckets is the number of buckets of Stats.BatchSizes.
const BatchBuckets = 8

func (s *Stats) noteBatch(rows, seqs int) {
	s.Batches.Add(1)
	s.BatchSizes[min(bits.Len(uint(rows))-1, BatchBuckets-1)].Add(1)
	s.Rows.Add(int64(rows))
	if seqs > 1 {
		s.MultiSeqBatches.Add(1)
	}
	for {
		m := s.MaxBatchRows.Load()
		if int64(rows) <= m || s.MaxBatchRows.CompareAndSwap(m, int64(rows)) {
			return
		}
	}
}
