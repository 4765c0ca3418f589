package gpufwd

import (
	"errors"
	"fmt"
	"time"

	"github.com/forgepipe/forgepipe/hip"
)

// StepProfile is where one step's time went.
type StepProfile struct {
	// Blocks holds each block's device time in milliseconds, between
	// events recorded on the compute stream before and after it (block 0
	// includes the embedding).
	Blocks []float32
	// Logits is the final norm and output projection's device time, ms.
	Logits float32
	// Total is the device time from the embedding to the logits, ms.
	Total float32
	// Ops holds each op's device time summed over the blocks, in ms, in
	// the order of OpNames (the first op of block 0 includes the embedding).
	Ops []float32
	// Enqueue is the host time spent enqueueing the step.
	Enqueue time.Duration
}

// OpNames names the ops of a block that StepProfile.Ops times.
var OpNames = opNames

var opNames = []string{"attn_norm", "qkv", "rope", "attention", "attn_output", "attn_add",
	"ffn_norm", "gate_up", "swiglu", "ffn_down", "ffn_add"}

// SetProfile turns per-block event timing on or off for later steps.
func (g *Model) SetProfile(on bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range g.profile {
		_ = e.Destroy()
	}
	g.profile = nil
	if !on {
		return nil
	}
	for i := 0; i < len(g.blocks)*len(opNames)+2; i++ {
		e, err := g.dev.EventCreate()
		if err != nil {
			return err
		}
		g.profile = append(g.profile, e)
	}
	return nil
}

// LastProfile returns the timing of the last step (SetProfile must be on).
// When the host enqueues more slowly than the device runs, the device
// times include the gaps between launches; ProfileStep excludes them.
func (g *Model) LastProfile() (StepProfile, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lastProfile()
}

func (g *Model) lastProfile() (StepProfile, error) {
	if g.profile == nil {
		return StepProfile{}, errors.New("gpufwd: profiling is off")
	}
	p := StepProfile{Enqueue: g.enqueued, Ops: make([]float32, len(opNames))}
	ev := g.profile
	for i := 1; i < len(ev); i++ {
		ms, err := g.dev.EventElapsedTime(ev[i-1], ev[i])
		if err != nil {
			return p, err
		}
		if i == len(ev)-1 {
			p.Logits = ms
		} else {
			op := (i - 1) % len(opNames)
			if op == 0 {
				p.Blocks = append(p.Blocks, 0)
			}
			p.Blocks[len(p.Blocks)-1] += ms
			p.Ops[op] += ms
		}
		p.Total += ms
	}
	return p, nil
}

// gateBytes and gateCopies size the device-to-device copies that hold the
// compute stream back in ProfileStep: 24 copies of 256 MiB, about 4 ms on
// an H100, longer than a 1B model's step takes to enqueue.
const (
	gateBytes  = 256 << 20
	gateCopies = 24
)

// ProfileStep runs one greedy decode step of id with SetProfile on and the
// compute stream held back, behind copies on the copy stream, until the
// whole step is enqueued: its device times then exclude the gaps between
// launches (what a CUDA graph would remove). It returns the profile and
// the step's token, and fails if the copies finished before the step was
// enqueued.
func (g *Model) ProfileStep(st *State, id int32) (StepProfile, int32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.profile == nil {
		return StepProfile{}, 0, errors.New("gpufwd: profiling is off")
	}
	// Size the activation buffers now: ensure must not free buffers while
	// the gate holds work in flight.
	if err := g.ensure(1, 1, st.Pos+1); err != nil {
		return StepProfile{}, 0, err
	}
	src, err := g.dev.Malloc(2 * gateBytes)
	if err != nil {
		return StepProfile{}, 0, fmt.Errorf("gpufwd: profile gate: %w", err)
	}
	defer g.dev.Free(src)
	gate, err := g.dev.EventCreate()
	if err != nil {
		return StepProfile{}, 0, err
	}
	defer gate.Destroy()
	for i := 0; i < gateCopies; i++ {
		if err := g.copy.MemcpyDtoDAsync(src.Add(gateBytes), src, gateBytes); err != nil {
			return StepProfile{}, 0, err
		}
	}
	if err := gate.Record(g.copy); err != nil {
		return StepProfile{}, 0, err
	}
	if err := g.stream.WaitEvent(gate); err != nil {
		return StepProfile{}, 0, err
	}
	if err := g.enqueueGreedy(st, []int32{id}); err != nil {
		return StepProfile{}, 0, errors.Join(err, g.sync())
	}
	held := errors.Is(gate.Query(), hip.ErrNotReady)
	tok, err := g.finishGreedy()
	if err != nil {
		return StepProfile{}, 0, err
	}
	p, err := g.lastProfile()
	if err == nil && !held {
		err = fmt.Errorf("gpufwd: profile gate finished before the step was enqueued (%v): device times include launch gaps", p.Enqueue)
	}
	return p, tok, err
}
