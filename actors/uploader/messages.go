package uploader

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/forgepipe/forgepipe/hip"
)

// Globals is the layer number of the weights outside the blocks
// (token_embd, output_norm, output, rope_freqs).
const Globals = -1

// WeightsRequest asks for one layer's weights on the device (Layer ==
// Globals for the weights outside the blocks). The reply, sent to ReplyTo,
// is a *WeightsReady. The requester holds a lease on the weights from the
// reply until it sends a Release.
type WeightsRequest struct {
	Layer   int
	ReplyTo *actor.PID
}

// WeightsReady answers a WeightsRequest. Weights is a *model.Block (or a
// *model.Globals for Globals) bound to views of device memory. The copies
// that fill that memory may still be running: compute that reads the
// weights must first wait for Ready (on a stream, with StreamWaitEvent).
type WeightsReady struct {
	Layer   int
	Weights any
	Ready   Event
	Err     error
}

// Evicted tells the holder of a layer's weights that the uploader needs
// their memory: it must drop its pointer and answer with a Release (and
// request the weights again when it next needs them).
type Evicted struct {
	Layer int
}

// Release ends a lease: the sender no longer uses Layer's weights. LastUse
// completes once the last work that read them has finished (nil: none is
// pending); the memory is freed only after it.
type Release struct {
	Layer   int
	LastUse Event
}

// Event is a point in a device stream's work (a recorded hip.Event).
type Event = hip.Event
