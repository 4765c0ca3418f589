package hip

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"github.com/rs/zerolog/log"
)

// OpenFunc opens a device of one driver. It returns ErrNotSupported when the
// driver's libraries are missing and ErrNoDevice when they find no device.
type OpenFunc func(opts Options) (Device, error)

// autoOrder is the order in which "auto" tries drivers: the GPU drivers,
// then the host driver, which always opens. This is the one place where the
// backend is chosen.
var autoOrder = []string{"cuda", "rocm", "host"}

type driver struct {
	open OpenFunc
	stub bool // a placeholder that a real driver may replace
}

var registry = struct {
	sync.RWMutex
	drivers map[string]driver
}{drivers: map[string]driver{}}

func init() {
	registerStub("cuda", "no CUDA driver: the cuda driver (libcuda, nvrtc, cuBLAS) is not built into this binary")
	registerStub("rocm", "no ROCm driver: the rocm driver (libamdhip64, hiprtc, hipBLAS) is not built into this binary")
	Register("host", func(opts Options) (Device, error) { return OpenHost(opts) })
}

// registerStub registers a driver that is not built yet: opening it fails
// with ErrNotSupported and msg.
func registerStub(name, msg string) {
	registry.Lock()
	defer registry.Unlock()
	registry.drivers[name] = driver{stub: true, open: func(Options) (Device, error) {
		return nil, errf(fmt.Sprintf("hip.Open(%q)", name), ErrNotSupported, "%s", msg)
	}}
}

// Register makes a driver available to Open under name; driver packages call
// it from init. A real driver replaces a stub of the same name; registering
// a name twice, or the name "auto", panics.
func Register(name string, open OpenFunc) {
	if name == "" || name == "auto" || open == nil {
		panic(fmt.Sprintf("hip: Register(%q): invalid driver", name))
	}
	registry.Lock()
	defer registry.Unlock()
	if d, ok := registry.drivers[name]; ok && !d.stub {
		panic(fmt.Sprintf("hip: Register(%q): driver registered twice", name))
	}
	registry.drivers[name] = driver{open: open}
}

// Drivers lists the registered driver names, stubs included, sorted.
func Drivers() []string {
	registry.RLock()
	defer registry.RUnlock()
	names := make([]string, 0, len(registry.drivers))
	for name := range registry.drivers {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func lookup(name string) (driver, bool) {
	registry.RLock()
	defer registry.RUnlock()
	d, ok := registry.drivers[name]
	return d, ok
}

// Open opens a device with the named driver: "cuda", "rocm", "host", or
// "auto" (or ""), which tries the GPU drivers in turn and falls back to host.
// It logs one line saying which backend it chose and, for "auto", why.
func Open(name string, opts Options) (Device, error) {
	logger := log.Logger
	if opts.Logger != nil {
		logger = *opts.Logger
	}
	if name != "" && name != "auto" {
		d, ok := lookup(name)
		if !ok {
			return nil, errf(fmt.Sprintf("hip.Open(%q)", name), ErrInvalidValue,
				"unknown driver (have auto, %s)", strings.Join(Drivers(), ", "))
		}
		dev, err := d.open(opts)
		if err != nil {
			return nil, err
		}
		logChosen(logger, dev, name, "requested")
		return dev, nil
	}
	dev, why := openFirst(autoOrder, opts)
	if dev == nil {
		return nil, errf(`hip.Open("auto")`, ErrNoDevice, "no driver opened: %s", strings.Join(why, "; "))
	}
	reason := "first driver that opened"
	if len(why) > 0 {
		reason = strings.Join(why, "; ")
	}
	logChosen(logger, dev, "auto", reason)
	return dev, nil
}

// OpenGPU opens the first GPU driver (in "auto"'s order, without the host)
// that finds a device. Its error says why each one failed: tests skip with
// it where there is no GPU.
func OpenGPU(opts Options) (Device, error) {
	gpus := slices.DeleteFunc(slices.Clone(autoOrder), func(n string) bool { return n == "host" })
	dev, why := openFirst(gpus, opts)
	if dev == nil {
		return nil, errf("hip.OpenGPU", ErrNoDevice, "%s", strings.Join(why, "; "))
	}
	return dev, nil
}

// openFirst opens the first of the named drivers that opens, and says why
// those before it did not.
func openFirst(names []string, opts Options) (Device, []string) {
	var why []string
	for _, name := range names {
		d, ok := lookup(name)
		if !ok {
			why = append(why, name+": not registered")
			continue
		}
		dev, err := d.open(opts)
		if err != nil {
			why = append(why, err.Error())
			continue
		}
		return dev, why
	}
	return nil, why
}

func logChosen(logger zerolog.Logger, dev Device, requested, why string) {
	free, total, _ := dev.MemGetInfo()
	logger.Info().
		Str("backend", dev.Driver()).
		Str("requested", requested).
		Str("device", dev.Name()).
		Int64("mem_total", total).
		Int64("mem_free", free).
		Str("why", why).
		Msg("hip backend chosen")
}
