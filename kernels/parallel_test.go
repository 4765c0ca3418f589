package kernels

import (
	"runtime"
	"sync"
	"testing"
)

func TestParallelFor(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	cases := []struct {
		name        string
		n, work     int
		align       int
		procs       int
		wantOneCall bool
	}{
		{"empty", 0, 1 << 30, 1, 2, false},
		{"small-work-inline", 1000, parallelThreshold - 1, 1, 4, true},
		{"one-proc-inline", 1000, 1 << 30, 1, 1, true},
		{"one-item", 1, 1 << 30, 1, 4, true},
		{"split", 1000, 1 << 30, 1, 2, false},
		{"split-odd", 997, 1 << 24, 1, 3, false},
		{"aligned", 1000, 1 << 30, 64, 4, false},
		{"one-aligned-unit", 50, 1 << 30, 64, 4, true},
		{"just-over-threshold", 10, parallelThreshold, 1, 2, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runtime.GOMAXPROCS(c.procs)
			var mu sync.Mutex
			seen := make([]int, c.n)
			calls := 0
			parallelFor(c.n, c.work, c.align, func(lo, hi int) {
				mu.Lock()
				defer mu.Unlock()
				calls++
				if lo >= hi || lo < 0 || hi > c.n {
					t.Errorf("bad range [%d, %d) of %d", lo, hi, c.n)
					return
				}
				if lo%c.align != 0 {
					t.Errorf("range start %d not a multiple of %d", lo, c.align)
				}
				for i := lo; i < hi; i++ {
					seen[i]++
				}
			})
			for i, s := range seen {
				if s != 1 {
					t.Fatalf("item %d covered %d times", i, s)
				}
			}
			if c.wantOneCall && calls != 1 {
				t.Fatalf("%d calls, want 1 (inline)", calls)
			}
			if !c.wantOneCall && c.n > 1 && calls < 2 {
				t.Fatalf("%d calls, want a split", calls)
			}
		})
	}
}

// BenchmarkParallelForOverhead measures the fixed cost of splitting a range
// across goroutines (the body does nothing), which parallelThreshold must
// amortise.
func BenchmarkParallelForOverhead(b *testing.B) {
	var sink [64]int
	for b.Loop() {
		parallelFor(64, 1<<30, 1, func(lo, hi int) { sink[lo]++ })
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/split")
}
