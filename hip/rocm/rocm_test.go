package rocm

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/hip/hiptest"
	"github.com/forgepipe/forgepipe/hip/internal/gpu"
	"github.com/rs/zerolog"
)

// TestLoad: where ROCm is missing, Open says so with ErrNotSupported;
// where it is installed without a GPU, with ErrNoDevice; "auto" then falls
// back to another driver, saying why.
func TestLoad(t *testing.T) {
	_, err := Open(hip.Options{}, Config{})
	switch {
	case err == nil:
		t.Skip("an AMD GPU is present: TestConformance covers it")
	case errors.Is(err, hip.ErrNotSupported):
		if !strings.Contains(err.Error(), "no ROCm runtime: libamdhip64.so not found") && !strings.Contains(err.Error(), "ROCm runtime too old") {
			t.Fatalf("missing runtime: %v", err)
		}
	case errors.Is(err, hip.ErrNoDevice):
		if !strings.Contains(err.Error(), "no AMD device") {
			t.Fatalf("no device: %v", err)
		}
	default:
		t.Fatalf("Open: %v, want ErrNotSupported or ErrNoDevice", err)
	}
	t.Log(err)
	_, err2 := hip.Open("rocm", hip.Options{})
	if err2 == nil || err2.Error() != err.Error() {
		t.Fatalf(`hip.Open("rocm") = %v, want %v`, err2, err)
	}
	var logs bytes.Buffer
	logger := zerolog.New(&logs)
	dev, err := hip.Open("auto", hip.Options{Logger: &logger, HostMemory: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if l := logs.String(); dev.Driver() == "rocm" || !(strings.Contains(l, "ROCm") || strings.Contains(l, "AMD device")) {
		t.Fatalf("auto chose %s, logging %s", dev.Driver(), logs.String())
	}
}

// TestGraphSymbols checks the names of the graph entry points against the
// HIP runtime, where one is installed, GPU or not.
func TestGraphSymbols(t *testing.T) {
	Open(hip.Options{}, Config{}) // loads the runtime, if there is one
	if runtimeLib.lib == nil {
		t.Skip("no ROCm runtime here")
	}
	g, err := graphSyms()
	if err != nil {
		t.Fatalf("%s: %v", runtimeLib.lib.Path, err)
	}
	for _, s := range []gpu.Sym{g.BeginCapture, g.EndCapture, g.Instantiate, g.Launch, g.ExecDestroy, g.Destroy, g.GetNodes} {
		if s.Fn == 0 || s.Name == "" {
			t.Fatalf("graph entry point %+v not filled in", s)
		}
	}
	t.Logf("%s has stream capture and graphs", runtimeLib.lib.Path)
}

// TestConformance runs hip's conformance suite on an AMD GPU, where there is one.
func TestConformance(t *testing.T) {
	dev, err := Open(hip.Options{}, Config{CacheDir: t.TempDir()})
	if errors.Is(err, hip.ErrNotSupported) || errors.Is(err, hip.ErrNoDevice) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	hiptest.Conformance(t, dev)
}
