package gpu

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"github.com/forgepipe/forgepipe/hip"
)

func TestSpans(t *testing.T) {
	var s spans
	for _, sp := range []span{{300, 50}, {100, 100}, {1000, 1}, {200, 10}} {
		s.insert(sp)
	}
	if !slices.IsSortedFunc(s, func(a, b span) int { return int(a.base) - int(b.base) }) {
		t.Fatalf("not sorted: %v", s)
	}
	for _, tc := range []struct {
		p    uint64
		base uint64
		ok   bool
	}{
		{99, 0, false}, {100, 100, true}, {199, 100, true}, {200, 200, true}, {209, 200, true},
		{210, 0, false}, {349, 300, true}, {350, 0, false}, {1000, 1000, true}, {1001, 0, false}, {0, 0, false},
	} {
		i, ok := s.find(tc.p)
		if ok != tc.ok || ok && s[i].base != tc.base {
			t.Errorf("find(%d) = %d, %v; want base %d, %v", tc.p, i, ok, tc.base, tc.ok)
		}
	}
}

func TestCandidatesNewestFirst(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"libx.so.9", "libx.so.12", "libx.so.12.1.0", "libx.so.12.10.2", "libx.so"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// libx.so.12 is a link to a file already listed: it is left out.
	os.Remove(filepath.Join(dir, "libx.so.12"))
	if err := os.Symlink("libx.so.12.10.2", filepath.Join(dir, "libx.so.12")); err != nil {
		t.Fatal(err)
	}
	got := Candidates(filepath.Join(dir, "libx.so.[0-9]*"), filepath.Join(dir, "libx.so"))
	var names []string
	for _, p := range got {
		names = append(names, filepath.Base(p))
	}
	want := []string{"libx.so.12.10.2", "libx.so.12.1.0", "libx.so.9", "libx.so"}
	if !slices.Equal(names, want) {
		t.Fatalf("Candidates = %v, want %v", names, want)
	}
}

func TestDlopenMissing(t *testing.T) {
	_, err := Dlopen("libforgepipe-no-such-library.so.1")
	if err == nil {
		t.Fatal("opened a library that does not exist")
	}
}

func TestCopyOut(t *testing.T) {
	for _, n := range []int{0, 1, 4 << 20, 8<<20 + 1, 37<<20 + 3} {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(i * 7)
		}
		dst := make([]byte, n)
		copyOut(dst, src)
		if !bytes.Equal(dst, src) {
			t.Fatalf("copyOut of %d bytes differs", n)
		}
	}
}

func TestStatusSentinel(t *testing.T) {
	for st, want := range map[Status]error{
		1: hip.ErrInvalidValue, 2: hip.ErrOutOfMemory, 100: hip.ErrNoDevice, 400: hip.ErrInvalidHandle,
		500: hip.ErrNotFound, 600: hip.ErrNotReady, 700: hip.ErrLaunchFailure, 719: hip.ErrLaunchFailure,
		801: hip.ErrNotSupported, 999: hip.ErrNotSupported,
	} {
		if got := StatusSentinel(st); !errors.Is(got, want) {
			t.Errorf("StatusSentinel(%d) = %v, want %v", st, got, want)
		}
	}
}

func TestSoMajor(t *testing.T) {
	for path, want := range map[string]int{
		"/usr/lib/libcublas.so.12.4.5": 12, "libnvrtc.so.13": 13, "/x/libamdhip64.so": 0, "libfoo.so.x1": 0, "a.so.7b": 7,
	} {
		if got := SoMajor(path); got != want {
			t.Errorf("SoMajor(%q) = %d, want %d", path, got, want)
		}
	}
}

func TestLibCandidates(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"libx.so", "libx.so.2", "libx.so.10", "liby.so.1"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("FORGEPIPE_TEST_LIBX", "/opt/libx.so")
	got := LibCandidates("FORGEPIPE_TEST_LIBX", "libx.so", []string{dir, filepath.Join(dir, "missing")})
	want := []string{"/opt/libx.so", filepath.Join(dir, "libx.so.10"), filepath.Join(dir, "libx.so.2"), filepath.Join(dir, "libx.so"), "libx.so"}
	if !slices.Equal(got, want) {
		t.Errorf("LibCandidates:\n got %q\nwant %q", got, want)
	}
}

// TestLaunchConfigLayout holds launchConfig and launchAttribute to the
// layout of CUlaunchConfig and CUlaunchAttribute in cuda.h on 64-bit hosts,
// which cuLaunchKernelEx reads.
func TestLaunchConfigLayout(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the layout checked is that of 64-bit hosts")
	}
	var c launchConfig
	var a launchAttribute
	for _, f := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(CUlaunchConfig)", unsafe.Sizeof(c), 56},
		{"CUlaunchConfig.gridDimX", unsafe.Offsetof(c.gridDimX), 0},
		{"CUlaunchConfig.blockDimX", unsafe.Offsetof(c.blockDimX), 12},
		{"CUlaunchConfig.sharedMemBytes", unsafe.Offsetof(c.sharedMemBytes), 24},
		{"CUlaunchConfig.hStream", unsafe.Offsetof(c.hStream), 32},
		{"CUlaunchConfig.attrs", unsafe.Offsetof(c.attrs), 40},
		{"CUlaunchConfig.numAttrs", unsafe.Offsetof(c.numAttrs), 48},
		{"sizeof(CUlaunchAttribute)", unsafe.Sizeof(a), 72},
		{"CUlaunchAttribute.value", unsafe.Offsetof(a.value), 8},
	} {
		if f.got != f.want {
			t.Errorf("%s = %d, want %d", f.name, f.got, f.want)
		}
	}
	p := paramsPool.Get().(*params)
	defer paramsPool.Put(p)
	if p.cfg.attrs != uintptr(unsafe.Pointer(&p.attr)) {
		t.Errorf("a pooled params' config does not point at its own attribute")
	}
}
