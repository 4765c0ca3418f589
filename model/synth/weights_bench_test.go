package synth

import (
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
)

// BenchmarkFill measures drawing and encoding one 4096×1024 matrix, the
// inner loop of writing a large synthetic model; it reports weights/s.
func BenchmarkFill(b *testing.B) {
	for _, typ := range []gguf.Type{gguf.TypeF16, gguf.TypeQ8_0, gguf.TypeQ4_K, gguf.TypeQ6_K} {
		b.Run(typ.String(), func(b *testing.B) {
			t := tensor{name: "bench", shape: []uint64{4096, 1024}, typ: typ, amp: 0.03}
			dst := make([]byte, t.bytes())
			b.SetBytes(t.bytes())
			for i := 0; b.Loop(); i++ {
				if err := fill(dst, &t, 1, i); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(t.elements())*float64(b.N)/b.Elapsed().Seconds(), "weights/s")
		})
	}
}
