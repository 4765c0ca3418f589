package loader

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/trace"
)

func openBundled(t *testing.T) (*gguf.File, int) {
	t.Helper()
	f, err := gguf.Open(testutil.BundledModel(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	cfg, err := model.ConfigFromGGUF(f.Header)
	if err != nil {
		t.Fatal(err)
	}
	return f, cfg.Layers
}

// TestReadPlan: the ranges cover every tensor, in the order the pipeline
// needs them (globals but the output, the layers in turn, the output).
func TestReadPlan(t *testing.T) {
	f, layers := openBundled(t)
	plan := readPlan(f, layers)
	covered := func(off, end int64) bool {
		for _, r := range plan {
			if r.off <= off && end <= r.end {
				return true
			}
		}
		return false
	}
	for _, ti := range f.Tensors {
		off := int64(f.DataOffset + ti.Offset)
		if !covered(off, off+int64(ti.Size)) {
			t.Errorf("tensor %s [%d, %d) is in no range", ti.Name, off, off+int64(ti.Size))
		}
	}
	unit := Globals
	for i, r := range plan {
		if r.off >= r.end || r.end > f.Size() {
			t.Errorf("range %d [%d, %d) of a %d-byte file", i, r.off, r.end, f.Size())
		}
		if r.unit < unit && !(r.unit == Globals && i == len(plan)-1) {
			t.Errorf("range %d is of unit %d after unit %d", i, r.unit, unit)
		}
		unit = max(unit, r.unit)
	}
	if plan[0].unit != Globals || plan[len(plan)-1-boolInt(hasOutput(f))].unit != layers-1 {
		t.Errorf("plan begins with unit %d and ends with %v: want the globals first, then the layers",
			plan[0].unit, plan[len(plan)-1])
	}
}

func hasOutput(f *gguf.File) bool {
	_, ok := f.Tensor("output.weight")
	return ok
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestStartReadAhead: every planned byte is read, once, in chunks of at
// most readChunk; a limit stops it early; a closed stop ends it at once;
// no goroutine is left.
func TestStartReadAhead(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	// The bundled file is in the page cache by now: read it all the same
	// (TestReadAheadSkipsResident checks the skipping).
	isResident = func([]byte, []byte) bool { return false }
	defer func() { isResident = resident }()
	f, layers := openBundled(t)
	var want int64
	for _, r := range readPlan(f, layers) {
		want += r.end - r.off
	}
	read := func(limit int64, stop chan struct{}) (n int64, chunks int) {
		rec := trace.New(trace.Options{})
		select {
		case <-StartReadAhead(f, layers, limit, stop, rec.Track("t", "read")):
		case <-time.After(time.Minute):
			t.Fatal("read-ahead did not end")
		}
		for _, e := range rec.Events() {
			b := e.Args[1].Val
			if e.Args[1].Key != "bytes" || b <= 0 || b > readChunk {
				t.Errorf("span %+v", e)
			}
			n += b
			chunks++
		}
		return n, chunks
	}
	if n, _ := read(ReadAheadAuto, make(chan struct{})); n != want {
		t.Errorf("read %d bytes, want the plan's %d", n, want)
	}
	if n, _ := read(want/3, make(chan struct{})); n < want/3 || n >= want/3+readChunk {
		t.Errorf("limit %d: read %d bytes", want/3, n)
	}
	stop := make(chan struct{})
	close(stop)
	if n, c := read(ReadAheadAuto, stop); n != 0 || c != 0 {
		t.Errorf("stopped before it began: read %d bytes in %d chunks", n, c)
	}
	if ReadAheadLimit() <= 0 {
		t.Errorf("ReadAheadLimit %d", ReadAheadLimit())
	}
}

// TestReadAheadSkipsResident: chunks whose pages are all in the page
// cache are not read again (a warm start reads nothing).
func TestReadAheadSkipsResident(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, layers := openBundled(t)
	calls := 0
	isResident = func([]byte, []byte) bool { calls++; return true }
	defer func() { isResident = resident }()
	rec := trace.New(trace.Options{})
	<-StartReadAhead(f, layers, ReadAheadAuto, make(chan struct{}), rec.Track("t", "read"))
	for _, e := range rec.Events() {
		if e.Name != "in page cache" {
			t.Errorf("span %q of a resident chunk", e.Name)
		}
	}
	if n := len(rec.Events()); n == 0 || n != calls {
		t.Errorf("%d spans after %d residency checks, want one each", n, calls)
	}
}
