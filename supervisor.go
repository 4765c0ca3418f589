package forgepipe

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/forgepipe/forgepipe/actors/layer"
	"github.com/forgepipe/forgepipe/actors/loader"
	"github.com/forgepipe/forgepipe/actors/sampler"
	"github.com/forgepipe/forgepipe/actors/uploader"
	"github.com/forgepipe/forgepipe/model/gpustep"
	"github.com/forgepipe/forgepipe/trace"
)

// supervisorActor is the parent of the pipeline's actors. It spawns them
// when it starts and restarts any that panics (each keeps the state it
// needs to carry on across the restart); stopping it stops them all.
type supervisorActor struct {
	p *Pipeline
}

// Receive spawns the pipeline's actors on start and reports its own stop.
func (s *supervisorActor) Receive(ctx actor.Context) {
	p := s.p
	switch ctx.Message().(type) {
	case *actor.Started:
		if p.samplerPID != nil {
			return // a restart of the supervisor itself: children are still there
		}
		o := &p.opts
		tr := o.trace // nil: every track below is nil, nothing is recorded
		fillTrace, copyTrace := tr.Track("uploader", "staging fill (host)"), tr.Track("uploader", "copy stream (HtoD)")
		layerTraces := make([]*trace.Track, p.cfg.Layers)
		for i := range layerTraces {
			if tr != nil {
				layerTraces[i] = tr.Track("layers", fmt.Sprintf("layer %d", i))
			}
		}
		samplerTrace := tr.Track("sampler", "sampler")
		if tr != nil && p.gpu != nil {
			// Layer actors only enqueue on a GPU: their spans are the host's
			// part; the device's run of each step goes on its own track.
			gpuTrack := tr.Track("gpu", "compute stream")
			err := p.gpu.TimeSteps(gpuTrack.Now, func(sp gpustep.StepSpan) {
				gpuTrack.Add(fmt.Sprintf("layer %d", sp.Layer), "compute", sp.Start, sp.End-sp.Start,
					trace.Args{trace.Int("layer", sp.Layer), trace.Int("rows", sp.Rows)})
			})
			if err != nil {
				o.log.Warn().Err(err).Msg("no device timeline of the layer steps")
			}
		}
		p.loaderPID = ctx.SpawnPrefix(loader.Props(p.file, &p.loaderStats), "forgepipe-loader-")
		p.uploaderPID = ctx.SpawnPrefix(uploader.Props(uploader.Config{
			Header: p.file.Header, Model: p.cfg, Loader: p.loaderPID, Device: p.dev,
			Prefetch: o.prefetch, Budget: o.budget, Stats: &p.uploaderStats, Log: o.log,
			FillTrace: fillTrace, CopyTrace: copyTrace, GPU: p.gpu,
		}), "forgepipe-uploader-")
		p.samplerPID = ctx.SpawnPrefix(sampler.Props(sampler.Config{
			Model: p.cfg, Tokenizer: p.tok, ContextSize: p.ctxSize, MaxBatch: o.maxBatch,
			Uploader: p.uploaderPID, Stats: &p.samplerStats, Log: o.log, Trace: samplerTrace, GPU: p.gpu,
			NoChain: o.noChain,
		}), "forgepipe-sampler-")
		n := p.cfg.Layers
		p.layerPIDs = make([]*actor.PID, n)
		next := p.samplerPID
		for i := n - 1; i >= 0; i-- {
			var fault func(int, layer.SeqID)
			if o.fault != nil {
				fault = func(l int, seq layer.SeqID) { o.fault(l, SeqID(seq)) }
			}
			p.layerPIDs[i] = ctx.SpawnPrefix(layer.Props(layer.Config{
				Index: i, Model: p.cfg, Next: next, Sampler: p.samplerPID, Uploader: p.uploaderPID,
				MaxBatch: o.maxBatch, Stats: p.layerStats[i], Log: o.log, Fault: fault, Dispatcher: o.dispatcher,
				Trace: layerTraces[i], GPU: p.gpu,
			}), "forgepipe-layer-")
			next = p.layerPIDs[i]
		}
		ctx.Send(p.samplerPID, &sampler.Wire{Layers: p.layerPIDs})
		close(p.spawned)
	case *actor.Stopped:
		close(p.stopped)
	}
}

// supervisorProps makes the supervisor: its children are always restarted.
func supervisorProps(p *Pipeline) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &supervisorActor{p: p} },
		actor.WithSupervisor(actor.NewRestartingStrategy()))
}
