package gguf

import (
	"fmt"
	"os"

	mmap "github.com/edsrzf/mmap-go"
)

// File is an open, memory-mapped GGUF file. Tensor data is exposed as
// zero-copy views of the mapping, valid until Close.
type File struct {
	*Header
	Path string
	data []byte
	mm   mmap.MMap
	f    *os.File
}

// Open maps path read-only and parses its header. Only the header pages are
// touched; tensor bytes are read by the OS when a view is first used.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Size() == 0 {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, &FormatError{"magic", 0, "empty file"})
	}
	mm, err := mmap.Map(f, mmap.RDONLY, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	h, err := ParseHeader(mm)
	if err != nil {
		mm.Unmap()
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &File{Header: h, Path: path, data: mm, mm: mm, f: f}, nil
}

// FromBytes wraps an in-memory GGUF image (tests, fuzzing, embedded files).
func FromBytes(data []byte) (*File, error) {
	h, err := ParseHeader(data)
	if err != nil {
		return nil, err
	}
	return &File{Header: h, data: data}, nil
}

// Close unmaps the file. Views returned by TensorData must not be used after.
func (f *File) Close() error {
	if f.mm == nil {
		return nil
	}
	err := f.mm.Unmap()
	f.mm, f.data = nil, nil
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Size is the file's size in bytes.
func (f *File) Size() int64 { return int64(len(f.data)) }

// Bytes returns the whole mapped file.
func (f *File) Bytes() []byte { return f.data }

// TensorData returns a zero-copy view of t's bytes. Extents were checked
// against the file size when the header was parsed.
func (f *File) TensorData(t *TensorInfo) []byte {
	start := f.DataOffset + t.Offset
	return f.data[start : start+t.Size : start+t.Size]
}

// CheckSupported returns an error naming the tensor if its type cannot be
// computed with (IQ types, integer types, ...).
func CheckSupported(t *TensorInfo) error {
	if !t.Type.Supported() {
		return fmt.Errorf("%w %s in tensor %q", ErrUnsupportedType, t.Type, t.Name)
	}
	return nil
}
