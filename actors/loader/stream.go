package loader

import (
	"os"
	"sync"
	"sync/atomic"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/trace"
)

// ReadAheadAuto, as the limit of StartReadAhead, reads up to half of the
// machine's memory (8 GiB where that cannot be known).
const ReadAheadAuto = 0

// ReadAheadLimit is the byte limit StartReadAhead uses for ReadAheadAuto.
func ReadAheadLimit() int64 {
	if ram := physicalMemory(); ram > 0 {
		return ram / 2
	}
	return 8 << 30
}

// isResident is resident, replaced in tests.
var isResident = resident

const (
	readChunk   = 8 << 20 // bytes per read
	readWorkers = 2       // reads in flight: the disk's queue never runs dry between two
)

// readRange is a byte range of the file that unit (a layer, Globals for the
// tensors outside the blocks) needs.
type readRange struct {
	off, end int64
	unit     int
}

// readPlan lists the file's byte ranges in the order a pipeline first
// needs them: the tensors outside the blocks but the output projection
// (the embedding comes first), the layers in turn, then the output
// projection. A layer's tensors are one range from its first byte to its
// last; the global tensors, which sit at both ends of most files, one
// range each (the page cache makes a range read twice cost once).
func readPlan(f *gguf.File, layers int) []readRange {
	var out, last []readRange
	for _, t := range LayerTensors(f.Header, Globals) {
		r := readRange{int64(f.DataOffset + t.Offset), int64(f.DataOffset + t.Offset + t.Size), Globals}
		if t.Name == "output.weight" {
			last = append(last, r)
		} else {
			out = append(out, r)
		}
	}
	for l := range layers {
		if lo, hi, ok := layerSpan(f, l); ok {
			out = append(out, readRange{lo, hi, l})
		}
	}
	out = append(out, last...)
	kept := out[:0]
	for _, r := range out {
		if r.end = min(r.end, f.Size()); r.off < r.end {
			kept = append(kept, r)
		}
	}
	return kept
}

// StartReadAhead reads the model's weights into the page cache in the
// background, in the order a pipeline first needs them (readPlan), until
// limit bytes (ReadAheadAuto: ReadAheadLimit) have been read or stop is
// closed. It returns at once; the returned channel is closed when the
// reads have ended.
//
// This is what keeps the disk busy through a cold start: the first token
// needs every layer, and the device's start (driver, kernels, BLAS) and the
// uploader's per-layer read-ahead would otherwise leave it idle part of the
// time. The reads are plain large preads, two in flight, into a buffer that
// is thrown away: they are what a sequential reader does, which measured
// faster on the H100 machine's disk than MADV_WILLNEED over the same ranges
// with the uploader's page faults running alongside. The uploader's copies
// then find the pages read or being read. Chunks already in the page
// cache (mincore) are skipped, so a warm start reads nothing (reading 1 GB
// of cached pages cost ~70 ms of two cores here). Where the file cannot be
// opened again, the ranges are advised instead. Each read's span goes to
// track (nil: none).
func StartReadAhead(f *gguf.File, layers int, limit int64, stop <-chan struct{}, track *trace.Track) <-chan struct{} {
	if limit == ReadAheadAuto {
		limit = ReadAheadLimit()
	}
	type chunk struct {
		off  int64
		n    int
		unit int
	}
	var chunks []chunk
	var total int64
	for _, r := range readPlan(f, layers) {
		for off := r.off; off < r.end && total < limit; off += readChunk {
			n := int(min(readChunk, r.end-off))
			chunks = append(chunks, chunk{off, n, r.unit})
			total += int64(n)
		}
	}
	done := make(chan struct{})
	fd, err := os.Open(f.Path)
	if err != nil {
		go func() {
			defer close(done)
			data, page := f.Bytes(), int64(os.Getpagesize())
			for _, c := range chunks {
				select {
				case <-stop:
					return
				default:
				}
				madviseWillNeed(data[c.off&^(page-1) : c.off+int64(c.n)])
			}
		}()
		return done
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range readWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, readChunk)
			vec := make([]byte, readChunk/os.Getpagesize()+2)
			data, page := f.Bytes(), int64(os.Getpagesize())
			for {
				i := int(next.Add(1) - 1)
				if i >= len(chunks) {
					return
				}
				select {
				case <-stop:
					return
				default:
				}
				c := chunks[i]
				start := track.Now()
				if isResident(data[c.off&^(page-1):c.off+int64(c.n)], vec) { // a warm start: nothing to read
					track.Span("in page cache", "read", start, trace.Args{trace.Int("layer", c.unit), trace.Int("bytes", c.n)})
					continue
				}
				if _, err := fd.ReadAt(buf[:c.n], c.off); err != nil {
					return // the uploader's faults read what is left
				}
				track.Span("read ahead", "read", start, trace.Args{trace.Int("layer", c.unit), trace.Int("bytes", c.n)})
			}
		}()
	}
	go func() {
		wg.Wait()
		fd.Close()
		close(done)
	}()
	return done
}
