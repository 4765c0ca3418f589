package server

import (
	"context"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/tokenizer"
)

// Engine is what the server needs from a model: *forgepipe.Pipeline through
// Pipeline, or a fake in tests.
type Engine interface {
	// Generate starts a sequence (waiting for a slot in a bounded queue,
	// forgepipe.ErrQueueFull beyond it). Cancelling ctx ends the sequence
	// and frees its KV.
	Generate(ctx context.Context, req forgepipe.Request) (Stream, error)
	// Tokenizer is the model's tokenizer (prompts, chat template tokens).
	Tokenizer() *tokenizer.Tokenizer
	// ContextSize is the most tokens one sequence may hold.
	ContextSize() int
	// Stats is a snapshot of the engine's counters, for /metrics.
	Stats() EngineStats
}

// Stream is one running sequence, as *forgepipe.Stream.
type Stream interface {
	// Next returns the next token; io.EOF at the end, or the error that
	// ended the sequence.
	Next() (forgepipe.Token, error)
	// Result waits for the end and returns the result.
	Result() (*forgepipe.Result, error)
}

// EngineStats are the engine counters /metrics exports.
type EngineStats struct {
	Queued      int   // requests waiting for a sequence slot
	Live        int   // sequences generating
	KVBytes     int64 // memory held by KV caches
	KVSequences int64 // (layer, sequence) KV caches alive
	// The uploader's cumulative counters.
	UploadedBytes, UploadHits, UploadEvictions int64
}

// Pipeline adapts a forgepipe pipeline to Engine.
func Pipeline(p *forgepipe.Pipeline) Engine { return pipelineEngine{p} }

type pipelineEngine struct{ p *forgepipe.Pipeline }

func (e pipelineEngine) Generate(ctx context.Context, req forgepipe.Request) (Stream, error) {
	s, err := e.p.Generate(ctx, req)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (e pipelineEngine) Tokenizer() *tokenizer.Tokenizer { return e.p.Tokenizer() }
func (e pipelineEngine) ContextSize() int                { return e.p.ContextSize() }

func (e pipelineEngine) Stats() EngineStats {
	st := e.p.Stats()
	return EngineStats{
		Queued: e.p.Queued(), Live: int(st.Sampler.Live),
		KVBytes: st.KVBytes(), KVSequences: st.KVSequences(),
		UploadedBytes: st.Uploader.BytesUploaded, UploadHits: st.Uploader.Hits, UploadEvictions: st.Uploader.Evictions,
	}
}
