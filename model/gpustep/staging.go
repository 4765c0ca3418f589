package gpustep

import (
	"context"
	"fmt"

	"github.com/forgepipe/forgepipe/hip"
)

// staging is a ring of pinned host memory for the small uploads of every
// step (token ids, row metadata). A region is written on the host when its
// copy is enqueued and is not written again before an event recorded after
// that copy is reached; the ring is large enough that this wait is almost
// never a real one. Used under Runtime.mu.
type staging struct {
	dev   hip.Device
	buf   hip.HostBuffer
	head  int
	spans []span      // regions whose copies may still be pending, oldest first
	spare []hip.Event // events to reuse
}

type span struct {
	start, end int
	done       hip.Event
}

const stagingBytes = 1 << 20

func newStaging(dev hip.Device) (*staging, error) {
	b, err := dev.HostAlloc(stagingBytes)
	if err != nil {
		return nil, fmt.Errorf("gpustep: staging: %w", err)
	}
	return &staging{dev: dev, buf: b}, nil
}

// upload copies data to dst on s through the ring.
func (st *staging) upload(s hip.Stream, dst hip.DevicePtr, data []byte) error {
	n := (len(data) + 63) &^ 63
	if n > stagingBytes/2 {
		return fmt.Errorf("gpustep: staging %d bytes at once (at most %d)", len(data), stagingBytes/2)
	}
	if st.head+n > stagingBytes {
		st.head = 0
	}
	start, end := st.head, st.head+n
	// Wait for the newest pending copy out of [start, end): every older
	// copy ran before it (one stream), so they all leave the ring.
	last := -1
	for i, sp := range st.spans {
		if sp.start < end && start < sp.end {
			last = i
		}
	}
	if last >= 0 {
		if err := st.spans[last].done.Synchronize(context.Background()); err != nil {
			return err
		}
		for _, sp := range st.spans[:last+1] {
			st.spare = append(st.spare, sp.done)
		}
		st.spans = append(st.spans[:0], st.spans[last+1:]...)
	}
	region := st.buf.Bytes()[start : start+len(data)]
	copy(region, data)
	if err := s.MemcpyHtoDAsync(dst, region); err != nil {
		return err
	}
	var ev hip.Event
	if k := len(st.spare); k > 0 {
		ev, st.spare = st.spare[k-1], st.spare[:k-1]
	} else {
		var err error
		if ev, err = st.dev.EventCreate(); err != nil {
			return err
		}
	}
	if err := ev.Record(s); err != nil {
		return err
	}
	st.spans = append(st.spans, span{start, end, ev})
	st.head = end
	return nil
}

func (st *staging) close() error {
	for _, sp := range st.spans {
		st.spare = append(st.spare, sp.done)
	}
	for _, e := range st.spare {
		_ = e.Destroy()
	}
	st.spans, st.spare = nil, nil
	return st.buf.Free()
}
