package loader

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestResident: mincore over an anonymous mapping: untouched pages are
// not resident, written ones are, and one missing page makes the range
// not resident.
func TestResident(t *testing.T) {
	page := os.Getpagesize()
	b, err := unix.Mmap(-1, 0, 16*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Skipf("mmap: %v", err)
	}
	defer unix.Munmap(b)
	vec := make([]byte, 16)
	if resident(b, vec) {
		t.Error("untouched pages resident")
	}
	for i := 0; i < len(b); i += page {
		b[i] = 1
	}
	if !resident(b, vec) {
		t.Error("written pages not resident")
	}
	if err := unix.Madvise(b[5*page:6*page], unix.MADV_DONTNEED); err != nil {
		t.Skipf("madvise: %v", err)
	}
	if resident(b, vec) {
		t.Error("a range with a dropped page resident")
	}
	if !resident(b[:5*page], vec) || resident(b, vec[:3]) {
		t.Error("resident: the head, or a range longer than vec")
	}
}
