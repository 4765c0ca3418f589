package forgepipe

import "github.com/forgepipe/forgepipe/actors/layer"

// Stats is a snapshot of the pipeline's counters.
type Stats struct {
	Loader   LoaderStats
	Uploader UploaderStats
	Sampler  SamplerStats
	Layers   []LayerStats
	// GPU counts the GPU backend's steps (nil on the host), whose KV caches
	// it holds (GPUKVBytes) rather than the layers.
	GPU        *GPUStats `json:",omitempty"`
	GPUKVBytes int64     `json:",omitempty"`
}

// GPUStats count the block steps enqueued on the GPU and how many went
// through a captured graph.
type GPUStats struct {
	Steps, GraphLaunches, GraphCaptures int64
}

// LoaderStats count the loader's work.
type LoaderStats struct {
	Requests, Tensors, Bytes, ReadAheads int64
}

// UploaderStats count the uploader's work.
type UploaderStats struct {
	BytesUploaded, Uploads, Prefetches, Hits, Misses, Evictions int64
	WaitNanos, ResidentBytes, PeakResident, GlobalsBytes        int64
}

// SamplerStats count the sampler's work.
type SamplerStats struct {
	Live, Started, Finished, Tokens, Messages, Rows, LogitRows int64
	// TopRows are rows sampled on the GPU path from their top candidates;
	// TopFallbacks, those that then needed the whole row's logits.
	TopRows, TopFallbacks int64
	// Chained are greedy rows on a GPU whose next step left for the first
	// layer before their token reached the host (WithoutChaining).
	Chained int64
}

// LayerStats count one layer actor's work.
type LayerStats struct {
	Batches, Rows, MaxBatchRows, MultiSeqBatches int64
	// BatchSizes counts batches by rows: 1, 2-3, 4-7, ..., 128 and more.
	BatchSizes                      [layer.BatchBuckets]int64
	Sequences, KVBytes              int64
	WeightRequests, WeightWaitNanos int64
	Restarts, Failed                int64
}

// KVBytes is the memory held by all layers' KV caches.
func (s Stats) KVBytes() int64 {
	n := s.GPUKVBytes
	for _, l := range s.Layers {
		n += l.KVBytes
	}
	return n
}

// KVSequences is the number of (layer, sequence) KV caches alive.
func (s Stats) KVSequences() int64 {
	var n int64
	for _, l := range s.Layers {
		n += l.Sequences
	}
	return n
}

// Stats returns the current counters.
func (p *Pipeline) Stats() Stats {
	var s Stats
	l := &p.loaderStats
	s.Loader = LoaderStats{l.Requests.Load(), l.Tensors.Load(), l.Bytes.Load(), l.ReadAheads.Load()}
	u := &p.uploaderStats
	s.Uploader = UploaderStats{u.BytesUploaded.Load(), u.Uploads.Load(), u.Prefetches.Load(), u.Hits.Load(),
		u.Misses.Load(), u.Evictions.Load(), u.WaitNanos.Load(), u.ResidentBytes.Load(), u.PeakResident.Load(),
		u.GlobalsBytes.Load()}
	m := &p.samplerStats
	s.Sampler = SamplerStats{m.Live.Load(), m.Started.Load(), m.Finished.Load(), m.Tokens.Load(),
		m.Messages.Load(), m.Rows.Load(), m.LogitRows.Load(), m.TopRows.Load(), m.TopFallbacks.Load(), m.Chained.Load()}
	for _, ls := range p.layerStats {
		l := LayerStats{Batches: ls.Batches.Load(), Rows: ls.Rows.Load(), MaxBatchRows: ls.MaxBatchRows.Load(),
			MultiSeqBatches: ls.MultiSeqBatches.Load(), Sequences: ls.Sequences.Load(), KVBytes: ls.KVBytes.Load(),
			WeightRequests: ls.WeightRequests.Load(), WeightWaitNanos: ls.WeightWaitNanos.Load(),
			Restarts: ls.Restarts.Load(), Failed: ls.Failed.Load()}
		for i := range l.BatchSizes {
			l.BatchSizes[i] = ls.BatchSizes[i].Load()
		}
		s.Layers = append(s.Layers, l)
	}
	if p.gpu != nil {
		g := p.gpu.Stats()
		s.GPU = &GPUStats{Steps: g.Steps, GraphLaunches: g.GraphLaunches, GraphCaptures: g.GraphCaptures}
		s.GPUKVBytes = p.gpu.KVBytes()
	}
	return s
}
