package loader

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// physicalMemory is the machine's memory in bytes (0: unknown).
func physicalMemory() int64 {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 0
	}
	return int64(si.Totalram) * int64(max(si.Unit, 1))
}

// resident reports whether every page of b, a page-aligned piece of a
// mapping, is in the page cache (mincore(2)); false when it cannot tell.
// vec is scratch of at least one byte per page.
func resident(b []byte, vec []byte) bool {
	if len(b) == 0 {
		return true
	}
	page := unix.Getpagesize()
	n := (len(b) + page - 1) / page
	if len(vec) < n {
		return false
	}
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return false
	}
	for _, v := range vec[:n] {
		if v&1 == 0 {
			return false
		}
	}
	return true
}
