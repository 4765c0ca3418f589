package hip

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
)

// The host BLAS's conversions agree with the gguf package's, an independent
// implementation: every half and bfloat16 value decodes the same, and float32
// values across the range (including halfway cases, subnormals, overflow
// and NaN) round the same.
func TestHalfConversions(t *testing.T) {
	for h := range 1 << 16 {
		got, want := halfToFloat(uint16(h)), gguf.FP16ToFP32(uint16(h))
		if math.Float32bits(got) != math.Float32bits(want) && !(got != got && want != want) {
			t.Fatalf("halfToFloat(%#04x) = %v, want %v", h, got, want)
		}
		if bg, bw := bfloatToFloat(uint16(h)), gguf.BF16ToFP32(uint16(h)); math.Float32bits(bg) != math.Float32bits(bw) {
			t.Fatalf("bfloatToFloat(%#04x) = %v, want %v", h, bg, bw)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	check := func(bits uint32) {
		f := math.Float32frombits(bits)
		if got, want := floatToHalf(f), gguf.FP32ToFP16(f); got != want {
			t.Fatalf("floatToHalf(%v = %#08x) = %#04x, want %#04x", f, bits, got, want)
		}
		if got, want := floatToBfloat(f), gguf.FP32ToBF16(f); got != want {
			t.Fatalf("floatToBfloat(%v = %#08x) = %#04x, want %#04x", f, bits, got, want)
		}
	}
	for range 1 << 20 {
		check(r.Uint32())
	}
	for h := range uint32(1 << 15) { // every half, and the halfway points around it
		b := math.Float32bits(gguf.FP16ToFP32(uint16(h)))
		for _, d := range []uint32{0, 1, 0xfff, 0x1000, 0x1001} {
			check(b + d)
			check((b + d) | 1<<31)
		}
	}
	for _, f := range []float32{0, 65504, 65519.99, 65520, 1e10, 5.96e-8, 2.98e-8, 2.99e-8, float32(math.Inf(1))} {
		check(math.Float32bits(f))
	}
}

// A real driver replaces its stub; a second registration panics.
func TestRegisterReplacesStub(t *testing.T) {
	registerStub("hiptest-gpu", "no such GPU")
	t.Cleanup(func() {
		registry.Lock()
		delete(registry.drivers, "hiptest-gpu")
		registry.Unlock()
	})
	if _, err := Open("hiptest-gpu", Options{}); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Open of a stub: %v", err)
	}
	want := errors.New("the real driver ran")
	Register("hiptest-gpu", func(Options) (Device, error) { return nil, want })
	if _, err := Open("hiptest-gpu", Options{}); err != want {
		t.Fatalf("Open after Register: %v, want the real driver's error", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("registering a real driver twice did not panic")
		}
	}()
	Register("hiptest-gpu", func(Options) (Device, error) { return nil, want })
}
