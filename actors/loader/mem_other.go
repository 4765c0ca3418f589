//go:build !linux

package loader

// physicalMemory is the machine's memory in bytes (0: unknown).
func physicalMemory() int64 { return 0 }

// resident reports whether every page of b is in the page cache: never
// known here, so the read-ahead reads everything.
func resident(b []byte, vec []byte) bool { return false }
