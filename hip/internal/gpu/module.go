package gpu

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/forgepipe/forgepipe/hip"
)

// module is a loaded module.
type module struct {
	dev      *Device
	h        uintptr
	name     string
	unloaded atomic.Bool
}

// function is a kernel of a module.
type function struct {
	mod        *module
	h          uintptr
	name       string
	launchCall string
}

func (f *function) Name() string { return f.name }

// LoadModule compiles spec's source for the device's architecture with the
// run-time compiler, or takes the code from the kernel cache, and loads it.
func (d *Device) LoadModule(spec hip.ModuleSpec) (hip.Module, error) {
	name := fmt.Sprintf("%s(%q)", d.api.ModuleLoadData.Name, spec.Name)
	if d.closed.Load() {
		return nil, errf(name, hip.ErrClosed, "device closed")
	}
	code, path, cached, err := d.code(spec)
	if err != nil {
		return nil, err
	}
	h, st, err := d.loadData(name, code)
	if err != nil {
		return nil, err
	}
	if st != 0 && cached {
		// A damaged cache entry: compile again.
		d.log.Warn().Str("module", spec.Name).Str("path", path).Str("error", d.api.ErrorText(st)).Msg("hip kernel cache entry does not load; recompiling")
		os.Remove(path)
		if code, _, _, err = d.code(spec); err != nil {
			return nil, err
		}
		if h, st, err = d.loadData(name, code); err != nil {
			return nil, err
		}
	}
	if st != 0 {
		return nil, d.err(name, st)
	}
	m := &module{dev: d, h: h, name: spec.Name}
	d.mu.Lock()
	d.modules[m] = struct{}{}
	d.mu.Unlock()
	return m, nil
}

func (d *Device) loadData(name string, code []byte) (uintptr, Status, error) {
	if err := d.enter(name); err != nil {
		return 0, 0, err
	}
	defer leave()
	var h uintptr
	st := call(d.api.ModuleLoadData.Fn, uintptr(unsafe.Pointer(&h)), uintptr(unsafe.Pointer(&code[0])))
	runtime.KeepAlive(code)
	return h, st, nil
}

// code returns the compiled module: from the cache when it holds it (cached
// true), else compiled now and stored there.
func (d *Device) code(spec hip.ModuleSpec) (code []byte, path string, cached bool, err error) {
	rtc := d.api.RTC
	name := fmt.Sprintf("%s(%q)", d.api.ModuleLoadData.Name, spec.Name)
	if rtc == nil {
		return nil, "", false, errf(name, hip.ErrNotSupported, "no run-time compiler: %s", d.api.RTCMissing)
	}
	opts := append(append([]string{}, rtc.Options...), spec.Options...)
	h := sha256.New()
	for _, part := range append([]string{d.api.Driver, d.api.Arch, rtc.Name, rtc.Version}, opts...) {
		fmt.Fprintf(h, "%d:%s\n", len(part), part)
	}
	fmt.Fprintf(h, "%d:%s", len(spec.Source), spec.Source)
	key := hex.EncodeToString(h.Sum(nil))[:40]
	path = filepath.Join(d.cacheDir, fmt.Sprintf("%s-%s-%s.bin", d.api.Driver, d.api.Arch, key))
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		d.cacheHits.Add(1)
		return b, path, true, nil
	}
	code, err = d.compile(spec, opts)
	if err != nil {
		return nil, "", false, err
	}
	d.compiles.Add(1)
	if err := writeAtomic(path, code); err != nil {
		d.log.Warn().Err(err).Str("dir", d.cacheDir).Msg("hip kernel cache not written; kernels will be compiled again next start")
	}
	return code, path, false, nil
}

func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}

// compile runs the run-time compiler on spec's source.
func (d *Device) compile(spec hip.ModuleSpec, opts []string) ([]byte, error) {
	rtc := d.api.RTC
	rtcErr := func(s Sym, st Status, log string) error {
		msg := rtc.ErrorText(st)
		if log != "" {
			msg += ":\n" + strings.TrimSpace(log)
		}
		sentinel := hip.ErrNotSupported
		if log != "" {
			sentinel = hip.ErrInvalidValue // the source does not compile
		}
		return &hip.Error{Call: fmt.Sprintf("%s(%q, %s)", s.Name, spec.Name, strings.Join(opts, " ")),
			Code: int(st), Err: sentinel, Msg: msg}
	}
	src, progName := CBytes(spec.Source), CBytes(spec.Name+".cu")
	var prog uintptr
	if st := call(rtc.CreateProgram.Fn, uintptr(unsafe.Pointer(&prog)), uintptr(unsafe.Pointer(src)),
		uintptr(unsafe.Pointer(progName)), 0, 0, 0); st != 0 {
		return nil, rtcErr(rtc.CreateProgram, st, "")
	}
	runtime.KeepAlive(src)
	runtime.KeepAlive(progName)
	defer call(rtc.DestroyProgram.Fn, uintptr(unsafe.Pointer(&prog)))

	cOpts := make([]*byte, len(opts)+1)
	for i, o := range opts {
		cOpts[i] = CBytes(o)
	}
	st := call(rtc.CompileProgram.Fn, prog, uintptr(len(opts)), uintptr(unsafe.Pointer(&cOpts[0])))
	runtime.KeepAlive(cOpts)
	if st != 0 {
		return nil, rtcErr(rtc.CompileProgram, st, programLog(rtc, prog))
	}
	var n uint64
	if st := call(rtc.GetCodeSize.Fn, prog, uintptr(unsafe.Pointer(&n))); st != 0 {
		return nil, rtcErr(rtc.GetCodeSize, st, "")
	}
	if n == 0 {
		return nil, errf(rtc.GetCodeSize.Name, hip.ErrNotSupported, "the compiler produced no code for %q", spec.Name)
	}
	code := make([]byte, n)
	if st := call(rtc.GetCode.Fn, prog, uintptr(unsafe.Pointer(&code[0]))); st != 0 {
		return nil, rtcErr(rtc.GetCode, st, "")
	}
	if log := programLog(rtc, prog); strings.TrimSpace(log) != "" {
		d.log.Debug().Str("module", spec.Name).Str("log", log).Msg("hip kernel compiler output")
	}
	return code, nil
}

func programLog(rtc *RTC, prog uintptr) string {
	var n uint64
	if call(rtc.GetLogSize.Fn, prog, uintptr(unsafe.Pointer(&n))) != 0 || n <= 1 {
		return ""
	}
	b := make([]byte, n)
	if call(rtc.GetLog.Fn, prog, uintptr(unsafe.Pointer(&b[0]))) != 0 {
		return ""
	}
	return strings.TrimRight(string(b), "\x00")
}

func (m *module) Function(name string) (hip.Function, error) {
	api := m.dev.api
	callName := fmt.Sprintf("%s(%q)", api.ModuleGetFunction.Name, name)
	switch {
	case m.dev.closed.Load():
		return nil, errf(callName, hip.ErrClosed, "device closed")
	case m.unloaded.Load():
		return nil, errf(callName, hip.ErrInvalidHandle, "invalid handle: module %q unloaded", m.name)
	}
	if err := m.dev.enter(callName); err != nil {
		return nil, err
	}
	var h uintptr
	cname := CBytes(name)
	st := call(api.ModuleGetFunction.Fn, uintptr(unsafe.Pointer(&h)), m.h, uintptr(unsafe.Pointer(cname)))
	runtime.KeepAlive(cname)
	leave()
	if st != 0 {
		err := m.dev.err(callName, st)
		if he, ok := err.(*hip.Error); ok {
			he.Msg += fmt.Sprintf(" (module %q)", m.name)
		}
		return nil, err
	}
	return &function{mod: m, h: h, name: name,
		launchCall: fmt.Sprintf("%s(%q)", api.LaunchKernel.Name, name)}, nil
}

func (m *module) Unload() error {
	api := m.dev.api
	name := fmt.Sprintf("%s(%q)", api.ModuleUnload.Name, m.name)
	if m.dev.closed.Load() {
		return errf(name, hip.ErrClosed, "device closed")
	}
	if !m.unloaded.CompareAndSwap(false, true) {
		return errf(name, hip.ErrInvalidHandle, "invalid handle: module already unloaded")
	}
	m.dev.mu.Lock()
	delete(m.dev.modules, m)
	m.dev.mu.Unlock()
	if err := m.dev.enter(name); err != nil {
		return err
	}
	st := call(api.ModuleUnload.Fn, m.h)
	leave()
	if st != 0 {
		return m.dev.err(name, st)
	}
	return nil
}
