package hip

import (
	"fmt"
	"math"
)

// ArgKind is the type of a kernel argument.
type ArgKind uint8

// Kernel argument types: the scalar types kernels take by value, and device
// pointers.
const (
	ArgPtr ArgKind = iota + 1
	ArgInt32
	ArgUint32
	ArgFloat32
	ArgInt64
	ArgUint64
)

func (k ArgKind) String() string {
	switch k {
	case ArgPtr:
		return "ptr"
	case ArgInt32:
		return "int32"
	case ArgUint32:
		return "uint32"
	case ArgFloat32:
		return "float32"
	case ArgInt64:
		return "int64"
	case ArgUint64:
		return "uint64"
	}
	return fmt.Sprintf("ArgKind(%d)", uint8(k))
}

// Arg is one kernel argument: its type and its bits. GPU drivers lay it out
// in the kernel's parameter array as Size() little-endian bytes of Bits();
// host kernels read it back with the typed accessors.
type Arg struct {
	kind ArgKind
	bits uint64
}

// Ptr is a device pointer argument.
func Ptr(p DevicePtr) Arg { return Arg{ArgPtr, uint64(p)} }

// Int32 is an int argument.
func Int32(v int32) Arg { return Arg{ArgInt32, uint64(uint32(v))} }

// Uint32 is an unsigned int argument.
func Uint32(v uint32) Arg { return Arg{ArgUint32, uint64(v)} }

// Float32 is a float argument.
func Float32(v float32) Arg { return Arg{ArgFloat32, uint64(math.Float32bits(v))} }

// Int64 is a long long argument.
func Int64(v int64) Arg { return Arg{ArgInt64, uint64(v)} }

// Uint64 is an unsigned long long argument.
func Uint64(v uint64) Arg { return Arg{ArgUint64, v} }

// Kind is the argument's type.
func (a Arg) Kind() ArgKind { return a.kind }

// Size is the argument's size in the kernel parameter array, in bytes.
func (a Arg) Size() int {
	switch a.kind {
	case ArgInt32, ArgUint32, ArgFloat32:
		return 4
	case ArgPtr, ArgInt64, ArgUint64:
		return 8
	}
	return 0
}

// Bits is the argument's value; its low Size() bytes are the parameter.
func (a Arg) Bits() uint64 { return a.bits }

func (a Arg) String() string {
	switch a.kind {
	case ArgPtr:
		return "ptr " + DevicePtr(a.bits).String()
	case ArgInt32:
		return fmt.Sprint("int32 ", int32(uint32(a.bits)))
	case ArgUint32:
		return fmt.Sprint("uint32 ", uint32(a.bits))
	case ArgFloat32:
		return fmt.Sprint("float32 ", math.Float32frombits(uint32(a.bits)))
	case ArgInt64:
		return fmt.Sprint("int64 ", int64(a.bits))
	case ArgUint64:
		return fmt.Sprint("uint64 ", a.bits)
	}
	return "invalid arg"
}

// want panics unless the argument has kind k. The accessors are for host
// kernels, where a panic becomes the stream's ErrLaunchFailure.
func (a Arg) want(k ArgKind) {
	if a.kind != k {
		panic(fmt.Sprintf("hip: kernel argument is %v, not %v", a.kind, k))
	}
}

// Ptr returns a pointer argument's value; it panics on another kind.
func (a Arg) Ptr() DevicePtr { a.want(ArgPtr); return DevicePtr(a.bits) }

// Int32 returns an int32 argument's value; it panics on another kind.
func (a Arg) Int32() int32 { a.want(ArgInt32); return int32(uint32(a.bits)) }

// Uint32 returns a uint32 argument's value; it panics on another kind.
func (a Arg) Uint32() uint32 { a.want(ArgUint32); return uint32(a.bits) }

// Float32 returns a float32 argument's value; it panics on another kind.
func (a Arg) Float32() float32 { a.want(ArgFloat32); return math.Float32frombits(uint32(a.bits)) }

// Int64 returns an int64 argument's value; it panics on another kind.
func (a Arg) Int64() int64 { a.want(ArgInt64); return int64(a.bits) }

// Uint64 returns a uint64 argument's value; it panics on another kind.
func (a Arg) Uint64() uint64 { a.want(ArgUint64); return a.bits }
