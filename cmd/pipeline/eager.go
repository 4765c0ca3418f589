package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/forgepipe/forgepipe/hip"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/model/gpufwd"
)

// backends are the values --backend takes.
var backends = []string{"auto", "host", "cuda", "rocm"}

func checkBackend(name string) error {
	for _, b := range backends {
		if name == b {
			return nil
		}
	}
	return fmt.Errorf("--backend %q: want one of auto, host, cuda, rocm", name)
}

// eagerModel is the sequential path (--eager): every weight loaded before
// the first token, on the host (model.Model) or on a GPU (model/gpufwd).
type eagerModel struct {
	host *model.Model
	gpu  *gpufwd.Model
	dev  hip.Device
	load time.Duration
}

// openEager loads the model for the sequential path on backend; "auto"
// takes a GPU when one works, like the pipeline.
func openEager(path, backend string, ctxSize int, progress func(done, total int64), log zerolog.Logger) (*eagerModel, error) {
	start := time.Now()
	e := &eagerModel{}
	if backend != "host" {
		dev, err := hip.Open(backend, hip.Options{Logger: &log})
		switch {
		case err != nil && backend != "auto":
			return nil, fmt.Errorf("backend %q: %w", backend, err)
		case err == nil && dev.Driver() != "host":
			e.dev = dev
		case err == nil:
			dev.Close()
		}
	}
	m, err := model.Open(path, model.Options{ContextSize: ctxSize, Progress: progress, NoPrefault: e.dev != nil})
	if err != nil {
		e.Close()
		return nil, err
	}
	e.host = m
	if e.dev != nil {
		g, err := gpufwd.Load(e.dev, m)
		if err != nil && backend != "auto" {
			e.Close()
			return nil, err
		}
		if err != nil {
			log.Warn().Err(err).Msg("the GPU cannot run the model: using the host")
			e.dev.Close()
			e.dev = nil
		} else {
			e.gpu = g
			log.Info().Str("device", e.dev.Name()).Msg("eager: every weight on the GPU")
		}
	}
	e.load = time.Since(start)
	return e, nil
}

// Device names where the model runs.
func (e *eagerModel) Device() string {
	if e.dev != nil {
		return e.dev.Name()
	}
	return "host"
}

// ContextSize is the most tokens a sequence may hold.
func (e *eagerModel) ContextSize() int { return e.host.ContextSize() }

// WeightBytes is the bytes of weight matrices a decode step reads.
func (e *eagerModel) WeightBytes() int64 {
	if e.gpu != nil {
		return e.gpu.WeightBytes()
	}
	return 0
}

// Generate runs one generation (on the GPU: one sequence at a time).
func (e *eagerModel) Generate(ctx context.Context, prompt string, opts model.GenerateOptions, onText func(string)) (*model.Result, error) {
	if e.gpu == nil {
		return e.host.Generate(ctx, prompt, opts, onText)
	}
	st, err := e.gpu.NewState()
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return model.GenerateWith(ctx, e.gpu.Stepper(st), e.host.Tokenizer, e.gpu.ContextSize(), prompt, opts, onText, e.load)
}

// Close releases the model and the device.
func (e *eagerModel) Close() {
	if e.gpu != nil {
		_ = e.gpu.Close()
	}
	if e.host != nil {
		_ = e.host.Close()
	}
	if e.dev != nil {
		_ = e.dev.Close()
	}
}

// dropFromPageCache asks the kernel to forget the file's cached pages
// (posix_fadvise DONTNEED: no privileges needed for clean pages), so that
// the next read comes from the disk: a cold start without rebooting.
func dropFromPageCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("--cold: %w", err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("--cold: posix_fadvise: %w", err)
	}
	return nil
}
